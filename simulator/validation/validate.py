"""Predict measured kernels with the same op records and TimingModel the simulator uses, and score
the error.

Each measurement row becomes the op records of the kernel(s) it measured (``ops_from_measurements``;
an 8-bit GEMM row is the GEMM plus its activation-quantisation kernel, an MoE row is the routed
experts' two grouped GEMMs plus the token permute/unpermute), all rows in one table, so thousands
of rows are predicted in one vectorised pass. Scores: per hardware x op, median and p90 absolute
percentage error, fraction within 25 % and bias (geometric mean of predicted/measured).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import MeasurementError, SpecError
from ..ops.kinds import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    ATTN_DECODE,
    ATTN_PREFILL,
    DTYPE_INDEX,
    ELEMENTWISE,
    GEMM,
    GROUPED_GEMM,
    SHAPE_COLUMNS,
    OpTable,
)
from ..precision import KV_PRECISIONS, PRECISIONS
from ..specs.catalog import load_hardware
from ..specs.hardware import HardwareSpec
from ..timing.base import TimingModel
from ..timing.roofline import RooflineModel
from .measurements import check_frame

_COLL = {"all_reduce": ALL_REDUCE, "all_gather": ALL_GATHER, "all_to_all": ALL_TO_ALL}
ACT16 = 2.0


def _compute_dtype(hw: HardwareSpec, dtype: str) -> str:
    order = PRECISIONS[dtype].compute_dtypes if dtype in PRECISIONS else ("bf16", "fp16", "fp32")
    return next((d for d in order + ("bf16", "fp16", "fp32") if hw.peak(d) > 0), "fp32")


def _attention_dtype(hw: HardwareSpec, dtype: str, kv_dtype: str) -> str:
    eight = dtype in ("fp8", "int8", "w4a8") and KV_PRECISIONS.get(kv_dtype or "bf16", 2.0) <= 1.0
    order = ("fp8", "int8") if eight else ((dtype,) if dtype in ("fp32", "bf16", "fp16") else ())
    return next((d for d in order + ("bf16", "fp16", "fp32") if hw.peak(d) > 0), "fp32")


def _flag(df: pd.DataFrame, col: str, default: float) -> np.ndarray:
    """An optional 0/1 column (``causal``, ``quant``): empty or absent cells take the default; any other value is
    refused with its row (not read as the default)."""
    if col not in df:
        return np.full(len(df), default)
    cells = df[col].astype(str).str.strip()
    v = pd.to_numeric(cells.replace("", None), errors="coerce")
    bad = ((cells != "") & ~v.isin((0, 1))).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise MeasurementError(f"{df.attrs.get('file', 'measurements')}: row {i + 2} (line {i + 2}): column {col!r}: "
                               f"expected 0 or 1 (or empty), got {cells.iat[i]!r}")
    return v.fillna(default).to_numpy(dtype=float)


def _per_key(keys: list[tuple], fn) -> np.ndarray:
    """``fn(*key)`` for every row, computed once per distinct key."""
    memo = {k: fn(*k) for k in set(keys)}
    return np.array([memo[k] for k in keys])


class _Rows:
    """Op rows of measurement rows, gathered as column arrays and assembled into one OpTable."""

    def __init__(self, devices: tuple):
        self.devices, self.blocks = devices, []

    def add(self, name: str, kind: int, sel: np.ndarray, **cols) -> None:
        if sel.any():
            self.blocks.append((name, kind, sel, cols))

    def table(self) -> OpTable:
        names, kinds, arrays = [], [], {c: [] for c in SHAPE_COLUMNS + ("hw", "dtype", "row")}
        for name, kind, sel, cols in self.blocks:
            k = int(sel.sum())
            names += [name] * k
            kinds += [kind] * k
            for c, out in arrays.items():
                v = cols.get(c, _ROW_DEFAULTS.get(c, 0.0))
                out.append(np.broadcast_to(v[sel] if np.ndim(v) else v, (k,)))
        cols = {c: np.concatenate(v).astype(np.int64 if c in ("hw", "dtype", "row") else float).reshape(-1, 1)
                if v else np.zeros((0, 1)) for c, v in arrays.items()}
        return OpTable(tuple(names), tuple("measured" for _ in names), np.asarray(kinds, dtype=np.int64), cols, 1,
                       self.devices)


_ROW_DEFAULTS = {"count": 1.0, "imbalance": 1.0, "ranks": 1.0, "domain": 1.0, "fanout": 1.0}


def ops_from_measurements(df: pd.DataFrame, specs: dict[str, HardwareSpec]) -> OpTable:
    """The op records of every measured row (``row`` column = the row's position in ``df``), built
    column-wise (thousands of rows in milliseconds).

    Optional extra columns (compatible with the contract): ``causal`` (0/1, attention; default 1
    for prefill), ``quant`` (0 = the row times the GEMM kernel(s) alone: no activation-quantisation
    kernel in front of an 8-bit GEMM, no token permute/unpermute around an MoE's grouped GEMMs)."""
    ids = sorted(set(df["hardware"]))
    devices = tuple(specs[h] for h in ids)
    hw_ids = df["hardware"].tolist()
    hw = np.searchsorted(ids, hw_ids) if len(df) else np.zeros(0, int)  # index into the sorted device ids
    op = df["op"].to_numpy()
    dtype = [d or "bf16" for d in df["dtype"].tolist()]
    kvd = df["kv_dtype"].tolist()
    prec = [PRECISIONS.get(d, PRECISIONS["bf16"]) for d in dtype]
    wb = np.array([p.weight_bytes for p in prec])
    ab = np.array([p.act_bytes for p in prec])
    ob = np.where(np.array(dtype) == "fp32", 4.0, ACT16)
    g = {c: df[c].fillna(0.0).to_numpy(dtype=float) for c in
         ("m", "n", "k", "batch", "q_len", "kv_len", "num_heads", "num_kv_heads", "head_dim", "tokens", "hidden",
          "intermediate", "num_experts", "top_k", "bytes", "world")}
    cdt = _per_key(list(zip(hw_ids, dtype)), lambda h, d: DTYPE_INDEX[_compute_dtype(specs[h], d)])
    adt_name = _per_key(list(zip(hw_ids, dtype, kvd)), lambda h, d, kv: _attention_dtype(specs[h], d, kv))
    adt = np.array([DTYPE_INDEX[a] for a in adt_name]) if len(df) else np.zeros(0, int)
    kvb = np.array([KV_PRECISIONS.get(k) or (4.0 if d == "fp32" else ACT16) for k, d in zip(kvd, dtype)])
    quant_flag = _flag(df, "quant", 1.0) > 0
    quant = (ab < 2.0) & quant_flag
    row = np.arange(len(df))
    common = dict(hw=hw, row=row)
    R = _Rows(devices)

    gemm = op == "gemm"
    R.add("quant", ELEMENTWISE, gemm & quant, m=g["m"], n=g["k"], k=2.0, a_bytes=ACT16, o_bytes=ab, **common)
    R.add("gemm", GEMM, gemm, dtype=cdt, m=g["m"], n=g["n"], k=g["k"], w_bytes=wb, a_bytes=ab, o_bytes=ob, **common)

    for name, kind in (("attn_prefill", ATTN_PREFILL), ("attn_decode", ATTN_DECODE)):
        sel = op == name
        prefill = name == "attn_prefill"
        q = g["q_len"] if prefill else np.maximum(g["q_len"], 1.0)
        kv = np.maximum(g["kv_len"], q) if prefill else g["kv_len"]
        R.add(name, kind, sel, dtype=adt, batch=g["batch"], q_len=q, kv_len=kv, heads=g["num_heads"],
              kv_heads=g["num_kv_heads"], d_qk=g["head_dim"], d_v=g["head_dim"],
              kv_token_bytes=2 * g["num_kv_heads"] * g["head_dim"] * kvb,
              a_bytes=np.where(np.isin(adt_name, ("fp8", "int8")), 1.0, ob),
              causal=_flag(df, "causal", 1.0 if prefill else 0.0), **common)

    moe = op == "moe"
    pairs = g["tokens"] * g["top_k"]
    groups = np.minimum(g["num_experts"], pairs)  # the contract's routing is balanced
    H, inter = g["hidden"], g["intermediate"]
    full = moe & quant_flag  # rows that also time the token permute/unpermute
    R.add("moe_permute", ELEMENTWISE, full, m=pairs, n=H, a_bytes=ACT16, o_bytes=ab, **common)
    R.add("experts_gate_up", GROUPED_GEMM, moe, dtype=cdt, m=pairs, groups=groups, n=2 * inter, k=H, w_bytes=wb,
          a_bytes=ab, o_bytes=ACT16, **common)
    R.add("experts_quant", ELEMENTWISE, moe & quant, m=pairs, n=inter, k=2.0, a_bytes=ACT16, o_bytes=ab, **common)
    R.add("experts_down", GROUPED_GEMM, moe, dtype=cdt, m=pairs, groups=groups, n=H, k=inter, w_bytes=wb,
          a_bytes=ab, o_bytes=ACT16, **common)
    R.add("moe_unpermute", ELEMENTWISE, full, m=pairs, n=H, a_bytes=ACT16,
          o_bytes=ACT16 / np.maximum(g["top_k"], 1.0), **common)

    R.add("memcpy", ELEMENTWISE, op == "memcpy", m=g["bytes"], n=1.0, a_bytes=1.0, o_bytes=1.0, **common)
    world = np.maximum(g["world"], 1.0)
    dom_size = np.array([float(d.scale_up.domain_size) for d in devices])[hw] if len(df) else np.zeros(0)
    for name, kind in _COLL.items():
        R.add(name, kind, op == name, msg_bytes=g["bytes"], ranks=world, domain=np.minimum(world, dom_size),
              fanout=0.0, **common)
    unknown = ~np.isin(op, ("gemm", "attn_prefill", "attn_decode", "moe", "memcpy", *_COLL))
    if unknown.any():  # pragma: no cover - the reader rejects unknown ops
        i = int(np.argmax(unknown))
        raise MeasurementError(f"row {i + 2}: op {op[i]!r} has no op record")
    return R.table()


def shapes_from_ops(ops: OpTable, dtype: str = "bf16") -> list[dict]:
    """The measurement-contract shapes of the kernels in an op table (config 0): what the harness has
    to measure to check exactly the ops the simulator emits. Collectives and zero-count ops are left
    out (collectives are measured under torchrun with their own shape files)."""
    rows, seen = [], set()
    a = {c: v[:, 0] for c, v in ops.arrays.items()}
    for i, kind in enumerate(ops.kind):
        if a["count"][i] <= 0:
            continue
        if kind == GEMM and a["m"][i] >= 1:
            row = dict(op="gemm", dtype=dtype, m=round(a["m"][i]), n=round(a["n"][i]), k=round(a["k"][i]))
        elif kind in (ATTN_PREFILL, ATTN_DECODE) and a["batch"][i] >= 1:
            if a["d_qk"][i] != a["d_v"][i] or a["kv_heads"][i] < 1:
                continue  # MLA: not expressible with one head_dim in the contract
            row = dict(op="attn_prefill" if kind == ATTN_PREFILL else "attn_decode", dtype=dtype, kv_dtype=dtype,
                       batch=round(a["batch"][i]), q_len=round(a["q_len"][i]), kv_len=round(a["kv_len"][i]),
                       num_heads=round(a["heads"][i]), num_kv_heads=round(a["kv_heads"][i]),
                       head_dim=round(a["d_qk"][i]))
        else:
            continue
        key = tuple(sorted(row.items()))
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def load_specs(df: pd.DataFrame, hardware: str | None = None,
               overrides: dict[str, HardwareSpec] | None = None) -> dict[str, HardwareSpec]:
    """The hardware profile of every ``hardware`` id the measurements name (``overrides`` first); an id that
    names no profile is reported with the first row that uses it (the file, when ``df.attrs`` carries it)."""
    overrides = overrides or {}
    specs = {}
    for hid in sorted(set(df["hardware"])):
        try:
            specs[hid] = overrides.get(hid) or load_hardware(hid)
        except SpecError as exc:
            if exc.key_path or exc.file != hid:
                raise
            label = df.index[(df["hardware"] == hid).to_numpy()][0]  # (the reader's row number: line - 2)
            where = df.attrs.get("file", "measurements")
            raise SpecError(where, f"line {int(label) + 2}, column 'hardware'", f"{hid}: {exc.message}") from None
    return specs


def predict(df: pd.DataFrame, specs: dict[str, HardwareSpec], timing: TimingModel | None = None) -> pd.DataFrame:
    """Add ``predicted_us``, ``ape``, ``ratio`` (predicted / measured) and ``bound`` columns."""
    check_frame(df, "predict: df")
    if not isinstance(specs, dict) or not all(isinstance(h, HardwareSpec) for h in specs.values()):
        raise MeasurementError("predict: specs: expected a dict of profile id -> HardwareSpec (load_hardware(...))")
    missing = sorted(set(df["hardware"]) - set(specs))
    if missing:
        raise MeasurementError(f"no hardware profile for {', '.join(missing)}")
    ops = ops_from_measurements(df, specs)
    from ..timing.base import checked_timing

    times = (checked_timing("predict", timing) or RooflineModel()).evaluate(ops)
    per_row = times.per_row()
    out = df.copy()
    out["predicted_us"] = per_row[: len(df)] * 1e6 if len(per_row) else np.zeros(len(df))
    out["ratio"] = out["predicted_us"] / out["latency_us"]
    out["ape"] = (out["ratio"] - 1.0).abs()
    # the bound of the row's longest op
    from ..timing.base import BOUNDS

    rows, t = ops["row"][:, 0], (times.time_s * ops["count"])[:, 0]
    bound = times.bound[:, 0]
    best = pd.DataFrame({"row": rows, "t": t, "b": bound}).sort_values("t").groupby("row").last()
    out["bound"] = [BOUNDS[int(best["b"].get(i, 1))] for i in range(len(df))]
    return out


def _score(g: pd.DataFrame) -> dict:
    ape = g["ape"].to_numpy()
    return {"n": int(len(g)), "median_ape": float(np.median(ape)), "p90_ape": float(np.percentile(ape, 90)),
            "within_25pct": float(np.mean(ape <= 0.25)), "bias": float(np.exp(np.mean(np.log(g["ratio"]))))}


def score(pred: pd.DataFrame) -> dict:
    """The validate JSON contract: overall and per (hardware, op) error figures."""
    if not isinstance(pred, pd.DataFrame) or pred.empty or not {"hardware", "op", "ape", "ratio"} <= set(pred.columns):
        raise MeasurementError("score: pred: expected the non-empty DataFrame predict(...) returns (hardware, op, ape, "
                               "ratio columns)")
    groups = [{"hardware": hw, "op": op, **_score(g)} for (hw, op), g in pred.groupby(["hardware", "op"], sort=True)]
    return {"overall": _score(pred), "groups": groups}
