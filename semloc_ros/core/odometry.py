"""Distance travelled between two stamps, from odometry positions (the sequence filter's measured displacement).

An :class:`OdometryTrack` keeps the recent positions of the vehicle in the odometry frame (stamp in ns, x, y; e.g.
nav_msgs/Odometry from wheel encoders, a VIO or robot_localization's ``odom`` EKF):

1. Add a sample: a non-finite position is refused (the track is unchanged); a stamp equal to the newest replaces
   nothing and is ignored; a stamp older than the newest (a replayed bag, a restarted odometry source) clears the
   track, which starts again from that sample.
2. Forget: samples older than ``horizon_s`` before the newest are dropped, and never more than
   :data:`MAX_SAMPLES` are kept (the oldest go first), so memory stays bounded whatever the rate.
3. Travel between stamps ``a <= b``: covered when a sample at or before ``a`` and one at or after ``b`` are kept
   and no two consecutive samples between those are more than ``max_gap_s`` apart; otherwise there is no answer
   (too old, not yet arrived, or a gap), and :meth:`OdometryTrack.coverage_problem` says which.
4. The travel is the path length: the horizontal distance from the position at ``a`` (linearly interpolated
   between the two samples around it) through every sample strictly between ``a`` and ``b`` to the position at
   ``b`` (interpolated likewise). A stopped vehicle travels 0 m; a turn counts its arc, not the chord.

The positions are used as given: a noisy odometry position (jitter while standing) adds its noise to the travel,
so feed a smooth estimate (wheel odometry, an EKF's output).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from itertools import pairwise

from semloc_ros.core import settings
from semloc_ros.core.settings import Bounds, setting

MAX_SAMPLES = 100_000  # step 2: hard cap (10 s of a 10 kHz source), whatever the horizon


@dataclass(frozen=True)
class OdometryConfig:
    """What an :class:`OdometryTrack` keeps and when it answers (the localizer node's ``odometry_*``)."""

    max_gap_s: float = setting(0.5, "odometry samples further apart than this leave the interval between them "
                               "uncovered (that frame falls back to the speed estimate)",
                               Bounds(0.0, 60.0, low_open=True))
    horizon_s: float = setting(10.0, "odometry kept before the newest sample; must exceed the time between "
                               "descriptors", Bounds(0.0, 3600.0, low_open=True))

    def validate(self) -> OdometryConfig:
        settings.validate(self)
        return self


@dataclass(frozen=True)
class TrackNotice:
    """What happened to a sample that was not simply kept (step 1): ``kind`` names it for diagnostics."""

    kind: str
    text: str
    refused: bool  # True: the sample was not kept


class OdometryTrack:
    """Recent odometry positions (see the module docstring); answers the path length between two stamps."""

    def __init__(self, config: OdometryConfig | None = None) -> None:
        self.config = (config if config is not None else OdometryConfig()).validate()
        self._stamps: list[int] = []
        self._xy: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._xy.clear()

    def add(self, stamp_ns: int, x: float, y: float) -> TrackNotice | None:
        """Keep a sample (step 1); None when it was kept (or repeated the newest), else what happened to it."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return TrackNotice("odometry_not_finite",
                               f"odometry position ({x}, {y}) at {stamp_ns} ns is not finite: ignored", refused=True)
        newest = self.newest_ns
        if newest is not None and stamp_ns == newest:
            return None  # a repeated sample: nothing new
        outcome = None
        if newest is not None and stamp_ns < newest:
            outcome = TrackNotice("odometry_backwards", f"odometry stamp {stamp_ns} ns is older than the newest "
                                  f"{newest} ns: the odometry track starts again from it", refused=False)
            self.clear()
        self._stamps.append(int(stamp_ns))
        self._xy.append((float(x), float(y)))
        self._forget()
        return outcome

    def _forget(self) -> None:
        """Step 2: drop samples beyond the horizon or the cap."""
        oldest_kept = self._stamps[-1] - int(self.config.horizon_s * 1e9)
        drop = max(bisect.bisect_left(self._stamps, oldest_kept), len(self._stamps) - MAX_SAMPLES)
        if drop > 0:
            del self._stamps[:drop]
            del self._xy[:drop]

    def _bracket(self, a_ns: int, b_ns: int) -> tuple[int, int]:
        """Indices of the last sample at or before ``a`` and the first at or after ``b`` (may be out of range)."""
        return bisect.bisect_right(self._stamps, a_ns) - 1, bisect.bisect_left(self._stamps, b_ns)

    def coverage_problem(self, a_ns: int, b_ns: int) -> str | None:
        """Why the track does not cover ``[a, b]`` (step 3), or None when it does."""
        if b_ns < a_ns:
            return f"interval [{a_ns}, {b_ns}] ns goes backwards"
        if not self._stamps:
            return "no odometry received"
        first, last = self._bracket(a_ns, b_ns)
        if first < 0:
            return f"odometry starts at {self._stamps[0]} ns, after {a_ns} ns (too old or not yet received)"
        if last >= len(self._stamps):
            return f"odometry ends at {self._stamps[-1]} ns, before {b_ns} ns (not yet arrived)"
        widest_s = max((later - earlier for earlier, later in pairwise(self._stamps[first:last + 1])), default=0) * 1e-9
        if widest_s > self.config.max_gap_s:
            return f"a gap of {widest_s:.3f} s between odometry samples (limit {self.config.max_gap_s:g} s)"
        return None

    def travel(self, a_ns: int, b_ns: int) -> float | None:
        """Path length in metres from stamp ``a`` to stamp ``b`` (step 4); None when not covered (step 3)."""
        if self.coverage_problem(a_ns, b_ns) is not None:
            return None
        if a_ns == b_ns:
            return 0.0
        first, last = self._bracket(a_ns, b_ns)
        points = [self._position_at(a_ns, first), *self._xy[first + 1:last], self._position_at(b_ns, last - 1)]
        return sum(math.dist(p, q) for p, q in pairwise(points))

    def _position_at(self, stamp_ns: int, index: int) -> tuple[float, float]:
        """The position at ``stamp_ns``, interpolated between samples ``index`` and ``index + 1`` (step 4)."""
        if index + 1 >= len(self._stamps) or self._stamps[index] == stamp_ns:
            return self._xy[index]
        (t0, t1), (p0, p1) = self._stamps[index:index + 2], self._xy[index:index + 2]
        fraction = (stamp_ns - t0) / (t1 - t0)
        return (p0[0] + fraction * (p1[0] - p0[0]), p0[1] + fraction * (p1[1] - p0[1]))
