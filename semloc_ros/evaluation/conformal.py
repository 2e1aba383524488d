"""A fix threshold with a guarantee: Learn-then-Test (Angelopoulos et al., 2021) on a descending grid.

A frame is published as a fix when its score is at least ``t``; its loss is 1 when it would be a *false fix*
(a fix on a frame whose place is not in the map, or a fix farther than the error bound from the truth), else
0. The risk ``R_p(t)`` of a population ``p`` (in-map frames, out-of-map frames) is the share of its frames with
loss 1. Given calibration frames exchangeable with the frames of use:

1. Grid: candidate thresholds in descending order (fewest fixes first).
2. p-value of the null "``R_p(t) > alpha``" for each population: the binomial tail ``P(Binom(n_p, alpha) <=
   k_p(t))`` (``k_p``: false fixes among the ``n_p`` calibration frames at ``t``; exact for 0/1 losses).
   The null "some population's risk exceeds alpha" gets the largest of them (every population must reject).
3. Fixed-sequence testing: walk the grid while the p-value is at most ``delta``; the last threshold reached is
   chosen. The family-wise error is at most ``delta`` without correction, because the tests are ordered and
   testing stops at the first failure. With probability at least ``1 - delta`` over the calibration data, each
   population's false-fix rate at the chosen threshold is at most ``alpha``.
4. No threshold passes: ``+inf`` (publish no fix).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

DEFAULT_FALSE_FIX_RATE = 0.01
DEFAULT_DELTA = 0.1
DEFAULT_GRID_SIZE = 400


@dataclass(frozen=True)
class Population:
    """Calibration frames of one kind: their scores and whether each would be a false fix if accepted."""

    scores: np.ndarray
    false_if_accepted: np.ndarray

    def false_fixes(self, threshold: float) -> int:
        accepted = np.nan_to_num(np.asarray(self.scores, float), nan=-np.inf) >= threshold
        return int(np.sum(accepted & np.asarray(self.false_if_accepted, bool)))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class LttChoice:
    """The chosen threshold, the test's settings and the calibration false-fix counts per population."""

    threshold: float
    alpha: float
    delta: float
    p_value: float
    n_tested: int
    false_fixes: dict[str, int]
    n_frames: dict[str, int]


def binomial_p_value(false_fixes: int, n: int, alpha: float) -> float:
    """Step 2: ``P(Binom(n, alpha) <= false_fixes)``, the p-value of "the false-fix rate exceeds alpha"."""
    if n == 0:
        return 1.0
    return float(binom.cdf(false_fixes, n, alpha))


def threshold_grid(populations: Mapping[str, Population], size: int = DEFAULT_GRID_SIZE) -> np.ndarray:
    """Step 1: up to ``size`` distinct quantiles of all finite calibration scores, descending."""
    scores = np.concatenate([np.asarray(p.scores, float) for p in populations.values()])
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return np.zeros(0)
    grid = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, size), method="inverted_cdf"))
    return grid[::-1]


def learn_then_test(
    populations: Mapping[str, Population],
    alpha: float = DEFAULT_FALSE_FIX_RATE,
    delta: float = DEFAULT_DELTA,
    grid: np.ndarray | None = None,
) -> LttChoice:
    """Steps 1-4: the lowest threshold of the descending grid reached by fixed-sequence testing."""
    if not 0.0 < alpha < 1.0 or not 0.0 < delta < 1.0:
        raise ValueError(f"alpha and delta must be in (0, 1), got {alpha!r} and {delta!r}")
    if not populations or any(len(p) == 0 for p in populations.values()):
        raise ValueError("every population needs calibration frames")
    grid = threshold_grid(populations) if grid is None else np.sort(np.asarray(grid, float))[::-1]
    chosen, chosen_p, tested = math.inf, math.nan, 0
    for threshold in grid:
        tested += 1
        p_value = max(binomial_p_value(p.false_fixes(threshold), len(p), alpha) for p in populations.values())
        if p_value > delta:
            break
        chosen, chosen_p = float(threshold), p_value
    return LttChoice(
        threshold=chosen,
        alpha=alpha,
        delta=delta,
        p_value=chosen_p,
        n_tested=tested,
        false_fixes={name: p.false_fixes(chosen) for name, p in populations.items()},
        n_frames={name: len(p) for name, p in populations.items()},
    )


def rates(population: Population, correct: np.ndarray, threshold: float) -> dict[str, float]:
    """False-fix rate (share of all frames) and kept-fix rate (share of the ``correct`` frames still fixed)."""
    accepted = np.nan_to_num(np.asarray(population.scores, float), nan=-np.inf) >= threshold
    correct = np.asarray(correct, bool)
    n = len(population)
    return {
        "n_frames": n,
        "false_fix_rate": population.false_fixes(threshold) / n if n else math.nan,
        "kept_fix_rate": float(np.sum(accepted & correct) / correct.sum()) if correct.any() else math.nan,
        "fix_rate": float(np.mean(accepted)) if n else math.nan,
    }
