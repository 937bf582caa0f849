"""Traffic: arrival process, prompt/output length distributions, seed and SLO.

Read from ``workloads/traffic/<id>.yaml``; ``sample()`` turns it into concrete request arrays
(deterministic for a seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..checks import choice, real, whole
from ..errors import SimulatorError, SpecError
from ..units import MAX_ARRIVAL_S, MAX_RATE_PER_S
from ._reader import Reader, load_yaml

ARRIVALS = ("poisson", "gamma", "closed", "trace")
MAX_REQUESTS = 10_000_000  # keeps a run bounded in memory and time (the CLI's --requests has the same cap)
DISTS = ("fixed", "uniform", "lognormal", "empirical")
MAX_TOKENS = 1_000_000_000  # tokens in one prompt or output at most (a bound far above any context window: larger
# counts are typos, and beyond 2**63 they would not even be integers)


@dataclass(frozen=True)
class LengthDist:
    kind: str
    value: float = 0.0  # fixed
    low: float = 0.0  # uniform
    high: float = 0.0
    median: float = 0.0  # lognormal: median and sigma of log
    sigma: float = 0.0
    minimum: float = 1.0
    maximum: float = 1e9
    values: tuple[float, ...] = ()  # empirical

    def __post_init__(self):
        choice("LengthDist.kind", self.kind, DISTS)
        lo = real("LengthDist.minimum", self.minimum, 1, MAX_TOKENS)
        hi = real("LengthDist.maximum", self.maximum, lo, MAX_TOKENS)
        if self.kind == "fixed":
            real("LengthDist.value", self.value, lo, hi)
            if self.value != int(self.value):
                raise SimulatorError(f"LengthDist.value: expected a whole token count, got {self.value:g}")
        elif self.kind == "uniform":  # whole token counts: a uniform draw of integers between them (a low of 0, as
            # a benchmark client's range ratio of 1 gives, draws 0 for minimum's clip, so it may sit below minimum)
            low = real("LengthDist.low", self.low, 0, hi)
            real("LengthDist.high", self.high, low, hi)
            if self.low != int(self.low) or self.high != int(self.high):
                raise SimulatorError(f"LengthDist.low/high: expected whole token counts, got {self.low:g} and "
                                     f"{self.high:g}")
        elif self.kind == "lognormal":
            real("LengthDist.median", self.median, 0, MAX_TOKENS, above=True)
            real("LengthDist.sigma", self.sigma, 0, 10)  # (one sigma of log at 10: a 22,000x spread, a typo)
        elif not self.values or not all(math.isfinite(v) and 1 <= v <= MAX_TOKENS and v == int(v) for v in self.values):
            raise SimulatorError(f"LengthDist.values: expected at least one whole token count in [1, {MAX_TOKENS:,}]")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            x = np.full(n, self.value)
        elif self.kind == "uniform":
            x = rng.integers(int(self.low), int(self.high) + 1, size=n).astype(float)
        elif self.kind == "lognormal":
            x = np.exp(rng.normal(np.log(self.median), self.sigma, size=n))
        else:
            x = rng.choice(np.asarray(self.values, dtype=float), size=n)
        return np.clip(np.rint(x), self.minimum, self.maximum).astype(np.int64)

    @property
    def mean(self) -> float:
        if self.kind == "fixed":
            return self.value
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        if self.kind == "lognormal":
            return float(self.median * np.exp(self.sigma ** 2 / 2))
        return float(np.mean(self.values))


@dataclass(frozen=True)
class SLO:
    ttft_s: float  # inf: no target
    tpot_s: float
    percentile: float  # in [1, 100]
    # the traffic file named the percentile (``slo.percentile``): it must qualify a target, the file's or a flag's
    percentile_given: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self):
        real("SLO.ttft_s", self.ttft_s, 0, above=True, infinite=True)
        real("SLO.tpot_s", self.tpot_s, 0, above=True, infinite=True)
        real("SLO.percentile", self.percentile, 1, 100)  # (a fraction such as 0.9 would read as p0.9)


@dataclass(frozen=True)
class Traffic:
    """An arrival process (poisson | gamma | closed | trace), its rate or concurrency, request count, length
    distributions, seed and SLO; ``sample()`` draws the requests. Checked on construction."""

    id: str
    arrival: str
    rate_per_s: float
    cv: float  # gamma burstiness (coefficient of variation of inter-arrival times)
    concurrency: int
    requests: int
    prompt: LengthDist
    output: LengthDist
    seed: int
    slo: SLO
    trace: pd.DataFrame | None = None
    file: str = ""
    ramp_up_s: float | None = None  # closed loop: clients start evenly over this time (None: auto, 0: together)

    def __post_init__(self):
        choice("Traffic.arrival", self.arrival, ARRIVALS)
        if self.arrival in ("poisson", "gamma"):
            # (no floor here: the run checks its rate and request count together against the clock's resolution)
            real("Traffic.rate_per_s", self.rate_per_s, 0, MAX_RATE_PER_S, above=True)
        if self.arrival == "gamma":
            real("Traffic.cv", self.cv, 0, above=True)
        # (whole-number floats are taken as the integers they are)
        object.__setattr__(self, "concurrency", whole("Traffic.concurrency", self.concurrency,
                                                      1 if self.arrival == "closed" else 0))
        object.__setattr__(self, "requests", whole("Traffic.requests", self.requests, 1, MAX_REQUESTS))
        object.__setattr__(self, "seed", whole("Traffic.seed", self.seed, 0))
        if self.ramp_up_s is not None:
            real("Traffic.ramp_up_s", self.ramp_up_s, 0)
        if not isinstance(self.slo, SLO) or not isinstance(self.prompt, LengthDist) \
                or not isinstance(self.output, LengthDist):
            raise SimulatorError("Traffic: slo must be an SLO, prompt and output LengthDists")
        if self.concurrency and self.arrival != "closed":  # (a closed loop's own field: refused, not ignored)
            raise SimulatorError(f"Traffic.concurrency: applies to closed arrivals, not to {self.arrival}; set "
                                 f"arrival='closed' (or concurrency=0)")
        if self.trace is not None and self.arrival != "trace":
            raise SimulatorError(f"Traffic.trace: replayed by arrival='trace' only, not {self.arrival!r}")
        if self.trace is not None:
            object.__setattr__(self, "trace", _checked_trace(self.trace))
        if self.arrival == "trace" and (self.trace is None or self.requests > len(self.trace)):
            rows = 0 if self.trace is None else len(self.trace)
            raise SimulatorError(f"Traffic.requests: a trace run replays at most its {rows} rows, got {self.requests}")

    def sample(self) -> pd.DataFrame:
        """Requests as a DataFrame: arrival_s (NaN for closed loop), prompt_tokens, output_tokens."""
        if self.trace is not None:
            df = self.trace.head(self.requests).reset_index(drop=True)
            return df[["arrival_s", "prompt_tokens", "output_tokens"]].astype(
                {"prompt_tokens": np.int64, "output_tokens": np.int64})
        rng = np.random.default_rng(self.seed)
        n = self.requests
        if self.arrival == "poisson":
            gaps = rng.exponential(1.0 / self.rate_per_s, size=n)
        elif self.arrival == "gamma":
            shape = 1.0 / self.cv ** 2
            gaps = rng.gamma(shape, 1.0 / (self.rate_per_s * shape), size=n)
        else:
            gaps = np.full(n, np.nan)
        arrival = np.cumsum(gaps) - (gaps[0] if self.arrival != "closed" else 0)
        return pd.DataFrame({"arrival_s": arrival, "prompt_tokens": self.prompt.sample(rng, n),
                             "output_tokens": self.output.sample(rng, n)})


def _dist(r: Reader) -> LengthDist:
    kind = r.str("dist", choices=DISTS)
    # token counts are whole numbers in [1, MAX_TOKENS]; a fixed or uniform length lies within [min, max]
    d: dict = {"kind": kind, "minimum": r.int("min", 1, minimum=1, maximum=MAX_TOKENS),
               "maximum": r.int("max", MAX_TOKENS, minimum=1, maximum=MAX_TOKENS)}
    if d["maximum"] < d["minimum"]:
        raise r.error("max", f"must be >= min ({d['minimum']:g}), got {d['maximum']:g}")
    if kind == "fixed":
        d["value"] = _within(r, "value", d)
    elif kind == "uniform":
        d["low"], d["high"] = _within(r, "low", d), _within(r, "high", d)
        if d["high"] < d["low"]:
            raise r.error("high", "must be >= low")
    elif kind == "lognormal":
        d["median"] = r.number("median", minimum=1, maximum=MAX_TOKENS)
        d["sigma"] = r.number("sigma", minimum=0, maximum=10)  # (one sigma at 10 spans e^10 = 22,000x: a typo)
    else:
        path = Path(r.str("file"))
        if not path.is_absolute():
            path = Path(r.file).parent / path
        d["values"] = _lengths_file(r, path)
    r.done()
    return LengthDist(**d)


def _within(r: Reader, key: str, d: dict) -> int:
    """A fixed or uniform length: a whole number of tokens within the distribution's own [min, max]."""
    v = r.int(key, minimum=1, maximum=MAX_TOKENS)
    if not d["minimum"] <= v <= d["maximum"]:
        raise r.error(key, f"expected a length within the distribution's min and max [{d['minimum']:,}, "
                           f"{d['maximum']:,}], got {v:,}")
    return v


