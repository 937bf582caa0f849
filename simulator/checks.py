"""Argument checks for the Python API: the frozen specs' ``__post_init__`` and the entry points (``simulate``,
``whatif``, ``sweep``, the planner) refuse nonsense with the package's own error, naming the argument and
what it expects, instead of computing with it (a NaN rate would never come due; a negative batch gives a
negative throughput) or failing deep inside with a bare ``ZeroDivisionError``.

The file readers and CLI flags check the same values first, with the file, key or flag in the message; these
checks guard what the API lets a caller build directly (``dataclasses.replace(traffic, rate_per_s=...)``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from .errors import SimulatorError


def whole(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise SimulatorError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise SimulatorError(f"{name}: expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SimulatorError(f"{name}: expected an integer <= {maximum}, got {value}")
    return value


def real(name: str, value, minimum: float | None = None, maximum: float | None = None, *, above: bool = False,
         infinite: bool = False) -> float:
    """A real number (not a bool, not NaN; +inf only with ``infinite``) >= ``minimum`` (> with ``above``) and
    <= ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SimulatorError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if value != value or (math.isinf(value) and not (infinite and value > 0)):
        raise SimulatorError(f"{name}: expected a finite number, got {value}")
    if minimum is not None and (value < minimum or (above and value == minimum)):
        raise SimulatorError(f"{name}: expected a number {'>' if above else '>='} {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise SimulatorError(f"{name}: expected a number <= {maximum:g}, got {value:g}")
    return value


def choice(name: str, value, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise SimulatorError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def names(name: str, value) -> list[str]:
    """A list (or tuple) of names; a bare string is refused, not iterated letter by letter."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SimulatorError(f"{name}: expected a list of names, got {value!r}")
    if not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise SimulatorError(f"{name}: expected a non-empty list of non-empty names, got {value!r}")
    return list(value)


__all__ = ["choice", "names", "real", "whole"]
