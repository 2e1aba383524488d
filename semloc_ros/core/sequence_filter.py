"""Sequence localization: a discrete Bayes (HMM) filter over the places of a :class:`GeoDatabase`.

The state is a belief ``b`` over the N database entries (where the vehicle is now). Per frame:

1. Predict from the elapsed time ``dt`` or a measured travelled distance ``m`` (e.g. from odometry).

   a. Travel: ``t = m``, spread ``r = odometry_sigma_fraction * m``; without ``m``, ``t = v * dt`` with the
      speed estimate ``v`` of step 7 (the prior ``speed_mps`` until it has learnt) and ``r = speed_sigma_mps *
      dt``. The step's share of the travel the values were chosen at is ``w = min(1, m / evidence_spacing_m)``,
      or ``min(1, speed_mps * dt / evidence_spacing_m)`` without ``m`` (from the prior speed: an estimate that
      fell to 0 at a stop must not silence the evidence that the vehicle moves again); ``w = 1`` with spacing 0.
   b. Noise per metre travelled: ``sigma = sqrt(w position_sigma_m**2 + r**2)``, so the place-to-place noise
      does not grow with the frame rate and a measured standstill (``m = 0``) holds the belief.
   c. Motion: a place i moves its belief to the places j of its neighbourhood in proportion to
      ``N(a; t, sigma) + r N(a; -t, sigma)`` (rows normalised), where ``a`` is the offset of j along
      place i's database heading: ``+|p_j - p_i|`` ahead of it (or beside it), ``-|p_j - p_i|`` behind it
      (horizontal ENU). A camera that sees what the map's camera saw travels the way the mapping vehicle did
      (``+t``); a reversing vehicle travels ``-t`` with the weight ``r = 1 - (1 - reverse_weight)**w``, per metre
      like the noise and the kidnap mass (1 = no direction, also where the heading is unknown: every place then
      counts as ahead). A step much shorter than ``sigma`` puts its reverse branch within the noise of the
      forward one, where no evidence tells them apart, so each such step would keep ``(1 - r) / (1 + r)`` of
      its travel: at the full weight the belief would fall behind the vehicle, the further the more frames per
      metre; per metre, a frame at the evidence spacing weighs as the values were chosen. Both travels keep
      their whole, symmetric spread: the noise of a forward travel shorter than ``sigma`` reaches the places just
      behind as much as those just ahead, or the belief would creep ahead of the vehicle a little every frame
      (the more frames per metre, the further). The neighbourhood graph is precomputed once with a uniform grid
      on the ENU coordinates (radius = the largest plausible travel in one step, see :func:`graph_radius_m`), so
      memory and time per step are O(edges) = O(P x places per radius), never N x N. It joins the P distinct places,
      not the N entries: the views of one place (entries of one position and heading, :func:`co_located`)
      have equal rows, so the place moves their summed belief with each neighbour weighted by its number of
      entries and shares what arrives equally among its entries, exactly what moving every entry would give,
      with (N / P)**2 fewer edges (49x fewer for a map of 7 views).
   d. Kidnap, per metre too: ``b = (1 - k) b + k / N`` with ``k = 1 - (1 - kidnap_probability)**w``: a small
      uniform mass lets the filter recover after a teleport, a tunnel or a wrong start.
2. Update with the top-K retrieval scores ``s_1 >= ... >= s_K`` at entries ``i_k``, contrast-normalised per
   query: ``z_k = (s_k - mean(s)) / std(s)`` over the K scores (as SeqSLAM normalises its similarity rows), so
   a query whose candidates all look alike (fog) weighs little and the temperature is in standard deviations,
   the same for every descriptor and for re-ranking scores. The likelihood of a retrieved place is
   ``exp((z_k - z_1) / temperature)``; a place that was not retrieved scores at most ``s_K`` and gets that
   floor, ``exp((z_K - z_1) / temperature)``. ``b = b * L / sum(b * L)``. ``temperature``, the kidnap
   probability and ``reverse_weight`` are chosen on training maps (``scripts/fit_sequence_filter.py``), on
   frames about ``evidence_spacing_m`` of travel apart. Consecutive frames closer together repeat each other's
   errors (a faster camera, a slower or stopped vehicle), so the exponents are multiplied by the step's ``w``
   (step 1a): the evidence per metre stays the one the values were chosen at (``w = 1`` for the first frame, or
   with ``evidence_spacing_m`` 0).
3. Estimate: the mass near each entry ``m_i = sum of b_j over |p_j - p_i| <= estimate_radius_m`` (summed over
   the distinct places of step 1c); the MAP place is the one with the largest ``m_i`` (ties: the larger own
   belief). Position, altitude and covariance come from the places within the radius of it weighted by their
   belief (:mod:`semloc_ros.core.estimate`, with ``c = m``, as in :mod:`semloc_ros.core.localizer`);
   confidence = ``m`` (the posterior probability of being within the radius of the estimate); status FIX when
   ``m >= min_confidence``, LOW_CONFIDENCE otherwise. ``estimate_radius_m``, the floors and ``min_confidence``
   are the localizer's (:class:`~semloc_ros.core.estimate.EstimateSettings`). The track direction comes from
   their database headings (:func:`semloc_ros.core.uncertainty.track_direction`).

Off-map state (``exit_probability`` > 0): one more hypothesis, "not in the map", with mass ``o`` beside the
place belief ``b`` (the belief given that the vehicle is on the map, normalised over the places; the joint
belief is ``(1 - o) b`` and ``o``), so a drive can leave the mapped area and come back without a reset.

4. Predict (after step 1): ``o' = o (1 - entry_probability) + (1 - o) exit_probability``. ``b`` is moved by
   step 1 alone: a vehicle re-enters the map where its motion since leaving says (the kidnap mass of step 1
   covers re-entry anywhere else). So frames that look unmapped (fog lowers every similarity) make the fix
   less confident but never erase where the vehicle was.
5. Update (with step 2): off the map, no place is seen, so the best cosine similarity ``c_1`` is what an unmapped
   view reaches, ``offmap_similarity`` (fitted on training maps): likelihood
   ``L_off = exp(w (offmap_similarity - c_1) / T_off)`` (``offmap_temperature``, on the cosine scale) against
   ``Z = sum_i b_i L_i`` for the places;
   ``o = o L_off / ((1 - o) Z + o L_off)``. The scores ``s_k`` of step 2 may be re-ranking scores (the
   localizer passes what its single frame ranks with); ``c_1`` is then the best cosine, else ``c_1 = s_1``.
6. Estimate (step 3 within the places): confidence ``(1 - o) m``; :attr:`SequenceFilter.off_map_probability`
   is ``o``. A fresh or reset filter starts from the stationary ``exit / (exit + entry)``.

Speed (``speed_time_constant_s`` > 0, frames predicted from stamps):

7. After two consecutive FIX estimates ``dt`` apart whose MAP places lie within the graph radius, the estimate's
   travel along the MAP place's database heading gives a speed sample ``s = (p_t - p_{t-1}) . h / dt``,
   clipped to ``[0, speed_mps + 3 speed_sigma_mps]``; ``v += min(1, dt / tau) (s - v)`` with
   ``tau = speed_time_constant_s``. On a right track the estimate moves with the vehicle on average whatever
   the prediction, so ``v`` follows the vehicle's speed and the lead or lag of a wrong prior fades. Prediction
   uses ``v`` rounded to ``SPEED_STEP_MPS`` (the transition weights are computed again only when it changes).
   A reset restores ``v = speed_mps``; a measured ``displacement_m`` does not use ``v``.

Warm-up (``warmup_m`` > 0):

8. After a (re)start the belief converges from uniform over the whole map, and a stretch that looks like the
   start of the drive can win it for a while: a young belief is confident before it is right. So no estimate is
   a FIX until the filter has predicted over ``warmup_m`` of travel since its first observation (the travel
   ``m`` of step 1a, or ``speed_mps x dt`` from the prior speed without it); :attr:`SequenceFilter.warmup_left_m`
   says how much is left. ``scripts/fit_sequence_filter.py`` chooses it on training maps.

Continuation (:meth:`SequenceFilter.adopt`; a tiled map swaps its set of loaded places as the vehicle moves):

9. A filter over a new set of places takes over a previous filter's state where both share places: the belief of
   the shared places (mass on the places only the previous set held is dropped, the rest renormalised; places new
   to the set start at 0 and get a share at the next predict through the kidnap mass of step 1d and the motion
   of step 1c), the off-map mass, the speed ``v`` (with the last FIX of step 7 moved into the new frame), the
   warm-up travel of step 8 and the evidence weight of step 2. Nothing shared (no belief mass left, or a filter
   of other parameters or another estimate radius, whose belief is not the one these would have formed): the
   filter starts afresh, warm-up included, counted as a reset. The other estimate settings (``min_confidence``,
   the floors) only turn the belief into an estimate, so changing them carries the state.

:meth:`SequenceFilter.predict` resets the filter (uniform belief) when ``dt > max_gap_s`` or the travel does
not fit the graph; stamps (backwards jumps, gaps) are turned into ``dt`` by ``Localizer.localize``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from semloc_ros.core import settings
from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.estimate import EstimateSettings, FixStatus, PositionEstimate, cluster_estimate
from semloc_ros.core.settings import FRACTION, NON_NEGATIVE, POSITIVE, Bounds, require, setting

MAX_FILTER_TOP_K = 10000
_GRID_CHUNK = 8192  # points per vectorised grid query (bounds the temporary candidate arrays)
BESIDE_M = 0.5  # a neighbour less than this far behind a place counts as beside it (views of one place: 0 m)
SPEED_STEP_MPS = 0.1  # step 7: resolution of the speed used in the prediction


@dataclass
class FilterConfig:
    """Parameters of :class:`SequenceFilter` (see the module docstring); the node's ``filter_*`` parameters."""

    speed_mps: float = setting(10.0, "sequence filter: prior vehicle speed (travel per step = speed x stamp "
                               "difference)", NON_NEGATIVE)
    speed_sigma_mps: float = setting(5.0, "sequence filter: 1-sigma of the prior speed", POSITIVE)
    position_sigma_m: float = setting(3.0, "sequence filter: 1-sigma place-to-place motion noise per step", POSITIVE)
    odometry_sigma_fraction: float = setting(0.1, "sequence filter: 1-sigma of a measured displacement, as a "
                                             "fraction of it", NON_NEGATIVE)
    max_gap_s: float = setting(1.0, "sequence filter: a stamp gap above this (or a stamp going backwards) resets "
                               "the filter", POSITIVE)
    kidnap_probability: float = setting(0.0001, "sequence filter: belief spread uniformly per evidence spacing "
                                        "travelled (recovery after a jump; chosen on training maps by "
                                        "scripts/fit_sequence_filter.py)",
                                        Bounds(0.0, 1.0, low_open=True, high_open=True))
    temperature: float = setting(1.4, "sequence filter: temperature of the observation likelihood, in standard "
                                 "deviations of a query's scores (chosen on training maps by "
                                 "scripts/fit_sequence_filter.py)", POSITIVE)
    reverse_weight: float = setting(0.1, "sequence filter: weight of travel against the map's heading relative to "
                                    "along it (1 = no direction; chosen on training maps)", FRACTION)
    top_k: int = setting(50, "sequence filter: retrieved places per query entering the likelihood",
                         Bounds(1, MAX_FILTER_TOP_K))
    exit_probability: float = setting(0.01, "sequence filter: chance per step of leaving the mapped area "
                                      "(off-map state); 0 = no off-map state", FRACTION)
    entry_probability: float = setting(0.1, "sequence filter: chance per step of re-entering the map when off it",
                                       Bounds(0.0, 1.0, low_open=True, high_open=True))
    offmap_similarity: float = setting(0.9484, "sequence filter: best cosine an unmapped view reaches (off-map "
                                       "likelihood; fitted by scripts/fit_uncertainty.py)", Bounds(-1.0, 1.0))
    evidence_spacing_m: float = setting(6.0, "sequence filter: travel per fully weighted observation; frames "
                                        "closer together weigh travel / spacing (0 = every frame fully)",
                                        NON_NEGATIVE)
    offmap_temperature: float = setting(0.00631, "sequence filter: cosine temperature of the off-map likelihood "
                                        "(fitted on a training map)", POSITIVE)
    warmup_m: float = setting(0.0, "sequence filter: travel after a (re)start before an estimate may be a FIX (the "
                              "belief converging; chosen on training maps by scripts/fit_sequence_filter.py)",
                              NON_NEGATIVE)
    speed_time_constant_s: float = setting(20.0, "sequence filter: time constant of the online speed estimate "
                                           "that replaces speed_mps without odometry (0 = the prior speed always)",
                                           NON_NEGATIVE)

    def validate(self) -> FilterConfig:
        """Raise ValueError naming the first invalid parameter; returns self."""
        settings.validate(self)
        return self

    @property
    def max_speed_mps(self) -> float:
        """The largest speed the motion model allows (step 7's clip; the graph radius covers it)."""
        return self.speed_mps + 3.0 * self.speed_sigma_mps

    @property
    def off_map_prior(self) -> float:
        """Stationary off-map mass of the exit/entry chain (0 without the off-map state)."""
        return self.exit_probability / (self.exit_probability + self.entry_probability)


