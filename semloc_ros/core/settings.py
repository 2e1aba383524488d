"""Configuration dataclasses described once: every field carries its help text and valid range as metadata.

From that one description come

1. the validation (:func:`validate`): a bool must be a bool, an int an integer, a float a finite number (NaN and
   infinity are refused unless the field allows them), each within its :class:`Bounds`;
2. the flat parameter names (:func:`flat_fields`): a field holding another configuration dataclass contributes
   its own fields with the prefix ``<field>_`` (``LocalizerConfig.filter.temperature`` is the parameter
   ``filter_temperature``), so the nodes declare ROS parameters from the dataclass and a parameter file maps back
   onto it (:func:`from_flat`, :func:`to_flat`, :func:`replace_flat`);
3. the parameter page docs/parameters.md (``scripts/parameter_table.py``, through the nodes' declarations).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """The valid values of a number: ``low``/``high`` (None: unbounded), each end closed unless ``*_open``.

    Used as a check: ``bounds(value)`` is None when the value is valid, else the reason (``"must be ..."``).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    allow_nonfinite: bool = False  # NaN and infinities pass (a float meaning "unknown" or "unlimited")

    @property
    def text(self) -> str:
        """``[0, 1]``, ``(0, 1)``, ``> 0``, ``>= 0``, ``<= 5`` or ``any`` (finite unless it allows otherwise)."""
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "any"

    def __call__(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return None if self.allow_nonfinite else f"must be a finite number ({self.text}), got {value!r}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if below or above:
            interval = self.low is not None and self.high is not None
            return f"must be {'in ' if interval else ''}{self.text}, got {value!r}"
        return None


@dataclass(frozen=True)
class Each:
    """The valid values of a fixed-length array of numbers (a ROS double array): ``length`` values, each within
    ``bounds``; used as a check like :class:`Bounds`."""

    length: int
    bounds: Bounds

    @property
    def text(self) -> str:
        return f"{self.length} values, each {self.bounds.text}"

    def __call__(self, value: Any) -> str | None:
        if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != self.length:
            return f"must be {self.length} numbers, got {value!r}"
        for item in value:
            reason = self.bounds(item)
            if reason is not None:
                return f"must be {self.text}: {reason}"
        return None


POSITIVE = Bounds(0.0, low_open=True)
NON_NEGATIVE = Bounds(0.0)
FRACTION = Bounds(0.0, 1.0)


def setting(default: Any, help: str, bounds: Bounds | Each | None = None) -> Any:
    """A dataclass field with its help text and (numbers) its valid range."""
    return dataclasses.field(default=default, metadata={"help": help, "bounds": bounds})


def section(help: str) -> dict[str, Any]:
    """Metadata of a field holding another configuration dataclass (its parameters: ``<field>_<its field>``):
    ``filter: FilterConfig = field(default_factory=FilterConfig, metadata=section("..."))``."""
    return {"help": help, "section": True}


@dataclass(frozen=True)
class FlatField:
    """One parameter of a configuration: flat name, default, help, valid range and the path to the field."""

    name: str
    default: Any
    help: str
    bounds: Bounds | Each | None
    path: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        """None if ``value`` is valid for this parameter, else the reason (``"must be ..."``)."""
        kind = type(self.default)
        if kind is bool:
            return None if isinstance(value, bool | np.bool_) else f"must be true or false, got {value!r}"
        if kind is str:
            return None if isinstance(value, str) else f"must be a string, got {value!r}"
        if kind is int and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
            return f"must be an integer, got {value!r}"
        return (self.bounds or Bounds())(value)


def flat_fields(config: type | object, prefix: str = "", path: tuple[str, ...] = ()) -> list[FlatField]:
    """The parameters of a configuration dataclass (class or instance: defaults from the class), in field order."""
    cls = config if isinstance(config, type) else type(config)
    fields: list[FlatField] = []
    for field in dataclasses.fields(cls):
        if field.metadata.get("section"):
            fields += flat_fields(field.default_factory, f"{prefix}{field.name}_", (*path, field.name))
        elif "help" in field.metadata:
            fields.append(FlatField(f"{prefix}{field.name}", field.default, field.metadata["help"],
                                    field.metadata["bounds"], (*path, field.name)))
    return fields


def _get(config: object, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def to_flat(config: object) -> dict[str, Any]:
    """``{parameter name: value}`` of a configuration instance (an array as a list, as ROS and YAML hold it)."""
    values = {field.name: _get(config, field.path) for field in flat_fields(config)}
    return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


def replace_flat(config: T, values: Mapping[str, Any]) -> T:
    """A copy of ``config`` with the named parameters replaced (ValueError for an unknown name)."""
    fields = {field.name: field for field in flat_fields(config)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    nested: dict[str, Any] = {}
    for name, value in values.items():
        path = fields[name].path
        if isinstance(value, int) and not isinstance(value, bool) and type(fields[name].default) is float:
            value = float(value)  # 1 in a YAML file or on the command line means 1.0 for a float parameter
        if type(fields[name].default) is tuple and not isinstance(value, str | bytes) and hasattr(value, "__len__"):
            value = tuple(float(v) for v in value)  # a YAML list or a ROS double array
        target = nested
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return _replace_nested(config, nested)


def _replace_nested(config: T, changes: dict[str, Any]) -> T:
    return dataclasses.replace(config, **{
        name: _replace_nested(getattr(config, name), value) if isinstance(value, dict) else value
        for name, value in changes.items()
    })


def from_flat(cls: type[T], values: Mapping[str, Any]) -> T:
    """A configuration from flat parameters; parameters not given keep their defaults."""
    return replace_flat(cls(), values)


def validate(config: object) -> None:
    """Raise ValueError ``"<parameter> must ..."`` naming the first invalid parameter of ``config``."""
    for field in flat_fields(config):
        reason = field.problem(_get(config, field.path))
        if reason is not None:
            raise ValueError(f"{field.name} {reason}")


def require(name: str, value: Any, bounds: Bounds) -> None:
    """Raise ValueError ``"<name> must ..."`` unless ``value`` is a number within ``bounds``."""
    reason = bounds(value)
    if reason is not None:
        raise ValueError(f"{name} {reason}")