def _lengths_file(r: Reader, path: Path) -> tuple[float, ...]:
    """An empirical length file: one whole number of tokens >= 1 per line (blank lines and ``#`` comments
    skipped, as a trace's token counts are whole numbers); a bad entry is named by the file's own line number."""
    from ._reader import MAX_TABLE_BYTES, read_text_file

    try:
        text = read_text_file(path, "file of token counts", MAX_TABLE_BYTES)
    except SpecError as exc:
        raise r.error("file", f"{path}: {exc.message}") from None
    want = f"one whole number of tokens in [1, {MAX_TOKENS:,}] per line"
    values = []
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            x = float(entry)
        except ValueError:
            x = math.nan
        if not (math.isfinite(x) and 1 <= x <= MAX_TOKENS and x == int(x)):
            raise r.error("file", f"{path}, line {n}: expected {want}, got {entry!r}")
        values.append(x)
    if not values:
        raise r.error("file", f"{path}: holds no token counts; expected {want}")
    return tuple(values)


TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")


def _trace_rows(cells: dict, bad: Callable[[int, str, str], Exception]) -> pd.DataFrame:
    """A trace's three columns (``cells``: column -> values, numbers or their text) checked cell by cell:
    arrivals finite in [0, ``MAX_ARRIVAL_S``] seconds (later times are beyond the clock's float resolution), token
    counts whole numbers >= 1; ``bad(i, column, expected)`` is raised for the first bad cell. Returned in arrival
    order (stable), token counts as integers."""
    out = {}
    for col in TRACE_COLUMNS:
        vals = pd.to_numeric(cells[col], errors="coerce").to_numpy(dtype=float)
        if col == "arrival_s":
            wrong = ~np.isfinite(vals) | (vals < 0) | (vals > MAX_ARRIVAL_S)
            want = "an arrival time in [0, 1e9] seconds (later times are beyond the simulator's float resolution)"
        else:
            wrong = ~np.isfinite(vals) | (vals < 1) | (vals > MAX_TOKENS) | (vals != np.round(vals))
            want = f"a whole number of tokens in [1, {MAX_TOKENS:,}]"
        if wrong.any():
            raise bad(int(np.argmax(wrong)), col, want)
        out[col] = vals
    clean = pd.DataFrame(out).astype({"prompt_tokens": np.int64, "output_tokens": np.int64})
    return clean.sort_values("arrival_s", kind="stable").reset_index(drop=True)


