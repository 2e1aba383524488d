"""Tests of the Learn-then-Test fix threshold (semloc_ros.evaluation.conformal)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semloc_ros.evaluation.conformal import Population, binomial_p_value, learn_then_test, rates


def _frames(rng: np.random.Generator, n: int, wrong_share: float) -> tuple[Population, np.ndarray]:
    """Frames whose score is higher when right: right ~ N(2, 1), wrong ~ N(0, 1)."""
    wrong = rng.random(n) < wrong_share
    scores = np.where(wrong, rng.normal(0.0, 1.0, n), rng.normal(2.0, 1.0, n))
    return Population(scores, wrong), ~wrong


def test_binomial_p_value_is_the_lower_tail():
    assert binomial_p_value(0, 300, 0.01) == pytest.approx(0.99**300)
    assert binomial_p_value(3, 300, 0.01) > binomial_p_value(0, 300, 0.01)
    assert binomial_p_value(0, 0, 0.01) == 1.0


def test_chosen_threshold_controls_the_false_fix_rate_on_new_frames():
    rng = np.random.default_rng(0)
    violations = 0
    for _ in range(40):
        in_map, _ = _frames(rng, 800, 0.3)
        off_map = Population(rng.normal(0.0, 1.0, 400), np.ones(400, bool))  # every fix off the map is false
        choice = learn_then_test({"in_map": in_map, "off_map": off_map}, alpha=0.05, delta=0.1)
        test_in, correct = _frames(rng, 20000, 0.3)
        test_off = Population(rng.normal(0.0, 1.0, 20000), np.ones(20000, bool))
        worst = max(rates(test_in, correct, choice.threshold)["false_fix_rate"],
                    rates(test_off, np.zeros(20000, bool), choice.threshold)["false_fix_rate"])
        violations += worst > 0.05
        assert rates(test_in, correct, choice.threshold)["kept_fix_rate"] > 0.3  # not "reject everything"
    assert violations <= 0.1 * 40 + 2  # delta = 0.1 (+ slack for 40 draws)


def test_the_largest_population_risk_decides_and_nothing_passing_rejects_all():
    rng = np.random.default_rng(1)
    in_map, _ = _frames(rng, 1000, 0.1)
    easy = learn_then_test({"in_map": in_map}, alpha=0.05)
    off_map = Population(rng.normal(3.0, 1.0, 1000), np.ones(1000, bool))  # out-of-map frames look right
    both = learn_then_test({"in_map": in_map, "off_map": off_map}, alpha=0.05)
    assert both.threshold > easy.threshold
    hopeless = learn_then_test({"off_map": Population(np.ones(50), np.ones(50, bool))}, alpha=0.01)
    assert hopeless.threshold == math.inf and hopeless.false_fixes == {"off_map": 0}
    with pytest.raises(ValueError):
        learn_then_test({"in_map": in_map}, alpha=0.0)
