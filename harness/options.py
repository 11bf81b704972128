"""Typed, validated options for plugins.

A plugin declares its options as a tuple of :class:`Option`; users set them on
the command line as strings (``-o beta=0.5``) or in Python as values. The
host parses and checks every value here, so a plugin receives only values of
the declared type within the declared range, with defaults filled in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import UnknownNameError, UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def parse_float_list(text: str) -> tuple[float, ...]:
    parts = [p for p in text.replace(":", ",").split(",") if p.strip()]
    if not parts:
        raise ValueError("expected a comma-separated list of numbers, e.g. 1,2,3")
    return tuple(float(p) for p in parts)


_PARSERS: dict[type, Callable[[str], Any]] = {
    int: int,
    float: float,
    str: str,
    bool: parse_bool,
    tuple: parse_float_list,
}

_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool", tuple: "list of numbers"}

#: The largest integer an int option may hold, whatever its declared range: the leaderboard and numpy
#: store integers in 64 bits, so a larger one would fail later, mid-run, with a traceback.
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Option:
    """One setting of a plugin.

    ``type`` is one of int, float, str, bool, or tuple (a comma-separated list
    of floats). ``min``/``max`` bound numbers (and every element of a tuple);
    ``min_inclusive``/``max_inclusive`` say whether the bound itself is allowed.
    ``choices`` restricts a str. ``default`` may be None, meaning "unset".
    ``omit_at_default`` leaves the option out of a run's recorded config (and
    so of its config hash) while it holds its default: for an option added
    after runs were recorded, so that those runs keep their hash and a study
    or sweep resumed across the change finds them (:func:`recorded_settings`).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True
    omit_at_default: bool = False

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type, self.type.__name__)

    def range_text(self) -> str:
        """The allowed range in interval notation, e.g. ``(0, 1]``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.min is None and self.max is None:
            return ""
        low = "-inf" if self.min is None else _fmt(self.min)
        high = "inf" if self.max is None else _fmt(self.max)
        left = "[" if (self.min is not None and self.min_inclusive) else "("
        right = "]" if (self.max is not None and self.max_inclusive) else ")"
        return f"{left}{low}, {high}{right}"

    def coerce(self, value: Any, owner: str = "") -> Any:
        """Parse (if a string) and check ``value``; raise UsageError naming the fix."""
        label = f"option {self.name!r}" + (f" of {owner}" if owner else "")
        if value is None:
            return None
        try:
            if isinstance(value, str) and self.type is not str:
                value = _PARSERS[self.type](value)
            elif self.type is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
            elif self.type is tuple and isinstance(value, (list, tuple)):
                value = tuple(float(v) for v in value)
            elif self.type is int and isinstance(value, float) and value.is_integer():
                value = int(value)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{label} expects {self.type_name}, got {value!r} ({exc})") from None
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise UsageError(f"{label} expects {self.type_name}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{label} must be {self.range_text()}; got {value!r}")
        numbers = value if self.type is tuple else (value,) if self.type in (int, float) else ()
        for number in numbers:
            if not self._in_range(number):
                raise UsageError(f"{label} must be in {self.range_text()}; got {_fmt(number)}")
        if self.type is int and abs(value) > INT64_MAX:
            raise UsageError(f"{label} must fit a 64-bit integer (at most {INT64_MAX:,} in size); got {value}")
        return value

    def _in_range(self, number: float) -> bool:
        if isinstance(number, float) and not math.isfinite(number):
            return False
        if self.min is not None:
            if number < self.min or (number == self.min and not self.min_inclusive):
                return False
        if self.max is not None:
            if number > self.max or (number == self.max and not self.max_inclusive):
                return False
        return True


def resolve_options(
    specs: tuple[Option, ...], given: Mapping[str, Any] | None, owner: str
) -> dict[str, Any]:
    """Defaults for every declared option, overridden by ``given`` after checking.

    Unknown names raise :class:`UnknownNameError` listing close matches.
    """
    by_name = {spec.name: spec for spec in specs}
    values = {spec.name: spec.default for spec in specs}
    for name, raw in (given or {}).items():
        if name not in by_name:
            raise UnknownNameError(f"option of {owner}", name, by_name)
        values[name] = by_name[name].coerce(raw, owner)
    return values


def recorded_settings(specs: tuple[Option, ...], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as a run records them: without the ``omit_at_default`` options that hold their default.

    Building the component again from the recorded settings restores those
    defaults (:func:`resolve_options`), so nothing is lost.
    """
    omitted = {spec.name for spec in specs if spec.omit_at_default and settings.get(spec.name) == spec.default}
    return {name: value for name, value in settings.items() if name not in omitted}


def _fmt(number: float) -> str:
    if isinstance(number, float) and number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:g}"
