"""Value checks shared by configuration dataclasses; each raises ValueError naming the field."""

from __future__ import annotations

import math

import numpy as np


def is_finite_real(value: object) -> bool:
    """A finite int or float (numpy scalars included), not a bool."""
    return (isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
            and math.isfinite(value))


def require_int_in(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def require_positive(**values: object) -> None:
    for name, value in values.items():
        if not is_finite_real(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def require_non_negative(**values: object) -> None:
    for name, value in values.items():
        if not is_finite_real(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def require_in(name: str, value: object, low: float, high: float, *, open_interval: bool = False,
               what: str = "") -> None:
    """``low <= value <= high`` (``low < value < high`` with ``open_interval``)."""
    inside = is_finite_real(value) and (low < value < high if open_interval else low <= value <= high)
    if not inside:
        interval = f"({low:g}, {high:g})" if open_interval else f"[{low:g}, {high:g}]"
        raise ValueError(f"{name} must be {what + ' ' if what else ''}in {interval}, got {value!r}")
