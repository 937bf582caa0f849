"""Units: SI base units inside the package; parsing of unit-bearing strings at the YAML edge.

GB means 1e9 bytes, GiB means 2**30 bytes. Bandwidths are bytes per second. Compute rates are
FLOP per second (OPS for integer formats are treated as the same dimension). Time is seconds.
"""

from __future__ import annotations

import math
import re

KB, MB, GB, TB = 1e3, 1e6, 1e9, 1e12
KiB, MiB, GiB, TiB = 2.0**10, 2.0**20, 2.0**30, 2.0**40
US, MS = 1e-6, 1e-3
TFLOPS = 1e12

# dimension name -> {unit spelling: factor to SI}
_UNITS: dict[str, dict[str, float]] = {
    "bytes": {
        "B": 1.0, "KB": KB, "MB": MB, "GB": GB, "TB": TB,
        "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
    },
    "bytes_per_s": {
        "B/s": 1.0, "KB/s": KB, "MB/s": MB, "GB/s": GB, "TB/s": TB,
        "GiB/s": GiB, "TiB/s": TiB, "Gb/s": GB / 8, "Gbps": GB / 8, "Tb/s": TB / 8,
    },
    "flop_per_s": {
        "FLOPS": 1.0, "GFLOPS": 1e9, "TFLOPS": 1e12, "PFLOPS": 1e15,
        "OPS": 1.0, "GOPS": 1e9, "TOPS": 1e12, "POPS": 1e15,
    },
    "s": {"s": 1.0, "ms": MS, "us": US, "µs": US, "ns": 1e-9, "min": 60.0, "h": 3600.0},
    "W": {"W": 1.0, "kW": 1e3},
    "Hz": {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9},
    "usd_per_s": {"USD/h": 1 / 3600, "USD/hour": 1 / 3600, "USD/s": 1.0},
    "usd": {"USD": 1.0},
    "count": {"": 1.0},
    "fraction": {"": 1.0, "%": 0.01},
}

# what each dimension is called in messages
DIMENSION_WORDS = {"bytes": "size", "bytes_per_s": "bandwidth", "flop_per_s": "compute rate", "s": "duration",
                   "W": "power", "Hz": "frequency", "usd_per_s": "price per hour", "usd": "amount in USD",
                   "count": "count", "fraction": "fraction"}

# an example of each dimension as a spec file writes it (every one parses: tests/test_units.py)
DIMENSION_EXAMPLES = {"bytes": "80 GB", "bytes_per_s": "3.35 TB/s", "flop_per_s": "989 TFLOPS", "s": "50 ms",
                      "W": "700 W", "Hz": "1.98 GHz", "usd_per_s": "2.5 USD/h", "usd": "25000 USD"}


def described(dimension: str, accepted: str = "") -> str:
    """A dimension in words, with its accepted range when given and an example: ``a bandwidth > 0 such as
    '3.35 TB/s'``."""
    word = DIMENSION_WORDS.get(dimension, dimension) + (f" {accepted}" if accepted else "")
    example = DIMENSION_EXAMPLES.get(dimension)
    article = "an" if word[:1] in "aeiou" else "a"
    return f"{article} {word} such as {example!r}" if example else f"{article} {word}"


_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


class UnitError(ValueError):
    """A value does not carry a unit of the expected dimension."""


def parse_quantity(value: object, dimension: str) -> float:
    """Parse ``"3.35 TB/s"`` (or a bare number where the dimension is unitless) into SI units.

    Raises UnitError naming what was expected when the unit is missing or of the wrong dimension.
    """
    units = _UNITS[dimension]
    word = DIMENSION_WORDS.get(dimension, dimension)
    if isinstance(value, bool):
        raise UnitError(f"expected {described(dimension)}, got {value!r}")
    if isinstance(value, (int, float)):
        if "" in units:
            return float(value) * units[""]
        raise UnitError(f"expected {described(dimension)} (a number with a unit: {', '.join(sorted(units))}), "
                        f"got the bare number {value!r}")
    if not isinstance(value, str):
        raise UnitError(f"expected {described(dimension)}, got {type(value).__name__}")
    m = _QUANTITY.match(value)
    if not m:
        raise UnitError(f"cannot read {value!r} as a number with a unit")
    number, unit = float(m.group(1)), m.group(2)
    if unit not in units:
        allowed = ", ".join(u for u in units if u) or "no unit"
        raise UnitError(f"unit {unit or '(none)'!r} in {value!r} is not a unit of {word} (use {allowed})")
    return number * units[unit]


