"""Counters and latency statistics of one processing stage (ROS-free; reported as diagnostics by nodes)."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class StageStats:
    """What a stage received, processed and rejected, and how long processing took."""

    window: int = 200
    received: int = 0
    processed: int = 0
    errors: Counter = field(default_factory=Counter)
    last_error: str = ""
    last_error_time: float = float("-inf")
    warnings: Counter = field(default_factory=Counter)
    last_warning: str = ""
    last_warning_time: float = float("-inf")
    dropped: int = 0
    _latencies_s: deque = field(init=False)

    def __post_init__(self) -> None:
        self._latencies_s = deque(maxlen=self.window)

    def record_received(self) -> None:
        self.received += 1

    def record_processed(self, latency_s: float) -> None:
        self.processed += 1
        self._latencies_s.append(latency_s)

    def record_error(self, kind: str, message: str) -> None:
        """Count a rejected input or failure of category ``kind``."""
        self.errors[kind] += 1
        self.last_error = f"{kind}: {message}"
        self.last_error_time = time.monotonic()

    def record_warning(self, kind: str, message: str) -> None:
        """Count an input that was processed but is suspect (e.g. out-of-order stamp, downscaled image)."""
        self.warnings[kind] += 1
        self.last_warning = f"{kind}: {message}"
        self.last_warning_time = time.monotonic()

    def record_dropped(self, count: int) -> None:
        """Count inputs lost before they reached the stage (gaps in the publisher's sequence numbers)."""
        self.dropped += int(count)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def seconds_since_error(self) -> float:
        return time.monotonic() - self.last_error_time

    def seconds_since_warning(self) -> float:
        return time.monotonic() - self.last_warning_time

    def latency_percentiles_ms(self) -> dict[str, float]:
        """Median, 95th percentile and maximum of the recent processing latencies, in milliseconds."""
        if not self._latencies_s:
            return {}
        values = np.asarray(self._latencies_s) * 1000.0
        return {
            "p50_ms": float(np.percentile(values, 50)),
            "p95_ms": float(np.percentile(values, 95)),
            "max_ms": float(values.max()),
        }

    def as_key_values(self) -> dict[str, str]:
        """Flat string mapping for a diagnostic_msgs/DiagnosticStatus."""
        values = {"received": str(self.received), "processed": str(self.processed),
                  "errors": str(self.error_count), "dropped": str(self.dropped)}
        values.update({f"errors.{kind}": str(count) for kind, count in sorted(self.errors.items())})
        values.update({f"warnings.{kind}": str(count) for kind, count in sorted(self.warnings.items())})
        values.update({f"latency.{k}": f"{v:.1f}" for k, v in self.latency_percentiles_ms().items()})
        if self.last_error:
            values["last_error"] = self.last_error
        if self.last_warning:
            values["last_warning"] = self.last_warning
        return values


MAX_STAMP_JUMP_S = 60.0  # a stamp this far from the newest one is not a reordering but a clock jump or a bad stamp


class SequenceMonitor:
    """Detects inputs lost in transport and out-of-order, repeated or implausible stamps (ROS-free).

    ``lost(publisher, sequence_number)`` returns how many messages of that publisher were skipped since its
    previous one (a depth-1 best-effort subscription drops old frames by design: this measures it).
    ``stamp_order(stamp_ns)`` returns ``"duplicate"``, ``"out_of_order"``, ``"jump"`` or ``None`` against the
    newest stamp seen; it never reorders or drops anything itself:

    1. a stamp within ``max_jump_s`` of the newest is compared with it (newer: it becomes the newest);
    2. a stamp farther away (far future or far past, e.g. one frame stamped 2^31 s) is a ``"jump"``, counted once:
       the reference re-anchors on it, remembering the one before;
    3. if the next stamp is back near the remembered reference (the jump was one bad stamp), the reference
       returns there without counting again; otherwise the new clock stands.
    """

    def __init__(self, max_jump_s: float = MAX_STAMP_JUMP_S) -> None:
        self._last_sequence: dict[object, int] = {}
        self.newest_stamp_ns: int | None = None
        self._max_jump_ns = int(max_jump_s * 1e9)
        self._before_jump_ns: int | None = None

    def lost(self, publisher: object, sequence_number: int | None) -> int:
        if sequence_number is None or sequence_number <= 0:
            return 0
        previous = self._last_sequence.get(publisher)
        self._last_sequence[publisher] = sequence_number
        if previous is None or sequence_number <= previous:  # first message, or the publisher restarted
            return 0
        return sequence_number - previous - 1

    def stamp_order(self, stamp_ns: int) -> str | None:
        newest, before_jump = self.newest_stamp_ns, self._before_jump_ns
        self._before_jump_ns = None
        if newest is None:
            self.newest_stamp_ns = stamp_ns
            return None
        if abs(stamp_ns - newest) > self._max_jump_ns:
            if before_jump is not None and abs(stamp_ns - before_jump) <= self._max_jump_ns:
                newest = before_jump  # step 3: back from a single bad stamp
            else:
                self._before_jump_ns, self.newest_stamp_ns = newest, stamp_ns  # step 2
                return "jump"
        if stamp_ns > newest:  # step 1
            self.newest_stamp_ns = stamp_ns
            return None
        self.newest_stamp_ns = newest
        return "duplicate" if stamp_ns == newest else "out_of_order"
