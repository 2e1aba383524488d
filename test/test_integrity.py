"""Tests of the integrity score (semloc_ros.core.integrity) and its fit (semloc_ros.evaluation.integrity_fit)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semloc_ros.core.integrity import NEUTRAL_JUMP, IntegrityModel, IntegrityMonitor, estimate_cues
from semloc_ros.evaluation.integrity_fit import fit_logistic

SECOND_NS = 1_000_000_000


def test_cues_of_one_estimate():
    cues = estimate_cues([0.95, 0.9, 0.5], [True, True, False], [0.8, 0.6, 0.9], 0.7, off_map=0.2)
    assert cues == {"best_cosine": 0.95, "confidence": 0.7, "alignment": 0.8, "agreeing_share": pytest.approx(2 / 3),
                    "off_map": 0.2}
    assert estimate_cues([0.9], [True], [math.nan], 0.5)["alignment"] == 0.0  # not re-ranked


def test_jump_flags_an_estimate_farther_than_the_vehicle_can_travel():
    monitor = IntegrityMonitor(IntegrityModel(max_speed_mps=25.0, max_gap_s=1.0))
    assert monitor.jump(0, 0.0, 0.0) == NEUTRAL_JUMP  # first estimate
    assert monitor.jump(SECOND_NS // 5, 4.0, 0.0) == 0.0  # 4 m in 0.2 s: possible
    assert monitor.jump(2 * SECOND_NS // 5, 304.0, 0.0) == pytest.approx(math.log1p(295.0 / 10.0))
    assert monitor.jump(5 * SECOND_NS, 0.0, 0.0) == NEUTRAL_JUMP  # after a gap nothing is known


def test_logistic_fit_separates_and_the_gate_uses_the_threshold():
    rng = np.random.default_rng(0)
    right = rng.random(2000) < 0.5
    cosine = np.where(right, rng.normal(0.97, 0.01, 2000), rng.normal(0.94, 0.01, 2000))
    noise = rng.standard_normal(2000)
    weights, bias = fit_logistic(np.column_stack([cosine, noise]), right)
    assert weights[0] > 100 and abs(weights[1]) < 0.3 * abs(weights[0]) * 0.01
    model = IntegrityModel({"best_cosine": float(weights[0])}, bias, threshold=0.9).validate()
    scores = model.score({"best_cosine": cosine})
    assert np.mean(scores[right] > 0.5) > 0.85 and np.mean(scores[~right] < 0.5) > 0.85
    monitor = IntegrityMonitor(model)
    assert monitor.passes(0.95) and not monitor.passes(0.5)
    assert monitor.passes(float("nan"))  # no score (a cue missing): not gated
    with pytest.raises(ValueError, match="unknown cue"):
        IntegrityModel({"colour": 1.0}).validate()
