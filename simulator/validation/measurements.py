"""The measurement CSV contract: one row per measured kernel, written by the harness (or any
other tool) and read by ``quadrant validate`` / ``quadrant calibrate``.

Required columns (extra columns are allowed and ignored; empty cells where a column does not
apply):

    op,hardware,dtype,kv_dtype,m,n,k,batch,q_len,kv_len,num_heads,num_kv_heads,head_dim,tokens,
    hidden,intermediate,num_experts,top_k,bytes,world,latency_us

``op`` is one of gemm, attn_prefill, attn_decode, moe, all_reduce, all_gather, all_to_all, memcpy.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MeasurementError

COLUMNS = ("op", "hardware", "dtype", "kv_dtype", "m", "n", "k", "batch", "q_len", "kv_len", "num_heads",
           "num_kv_heads", "head_dim", "tokens", "hidden", "intermediate", "num_experts", "top_k", "bytes", "world",
           "latency_us")
OPS = ("gemm", "attn_prefill", "attn_decode", "moe", "all_reduce", "all_gather", "all_to_all", "memcpy")
DTYPES = ("bf16", "fp16", "fp32", "fp8", "int8", "w4a8", "w4a16", "fp4")
KV_DTYPES = ("bf16", "fp16", "fp32", "fp8", "int8")
NEEDS = {
    "gemm": ("m", "n", "k"),
    "attn_prefill": ("batch", "q_len", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
    "attn_decode": ("batch", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
    "moe": ("tokens", "hidden", "intermediate", "num_experts", "top_k"),
    "all_reduce": ("bytes", "world"), "all_gather": ("bytes", "world"), "all_to_all": ("bytes", "world"),
    "memcpy": ("bytes",),
}
NUMERIC = tuple(c for c in COLUMNS if c not in ("op", "hardware", "dtype", "kv_dtype"))


def read_measurements(path: str | Path, latency: str = "latency_us") -> pd.DataFrame:
    """Read and check a measurement CSV; the first bad row is a one-line MeasurementError.

    ``latency``: the column read as each row's measured time, ``latency_us`` (the contract) or
    ``kernel_us`` (the kernel-only time the harness writes on a GPU); it is checked like
    ``latency_us`` and returned under that name, the contract's own column then set aside as
    ``event_us``."""
    path = str(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise MeasurementError(f"{path}: cannot read CSV ({' '.join(str(exc).split())})") from None
    dup = sorted({c for c in header if header.count(c) > 1}, key=str)
    if dup:  # (pandas would rename the second one silently, e.g. m -> m.1)
        raise MeasurementError(f"{path}: line 1: column {dup[0]!r} appears more than once")
    if latency != "latency_us":
        if latency not in df.columns:
            raise MeasurementError(f"{path}: no {latency!r} column to read times from (`quadrant bench run` "
                                   "writes kernel_us on a GPU)")
        cells = df[latency].str.strip()
        bad = ~(pd.to_numeric(cells.where(cells != "", None), errors="coerce") > 0).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise MeasurementError(f"{path}: row {i + 2} (line {i + 2}): column {latency!r}: expected a time > 0 "
                                   f"(us), got {cells.iat[i]!r}")
        df = df.rename(columns={"latency_us": "event_us"}).rename(columns={latency: "latency_us"})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise MeasurementError(f"{path}: missing required column(s): {', '.join(missing)}")
    if df.empty:
        raise MeasurementError(f"{path}: no rows")

    def bad(i: int, col: str, why: str):
        return MeasurementError(f"{path}: row {i + 2} (line {i + 2}): column {col!r}: {why}")

    out = pd.DataFrame({"op": df["op"].str.strip(), "hardware": df["hardware"].str.strip(),
                        "dtype": df["dtype"].str.strip(), "kv_dtype": df["kv_dtype"].str.strip()})
    for col in NUMERIC:
        s = df[col].str.strip()
        num = pd.to_numeric(s.where(s != "", None), errors="coerce")
        wrong = (s != "") & num.isna()
        if wrong.any():
            i = int(np.argmax(wrong.to_numpy()))
            raise bad(i, col, f"expected a number, got {s.iloc[i]!r}")
        inf = ~np.isfinite(num.to_numpy(dtype=float)) & num.notna().to_numpy()
        if inf.any():
            i = int(np.argmax(inf))
            raise bad(i, col, f"expected a finite number, got {s.iloc[i]}")
        neg = num < 0
        if neg.any():
            i = int(np.argmax(neg.to_numpy()))
            raise bad(i, col, f"expected a non-negative number, got {s.iloc[i]}")
        if col not in ("latency_us", "bytes"):  # shapes and counts: whole numbers
            frac = (num.notna() & (num != num.round())).to_numpy()
            if frac.any():
                i = int(np.argmax(frac))
                raise bad(i, col, f"expected a whole number, got {s.iloc[i]}")
        out[col] = num.astype(float)
    def first(mask) -> int | None:
        mask = np.asarray(mask, bool)
        return int(np.argmax(mask)) if mask.any() else None

    op = out["op"]
    if (i := first(~op.isin(OPS))) is not None:
        raise bad(i, "op", f"unknown op {op.iat[i]!r} (expected one of {', '.join(OPS)})")
    if (i := first(out["hardware"] == "")) is not None:
        raise bad(i, "hardware", "empty (expected a profile id)")
    comm_or_copy = op.isin(("memcpy", "all_reduce", "all_gather", "all_to_all"))
    if (i := first(~out["dtype"].isin(DTYPES) & ~(comm_or_copy & (out["dtype"] == "")))) is not None:
        raise bad(i, "dtype", f"expected one of {', '.join(DTYPES)}, got {out['dtype'].iat[i]!r}")
    if (i := first((out["kv_dtype"] != "") & ~out["kv_dtype"].isin(KV_DTYPES))) is not None:
        raise bad(i, "kv_dtype", f"expected one of {', '.join(KV_DTYPES)}, got {out['kv_dtype'].iat[i]!r}")
    for name, cols in NEEDS.items():
        rows = (op == name).to_numpy()
        for col in cols:
            if (i := first(rows & ~(out[col].to_numpy() > 0))) is not None:
                raise bad(i, col, f"required for op {name} and must be > 0")
    if (i := first(~(out["latency_us"].to_numpy() > 0))) is not None:
        raise bad(i, "latency_us", "required and must be > 0")
    extra = [c for c in df.columns if c not in COLUMNS]
    for c in extra:
        out[c] = df[c]
    out["hardware"] = _profile_ids(out["hardware"])
    out.attrs["file"] = path  # (for messages about a row found later, e.g. an unknown hardware id)
    return out


def _profile_ids(hardware: pd.Series) -> pd.Series:
    """Each row's device as its profile id, where it names a catalogue profile by another name (an alias such as
    ``H200``): rows of one device are one device, as the overlays and ``--hardware`` name it. A profile file outside
    the catalogue is kept (the file is the profile: an edited copy is not the catalogue's), and so is a name that
    resolves to no profile, for ``validate.load_specs`` to report with its row."""
    from ..errors import SimulatorError
    from ..specs.catalog import in_catalogue, load_hardware

    ids = {}
    for name in hardware.unique().tolist():
        try:
            spec = load_hardware(name)
        except SimulatorError:
            spec = None
        ids[name] = spec.id if spec is not None and in_catalogue(spec) else name
    return hardware.map(ids) if any(k != v for k, v in ids.items()) else hardware


def check_frame(df, where: str) -> None:
    """A measurement table given in code rather than read by ``read_measurements``: a non-empty DataFrame with
    the contract's columns and every ``latency_us`` a finite time > 0 (a MeasurementError naming ``where``,
    the row and the column otherwise). The reader's finer row checks stay the reader's."""
    if not isinstance(df, pd.DataFrame):
        raise MeasurementError(f"{where}: expected a DataFrame (read_measurements(...)), got {type(df).__name__}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise MeasurementError(f"{where}: missing column(s): {', '.join(missing)}")
    if df.empty:
        raise MeasurementError(f"{where}: no rows")
    lat = pd.to_numeric(df["latency_us"], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(lat) & (lat > 0))
    if bad.any():
        i = int(np.argmax(bad))
        got = df["latency_us"].iloc[i]
        got = got.item() if isinstance(got, np.generic) else got
        raise MeasurementError(f"{where}: row {i}: column 'latency_us': expected a finite time > 0 (us), got {got!r}")


def holdout_mask(n: int, test_fraction: float, seed: int) -> np.ndarray:
    """Deterministic train/test split: True marks a held-out (test) row."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    test = np.zeros(n, bool)
    test[order[: int(round(n * test_fraction))]] = True
    return test
