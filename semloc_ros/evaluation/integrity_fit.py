"""Fitting the integrity score and its gate (:mod:`semloc_ros.core.integrity`) on training maps.

1. Score: logistic regression of "a right fix" (in the map and within the error bound) on the cues of
   :data:`semloc_ros.core.integrity.CUES`, on in-map query frames and out-of-map frames (label 0) of the
   learning maps; Newton iterations on the standardised cues with a small ridge penalty, weights then mapped
   back to the raw cues.
2. Gate: Learn-then-Test (:func:`semloc_ros.evaluation.conformal.learn_then_test`) on frames of OTHER maps than
   step 1 (split conformal: the score must not have seen its calibration frames), in-map and out-of-map
   populations together; a frame that is not a fix under ``min_confidence`` is never one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semloc_ros.core.integrity import CUES, IntegrityModel
from semloc_ros.evaluation.conformal import (
    DEFAULT_DELTA,
    DEFAULT_FALSE_FIX_RATE,
    LttChoice,
    Population,
    learn_then_test,
)
from semloc_ros.evaluation.fix_records import FixRecords, correct_mask

RIDGE = 1e-3
NEWTON_STEPS = 50


def _design(records: Sequence[FixRecords], cues: Sequence[str]) -> np.ndarray:
    return np.column_stack([np.concatenate([r.cues[name] for r in records]) for name in cues])


def fit_logistic(features: np.ndarray, labels: np.ndarray, ridge: float = RIDGE) -> tuple[np.ndarray, float]:
    """Step 1: weights and bias of ``P(label) = sigmoid(b + X w)`` (Newton on standardised columns)."""
    x = np.asarray(features, float)
    y = np.asarray(labels, float)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    design = np.column_stack([np.ones(len(x)), (x - mean) / std])
    theta = np.zeros(design.shape[1])
    penalty = ridge * len(x) * np.diag([0.0] + [1.0] * x.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -700, 700)))
        gradient = design.T @ (p - y) + penalty @ theta
        hessian = (design * (p * (1 - p))[:, np.newaxis]).T @ design + penalty
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(theta)), gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    weights = theta[1:] / std
    return weights, float(theta[0] - weights @ mean)


def usable(records: FixRecords, min_route_m: float) -> np.ndarray:
    """Frames that count: every in-map frame; out-of-map frames beyond ``min_route_m`` along the route."""
    return np.ones(len(records), bool) if records.in_map else records.route_m > min_route_m


def fit_integrity_score(
    records: Sequence[FixRecords], threshold_m: float, min_route_m: float, cues: Sequence[str] = CUES,
    max_gap_s: float = 1.0,
) -> IntegrityModel:
    """Step 1 on the learning maps' records (threshold 0: the gate comes from :func:`calibrate_gate`)."""
    kept = [r.select(usable(r, min_route_m)) for r in records]
    labels = np.concatenate([correct_mask(r, threshold_m) for r in kept])
    weights, bias = fit_logistic(_design(kept, cues), labels)
    return IntegrityModel(dict(zip(cues, map(float, weights), strict=True)), bias, 0.0, max_gap_s=max_gap_s).validate()


def gate_populations(
    records: Sequence[FixRecords], model: IntegrityModel, threshold_m: float, min_route_m: float
) -> dict[str, Population]:
    """In-map and out-of-map :class:`Population` of the records (scores of non-fixes are -inf)."""
    populations: dict[str, Population] = {}
    for name, in_map in (("in_map", True), ("off_map", False)):
        chosen = [r.select(usable(r, min_route_m)) for r in records if r.in_map == in_map]
        if not chosen:
            continue
        scores = np.concatenate([np.where(r.fix, model.score(r.cues), -np.inf) for r in chosen])
        wrong = np.concatenate([r.fix & ~correct_mask(r, threshold_m) for r in chosen])
        populations[name] = Population(scores, wrong)
    return populations


def calibrate_gate(
    records: Sequence[FixRecords], model: IntegrityModel, threshold_m: float, min_route_m: float,
    alpha: float = DEFAULT_FALSE_FIX_RATE, delta: float = DEFAULT_DELTA,
) -> tuple[IntegrityModel, LttChoice]:
    """Step 2 on the calibration maps' records: the model with the Learn-then-Test threshold."""
    choice = learn_then_test(gate_populations(records, model, threshold_m, min_route_m), alpha, delta)
    threshold = min(1.0, choice.threshold)  # +inf (nothing passes) -> 1: a probability never exceeds it
    return IntegrityModel(dict(model.weights), model.bias, threshold, model.max_speed_mps, model.max_gap_s), choice
