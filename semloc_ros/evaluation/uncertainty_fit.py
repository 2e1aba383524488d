"""Fitting the heading-aligned covariance model (:mod:`semloc_ros.core.uncertainty`) on training fixes.

1. Per axis (along, cross): each published fix with a known track direction gives an error component ``e`` and
   a base variance ``v``; the error is modelled as ``N(0, k v + x^2)``. ``(k, x)`` maximise the Gaussian
   likelihood over a grid, on the fixes within ``max_error_m`` (a wrong place is the gate's business, and one
   such outlier would dominate a likelihood). The likelihood tells a spread that grows with the geometry
   (``k``) from one that does not (``x``); coverages alone barely can. Across the track the added variance is
   ``p(a) x_c^2`` with the lane-offset probability of the alignment ``a`` (step 3 of
   :mod:`semloc_ros.core.uncertainty`): ``a_0`` over the alignments' 5-95 % quantiles and the width over
   :data:`LANE_WIDTHS` join the grid.
2. Jointly: factors ``f_a``, ``f_c`` on each axis (``k f``, ``x^2 f``) make the 2-D coverages of ALL fixes at
   0.5, 1, ..., 3 sigma closest to a Gaussian's (chi-square with 2 degrees of freedom; sum of squared
   differences, summed over the lane groups ``p > 0.5`` and ``p <= 0.5`` so that neither group's coverage is
   traded for the other's), plus ``TAIL_WEIGHT x`` the squared excess of the share beyond 3 sigma over a
   Gaussian's 1.1 % (an integrity failure), with the lane width again over :data:`LANE_WIDTHS` (ties: factors
   nearer 1): what a navigation filter sees, outliers included. A likelihood fit gives a constant lane offset
   a sigma equal to it, whose 1-sigma coverage is 0; the coverages want it wider.

3. Lane evidence over time: steps 1-2 for every time constant of :data:`LANE_TIME_CONSTANTS_S` smoothing the
   alignment over consecutive frames (:class:`semloc_ros.core.uncertainty.LaneEvidence`, on every frame of each
   drive, fix or not); the smallest joint loss of step 2 wins (ties: the shorter).

Only fixes count: the covariance is what a navigation filter weighs a published fix with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from semloc_ros.core.calibration import COVARIANCE_FIT_SIGMAS, gaussian_2d_coverage, mahalanobis_squared
from semloc_ros.core.uncertainty import TrackCovarianceModel, along_cross, track_variances
from semloc_ros.evaluation.fix_records import FixRecords

SCALES = tuple(float(s) for s in np.geomspace(0.01, 100.0, 81))
EXTRA_SIGMAS_M = tuple(float(x) for x in np.arange(0.0, 10.01, 0.25))
JOINT_FACTORS = tuple(float(f) for f in np.geomspace(0.25, 4.0, 13))
MIN_GROUP = 30
TAIL_WEIGHT = 10.0
LANE_WIDTHS = (0.005, 0.01, 0.02, 0.05)
LANE_THRESHOLDS = 16
LANE_TIME_CONSTANTS_S = (0.0, 2.0, 4.0, 8.0)


def axis_components(
    errors_en: np.ndarray, base_covariances: np.ndarray, directions: np.ndarray, alignments: np.ndarray
) -> tuple[np.ndarray, ...]:
    """(along error, cross error, along variance, cross variance, alignment) of the frames with a direction."""
    rows = [
        (*along_cross(error, direction), *track_variances(base, direction)[:2], alignment)
        for error, base, direction, alignment in zip(errors_en, base_covariances, directions, alignments,
                                                     strict=True)
        if np.isfinite(direction).all() and np.isfinite(error).all() and np.isfinite(base).all()
    ]
    if not rows:
        return (np.zeros(0),) * 5
    table = np.array(rows)
    return tuple(table[:, i] for i in range(5))


def fit_axis(
    errors: np.ndarray, variances: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Step 1 for one axis: ``(k, x, mean negative log-likelihood)``; ``weights`` (default 1) multiply ``x^2``."""
    squared = np.asarray(errors, float) ** 2
    variances = np.asarray(variances, float)
    weights = np.ones(len(squared)) if weights is None else np.asarray(weights, float)
    scales = np.array(SCALES)[:, np.newaxis]
    best: tuple[float, float, float] | None = None
    for extra in EXTRA_SIGMAS_M:
        total = np.maximum(scales * variances + extra**2 * weights, 1e-6)
        losses = 0.5 * np.mean(np.log(2 * math.pi * total) + squared / total, axis=1)
        i = int(np.argmin(losses))
        if best is None or losses[i] < best[0]:
            best = (float(losses[i]), float(SCALES[i]), float(extra))
    if best is None or not len(squared):
        return math.nan, math.nan, math.nan
    return best[1], best[2], best[0]


