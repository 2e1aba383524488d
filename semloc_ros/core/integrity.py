"""Integrity of a fix: how likely a position estimate is at the right place, from cues that disagree when it is not.

A wrong fix (another place that looks alike, or a frame off the map) is confident by construction, so its own
confidence does not reveal it. What does:

1. Cues of one estimate (:func:`estimate_cues`):
   - ``best_cosine``: the best descriptor similarity (low off the map);
   - ``confidence``: the estimate's confidence (share of the weight that agrees x margin over the best
     disagreeing place; the filter's posterior mass when filtered);
   - ``alignment``: the label-image agreement of the best agreeing match after re-ranking (0 without it);
   - ``agreeing_share``: the share of the top-k matches that agree (top-k consistency);
   - ``off_map``: the sequence filter's off-map mass (0 without it).
2. Consecutive-fix consistency (:class:`IntegrityMonitor`): ``jump`` = how far the estimate lies beyond the
   travel possible since the previous estimate (``max_speed_mps`` x stamp difference), as
   ``log(1 + excess / 10 m)``; a first frame, or one after more than ``max_gap_s``, gets ``NEUTRAL_JUMP``.
3. Score: a logistic model ``p = 1 / (1 + exp(-(b + sum_j w_j f_j)))`` of the cues, fitted on training maps
   (:mod:`semloc_ros.evaluation.integrity_fit`): the probability that the estimate is a right fix.
4. Gate: a fix is published as such only when ``p`` reaches the threshold calibrated by Learn-then-Test
   (:mod:`semloc_ros.evaluation.conformal`) for a target false-fix rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from semloc_ros.core.settings import POSITIVE, Bounds, require

CUES = ("best_cosine", "confidence", "alignment", "agreeing_share", "off_map", "jump")
JUMP_SCALE_M = 10.0
NEUTRAL_JUMP = math.log1p(1.0)  # as if 10 m beyond the possible travel: no evidence either way


@dataclass(frozen=True)
class IntegrityModel:
    """Logistic weights per cue (step 3) and the gate threshold (step 4; 0 = every estimate passes)."""

    weights: Mapping[str, float] = field(default_factory=dict)
    bias: float = 0.0
    threshold: float = 0.0
    max_speed_mps: float = 25.0
    max_gap_s: float = 1.0

    def validate(self) -> IntegrityModel:
        """Raise ValueError naming the first invalid value; returns self."""
        unknown = sorted(set(self.weights) - set(CUES))
        if unknown:
            raise ValueError(f"integrity weights: unknown cue(s) {unknown}; known: {', '.join(CUES)}")
        for name, value in self.weights.items():
            require(f"integrity weight {name}", float(value), Bounds(-1e6, 1e6))
        require("integrity bias", self.bias, Bounds(-1e6, 1e6))
        require("integrity threshold", self.threshold, Bounds(0.0, 1.0))
        require("max_speed_mps", self.max_speed_mps, POSITIVE)
        require("max_gap_s", self.max_gap_s, POSITIVE)
        return self

    def score(self, cues: Mapping[str, float] | Mapping[str, np.ndarray]) -> float | np.ndarray:
        """Step 3: the probability of a right fix for one estimate's cues (or arrays of them)."""
        logit = self.bias + sum(weight * np.asarray(cues[name], float) for name, weight in self.weights.items())
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -700.0, 700.0)))


def agreeing_alignment(inliers: Sequence[bool], alignments: Sequence[float]) -> float:
    """The best re-ranking alignment among the agreeing matches (0 when none was re-ranked)."""
    values = np.asarray(alignments, float)[np.asarray(inliers, bool)]
    values = values[np.isfinite(values)]
    return float(values.max()) if len(values) else 0.0


def estimate_cues(
    cosines: Sequence[float], inliers: Sequence[bool], alignments: Sequence[float], confidence: float,
    off_map: float = 0.0,
) -> dict[str, float]:
    """Step 1 from the top-k matches (cosine, consensus membership, re-ranking alignment or NaN)."""
    cosines = np.asarray(cosines, float)
    inliers = np.asarray(inliers, bool)
    alignments = np.asarray(alignments, float)
    if not len(cosines):
        return {"best_cosine": -1.0, "confidence": 0.0, "alignment": 0.0, "agreeing_share": 0.0,
                "off_map": float(off_map)}
    return {
        "best_cosine": float(cosines.max()),
        "confidence": float(confidence),
        "alignment": agreeing_alignment(inliers, alignments),
        "agreeing_share": float(inliers.mean()),
        "off_map": float(off_map),
    }


class IntegrityMonitor:
    """Step 2 across consecutive estimates of one camera, and the score of each (steps 3-4)."""

    def __init__(self, model: IntegrityModel) -> None:
        self._model = model.validate()
        self._previous: tuple[int, float, float] | None = None

    @property
    def model(self) -> IntegrityModel:
        return self._model

    def reset(self) -> None:
        self._previous = None

    def continue_from(self, previous: IntegrityMonitor,
                      to_frame: Callable[[float, float], tuple[float, float]]) -> None:
        """Take over ``previous``'s last estimate for step 2, its east/north moved by ``to_frame`` into this
        monitor's frame (another database's)."""
        last = previous._previous
        self._previous = None if last is None else (last[0], *to_frame(last[1], last[2]))

    def jump(self, stamp_ns: int | None, east: float, north: float) -> float:
        """Step 2 for an estimate at ``stamp_ns`` (east/north in the database frame); remembers it."""
        previous, self._previous = self._previous, None
        if stamp_ns is None or not (math.isfinite(east) and math.isfinite(north)):
            return NEUTRAL_JUMP
        self._previous = (int(stamp_ns), float(east), float(north))
        if previous is None:
            return NEUTRAL_JUMP
        dt_s = (int(stamp_ns) - previous[0]) * 1e-9
        if not 0.0 <= dt_s <= self._model.max_gap_s:
            return NEUTRAL_JUMP
        excess = math.hypot(east - previous[1], north - previous[2]) - self._model.max_speed_mps * dt_s
        return math.log1p(max(0.0, excess) / JUMP_SCALE_M)

    def assess(self, cues: Mapping[str, float], stamp_ns: int | None, east: float, north: float) -> float:
        """The score of one estimate (its cues of step 1 plus the jump of step 2)."""
        return float(self._model.score({**cues, "jump": self.jump(stamp_ns, east, north)}))

    def passes(self, score: float) -> bool:
        """Step 4 (an estimate without a score, NaN, is not gated)."""
        return not score < self._model.threshold
