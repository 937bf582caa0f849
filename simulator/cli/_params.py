"""Flag parsers for the ``quadrant`` command line: the one validation layer for numeric and path flags.

Each factory returns a ``parser=`` callable for ``typer.Option``. A bad value raises
``typer.BadParameter`` with what was expected; the CLI's group turns that into one line and exit 2.
Nothing here ever maps 0 (or a negative number) to a default: a flag that is given is used or refused.

- ``count(lo)``: an integer >= lo (and <= a sanity cap that keeps a run bounded in memory and time);
- ``real(lo, hi, ...)``: a finite number in a range (NaN and infinities refused);
- ``duration()``: "60ms", "1.5s", "250us"; a bare number is seconds (``units.parse_duration_s``);
- ``rate()``: "5/s", "300/min"; a bare number is per second (``units.parse_rate_per_s``);
- ``int_list(lo)``: comma-separated integers, each >= lo (an empty entry, "1,,2", refused);
- ``out_file(exts)`` / ``out_dir()``: an output path whose parent exists, of a known extension, that is
  not a directory (files) / not a file (folders); an existing device node or FIFO is taken as it is.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import typer

# Upper bounds that keep every run finite in memory and time; far above anything real.
MAX_COUNT = 2**31 - 1
MAX_REQUESTS = 10_000_000
MAX_DRAFT_TOKENS = 64  # draft tokens a step: build.MAX_DRAFT_TOKENS, not imported (the CLI starts without build;
# test_cli checks they agree)

_INT = re.compile(r"^\s*[-+]?\d+\s*$")


def _bad(message: str):
    return typer.BadParameter(message)


def count(lo: int = 1, hi: int = MAX_COUNT, what: str = "an integer"):
    """An integer in [lo, hi]; "3.0", "nan", "1e3" are refused (it is a count)."""

    def parse(value) -> int:
        if isinstance(value, bool):
            raise _bad(f"expected {what} >= {lo}, got {value!r}")
        if isinstance(value, int):
            n = value
        elif isinstance(value, str) and _INT.match(value):
            n = int(value)
        else:
            raise _bad(f"expected {what} >= {lo}, got {value!r}")
        if n < lo:
            raise _bad(f"expected {what} >= {lo}, got {n}")
        if n > hi:
            raise _bad(f"expected {what} <= {hi}, got {n}")
        return n

    parse.__name__ = f"count>={lo}"
    return parse


def real(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
         what: str = "a number"):
    """A finite number in a range (open or closed ends)."""

    def describe() -> str:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        return f"{what} {' and '.join(parts)}".strip()

    def parse(value) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise _bad(f"expected {describe()}, got {value!r}") from None
        if not math.isfinite(x):
            raise _bad(f"expected {describe()} (finite), got {value!r}")
        if lo is not None and (x < lo or (lo_open and x == lo)):
            raise _bad(f"expected {describe()}, got {value}")
        if hi is not None and (x > hi or (hi_open and x == hi)):
            raise _bad(f"expected {describe()}, got {value}")
        return x

    parse.__name__ = "real"
    return parse


# A bare number above this, given for a per-token SLO (``--tpot-slo``), is refused: a bare number is seconds, and a
# TPOT target of a second or more (a token a second at best, no serving target seen in practice) is all but surely
# meant in milliseconds ("50" for 50 ms), so it is not computed (as the traffic YAML refuses any bare number)
BARE_TPOT_LIMIT_S = 1.0


def duration(positive: bool = True, bare_limit_s: float | None = None):
    """A duration in seconds from "60ms", "1.5s", "2min" or a bare number of seconds. With ``bare_limit_s``, a bare
    number above it is refused, the message giving the two spellings that say what is meant."""
    from ..units import UnitError, parse_duration_s

    def parse(value) -> float:
        try:
            x = parse_duration_s(value)
        except UnitError as exc:
            if positive and str(value).strip().startswith("-"):
                raise _bad(f"expected a duration > 0, got {value!r}") from None
            raise _bad(str(exc)) from None
        if positive and x <= 0:
            raise _bad(f"expected a duration > 0, got {value!r}")
        if bare_limit_s is not None and x > bare_limit_s and _is_bare_number(value):
            given = str(value).strip()
            raise _bad(f"{given} has no unit, and a bare number is seconds: {x:g} s a token is surely not meant; "
                       f"write {given}ms, or {given}s if it is")
        return x

    parse.__name__ = "duration"
    return parse


def tpot_slo_duration():
    """The ``--tpot-slo`` parser of every command: a duration; a bare number above ``BARE_TPOT_LIMIT_S`` is refused."""
    return duration(bare_limit_s=BARE_TPOT_LIMIT_S)


def rate():
    """A rate per second from "5/s", "300/min", "5 rps" or a bare number per second."""
    from ..units import UnitError, parse_rate_per_s

    def parse(value) -> float:
        try:
            return parse_rate_per_s(value)
        except UnitError as exc:
            raise _bad(str(exc)) from None

    parse.__name__ = "rate"
    return parse


def kv_precision():
    """A KV-cache precision (``precision.KV_PRECISIONS``), in the engines' spellings too (FP8, fp8_e4m3, bfloat16)."""
    from ..precision import KV_PRECISIONS, canonical_precision

    def parse(value) -> str:
        name = canonical_precision(value)
        if name not in KV_PRECISIONS:
            raise _bad(f"expected one of {', '.join(KV_PRECISIONS)}, got {value!r}")
        return name

    parse.__name__ = "kv-precision"
    return parse