def graph_radius_m(config: FilterConfig, estimate_radius_m: float) -> float:
    """Neighbourhood radius: 3-sigma travel at ``speed_mps + 3 speed_sigma_mps`` over ``max_gap_s``.

    At least ``estimate_radius_m``, because the same graph gives the mass near each place.
    """
    travel = config.max_speed_mps * config.max_gap_s + 3.0 * config.position_sigma_m
    return max(travel, estimate_radius_m)


@dataclass(frozen=True)
class PlaceGraph:
    """Places within ``radius_m`` of each other, in CSR form (rows = source places, self included).

    The neighbours of place i are ``targets[indptr[i]:indptr[i + 1]]`` at ``distances`` metres.
    """

    radius_m: float
    indptr: np.ndarray
    targets: np.ndarray
    distances: np.ndarray

    @property
    def n_places(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_edges(self) -> int:
        return len(self.targets)

    def sources(self) -> np.ndarray:
        """(E,) source place of every edge."""
        return np.repeat(np.arange(self.n_places, dtype=self.targets.dtype), np.diff(self.indptr))

    def within(self, radius_m: float) -> PlaceGraph:
        """The sub-graph of the edges not longer than ``radius_m`` (<= this graph's radius)."""
        if radius_m > self.radius_m:
            raise ValueError(f"radius {radius_m} m exceeds the graph radius {self.radius_m} m")
        keep = self.distances <= radius_m
        counts = np.bincount(self.sources()[keep], minlength=self.n_places)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return PlaceGraph(radius_m, indptr, self.targets[keep], self.distances[keep])


def neighbour_graph(east_north: np.ndarray, radius_m: float) -> PlaceGraph:
    """All pairs of points within ``radius_m`` (horizontal metres), found with a uniform grid of cell size
    ``radius_m``: each point is compared only with the points of its own and the 8 adjacent cells.
    """
    points = np.asarray(east_north, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"east_north must be (N, 2), got shape {points.shape}")
    if not math.isfinite(radius_m) or radius_m <= 0:
        raise ValueError(f"radius_m must be a finite number > 0, got {radius_m!r}")
    count = len(points)
    if count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PlaceGraph(radius_m, np.zeros(1, dtype=np.int64), empty, np.zeros(0, dtype=np.float32))
    cells = np.floor((points - points.min(axis=0)) / radius_m).astype(np.int64)
    width = int(cells[:, 1].max()) + 3  # a neighbour offset of -1..+1 never wraps into another column
    keys = (cells[:, 0] + 1) * width + (cells[:, 1] + 1)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]

    sources, targets, distances = [], [], []
    for start in range(0, count, _GRID_CHUNK):
        chunk = np.arange(start, min(start + _GRID_CHUNK, count))
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                wanted = keys[chunk] + dx * width + dy
                low = np.searchsorted(sorted_keys, wanted, side="left")
                high = np.searchsorted(sorted_keys, wanted, side="right")
                found = high - low
                if not found.any():
                    continue
                source = np.repeat(chunk, found)
                rank = np.arange(found.sum()) - np.repeat(np.cumsum(found) - found, found)
                target = order[np.repeat(low, found) + rank]
                distance = np.hypot(*(points[target] - points[source]).T)
                keep = distance <= radius_m
                sources.append(source[keep])
                targets.append(target[keep])
                distances.append(distance[keep])
    source = np.concatenate(sources)
    target = np.concatenate(targets)
    distance = np.concatenate(distances)
    by_source = np.lexsort((target, source))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(source, minlength=count))])
    index_dtype = np.int32 if count < 2**31 else np.int64
    return PlaceGraph(
        radius_m,
        indptr.astype(np.int64),
        target[by_source].astype(index_dtype),
        distance[by_source].astype(np.float32),
    )


