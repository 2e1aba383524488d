"""Heading-aligned east/north covariance of a fix: along-track and cross-track uncertainty.

A retrieval error is not isotropic: along the road a query matches a database place a few metres ahead or
behind (the place spacing, how alike consecutive places look), across the road it sits wherever the query's
lane is (a query a lane beside the mapped one is 3.5 m off whatever the matches agree on). So the covariance is
modelled in the frame of the database heading:

1. Track direction ``u``: the weighted mean axis of the known headings of the places behind the estimate
   (inliers of the consensus, or the filter's places), averaged as doubled angles so that opposite headings of
   one road agree; ``w`` is ``u`` turned by +90 degrees. No known heading: no direction (step 3b).
2. Base covariance ``S``: the estimate's own geometry, the weighted spread of its places plus the floor, divided
   by its confidence (:mod:`semloc_ros.core.localizer` step 6, :mod:`semloc_ros.core.sequence_filter` step 3).
3. Lane offset: a query in another lane than the database sees the place from a few metres aside, and its
   label image lines up worse with the database's (re-ranking alignment ``a``, :mod:`semloc_ros.core.reranking`).
   The probability that the query is off the mapped lane is ``p = 1 / (1 + exp((a - a_0) / width))``
   (``a_0`` = ``lane_alignment``; without an alignment, ``a`` = 0: ``p`` ~ 1, the cautious side).
   Lane evidence over time (:class:`LaneEvidence`): a vehicle keeps its lane for many frames while one frame's
   alignment is noisy (parked cars, a turn), so ``a`` is the alignment smoothed over consecutive frames of one
   camera, ``a <- a + min(1, dt / tau) (a_t - a)`` with ``tau`` = ``lane_time_constant_s``. The first frame,
   one after a stamp gap beyond ``max_gap_s`` or going backwards, and ``tau`` = 0 take ``a_t`` as it is; a frame
   without an alignment (not re-ranked) keeps the smoothed value (0 before any).
4. a. With a direction: ``v_a = u^T S u``, ``v_c = w^T S w``, ``v_ac = u^T S w``; in the track frame
      ``C = [[k_a v_a + x_a^2, sqrt(k_a k_c) v_ac], [sqrt(k_a k_c) v_ac, k_c v_c + p x_c^2]]`` where ``k_a``,
      ``k_c`` scale the geometry and ``x_a``, ``x_c`` add what the geometry cannot see (``x_c``: the lane
      offset); then ``R C R^T`` with ``R = [u w]`` gives east/north.
   b. Without a direction: ``max(k_a, k_c) S + max(x_a^2, p x_c^2) I`` (the conservative isotropic bound).

``k = 1, x = 0`` on both axes leaves ``S`` unchanged. The values are fitted per configuration on training maps
(:mod:`semloc_ros.evaluation.uncertainty_fit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semloc_ros.core.settings import POSITIVE, Bounds, require


@dataclass(frozen=True)
class TrackCovarianceModel:
    """Scales of the base covariance and added sigmas, along and across the database heading (step 3)."""

    along_scale: float = 1.0
    cross_scale: float = 1.0
    along_sigma_m: float = 0.0
    cross_sigma_m: float = 0.0
    lane_alignment: float = 1.0
    lane_alignment_width: float = 0.01
    lane_time_constant_s: float = 0.0

    def validate(self) -> TrackCovarianceModel:
        """Raise ValueError naming the first invalid value; returns self."""
        require("along_scale", self.along_scale, POSITIVE)
        require("cross_scale", self.cross_scale, POSITIVE)
        require("along_sigma_m", self.along_sigma_m, Bounds(0.0, 1e4))
        require("cross_sigma_m", self.cross_sigma_m, Bounds(0.0, 1e4))
        require("lane_alignment", self.lane_alignment, Bounds(0.0, 1.0))
        require("lane_alignment_width", self.lane_alignment_width, Bounds(1e-4, 1.0))
        require("lane_time_constant_s", self.lane_time_constant_s, Bounds(0.0, 1e4))
        return self

    @property
    def is_identity(self) -> bool:
        return (self.along_scale, self.cross_scale, self.along_sigma_m, self.cross_sigma_m) == (1.0, 1.0, 0.0, 0.0)

    def lane_offset_probability(self, alignment: float | np.ndarray) -> float | np.ndarray:
        """Step 3 (NaN alignment: 0, i.e. ``p`` ~ 1)."""
        a = np.nan_to_num(np.asarray(alignment, dtype=np.float64), nan=0.0)
        p = 1.0 / (1.0 + np.exp(np.clip((a - self.lane_alignment) / self.lane_alignment_width, -700, 700)))
        return float(p) if np.ndim(p) == 0 else p


class LaneEvidence:
    """Step 3's alignment smoothed over the consecutive frames of one camera."""

    def __init__(self, time_constant_s: float, max_gap_s: float) -> None:
        self._tau, self._max_gap_s = float(time_constant_s), float(max_gap_s)
        self._value: float | None = None
        self._stamp_ns: int | None = None

    def reset(self) -> None:
        self._value, self._stamp_ns = None, None

    def continue_from(self, previous: LaneEvidence) -> None:
        """Take over ``previous``'s smoothed alignment and last stamp (the same camera, another localizer)."""
        self._value, self._stamp_ns = previous._value, previous._stamp_ns

    def update(self, stamp_ns: int | None, alignment: float) -> float:
        """The smoothed alignment after a frame at ``stamp_ns`` (None: an independent query) with ``alignment``
        (NaN or 0: none)."""
        previous, self._stamp_ns = self._stamp_ns, stamp_ns
        dt_s = None if previous is None or stamp_ns is None else (int(stamp_ns) - previous) * 1e-9
        if dt_s is None or not 0.0 <= dt_s <= self._max_gap_s:
            self._value = None  # a new sequence
        measured = math.isfinite(alignment) and alignment != 0.0
        if measured:
            if self._value is None or self._tau <= 0.0:
                self._value = float(alignment)
            else:
                self._value += min(1.0, dt_s / self._tau) * (float(alignment) - self._value)
        return self._value if self._value is not None else 0.0