KV_PRECISION_HELP = "fp32 | bf16 | fp16 | fp8 | int8"  # (precision.KV_PRECISIONS, in its order)


def _lower(value: str | None) -> str | None:
    """A name flag taken case-insensitively (``--engine VLLM``), as device and precision names are."""
    return value.strip().lower() if isinstance(value, str) else value


def int_list(lo: int = 1, hi: int = MAX_COUNT):
    """Comma-separated integers, each in [lo, hi]; returned as the normalised text "1,2,4"."""
    one = count(lo, hi)

    def parse(value) -> str:
        parts = [p.strip() for p in str(value).split(",")]
        if not any(parts):
            raise _bad(f"expected a comma-separated list of integers >= {lo}, got {value!r}")
        if not all(parts):  # as every list flag refuses one (commands.comma_list)
            raise _bad(f"an empty entry in the comma-separated list {value!r}")
        try:
            return ",".join(str(one(p)) for p in parts)
        except typer.BadParameter as exc:
            raise _bad(f"in the list {value!r}: {exc.message}") from None

    parse.__name__ = "int_list"
    return parse


def _check_parent(path: Path) -> None:
    """The folder an output goes into exists, is a folder and takes new files: checked when the flag is parsed,
    before any work, so a run with several outputs cannot fail on a later one after writing the first (a probe
    file is created there and removed at once: permission bits alone miss read-only mounts and /proc-like
    folders, and say nothing for root)."""
    if path.is_symlink():  # written through the link (``io.atomic_write``): into the folder of what it points at
        path = Path(os.path.realpath(path))
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise _bad(f"folder {str(parent)!r} does not exist (create it first)")
    if not parent.is_dir():
        raise _bad(f"{str(parent)!r} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".quadrant-probe.", dir=parent)
    except OSError as exc:
        raise _bad(f"cannot write into folder {str(parent)!r} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def out_file(exts: tuple[str, ...]):
    """An output file: a known extension, an existing parent folder, and not itself a folder."""

    def parse(value) -> Path:
        path = Path(value)
        if not str(value).strip():
            raise _bad("expected a file path, got an empty string")
        if path.exists() and not path.is_dir() and not path.is_file():
            return path  # a device node or FIFO (/dev/null, /dev/stdout): written into, whatever its name
        if path.is_dir():
            raise _bad(f"{str(path)!r} is a folder; give a file name ending in {' / '.join(exts)}")
        suffix = path.suffix.lower()
        if suffix not in exts:
            raise _bad(f"unknown extension {suffix or '(none)'!r} in {str(path)!r}; use {' / '.join(exts)}")
        _check_parent(path)
        return path

    parse.__name__ = "out_file"
    return parse


def out_dir():
    """An output folder: its parent exists and it is not an existing file."""

    def parse(value) -> Path:
        path = Path(value)
        if not str(value).strip():
            raise _bad("expected a folder path, got an empty string")
        if path.exists() and not path.is_dir():
            raise _bad(f"{str(path)!r} exists and is not a folder")
        _check_parent(path)
        return path

    parse.__name__ = "out_dir"
    return parse


def in_file():
    """An input file that exists and is a regular file (or a named pipe / device the user points at)."""

    def parse(value) -> Path:
        path = Path(value)
        if not path.exists():
            raise _bad(f"{str(path)!r} does not exist")
        if path.is_dir():
            raise _bad(f"{str(path)!r} is a folder, expected a file")
        return path

    parse.__name__ = "in_file"
    return parse


PLOT_EXTS = (".png", ".svg", ".pdf")
CSV_EXTS = (".csv",)
YAML_EXTS = (".yaml", ".yml")
JSON_EXTS = (".json",)


def in_file_or_id():
    """A spec given as a catalogue id or a path: a path must be an existing file (ids are checked by the
    catalogue, which lists the known ones)."""

    def parse(value):
        text = str(value)
        if not text.strip():
            raise _bad("expected an id or a file path, got an empty string")
        path = Path(text)
        if path.is_dir():
            raise _bad(f"{text!r} is a folder, expected a YAML file or an id")
        if ("/" in text or text.endswith((".yaml", ".yml"))) and not path.exists():
            raise _bad(f"{text!r} does not exist")
        return text

    parse.__name__ = "in_file_or_id"
    return parse


def timing_spec():
    """``--timing``: roofline, calibrated:OVERLAY.yaml[,MORE.yaml], measured:KERNELS.csv, or
    measured:CSV+calibrated:YAML; every named file must exist."""

    def parse(value) -> str:
        from ..errors import SimulatorError
        from ..timing.calibrated import parse_timing_spec

        text = str(value).strip()
        try:
            files = parse_timing_spec(text)
        except SimulatorError:
            raise _bad(f"expected roofline, calibrated:OVERLAY.yaml or measured:KERNELS.csv, got {text!r}") from None
        for kind, paths in files.items():
            for f in paths:
                if not Path(f).is_file():
                    raise _bad(f"{kind}: {f!r} is not a file")
                if kind == "measured" and Path(f).suffix.lower() != ".csv":
                    raise _bad(f"measured: expected a measurement CSV, got {f!r}")
        return text

    parse.__name__ = "timing_spec"
    return parse


def timing_option(what: str = "Timing model", panel: str | None = None):
    """The one ``--timing`` option every command that times anything takes (``panel``: its help panel)."""
    import typer

    return typer.Option(None, "--timing", parser=timing_spec(), rich_help_panel=panel,
                        help=f"{what}: roofline (default), calibrated:OVERLAY.yaml (from `quadrant calibrate`) or "
                             "measured:KERNELS.csv (your measured table; the roofline answers outside its coverage). "
                             "`measured:CSV+calibrated:YAML` combines them.")


def engine_version_option(scope: str, panel: str | None = None):
    """The one ``--engine-version`` option (simulate, plan): the vLLM release served, ``scope`` saying where
    (``panel``: its help panel)."""
    import typer

    return typer.Option(None, "--engine-version", metavar="RELEASE", rich_help_panel=panel,
                        help=f"The vLLM release {scope}, e.g. 0.8.4 or 0.17.0: vLLM's constants that change between "
                             "releases follow it (before 0.11.0 its own block-FP8 GEMMs for a block-scaled FP8 model, "
                             "not DeepGEMM; from 0.17.0 a smaller startup sampler peak, so more KV cache). Default: "
                             "vLLM 0.11-0.16, the releases the profile is checked against.")


def _is_bare_number(value) -> bool:
    """Whether ``value`` is a number without a unit ("50", "0.05"; not "50ms")."""
    try:
        float(str(value).strip())
    except ValueError:
        return False
    return True