def behind(east_north: np.ndarray, headings: np.ndarray, graph: PlaceGraph, sources: np.ndarray) -> np.ndarray:
    """(E,) True for the graph edges whose target lies behind its source along the source's heading (ENU yaw,
    radians; step 1); False where the heading is unknown (NaN)."""
    headings = np.asarray(headings, dtype=np.float64).reshape(-1)
    offsets = east_north[graph.targets] - east_north[sources]
    along = offsets[:, 0] * np.cos(headings[sources]) + offsets[:, 1] * np.sin(headings[sources])
    return np.nan_to_num(along, nan=0.0) < -BESIDE_M


def co_located(east_north: np.ndarray, headings: np.ndarray) -> tuple[np.ndarray, ...]:
    """Step 1c: the distinct places of the entries (one position and heading; an unknown heading is one value):
    (N,) place of each entry, (P,) entries per place, (P, 2) positions and (P,) headings of the places."""
    headings = np.asarray(headings, dtype=np.float64).reshape(-1)
    key = np.column_stack([east_north, np.nan_to_num(headings, nan=np.inf)])
    _, first, place_of, views = np.unique(key, axis=0, return_index=True, return_inverse=True, return_counts=True)
    return place_of.reshape(-1), views, east_north[first], headings[first]


def contrast_normalised(scores: np.ndarray) -> np.ndarray:
    """Step 2: ``(s - mean(s)) / std(s)`` of one query's scores (all zero when they do not differ)."""
    spread = scores.std()
    if not spread > 0.0:
        return np.zeros_like(scores)
    return (scores - scores.mean()) / spread