def smoothed_alignments(stamps_ns: np.ndarray, alignments: np.ndarray, time_constant_s: float,
                        max_gap_s: float) -> np.ndarray:
    """:class:`LaneEvidence` over the frames of one camera in stamp order (for the fits and reports)."""
    evidence = LaneEvidence(time_constant_s, max_gap_s)
    return np.array([evidence.update(int(stamp), float(alignment))
                     for stamp, alignment in zip(stamps_ns, alignments, strict=True)], float)


def track_direction(headings: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | None:
    """Step 1: unit (east, north) axis of the weighted headings (ENU yaw, radians; NaN = unknown), or None.

    None also when the headings cancel out (a crossing seen from both roads: no dominant axis).
    """
    headings = np.asarray(headings, dtype=np.float64).reshape(-1)
    weights = np.ones(len(headings)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    known = np.isfinite(headings) & np.isfinite(weights) & (weights > 0)
    if not known.any():
        return None
    doubled = weights[known] @ np.column_stack([np.cos(2 * headings[known]), np.sin(2 * headings[known])])
    if np.hypot(*doubled) < 1e-6 * weights[known].sum():
        return None
    angle = 0.5 * math.atan2(doubled[1], doubled[0])
    return np.array([math.cos(angle), math.sin(angle)])


def along_cross(vectors_en: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(..., 2) east/north vectors as (along, cross) components for the unit ``direction``."""
    u = np.asarray(direction, dtype=np.float64)
    w = np.array([-u[1], u[0]])
    vectors = np.asarray(vectors_en, dtype=np.float64)
    return np.stack([vectors @ u, vectors @ w], axis=-1)


def track_variances(base_en: np.ndarray, direction: np.ndarray) -> tuple[float, float, float]:
    """``(v_a, v_c, v_ac)`` of a 2x2 east/north covariance in the frame of the unit ``direction`` (step 3a)."""
    u = np.asarray(direction, dtype=np.float64)
    w = np.array([-u[1], u[0]])
    base = np.asarray(base_en, dtype=np.float64)
    return float(u @ base @ u), float(w @ base @ w), float(u @ base @ w)


def aligned_covariance(
    base_en: np.ndarray, direction: np.ndarray | None, model: TrackCovarianceModel, alignment: float = math.nan
) -> np.ndarray:
    """Steps 3-4: the 2x2 east/north covariance of the model for a base covariance, a track direction and the
    re-ranking alignment of the estimate's best agreeing match (NaN: unknown)."""
    base = np.asarray(base_en, dtype=np.float64)
    lane_variance = model.lane_offset_probability(alignment) * model.cross_sigma_m**2
    if direction is None:
        scale = max(model.along_scale, model.cross_scale)
        return scale * base + max(model.along_sigma_m**2, lane_variance) * np.eye(2)
    v_a, v_c, v_ac = track_variances(base, direction)
    coupling = math.sqrt(model.along_scale * model.cross_scale) * v_ac
    track = np.array(
        [
            [model.along_scale * v_a + model.along_sigma_m**2, coupling],
            [coupling, model.cross_scale * v_c + lane_variance],
        ]
    )
    u = np.asarray(direction, dtype=np.float64)
    rotation = np.column_stack([u, [-u[1], u[0]]])
    covariance = rotation @ track @ rotation.T
    return 0.5 * (covariance + covariance.T)
