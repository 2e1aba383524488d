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

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def seconds_since_error(self) -> float:
        return time.monotonic() - self.last_error_time

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
                  "errors": str(self.error_count)}
        values.update({f"errors.{kind}": str(count) for kind, count in sorted(self.errors.items())})
        values.update({f"latency.{k}": f"{v:.1f}" for k, v in self.latency_percentiles_ms().items()})
        if self.last_error:
            values["last_error"] = self.last_error
        return values
