"""Pieces shared by the trainers: seeding, time-budgeted cosine schedule, size-aware checkpoint writing."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_FP32_BYTES = 15 * 1024 * 1024  # larger checkpoints are stored as float16 (loaded back as float32)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a CPU generator for the augmentations."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@dataclass
class Budget:
    """Training length: ``steps`` if given (reproducible), else wall-clock ``minutes`` from ``start``."""

    minutes: float
    steps: int | None = None
    start: float = field(default_factory=time.monotonic)
    step: int = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def fraction(self) -> float:
        """Progress in [0, 1] (by steps when fixed, else by time)."""
        if self.steps:
            return min(1.0, self.step / self.steps)
        return min(1.0, self.elapsed() / max(1e-9, self.minutes * 60.0))

    def done(self) -> bool:
        return self.fraction() >= 1.0


def cosine_lr(fraction: float, peak: float, warmup: float = 0.05, final: float = 0.02) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` of training, then cosine decay to ``final * peak``."""
    if fraction < warmup:
        return peak * (0.1 + 0.9 * fraction / warmup)
    t = (fraction - warmup) / max(1e-9, 1.0 - warmup)
    return peak * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t))))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def save_size_aware(save: Callable[..., dict[str, Any]], path: Path, **meta: Any) -> dict[str, Any]:
    """Save in float32; re-save in float16 when the file exceeds ``MAX_FP32_BYTES``."""
    stored = save(path, half=False, **meta)
    if path.stat().st_size > MAX_FP32_BYTES:
        stored = save(path, half=True, **meta)
    return stored


def plain(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> python types (weights_only-loadable metadata)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