def format_si(value: float, unit: str, digits: int = 3) -> str:
    """Render a value with an SI prefix, e.g. format_si(3.35e12, 'B/s') -> '3.35 TB/s'."""
    if value == 0 or value != value:
        return f"{value:g} {unit}"
    for prefix, factor in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0),
                           ("m", 1e-3), ("µ", 1e-6), ("n", 1e-9)):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def format_ms(seconds: float) -> str:
    """A latency or latency target in milliseconds for messages: one decimal from 1 ms up ("48.7 ms"), three
    significant digits below ("0.25 ms", "0.001 ms"), so a small target never reads "0.0 ms"."""
    ms = seconds * 1e3
    return f"{ms:.1f} ms" if abs(ms) >= 1 else f"{ms:.3g} ms"


def format_slo_targets(percentile: float, ttft_s: float | None, tpot_s: float | None) -> str:
    """``p90 TTFT <= 500.0 ms and p90 TPOT <= 5.0 ms``: the latency targets that are set (a None or infinite one is
    not a target and is left out), as the plan report and recommended.yaml word them."""
    return " and ".join(f"p{percentile:g} {name} <= {format_ms(v)}" for name, v in (("TTFT", ttft_s), ("TPOT", tpot_s))
                        if v is not None and math.isfinite(v))


def format_duration_arg(seconds: float) -> str:
    """A duration as the tool writes it into a command line or a YAML field it may read again: milliseconds
    with the unit ("50ms", "0.25ms"), in the fewest digits that ``parse_duration_s`` reads back to the same
    float (seconds written out in full where no millisecond spelling does). Only a finite duration >= 0 has one."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UnitError(f"expected a finite duration >= 0 (s) to write out, got {seconds!r}")
    for digits in range(6, 18):
        text = f"{seconds / MS:.{digits}g}ms"
        if parse_duration_s(text) == seconds:
            return text
    return f"{seconds!r}s"


_RATE_UNITS = {"/s": 1.0, "/min": 1 / 60.0, "/h": 1 / 3600.0, "rps": 1.0, "qps": 1.0}

# The simulator keeps time in float64 seconds, whose resolution at time t is about t x 2.2e-16: 0.2 us at 1e9 s
# (31.7 years), still fine for the microsecond step times; at 1e300 s it is 1e284 s and every latency reads 0.
# So arrival times are refused above MAX_ARRIVAL_S, and arrival rates below MIN_RATE_PER_S (one request in about
# 11.6 days), at which a run of a thousand requests already spans 1e9 s. No real workload comes near either.
MIN_RATE_PER_S = 1e-6
# and above MAX_RATE_PER_S: ten million requests a second is far beyond any one service's traffic, and a sweep or a
# plan sized for more would count fleets of billions of devices (a typo in the unit, e.g. a rate per hour given
# per second, is the likely cause)
MAX_RATE_PER_S = 1e7
MAX_ARRIVAL_S = 1e9  # (messages spell both out, as 1e-6/s and 1e9 s: keep them in step)
RATE_RANGE = ("a rate of at least 1e-6/s (one request in 11.6 days; slower arrivals would need "
              "times beyond the simulator's float resolution)")


def parse_duration_s(text: str | float) -> float:
    """A duration flag or field: ``"60ms"``, ``"1.5 s"``, ``"250us"``; a bare number means seconds.

    Refuses NaN, infinities and negative values (UnitError with what was expected)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        m = _QUANTITY.match(s)
        if not m:
            raise UnitError(f"cannot read {text!r} as a duration (e.g. 60ms, 1.5s, 250us; a bare number is seconds)")
        unit = m.group(2) or "s"
        if unit not in _UNITS["s"]:
            raise UnitError(f"unit {unit!r} in {text!r} is not a time unit (use {', '.join(_UNITS['s'])})")
        value = float(m.group(1)) * _UNITS["s"][unit]
    if not (value == value and value not in (float("inf"), float("-inf"))) or value < 0:
        raise UnitError(f"expected a finite, non-negative duration, got {text!r}")
    return value


def parse_rate_per_s(text: str | float) -> float:
    """A rate flag or field: ``"5/s"``, ``"300/min"``, ``"5 rps"``; a bare number means per second.

    Refuses NaN, infinities and rates below ``MIN_RATE_PER_S`` (zero and negative ones among them): the one
    check of every arrival rate a user gives (flags, traffic files)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().replace(" ", "")
        m = re.match(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(\S*)$", s)
        if not m:
            raise UnitError(f"cannot read {text!r} as a rate (e.g. 5/s, 300/min; a bare number is per second)")
        unit = m.group(2)
        if unit and unit not in _RATE_UNITS:
            raise UnitError(f"unit {unit!r} in {text!r} is not a rate unit (use {', '.join(_RATE_UNITS)})")
        value = float(m.group(1)) * (_RATE_UNITS[unit] if unit else 1.0)
    if not (value == value and value != float("inf")):
        raise UnitError(f"expected a finite rate, got {text!r}")
    if value < MIN_RATE_PER_S:
        raise UnitError(f"expected {RATE_RANGE}, got {text!r}")
    if value > MAX_RATE_PER_S:
        raise UnitError(f"expected a rate of at most 1e7/s (ten million requests a second), got {text!r}")
    return value
