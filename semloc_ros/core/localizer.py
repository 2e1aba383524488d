"""Top-k retrieval to a position estimate with an ENU covariance, a confidence and a fix status.

For one query descriptor:

1. Retrieve the ``top_k`` most similar database entries (cosine similarities ``s_i``).
2. Weight them with a softmax ``w_i = exp(s_i / T) / sum_j exp(s_j / T)`` (``T`` = ``temperature``): a
   similarity advantage of ``T`` makes a match ``e`` times more important.
3. Consensus: every match is a candidate seed; its support is the total weight of the matches within
   ``consensus_radius_m`` of it (horizontal distance in the database ENU frame). The seed with the largest
   support (the more similar one on ties) wins and the matches within the radius of it are the inliers.
4. Position: the inlier-weight-averaged east/north, converted back to latitude/longitude; altitude is the
   weighted mean of the inliers' known altitudes (NaN if none is known) (:mod:`semloc_ros.core.estimate`).
5. Confidence ``c = share * margin`` where ``share`` is the inliers' total softmax weight and
   ``margin = 1 - exp(-max(0, s_in - s_out) / T)`` with ``s_in`` / ``s_out`` the best inlier / best outlier
   similarity (``margin = 1`` when all matches are inliers). ``share`` drops when other places attract weight;
   ``margin`` drops to 0 when the best match elsewhere is as similar as the best match of the consensus
   (a perceptually aliased place), which ``share`` alone misses when the consensus has many members.
6. Covariance: the weighted spatial covariance of the inliers (how far the agreeing matches are spread) plus
   ``position_sigma_floor_m**2`` (the database's own position error and place spacing), divided by
   ``max(c, 0.01)``: with probability about ``1 - c`` the consensus is the wrong place, so a less confident
   fix gets a proportionally wider uncertainty (at most 100 times the variance). Up gets
   ``altitude_sigma_m**2``, uncorrelated with east/north. The spread, floor and inflation are
   :func:`semloc_ros.core.estimate.cluster_estimate`, shared with the sequence filter. Finally east/north become
   the heading-aligned model of :mod:`semloc_ros.core.uncertainty` (along-track and cross-track scales
   ``covariance_along_scale``, ``covariance_cross_scale``, added sigmas ``position_sigma_along_m``,
   ``position_sigma_cross_m``, the latter weighted by the lane-offset probability of the re-ranking alignment,
   ``lane_alignment`` and ``lane_alignment_width``, smoothed over consecutive frames of the camera with
   ``lane_alignment_time_constant_s``; the direction from the inliers' database headings), fitted
   on training maps by ``scripts/fit_uncertainty.py`` (scales 1 and sigmas 0 leave the base covariance ``S`` as
   it is; ``S`` is kept in ``base_covariance_en``).
6b. Cross-track correction (``lateral_gain_m`` != 0, re-ranked queries only): the sideways offset of the query
   from its best agreeing match, measured on their label thumbnails (:mod:`semloc_ros.core.lateral`), moves the
   position along the normal of the map camera's heading at that match (its database heading turned by the map's
   ``camera_yaw_deg``: the opposite normal for a rear camera), before the covariance model (which is fitted on
   corrected fixes). The sequence filter's estimate moves by the same vector.
7. Status: ``NO_MATCH`` if the best similarity is below ``min_similarity`` (then ``confidence`` is 0),
   ``LOW_CONFIDENCE`` if ``c < min_confidence``, otherwise ``FIX``.
7b. A re-ranked FIX whose label thumbnail is :func:`~semloc_ros.core.reranking.featureless` is LOW_CONFIDENCE (as 8).
8. Integrity (:mod:`semloc_ros.core.integrity`): the cues of the estimate (best cosine, confidence, re-ranking
   alignment, agreeing share, off-map mass, and the jump from the previous estimate when the queries come
   with stamps) give a score ``integrity``; a FIX whose score is below ``integrity_threshold`` (calibrated
   by Learn-then-Test for a false-fix rate) becomes LOW_CONFIDENCE, and one the sequence filter withholds
   only for its warm-up (``warming_up``) loses that mark. The weights are ``integrity_weights`` in
   the order of :data:`semloc_ros.core.integrity.CUES` (all 0: no score, the gate off). The score is fitted
   with the cues of its configuration: when it weighs the re-ranking alignment, an estimate without one
   (re-ranking off, an RGB method, a map without thumbnails) is not scored or gated, since a cue is missing.

This is deliberately simple; the constants are calibrated on recorded drives (``semloc evaluate`` calibrates
``min_similarity`` / ``min_confidence`` thresholds on a held-out condition; ``scripts/fit_uncertainty.py`` the
covariance model and the integrity gate on training maps).

With ``sequence_filter`` enabled, :meth:`Localizer.localize` (and :meth:`Localizer.localize_sequence`) feed
consecutive queries of one camera through a discrete Bayes filter over the database places
(:mod:`semloc_ros.core.sequence_filter`, parameters ``filter_*``): the position, covariance, confidence and status
then come from the filter's posterior, the matches from the single-frame retrieval. The filter weighs the places
by the scores the single frame ranks with (the re-ranking scores of a re-ranked query, else the cosines); its
off-map state compares ``filter_offmap_similarity`` with the best cosine. Stamp differences give the
elapsed time; a stamp going backwards or jumping forward by more than ``filter_max_gap_s`` resets the filter.
A query whose best similarity is below ``min_similarity`` is NO_MATCH and does not update the belief.
``localize_batch`` is always single-frame. A localizer over a tiled map's new tile set continues the sequence
of the previous one (:meth:`Localizer.continue_from`, :mod:`semloc_ros.core.tile_cache` step 4).

Re-ranking (``rerank_top_k`` > 0, :mod:`semloc_ros.core.reranking`): when the database stores label thumbnails and
the query's label thumbnail is given, the first ``rerank_top_k`` retrieved entries are re-ordered by
``s_i + rerank_weight * a_i`` (``a_i``: the best-shift pixel agreement of the label images) and that combined
score replaces ``s_i`` in steps 2-5; ``min_similarity`` still applies to the best cosine. Without a thumbnail
(or in a database without them) the query is answered as without re-ranking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from semloc_ros.core import settings
from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.estimate import (
    EstimateSettings,
    FixStatus,
    LateralCorrection,
    Match,
    PositionEstimate,
    cluster_estimate,
    consensus,
    empty_estimate,
    laterally_moved,
    softmax,
)
from semloc_ros.core.geodesy import LocalENU
from semloc_ros.core.integrity import CUES, IntegrityModel, IntegrityMonitor, agreeing_alignment, estimate_cues
from semloc_ros.core.lateral import fit_shear, heading_normal, lateral_offset_m, view_shift_px
from semloc_ros.core.reranking import Ranked, RerankConfig, featureless, rerank
from semloc_ros.core.sequence_filter import FilterConfig, SequenceFilter
from semloc_ros.core.settings import FRACTION, POSITIVE, Bounds, Each, section, setting
from semloc_ros.core.uncertainty import LaneEvidence, TrackCovarianceModel, aligned_covariance

MAX_TOP_K = 1000
LATERAL_MATCHES = 5  # step 6b: the median shear of the best agreeing matches


@dataclass
class LocalizerConfig:
    """Parameters of the retrieval-to-position step (see the module docstring), with the sequence filter's
    (``filter``) and re-ranking's (``rerank``). The defaults are the shipped configuration (config/semloc.yaml);
    :mod:`semloc_ros.core.settings` gives the flat parameter names (``filter_temperature``, ``rerank_top_k``)."""

    top_k: int = setting(10, "retrieved database places per query", Bounds(1, MAX_TOP_K))
    consensus_radius_m: float = setting(25.0, "matches within this radius of the best cluster agree", POSITIVE)
    temperature: float = setting(0.02, "softmax temperature turning similarities into weights", POSITIVE)
    min_confidence: float = setting(0.3, "below this confidence the fix status is NO_FIX", FRACTION)
    min_similarity: float = setting(0.0, "best similarity (a cosine) below this means 'not in the database' "
                                    "(NO_FIX, no position)", Bounds(-1.0, 1.0))
    min_landmark_share: float = setting(0.0, "landmark pixel share a re-ranked FIX needs (step 7b; 0 = off)", FRACTION)
    position_sigma_floor_m: float = setting(3.0, "smallest 1-sigma position uncertainty reported", POSITIVE)
    altitude_sigma_m: float = setting(10.0, "1-sigma altitude uncertainty reported", POSITIVE)
    covariance_along_scale: float = setting(0.3155, "factor on the along-track (database heading) variance of "
                                            "the agreeing matches' geometry (fitted on training maps by "
                                            "scripts/fit_uncertainty.py)", POSITIVE)
    covariance_cross_scale: float = setting(0.0399, "factor on the cross-track variance of the agreeing matches' "
                                            "geometry (fitted)", POSITIVE)
    position_sigma_along_m: float = setting(0.0, "1-sigma along-track error added after the scale, not shrunk by "
                                            "confidence (fitted)", Bounds(0.0, 1e4))
    position_sigma_cross_m: float = setting(4.41, "1-sigma cross-track error added after the scale: the lane "
                                            "offset a query may have (fitted)", Bounds(0.0, 1e4))
    lane_alignment: float = setting(0.9408, "re-ranking alignment below which a query is probably in another "
                                    "lane than the map (weights position_sigma_cross_m; fitted)", FRACTION)
    lane_alignment_width: float = setting(0.01, "softness of that lane-offset threshold (fitted)",
                                          Bounds(1e-4, 1.0))
    lane_alignment_time_constant_s: float = setting(0.0, "time constant smoothing that alignment over consecutive "
                                                    "frames (a vehicle keeps its lane; fitted); 0 = per frame",
                                                    Bounds(0.0, 1e4))
    lateral_gain_m: float = setting(0.0, "cross-track correction: metres of sideways offset per pixel-per-row "
                                    "shear of the query's label image against its match's (fitted on training "
                                    "maps by scripts/fit_lateral.py; along the map camera's normal, so a rear "
                                    "camera's map turns it); 0 = off",
                                    Bounds(-100.0, 100.0))
    integrity_weights: tuple[float, ...] = setting(
        (33.735, 3.0199, 33.2268, 4.4728, 0.0, -0.8558), "logistic weights of the integrity cues "
        f"{', '.join(CUES)} (fitted by scripts/fit_uncertainty.py); all 0: no score, no gate",
        Each(len(CUES), Bounds(-1e6, 1e6)))
    integrity_bias: float = setting(-68.917, "bias of the integrity score's logistic model (fitted)",
                                    Bounds(-1e6, 1e6))
    integrity_threshold: float = setting(0.712863, "a FIX whose integrity score is below this becomes NO_FIX "
                                         "(Learn-then-Test: <= 1 % false fixes at 90 % confidence on a training "
                                         "map)", FRACTION)
    sequence_filter: bool = setting(True, "fuse consecutive descriptors of one camera with the discrete Bayes "
                                    "filter over database places (false: each frame on its own)")
    filter: FilterConfig = field(default_factory=FilterConfig, metadata=section("the sequence filter"))
    rerank: RerankConfig = field(default_factory=RerankConfig, metadata=section("label re-ranking"))

    @classmethod
    def from_parameters(cls, values: dict[str, object]) -> LocalizerConfig:
        """The configuration of flat parameters (``{"top_k": 5, "filter_temperature": 0.02}``); others default."""
        return settings.from_flat(cls, values)

    def parameters(self) -> dict[str, object]:
        """The flat parameters ``{name: value}`` (as the node declares them; JSON-ready)."""
        return settings.to_flat(self)

    def with_parameters(self, **values: object) -> LocalizerConfig:
        """A copy with the named flat parameters replaced."""
        return settings.replace_flat(self, values)

    def estimate_settings(self) -> EstimateSettings:
        """The consensus radius, floors and confidence threshold shared with the sequence filter."""
        return EstimateSettings(self.consensus_radius_m, self.position_sigma_floor_m, self.altitude_sigma_m,
                                self.min_confidence)

    def track_model(self) -> TrackCovarianceModel:
        """The heading-aligned covariance model of the ``covariance_*`` / ``position_sigma_*`` / ``lane_*``
        fields."""
        return TrackCovarianceModel(self.covariance_along_scale, self.covariance_cross_scale,
                                    self.position_sigma_along_m, self.position_sigma_cross_m, self.lane_alignment,
                                    self.lane_alignment_width, self.lane_alignment_time_constant_s)

    def integrity_model(self) -> IntegrityModel:
        """The integrity score and gate of the ``integrity_*`` and ``filter_max_gap_s`` parameters."""
        weights = [float(w) for w in self.integrity_weights]
        return IntegrityModel(dict(zip(CUES, weights, strict=True)) if any(weights) else {}, self.integrity_bias,
                              self.integrity_threshold, max_gap_s=self.filter.max_gap_s)

    def validate(self) -> LocalizerConfig:
        """Raise ValueError naming the first invalid parameter (flat name); returns self.

        The filter parameters are checked even when the filter is off, so a bad value never waits."""
        settings.validate(self)
        return self


class Localizer:
    """Turns query descriptors into position estimates against one :class:`GeoDatabase`."""

    def __init__(self, database: GeoDatabase, config: LocalizerConfig | None = None) -> None:
        self._database = database
        self._config = (config if config is not None else LocalizerConfig()).validate()
        self._filter: SequenceFilter | None = None
        self._last_stamp_ns: int | None = None
        self._monitor = IntegrityMonitor(self._config.integrity_model())
        self._lane = LaneEvidence(self._config.lane_alignment_time_constant_s, self._config.filter.max_gap_s)
        if self._config.sequence_filter:
            self._filter = SequenceFilter(database, self._config.filter, self._config.estimate_settings())

    @property
    def database(self) -> GeoDatabase:
        return self._database

    @property
    def config(self) -> LocalizerConfig:
        return self._config

    @property
    def sequence_filter(self) -> SequenceFilter | None:
        """The sequence filter (None unless ``config.sequence_filter``)."""
        return self._filter

    def reset(self) -> None:
        """Start a new sequence: the filter forgets its belief and the last stamp (no-op without filter)."""
        self._last_stamp_ns = None
        self._monitor.reset()
        self._lane.reset()
        if self._filter is not None:
            self._filter.reset()

    def continue_from(self, previous: Localizer, old_indices: np.ndarray, new_indices: np.ndarray) -> None:
        """Continue ``previous``'s sequence (a tiled map's earlier tiles; its entries ``old_indices`` are this
        database's ``new_indices``): the last stamp, the integrity monitor, the lane evidence and the filter's
        state (:meth:`SequenceFilter.adopt`), positions moved into this database's ENU frame."""
        to_frame = partial(self._database.frame_and_enu()[0].east_north_from, previous.database.frame_and_enu()[0])
        self._last_stamp_ns = previous._last_stamp_ns
        self._monitor.continue_from(previous._monitor, to_frame)
        self._lane.continue_from(previous._lane)
        if self._filter is not None and previous._filter is not None:
            self._filter.adopt(previous._filter, old_indices, new_indices, to_frame)

    def reconfigured(self, config: LocalizerConfig) -> Localizer:
        """A localizer with ``config`` on the same database that continues this one's sequence (a changed filter
        setting restarts the filter, warm-up included: :meth:`SequenceFilter.adopt`)."""
        localizer = Localizer(self._database, config)
        every = np.arange(len(self._database))
        localizer.continue_from(self, every, every)
        return localizer

    def localize(
        self,
        descriptor: np.ndarray,
        model_id: str | None = None,
        stamp_ns: int | None = None,
        displacement_m: float | None = None,
        thumbnail: np.ndarray | None = None,
    ) -> PositionEstimate:
        """Estimate the position of one (D,) descriptor; ``model_id`` (if given) must match the database.

        ``thumbnail``: the query's label thumbnail (:func:`semloc_ros.core.reranking.label_thumbnail`), used for
        re-ranking when that is enabled and the database stores thumbnails.

        With the sequence filter, ``stamp_ns`` (capture time) and/or ``displacement_m`` (distance travelled
        since the previous query, e.g. from odometry) drive its motion model; at least one is required.
        Without the filter both are ignored.
        """
        vector = np.asarray(descriptor)
        if vector.ndim != 1:
            raise ValueError(f"descriptor must be 1-D (D,), got shape {vector.shape}")
        thumbnails = None if thumbnail is None else np.asarray(thumbnail)[np.newaxis]
        if self._filter is None:
            return self.localize_batch(vector[np.newaxis, :], model_id, thumbnails,
                                       None if stamp_ns is None else [stamp_ns])[0]
        return self.localize_sequence(
            vector[np.newaxis, :],
            None if stamp_ns is None else [stamp_ns],
            model_id,
            None if displacement_m is None else [displacement_m],
            thumbnails,
        )[0]

    @property
    def reranks(self) -> bool:
        """Whether queries with a label thumbnail get re-ranked (enabled, and the database has thumbnails)."""
        return self._config.rerank.enabled and self._database.thumbnails is not None

    def localize_batch(
        self, descriptors: np.ndarray, model_id: str | None = None, thumbnails: np.ndarray | None = None,
        stamps_ns: Sequence[int] | np.ndarray | None = None,
    ) -> list[PositionEstimate]:
        """Single-frame estimates of (Q, D) descriptors with one database search.

        ``thumbnails``: (Q, h, w) query label thumbnails for re-ranking (see the module docstring), or None.
        ``stamps_ns``: the queries are consecutive frames of one camera (continuing from the previous call),
        so the integrity score sees the jump between consecutive estimates (step 8); None: independent queries.
        """
        matrix = self._checked_queries(descriptors, model_id)
        if len(matrix) == 0:
            return []
        if stamps_ns is not None and len(stamps_ns) != len(matrix):
            raise ValueError(f"{len(matrix)} descriptors need {len(matrix)} stamps")
        thumbnails = self._checked_thumbnails(thumbnails, len(matrix))
        k = self._config.top_k
        similarities, indices = self._database.search(matrix, self._search_k(k, thumbnails))
        frame, enu = self._database.frame_and_enu()
        estimates = []
        for row in range(len(matrix)):
            stamp = None if stamps_ns is None else int(stamps_ns[row])
            estimate = self._single(similarities[row], indices[row], thumbnails, row, frame, enu)
            estimate = self._calibrated(estimate, self._lane_alignment(estimate, stamp))
            estimates.append(self._judged(estimate, estimate, stamp, None if thumbnails is None else thumbnails[row]))
        return estimates

    def _search_k(self, k: int, thumbnails: np.ndarray | None) -> int:
        return max(k, self._config.rerank.top_k) if thumbnails is not None else k

    def _checked_thumbnails(self, thumbnails: np.ndarray | None, count: int) -> np.ndarray | None:
        """The query thumbnails when re-ranking applies to them, else None (ValueError if they do not fit)."""
        if thumbnails is None or not self.reranks:
            return None
        thumbnails = np.asarray(thumbnails)
        expected = (count, *self._database.thumbnails.shape[1:])
        if thumbnails.shape != expected:
            raise ValueError(f"query thumbnails have shape {thumbnails.shape}, the database's {expected}")
        return thumbnails

    def _single(
        self,
        similarities: np.ndarray,
        indices: np.ndarray,
        thumbnails: np.ndarray | None,
        row: int,
        frame: LocalENU,
        enu: np.ndarray,
    ) -> PositionEstimate:
        """The single-frame estimate of one query's search result, re-ranked when it has a thumbnail."""
        return self._single_ranked(self._ranked(similarities, indices, thumbnails, row), thumbnails, row, frame, enu)

    def _ranked(self, similarities: np.ndarray, indices: np.ndarray, thumbnails: np.ndarray | None,
                row: int) -> Ranked:
        """One query's retrieval in the order the single frame ranks it: re-ranked when it has a thumbnail."""
        if thumbnails is None:
            return Ranked(similarities, indices, None, None)
        scores, cosines, order, alignment = rerank(
            similarities, indices, thumbnails[row], self._database.thumbnails, self._config.rerank
        )
        return Ranked(scores, order, cosines, alignment)

    def _single_ranked(self, ranked: Ranked, thumbnails: np.ndarray | None, row: int, frame: LocalENU,
                       enu: np.ndarray) -> PositionEstimate:
        k = self._config.top_k
        if ranked.cosines is None:
            return self._estimate(ranked.scores[:k], ranked.indices[:k], frame, enu)
        estimate = self._estimate(ranked.scores[:k], ranked.indices[:k], frame, enu, ranked.cosines[:k],
                                  ranked.alignment[:k])
        return laterally_moved(estimate, self._lateral_shift(estimate, thumbnails[row]), frame)

    def _lateral_shift(self, estimate: PositionEstimate, thumbnail: np.ndarray) -> LateralCorrection | None:
        """Step 6b: the cross-track correction of a re-ranked estimate (None: off, or nothing to measure)."""
        gain = self._config.lateral_gain_m
        agreeing = [m for m in estimate.matches if m.inlier and math.isfinite(m.alignment)]
        if gain == 0.0 or not agreeing or estimate.status is FixStatus.NO_MATCH:
            return None
        best = sorted(agreeing, key=lambda m: -m.alignment)[:LATERAL_MATCHES]
        yaw = float(self._database.heading[best[0].index]) + math.radians(self._database.camera_yaw_deg)
        normal = heading_normal(yaw)  # step 6b: the map camera's heading
        if normal is None:
            return None
        thumbnails, ids = self._database.thumbnails, self._database.image_ids
        slopes = [fit_shear(thumbnail, thumbnails[m.index], view_shift_px(ids[m.index], thumbnail.shape[1])).slope
                  for m in best]
        slope = float(np.median(slopes))
        return LateralCorrection(slope, normal, lateral_offset_m(slope, gain))

    def localize_sequence(
        self,
        descriptors: np.ndarray,
        stamps_ns: Sequence[int] | np.ndarray | None,
        model_id: str | None = None,
        displacements_m: Sequence[float | None] | np.ndarray | None = None,
        thumbnails: np.ndarray | None = None,
    ) -> list[PositionEstimate]:
        """Consecutive (Q, D) queries of one camera through the sequence filter (one database search).

        The filter continues from its current state (call :meth:`reset` before an unrelated sequence).
        ``displacements_m[i]`` is the distance travelled between queries i-1 and i (None: use the stamps).
        ``thumbnails`` re-rank the single-frame retrieval (the matches, and the scores the filter weighs).
        """
        if self._filter is None:
            raise RuntimeError("localize_sequence needs LocalizerConfig(sequence_filter=True)")
        matrix = self._checked_queries(descriptors, model_id)
        count = len(matrix)
        stamps = [None] * count if stamps_ns is None else list(stamps_ns)
        displacements = [None] * count if displacements_m is None else list(displacements_m)
        if len(stamps) != count or len(displacements) != count:
            raise ValueError(f"{count} descriptors need {count} stamps and displacements")
        for stamp, displacement in zip(stamps, displacements, strict=True):
            if stamp is None and displacement is None:
                raise ValueError("the sequence filter needs stamp_ns or displacement_m for every query "
                                 "(independent queries: sequence_filter=False)")
            if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int | np.integer)):
                raise TypeError(f"stamp_ns must be an integer (nanoseconds), got {stamp!r}")
        if count == 0:
            return []
        config = self._config
        thumbnails = self._checked_thumbnails(thumbnails, count)
        search_k = max(self._search_k(config.top_k, thumbnails), config.filter.top_k)
        similarities, indices = self._database.search(matrix, search_k)
        frame, enu = self._database.frame_and_enu()
        estimates = []
        filter_k = max(config.top_k, config.filter.top_k)
        for row in range(count):
            stamp = None if stamps[row] is None else int(stamps[row])
            ranked = self._ranked(similarities[row], indices[row], thumbnails, row)
            single = self._single_ranked(ranked, thumbnails, row, frame, enu)
            lane = self._lane_alignment(single, stamp)
            single = self._calibrated(single, lane)
            self._advance(stamp, displacements[row])
            if single.status is not FixStatus.NO_MATCH:  # the likelihood: the scores the single frame ranks with
                found = indices[row, :filter_k] >= 0
                best_cosine = float(similarities[row, :filter_k][found].max()) if found.any() else None
                self._filter.update(*ranked.head(filter_k), best_cosine)
            filtered = laterally_moved(self._filter.estimate(), single.lateral, frame)
            filtered.matches = single.matches
            filtered = self._calibrated(filtered, lane)
            if single.status is FixStatus.NO_MATCH:
                filtered.status, filtered.confidence, filtered.warming_up = FixStatus.NO_MATCH, 0.0, False
            estimates.append(self._judged(filtered, single, stamp, None if thumbnails is None else thumbnails[row]))
        return estimates

    def filter_observations(self, descriptors: np.ndarray,
                            thumbnails: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Q, K) scores and entries the sequence filter weighs for each query, as :meth:`localize_sequence` passes
        them: the cosines of the top ``max(top_k, filter_top_k)``, or of a re-ranked query the re-ranking scores
        of its re-ranked entries (rows padded with -inf and entry -1)."""
        matrix = self._checked_queries(descriptors, None)
        thumbnails = self._checked_thumbnails(thumbnails, len(matrix))
        k = max(self._config.top_k, self._config.filter.top_k)
        similarities, indices = self._database.search(matrix, max(k, self._search_k(k, thumbnails)))
        scores, entries = np.full((len(matrix), k), -np.inf), np.full((len(matrix), k), -1, dtype=np.int64)
        for row in range(len(matrix)):
            row_scores, row_entries = self._ranked(similarities[row], indices[row], thumbnails, row).head(k)
            scores[row, : len(row_scores)], entries[row, : len(row_entries)] = row_scores, row_entries
        return scores, entries

    def predicted_interval(self, stamp_ns: int) -> tuple[int, int] | None:
        """(previous stamp, ``stamp_ns``): what the sequence filter predicts over when the next query comes at
        ``stamp_ns``, so the interval a measured displacement (odometry) must cover; None when it will not predict
        (no filter, a fresh or reset one, no previous stamp, or a gap that resets it)."""
        previous = self._last_stamp_ns
        if self._filter is None or not self._filter.initialised or previous is None:
            return None
        return (previous, int(stamp_ns)) if self._continues(previous, int(stamp_ns)) else None

    def _continues(self, previous_ns: int, stamp_ns: int) -> bool:
        """Whether the filter predicts across this stamp difference (backwards or beyond filter_max_gap_s: reset)."""
        return 0.0 <= (stamp_ns - previous_ns) * 1e-9 <= self._config.filter.max_gap_s

    def _advance(self, stamp_ns: int | None, displacement_m: float | None) -> None:
        """Run the filter's prediction for the time/distance since the previous query (or reset it)."""
        if self._filter is None:
            return
        previous = self._last_stamp_ns
        self._last_stamp_ns = None if stamp_ns is None else int(stamp_ns)
        if not self._filter.initialised:
            return
        dt_s = None
        if self._last_stamp_ns is not None and previous is not None:
            if not self._continues(previous, self._last_stamp_ns):
                self._filter.reset()  # stamps went backwards (a replayed bag) or too long without a query
                return
            dt_s = (self._last_stamp_ns - previous) * 1e-9
        if dt_s is None and displacement_m is None:
            self._filter.reset()  # no previous stamp to measure the elapsed time from
            return
        self._filter.predict(dt_s, displacement_m)

    def _checked_queries(self, descriptors: np.ndarray, model_id: str | None) -> np.ndarray:
        matrix = np.asarray(descriptors)
        if matrix.ndim != 2:
            raise ValueError(f"descriptors must be 2-D (Q, D), got shape {matrix.shape}")
        self._database.check_query(matrix.shape[1], model_id)
        if not np.issubdtype(matrix.dtype, np.floating):
            raise TypeError(f"descriptors must have a floating-point dtype, got {matrix.dtype}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("query descriptor contains NaN or infinite values")
        return matrix

    def _lane_alignment(self, single: PositionEstimate, stamp_ns: int | None) -> float:
        """Step 6: the alignment of the single frame's best agreeing match, smoothed over consecutive frames."""
        matches = single.matches
        return self._lane.update(stamp_ns, agreeing_alignment([m.inlier for m in matches],
                                                              [m.alignment for m in matches]))

    def _calibrated(self, estimate: PositionEstimate, lane_alignment: float) -> PositionEstimate:
        """Step 6: the estimate with the heading-aligned covariance model applied to east/north."""
        covariance = np.array(estimate.covariance_enu, dtype=np.float64)
        estimate.base_covariance_en = covariance[:2, :2].copy()
        model = self._config.track_model()
        if not model.is_identity and np.isfinite(covariance).all():
            covariance[:2, :2] = aligned_covariance(estimate.base_covariance_en, estimate.direction, model,
                                                    lane_alignment)
            estimate.covariance_enu = covariance
        return estimate

    def _judged(self, estimate: PositionEstimate, single: PositionEstimate, stamp_ns: int | None,
                thumbnail: np.ndarray | None = None) -> PositionEstimate:
        """Step 8: the integrity cues and score of ``estimate`` (matches from ``single``), the gate; step 7b."""
        matches = single.matches
        off_map = self._filter.off_map_probability if self._filter is not None else 0.0
        cues = estimate_cues([m.similarity for m in matches], [m.inlier for m in matches],
                             [m.alignment for m in matches], estimate.confidence, off_map)
        located = estimate.status is not FixStatus.NO_MATCH
        cues["jump"] = self._monitor.jump(stamp_ns if located else None, estimate.east, estimate.north)
        estimate.cues = cues
        model = self._monitor.model
        reranked = any(math.isfinite(m.alignment) for m in matches)
        if model.weights and (reranked or not model.weights.get("alignment")):  # a score needs all its cues
            estimate.integrity = float(model.score(cues))
        if not self._monitor.passes(estimate.integrity) or featureless(thumbnail, self._config.min_landmark_share):
            estimate.warming_up = False  # a FIX, or one withheld by the filter's warm-up (step 8's gate, step 7b)
            estimate.status = FixStatus.LOW_CONFIDENCE if estimate.status is FixStatus.FIX else estimate.status
        return estimate

    def _estimate(
        self,
        similarities: np.ndarray,
        indices: np.ndarray,
        frame: LocalENU,
        enu: np.ndarray,
        cosines: np.ndarray | None = None,
        alignment: np.ndarray | None = None,
    ) -> PositionEstimate:
        """Steps 2-7 of the module docstring; ``similarities`` may be re-ranking scores, then ``cosines`` and
        ``alignment`` are the entries' cosines and label agreements."""
        config = self._config
        found = indices >= 0
        similarities = similarities[found].astype(np.float64)
        indices = indices[found]
        if len(indices) == 0:
            return empty_estimate()
        cosines = similarities if cosines is None else np.asarray(cosines, dtype=np.float64)[found]
        alignment = np.full(len(indices), math.nan) if alignment is None else np.asarray(alignment)[found]

        weights = softmax(similarities / config.temperature)
        east_north = enu[indices, :2]
        inliers = consensus(east_north, weights, config.consensus_radius_m)

        share = float(weights[inliers].sum())
        confidence = min(1.0, share * self._margin(similarities, inliers))
        if cosines.max() < config.min_similarity:
            status, confidence = FixStatus.NO_MATCH, 0.0
        elif confidence < config.min_confidence:
            status = FixStatus.LOW_CONFIDENCE
        else:
            status = FixStatus.FIX
        altitudes = self._database.alt[indices]
        estimate = cluster_estimate(frame, enu[indices[inliers]], altitudes[inliers], weights[inliers], confidence,
                                    status, config.estimate_settings(),
                                    self._database.heading[indices[inliers]])  # steps 4 and 6

        lats, lons = self._database.lat[indices], self._database.lon[indices]
        estimate.matches = [
            Match(
                index=int(indices[i]),
                similarity=float(cosines[i]),
                lat=float(lats[i]),
                lon=float(lons[i]),
                alt=float(altitudes[i]),
                east=float(east_north[i, 0]),
                north=float(east_north[i, 1]),
                weight=float(weights[i]),
                inlier=bool(inliers[i]),
                alignment=float(alignment[i]),
            )
            for i in range(len(indices))
        ]
        return estimate

    def _margin(self, similarities: np.ndarray, inliers: np.ndarray) -> float:
        """``1 - exp(-max(0, best inlier - best outlier similarity) / T)``; 1 without outliers."""
        if inliers.all():
            return 1.0
        gap = similarities[inliers].max() - similarities[~inliers].max()
        return float(-np.expm1(-max(0.0, gap) / self._config.temperature))