def _checked_trace(trace) -> pd.DataFrame:
    """A trace given in code (``Traffic.trace``) held to what ``read_trace`` accepts from a file (``_trace_rows``),
    as a clean copy in arrival order."""
    if not isinstance(trace, pd.DataFrame):
        raise SimulatorError(f"Traffic.trace: expected a DataFrame (arrival_s, prompt_tokens, output_tokens), "
                             f"got {type(trace).__name__}")
    missing = [c for c in TRACE_COLUMNS if c not in trace.columns]
    if missing:
        raise SimulatorError(f"Traffic.trace: missing column(s) {', '.join(missing)}")
    if trace.empty:
        raise SimulatorError("Traffic.trace: no rows")

    def bad(i: int, col: str, want: str) -> SimulatorError:
        got = trace[col].iloc[i]
        got = got.item() if isinstance(got, np.generic) else got
        return SimulatorError(f"Traffic.trace: row {i}, column {col}: expected {want}, got {got!r}")

    return _trace_rows({c: trace[c] for c in TRACE_COLUMNS}, bad)


def read_trace(path: Path, file: str, key: str) -> pd.DataFrame:
    """A trace CSV (arrival_s, prompt_tokens, output_tokens): every cell a finite number, arrivals in
    [0, ``MAX_ARRIVAL_S``] seconds, token counts whole numbers >= 1; a bad cell is named by line and column."""
    import io

    from ._reader import MAX_TABLE_BYTES, read_text_file

    try:
        text = read_text_file(path, "trace CSV", MAX_TABLE_BYTES)
    except SpecError as exc:
        raise SpecError(file, key, f"trace {exc}") from None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise SpecError(str(path), "", f"cannot read the trace as CSV: {' '.join(str(exc).split())}") from None
    missing = [c for c in TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise SpecError(str(path), "", f"trace is missing column(s) {', '.join(missing)}")
    if df.empty:
        raise SpecError(str(path), "", "trace has no rows")

    def bad(i: int, col: str, want: str) -> SpecError:
        return SpecError(str(path), f"line {i + 2}, column {col}", f"expected {want}, got {df[col].iloc[i]!r}")

    return _trace_rows({c: df[c].str.strip() for c in TRACE_COLUMNS}, bad)


def _rate(arr: Reader, kind: str) -> float:
    """``rate_per_s``: a number per second or a rate with a unit ("5/s", "300/min"), checked as a --rate flag is
    (``units.parse_rate_per_s``: at least ``MIN_RATE_PER_S``)."""
    from ..units import UnitError, parse_rate_per_s

    value = arr.raw("rate_per_s", 0.0 if kind in ("closed", "trace") else ...)
    if arr.data.get("rate_per_s") is None:
        return value
    if isinstance(value, (bool, list, dict)):
        raise arr.error("rate_per_s", f"expected a rate such as 5 or 300/min, got {value!r}")
    try:
        return parse_rate_per_s(value)
    except UnitError as exc:
        raise arr.error("rate_per_s", str(exc)) from None


def _requests(r: Reader, trace) -> int:
    """``requests``: a trace replays at most its rows (all of them by default)."""
    n = r.int("requests", len(trace) if trace is not None else ..., minimum=1)
    if n > MAX_REQUESTS:
        raise r.error("requests", f"expected at most {MAX_REQUESTS:,} requests per run, got {n:,}")
    if trace is not None and n > len(trace):
        raise r.error("requests", f"the trace has {len(trace)} rows; a run replays at most that many, got {n}")
    return n


def _percentile(slo: Reader) -> float:
    """``slo.percentile``: within [1, 100] (90 when absent); a fraction such as 0.9 is refused, not read as p0.9."""
    p = slo.number("percentile", 90.0, maximum=100)
    if not p >= 1:
        raise slo.error("percentile", f"expected a percentile in [1, 100] (90 for p90), got {p:g}")
    return p


def read_traffic(path: str | Path) -> Traffic:
    """A traffic YAML (``workloads/traffic/``): arrivals, prompt and output lengths, seed, SLO. ``SpecError``
    names the file and key of anything wrong."""
    from .catalog import resolve_workload

    if not isinstance(path, (str, Path)):
        raise SpecError(str(path), "", "expected a path to a YAML file or a catalogue id")
    path = resolve_workload(path, "traffic", "traffic")  # (a catalogue id, e.g. "chat", or a path)
    if Path(path).suffix.lower() == ".csv":  # a trace itself (the one format a trace is read in), not a traffic file
        raise SpecError(str(path), "", f"a traffic file is YAML; to replay this trace, name it in one: arrivals: "
                                       f"{{process: trace, file: {Path(path).name}}} (columns arrival_s, prompt_tokens,"
                                       " output_tokens; see workloads/traffic/trace-replay.yaml)")
    data = load_yaml(path)
    r = Reader(path, data)
    r.schema_version()
    r.str("description", "")
    arr = r.child("arrivals")
    kind = arr.str("process", choices=ARRIVALS)
    if kind == "closed" and arr.raw("rate_per_s", None) is not None:
        raise arr.error("rate_per_s", "a closed loop has no arrival rate (its clients send as requests finish); "
                                      "drop the key or use process: poisson")
    if kind == "trace" and arr.raw("rate_per_s", None) is not None:
        raise arr.error("rate_per_s", "a trace replays its own arrival times; drop the key or use process: poisson")
    rate = _rate(arr, kind)
    if kind != "gamma" and arr.raw("cv", None) is not None:  # refused, not ignored
        raise arr.error("cv", f"applies to gamma arrivals only (process: gamma), not to {kind}")
    cv = arr.number("cv", 1.0, minimum=0.01)
    if kind != "closed":  # keys of a closed loop only: refused, not ignored
        for key in ("concurrency", "ramp_up"):
            if arr.raw(key, None) is not None:
                raise arr.error(key, f"applies to closed arrivals only (process: closed), not to {kind}")
    conc = arr.int("concurrency", 0 if kind != "closed" else ..., minimum=0)
    ramp = arr.quantity("ramp_up", "s", None) if kind == "closed" else None
    trace = None
    if kind == "trace":
        p = Path(arr.str("file"))
        trace = read_trace(p if p.is_absolute() else Path(path).parent / p, str(path), "arrivals.file")
    else:
        arr.raw("file", None)
    if kind in ("poisson", "gamma") and rate <= 0:
        raise arr.error("rate_per_s", "must be > 0")
    if kind == "closed" and conc < 1:
        raise arr.error("concurrency", "must be >= 1")
    arr.done()
    slo = r.child("slo", {})
    traffic = Traffic(
        id=r.str("id", Path(path).stem), arrival=kind, rate_per_s=rate, cv=cv, concurrency=conc,
        requests=_requests(r, trace),
        prompt=_dist(r.child("prompt_tokens")) if trace is None else LengthDist("fixed", 1),
        output=_dist(r.child("output_tokens")) if trace is None else LengthDist("fixed", 1),
        seed=r.int("seed", 0), trace=trace, file=str(path), ramp_up_s=ramp,
        slo=SLO(slo.quantity("ttft", "s", float("inf"), positive=True),
                slo.quantity("tpot", "s", float("inf"), positive=True), _percentile(slo), slo.has("percentile")),
    )
    if trace is not None:  # a trace's rows carry their own lengths: refused, not ignored
        for key in ("prompt_tokens", "output_tokens"):
            if r.raw(key, None) is not None:
                raise r.error(key, "a trace replays its own token counts (its CSV's columns); drop the key")
    slo.done()
    r.done()
    return traffic


def simple_traffic(*, rate: float | None, concurrency: int | None, isl: int, osl: int, requests: int,
                   seed: int = 0, ramp_up_s: float | None = None) -> Traffic:
    """Fixed-length traffic for quick runs (Poisson at ``rate`` or a closed loop)."""
    kind = "closed" if concurrency else "poisson"
    return Traffic("cli", kind, float(rate or 0.0), 1.0, int(concurrency or 0), requests,
                   LengthDist("fixed", isl), LengthDist("fixed", osl), seed, SLO(float("inf"), float("inf"), 90.0),
                   ramp_up_s=ramp_up_s)