def fit_cross_axis(
    errors: np.ndarray, variances: np.ndarray, alignments: np.ndarray
) -> tuple[float, float, float, float, float]:
    """Step 1 across the track: ``(k_c, x_c, a_0, width, mean negative log-likelihood)``."""
    finite = np.asarray(alignments, float)
    finite = finite[np.isfinite(finite)]
    thresholds = np.unique(np.quantile(finite, np.linspace(0.05, 0.95, LANE_THRESHOLDS))) if len(finite) else [1.0]
    best = None
    for threshold in thresholds:
        for width in LANE_WIDTHS:
            lane = TrackCovarianceModel(lane_alignment=float(threshold), lane_alignment_width=width)
            k, x, loss = fit_axis(errors, variances, lane.lane_offset_probability(alignments))
            if best is None or loss < best[4]:
                best = (k, x, float(threshold), width, loss)
    assert best is not None
    return best


def coverage_loss(errors_en: np.ndarray, covariances_en: np.ndarray) -> float:
    """Sum of squared differences of the 2-D coverages at :data:`COVARIANCE_FIT_SIGMAS` from a Gaussian's, plus
    the weighted squared excess beyond 3 sigma (step 2)."""
    d2 = mahalanobis_squared(errors_en, covariances_en)
    d2 = d2[np.isfinite(d2)]
    sigmas = np.array(COVARIANCE_FIT_SIGMAS)
    coverage = np.mean(d2[:, np.newaxis] <= sigmas**2, axis=0)
    tail = max(0.0, float(np.mean(d2 > 9.0)) - (1.0 - gaussian_2d_coverage(3.0)))
    return float(np.sum((coverage - np.array([gaussian_2d_coverage(s) for s in sigmas])) ** 2)) + TAIL_WEIGHT * tail**2


def model_covariances(
    base_covariances: np.ndarray, directions: np.ndarray, model: TrackCovarianceModel, alignments: np.ndarray
) -> np.ndarray:
    """(N, 2, 2) east/north covariances of the model: :func:`semloc_ros.core.uncertainty.aligned_covariance` of
    every frame, vectorised (the fits evaluate it for every grid point)."""
    bases = np.asarray(base_covariances, float).reshape(-1, 2, 2)
    axes = np.asarray(directions, float).reshape(-1, 2)
    lane = model.lane_offset_probability(np.asarray(alignments, float).reshape(-1)) * model.cross_sigma_m**2
    known = np.isfinite(axes).all(axis=1)
    u = np.where(known[:, np.newaxis], axes, [1.0, 0.0])
    w = np.column_stack([-u[:, 1], u[:, 0]])
    v_a = np.einsum("ni,nij,nj->n", u, bases, u)
    v_c = np.einsum("ni,nij,nj->n", w, bases, w)
    v_ac = np.einsum("ni,nij,nj->n", u, bases, w)
    track = np.empty_like(bases)
    track[:, 0, 0] = model.along_scale * v_a + model.along_sigma_m**2
    track[:, 1, 1] = model.cross_scale * v_c + lane
    track[:, 0, 1] = track[:, 1, 0] = math.sqrt(model.along_scale * model.cross_scale) * v_ac
    rotation = np.stack([u, w], axis=2)  # columns u, w
    result = np.einsum("nij,njk,nlk->nil", rotation, track, rotation)
    isotropic = max(model.along_scale, model.cross_scale) * bases + np.maximum(model.along_sigma_m**2, lane)[
        :, np.newaxis, np.newaxis] * np.eye(2)
    return np.where(known[:, np.newaxis, np.newaxis], 0.5 * (result + result.transpose(0, 2, 1)), isotropic)