class SequenceFilter:
    """Belief over the entries of one database, advanced by :meth:`predict` and :meth:`update`."""

    def __init__(self, database: GeoDatabase, config: FilterConfig | None = None,
                 estimate: EstimateSettings | None = None) -> None:
        self._database = database
        self._config = (config if config is not None else FilterConfig()).validate()
        self._estimate = estimate if estimate is not None else EstimateSettings()
        self._frame, enu = database.frame_and_enu()
        self._enu = enu
        self._place_of, self._views, places, headings = co_located(enu[:, :2], database.heading)  # step 1c
        self._graph = neighbour_graph(places, graph_radius_m(self._config, self._estimate.radius_m))
        self._sources = self._graph.sources()
        self._self_edges = np.flatnonzero(self._graph.targets == self._sources)  # one per place, in place order
        self._behind = behind(places, headings, self._graph, self._sources)  # step 1c: where a < 0
        self._near = self._graph.within(self._estimate.radius_m)
        self._belief: np.ndarray | None = None
        self._transition_key: tuple[float, float] | None = None
        self._transition_weights = np.zeros(0)
        self._map_index = -1
        self._off_map = self._config.off_map_prior
        self._evidence_weight = 1.0  # step 2: w of the next update
        self._speed = self._config.speed_mps  # step 7: v
        self._step_dt: float | None = None  # the stamp gap of the last prediction (None: a measured distance)
        self._last_fix: tuple[float, float] | None = None  # east, north of the last FIX estimate (step 7)
        self._travelled_m = 0.0  # step 8: travel predicted over since the first observation
        self.resets = 0

    @property
    def config(self) -> FilterConfig:
        return self._config

    @property
    def graph(self) -> PlaceGraph:
        """The neighbourhood graph of the distinct places (step 1c)."""
        return self._graph

    @property
    def initialised(self) -> bool:
        """False until the first observation after construction or :meth:`reset`."""
        return self._belief is not None

    @property
    def belief(self) -> np.ndarray:
        """(N,) current belief (a copy; uniform before the first observation)."""
        if self._belief is None:
            return np.full(len(self._enu), 1.0 / len(self._enu))
        return self._belief.copy()

    @property
    def off_map_probability(self) -> float:
        """Belief mass of "not in the map" (step 6; always 0 without the off-map state)."""
        return self._off_map

    @property
    def speed_mps(self) -> float:
        """The speed the next stamp-based prediction uses (step 7; the prior without speed estimation)."""
        return round(self._speed / SPEED_STEP_MPS) * SPEED_STEP_MPS

    @property
    def warmup_left_m(self) -> float:
        """Travel still needed before an estimate may be a FIX (step 8; 0 once warmed up)."""
        return max(0.0, self._config.warmup_m - self._travelled_m)

    @property
    def map_index(self) -> int:
        """Database index of the last MAP place (-1 before the first estimate)."""
        return self._map_index

    def reset(self) -> None:
        """Forget everything: the next observation starts from a uniform belief."""
        self._belief = None
        self._map_index = -1
        self._off_map = self._config.off_map_prior
        self._evidence_weight = 1.0
        self._speed = self._config.speed_mps
        self._step_dt, self._last_fix = None, None
        self._travelled_m = 0.0
        self.resets += 1

    def adopt(self, previous: SequenceFilter, old_indices: np.ndarray, new_indices: np.ndarray,
              to_frame: Callable[[float, float], tuple[float, float]] | None = None) -> bool:
        """Step 9: continue from ``previous``, whose places ``old_indices`` are this filter's ``new_indices``.

        ``to_frame`` moves ``previous``'s east/north into this filter's frame (None: its last FIX is forgotten).
        False when nothing was carried over: this filter is then fresh.
        """
        old_indices = np.asarray(old_indices, dtype=np.int64).reshape(-1)
        new_indices = np.asarray(new_indices, dtype=np.int64).reshape(-1)
        if len(old_indices) != len(new_indices):
            raise ValueError(f"{len(old_indices)} previous places for {len(new_indices)} places")
        self.reset()
        self.resets = previous.resets
        if previous._belief is None:
            return False  # nothing observed yet: fresh either way
        belief = np.zeros(len(self._enu))
        belief[new_indices] = previous._belief[old_indices]
        total = belief.sum()
        same_model = previous._config == self._config and previous._estimate.radius_m == self._estimate.radius_m
        if not total > 0.0 or not same_model:
            self.resets += 1  # a restart
            return False
        self._belief = belief / total
        self._off_map, self._speed = previous._off_map, previous._speed
        self._evidence_weight, self._travelled_m = previous._evidence_weight, previous._travelled_m
        last = previous._last_fix
        self._last_fix = None if last is None or to_frame is None else to_frame(*last)
        return True

    # ------------------------------------------------------------------ predict
    def predict(self, dt_s: float | None, displacement_m: float | None = None) -> bool:
        """Move the belief by the travel since the last frame; False (and a reset) if it cannot be modelled.

        ``displacement_m`` (a measured travelled distance) replaces ``speed_mps * dt_s`` when given; then
        ``dt_s`` may be None. The travel must fit the neighbourhood graph: a 2-sigma travel beyond its radius
        resets the filter (returns False), as does ``dt_s > max_gap_s``.
        """
        config = self._config
        if displacement_m is not None:
            require("displacement_m", displacement_m, NON_NEGATIVE)
            travel = weighed = float(displacement_m)  # step 1a
            spread = config.odometry_sigma_fraction * travel
            self._step_dt = None
        else:
            if dt_s is None:
                raise ValueError("dt_s is needed without displacement_m")
            require("dt_s", dt_s, NON_NEGATIVE)
            if dt_s > config.max_gap_s:
                self.reset()
                return False
            travel = self.speed_mps * float(dt_s)  # step 7: v
            weighed = config.speed_mps * float(dt_s)  # w from the prior: an estimate that fell to 0 keeps evidence
            spread = config.speed_sigma_mps * float(dt_s)
            self._step_dt = float(dt_s)
        spacing = config.evidence_spacing_m
        step = min(1.0, weighed / spacing) if spacing > 0.0 else 1.0  # step 1a: w
        sigma = math.sqrt(step * config.position_sigma_m**2 + spread**2)  # step 1b
        if travel + 2.0 * sigma > self._graph.radius_m:
            self.reset()
            return False
        if self._belief is None:
            return True  # uniform stays uniform
        self._evidence_weight = step
        self._travelled_m += weighed  # step 8
        if sigma > 0.0:  # step 1c over the distinct places, shared equally by their entries
            mass = np.bincount(self._place_of, weights=self._belief, minlength=len(self._views))
            arrived = np.bincount(self._graph.targets, minlength=len(self._views),
                                  weights=mass[self._sources] * self._transitions(travel, sigma, step))
            moved = (arrived / self._views)[self._place_of]
            moved /= moved.sum()
        else:  # a measured standstill: nothing moves
            moved = self._belief
        kidnap = -math.expm1(step * math.log1p(-config.kidnap_probability))  # step 1d: 1 - (1 - k) ** w
        self._belief = (1.0 - kidnap) * moved + kidnap / len(moved)
        self._exchange_off_map()
        return True

    def _exchange_off_map(self) -> None:
        """Step 4: mass leaving the map and re-entering it during one step (the place belief stays as moved)."""
        exit_p, entry_p = self._config.exit_probability, self._config.entry_probability
        if exit_p <= 0.0 or self._belief is None:
            return
        self._off_map = self._off_map * (1.0 - entry_p) + (1.0 - self._off_map) * exit_p

    def _transitions(self, travel: float, sigma: float, step: float) -> np.ndarray:
        """(E,) row-normalised transition probabilities of the graph edges (cached for a repeated step)."""
        key = (round(travel, 6), round(sigma, 6), round(step, 6))
        if key != self._transition_key:
            distances = self._graph.distances.astype(np.float64)
            along = np.where(self._behind, -distances, distances)  # step 1c: a
            weights = np.exp(-0.5 * ((along - travel) / sigma) ** 2)
            reverse = 1.0 - (1.0 - self._config.reverse_weight) ** step  # step 1c: r, per metre
            weights += reverse * np.exp(-0.5 * ((along + travel) / sigma) ** 2)
            weights *= self._views[self._graph.targets]  # a place receives for each of its entries
            row_sums = np.add.reduceat(weights, self._graph.indptr[:-1])
            empty = row_sums <= 0.0
            if empty.any():  # every neighbour implausible (underflow): such a place keeps its belief
                weights[self._self_edges[empty]] = 1.0
                row_sums[empty] = 1.0
            self._transition_weights = weights / row_sums[self._sources]
            self._transition_key = key
        return self._transition_weights

    # ------------------------------------------------------------------ update
    def update(self, similarities: np.ndarray, indices: np.ndarray, best_cosine: float | None = None) -> None:
        """Weigh the belief with the likelihood of one query's retrieval (similarities or scores, descending).

        Entries with index -1 (nothing retrieved) are ignored; without any retrieved entry nothing changes.
        ``best_cosine``: the query's best cosine for the off-map state (step 5) when ``similarities`` are
        re-ranking scores; None: their best.
        """
        similarities = np.asarray(similarities, dtype=np.float64).reshape(-1)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        found = indices >= 0
        similarities, indices = similarities[found], indices[found]
        if len(indices) == 0:
            return
        count = len(self._enu)
        temperature = self._config.temperature
        best = similarities.max()
        contrast = contrast_normalised(similarities)  # step 2
        best_z = contrast.max()
        floor = contrast.min() if len(indices) < count else -np.inf
        weight, self._evidence_weight = max(self._evidence_weight, 1e-12), 1.0
        temperature /= weight  # the exponents times w
        likelihood = np.full(count, math.exp((floor - best_z) / temperature) if math.isfinite(floor) else 0.0)
        likelihood[indices] = np.exp((contrast - best_z) / temperature)
        prior = self._belief if self._belief is not None else np.full(count, 1.0 / count)
        posterior = prior * likelihood
        total = posterior.sum()
        if not total > 0.0:  # only if the floor underflowed where all the prior mass was: restart from here
            posterior, total = likelihood, likelihood.sum()
        self._belief = posterior / total
        if self._config.exit_probability > 0.0:  # step 5, in log odds (L_off may be far beyond float range)
            seen = best if best_cosine is None else best_cosine
            log_off = (math.log(max(self._off_map, 1e-300))
                       + weight * (self._config.offmap_similarity - seen) / self._config.offmap_temperature)
            log_on = math.log(max(1.0 - self._off_map, 1e-300)) + math.log(total)
            self._off_map = 1.0 / (1.0 + math.exp(min(700.0, log_on - log_off)))

    # ------------------------------------------------------------------ estimate
    def estimate(self) -> PositionEstimate:
        """MAP place and the posterior-weighted position, covariance, confidence and status near it (step 3)."""
        belief = self.belief
        place_mass = np.bincount(self._place_of, weights=belief, minlength=len(self._views))
        mass = np.add.reduceat(place_mass[self._near.targets], self._near.indptr[:-1])[self._place_of]
        best_mass = mass.max()
        candidates = np.flatnonzero(mass >= best_mass * (1.0 - 1e-12))
        seed = int(candidates[np.argmax(belief[candidates])])
        self._map_index = seed

        place, near = self._place_of[seed], self._near
        members = np.flatnonzero(np.isin(self._place_of, near.targets[near.indptr[place] : near.indptr[place + 1]]))
        confidence = float(min(1.0, mass[seed])) * (1.0 - self._off_map)  # step 6
        confident = confidence >= self._estimate.min_confidence  # step 3
        warming = confident and self.warmup_left_m > 0.0  # step 8
        status = FixStatus.FIX if confident and not warming else FixStatus.LOW_CONFIDENCE
        estimate = cluster_estimate(self._frame, self._enu[members], self._database.alt[members], belief[members],
                                    confidence, status, self._estimate, self._database.heading[members])
        estimate.warming_up = warming
        self._learn_speed(estimate, float(self._database.heading[seed]))
        return estimate

    def _learn_speed(self, estimate: PositionEstimate, heading: float) -> None:
        """Step 7: move ``v`` towards the speed sample of this estimate and the last FIX before it."""
        dt, tau = self._step_dt, self._config.speed_time_constant_s
        self._step_dt = None  # one sample per prediction
        if estimate.status is not FixStatus.FIX:
            self._last_fix = None
            return
        position = (estimate.east, estimate.north)
        last, self._last_fix = self._last_fix, position
        if last is None or dt is None or not dt > 0.0 or tau <= 0.0 or not math.isfinite(heading):
            return
        step = (position[0] - last[0], position[1] - last[1])
        if math.hypot(*step) > self._graph.radius_m:  # a jump to another stretch, not motion
            return
        sample = (step[0] * math.cos(heading) + step[1] * math.sin(heading)) / dt
        sample = min(max(sample, 0.0), self._config.max_speed_mps)
        self._speed += min(1.0, dt / tau) * (sample - self._speed)