def fit_track_model(
    errors_en: np.ndarray, base_covariances: np.ndarray, directions: np.ndarray, alignments: np.ndarray,
    max_error_m: float = math.inf, factors: Sequence[float] = JOINT_FACTORS,
) -> tuple[TrackCovarianceModel, dict[str, float]]:
    """Steps 1-2 on the errors, base covariances, directions and alignments of training fixes; the model and
    its record."""
    near = np.hypot(errors_en[:, 0], errors_en[:, 1]) <= max_error_m
    along, cross, v_along, v_cross, alignment = axis_components(
        errors_en[near], base_covariances[near], directions[near], np.asarray(alignments)[near])
    if not len(along):
        raise ValueError("no training fix with a known track direction: cannot fit the covariance model")
    k_a, x_a, loss_a = fit_axis(along, v_along)
    k_c, x_c, lane_alignment, lane_width, loss_c = fit_cross_axis(cross, v_cross, alignment)
    usable = np.isfinite(errors_en).all(axis=1) & np.isfinite(base_covariances).all(axis=(1, 2))
    errors, bases, axes = errors_en[usable], base_covariances[usable], directions[usable]
    aligned = np.asarray(alignments)[usable]
    lane = TrackCovarianceModel(lane_alignment=lane_alignment, lane_alignment_width=lane_width)
    offset = lane.lane_offset_probability(aligned) > 0.5
    groups = [g for g in (offset, ~offset) if g.sum() >= MIN_GROUP] or [np.ones(len(errors), bool)]
    best = None
    for width in LANE_WIDTHS:
        for f_a in factors:
            for f_c in factors:
                model = TrackCovarianceModel(k_a * f_a, k_c * f_c, x_a * math.sqrt(f_a), x_c * math.sqrt(f_c),
                                             lane_alignment, width)
                covariances = model_covariances(bases, axes, model, aligned)
                loss = sum(coverage_loss(errors[g], covariances[g]) for g in groups)
                key = (loss, abs(math.log(f_a)) + abs(math.log(f_c)))
                if best is None or key < best[0]:
                    best = (key, model, f_a, f_c)
    assert best is not None
    record = {"n_fixes": int(usable.sum()), "n_with_direction": len(along), "along_nll": loss_a,
              "cross_nll": loss_c, "along_factor": best[2], "cross_factor": best[3], "joint_loss": best[0][0],
              "n_lane_offset": int(offset.sum())}
    return best[1].validate(), record


def fit_lane_time_constant(
    records: Sequence[FixRecords], keep: Sequence[np.ndarray], max_gap_s: float, max_error_m: float = math.inf,
    time_constants_s: Sequence[float] = LANE_TIME_CONSTANTS_S,
) -> tuple[TrackCovarianceModel, dict[str, Any]]:
    """Step 3: the model of steps 1-2 on the frames ``keep`` of each of ``records`` (in-map drives), with the
    alignment smoothed by the time constant whose joint loss is smallest; the model and its record."""
    fixes = [r.select(k) for r, k in zip(records, keep, strict=True)]
    errors, bases, axes = (np.concatenate([getattr(r, name) for r in fixes])
                           for name in ("error_en", "base_covariance", "direction"))
    best, losses = None, []
    for tau in time_constants_s:
        alignments = np.concatenate([r.lane_alignments(tau, max_gap_s)[k] for r, k in zip(records, keep,
                                                                                         strict=True)])
        model, record = fit_track_model(errors, bases, axes, alignments, max_error_m)
        losses.append({"lane_time_constant_s": tau, "joint_loss": record["joint_loss"]})
        if best is None or record["joint_loss"] < best[1]["joint_loss"]:
            best = (dataclasses.replace(model, lane_time_constant_s=float(tau)), record)
    assert best is not None
    return best[0].validate(), {**best[1], "lane_time_constants": losses}
