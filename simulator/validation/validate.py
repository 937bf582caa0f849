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

from ..errors import MeasurementError
from ..ops.kinds import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    ATTN_DECODE,
    ATTN_PREFILL,
    ELEMENTWISE,
    GEMM,
    GROUPED_GEMM,
    OpTable,
    OpTableBuilder,
)
from ..precision import KV_PRECISIONS, PRECISIONS
from ..specs.catalog import load_hardware
from ..specs.hardware import HardwareSpec
from ..timing.base import TimingModel
from ..timing.roofline import RooflineModel

_COLL = {"all_reduce": ALL_REDUCE, "all_gather": ALL_GATHER, "all_to_all": ALL_TO_ALL}
ACT16 = 2.0


def _compute_dtype(hw: HardwareSpec, dtype: str) -> str:
    order = PRECISIONS[dtype].compute_dtypes if dtype in PRECISIONS else ("bf16", "fp16", "fp32")
    return next((d for d in order + ("bf16", "fp16", "fp32") if hw.peak(d) > 0), "fp32")


def _attention_dtype(hw: HardwareSpec, dtype: str, kv_dtype: str) -> str:
    eight = dtype in ("fp8", "int8", "w4a8") and KV_PRECISIONS.get(kv_dtype or "bf16", 2.0) <= 1.0
    order = ("fp8", "int8") if eight else ((dtype,) if dtype in ("fp32", "bf16", "fp16") else ())
    return next((d for d in order + ("bf16", "fp16", "fp32") if hw.peak(d) > 0), "fp32")


def _flag(row, col: str, default: float) -> float:
    v = row.get(col, "")
    try:
        return float(v) if str(v).strip() != "" else default
    except (TypeError, ValueError):
        return default


def ops_from_measurements(df: pd.DataFrame, specs: dict[str, HardwareSpec]) -> OpTable:
    """The op records of every measured row (``row`` column = the row's position in ``df``).

    Optional extra columns (compatible with the contract): ``causal`` (0/1, attention; default 1
    for prefill), ``quant`` (0 = the row times the GEMM kernel(s) alone: no activation-quantisation
    kernel in front of an 8-bit GEMM, no token permute/unpermute around an MoE's grouped GEMMs)."""
    b = OpTableBuilder(n=1)
    for i, r in enumerate(df.to_dict("records")):
        op, hw = r["op"], specs[r["hardware"]]
        h = b.device(hw)
        dtype = r.get("dtype") or "bf16"
        prec = PRECISIONS.get(dtype, PRECISIONS["bf16"])
        wb, ab = prec.weight_bytes, prec.act_bytes
        ob = 4.0 if dtype == "fp32" else ACT16
        g = {c: float(r[c]) if r[c] == r[c] else 0.0 for c in
             ("m", "n", "k", "batch", "q_len", "kv_len", "num_heads", "num_kv_heads", "head_dim", "tokens", "hidden",
              "intermediate", "num_experts", "top_k", "bytes", "world")}
        cdt = _compute_dtype(hw, dtype)
        quant = ab < 2.0 and _flag(r, "quant", 1.0) > 0
        if op == "gemm":
            if quant:
                b.add("quant", "measured", ELEMENTWISE, hw=h, row=i, m=g["m"], n=g["k"], k=2.0, a_bytes=ACT16,
                      o_bytes=ab)
            b.add("gemm", "measured", GEMM, hw=h, dtype=cdt, row=i, m=g["m"], n=g["n"], k=g["k"], w_bytes=wb,
                  a_bytes=ab, o_bytes=ob)
        elif op in ("attn_prefill", "attn_decode"):
            kvd = r.get("kv_dtype") or ""
            kvb = KV_PRECISIONS.get(kvd) or (4.0 if dtype == "fp32" else ACT16)
            q = g["q_len"] if op == "attn_prefill" else max(g["q_len"], 1.0)
            kv = max(g["kv_len"], q) if op == "attn_prefill" else g["kv_len"]
            adt = _attention_dtype(hw, dtype, kvd)
            causal = _flag(r, "causal", 1.0 if op == "attn_prefill" else 0.0)
            b.add(op, "measured", ATTN_PREFILL if op == "attn_prefill" else ATTN_DECODE, hw=h, dtype=adt, row=i,
                  batch=g["batch"], q_len=q, kv_len=kv, heads=g["num_heads"], kv_heads=g["num_kv_heads"],
                  d_qk=g["head_dim"], d_v=g["head_dim"], kv_token_bytes=2 * g["num_kv_heads"] * g["head_dim"] * kvb,
                  a_bytes=1.0 if adt in ("fp8", "int8") else ob, causal=causal)
        elif op == "moe":
            pairs = g["tokens"] * g["top_k"]
            groups = min(g["num_experts"], pairs)  # the contract's routing is balanced
            H, inter = g["hidden"], g["intermediate"]
            kernel_only = _flag(r, "quant", 1.0) <= 0  # the row times the grouped GEMMs alone
            if not kernel_only:
                b.add("moe_permute", "measured", ELEMENTWISE, hw=h, row=i, m=pairs, n=H, a_bytes=ACT16, o_bytes=ab)
            b.add("experts_gate_up", "measured", GROUPED_GEMM, hw=h, dtype=cdt, row=i, m=pairs, groups=groups,
                  n=2 * inter, k=H, w_bytes=wb, a_bytes=ab, o_bytes=ACT16)
            if quant:
                b.add("experts_quant", "measured", ELEMENTWISE, hw=h, row=i, m=pairs, n=inter, k=2.0,
                      a_bytes=ACT16, o_bytes=ab)
            b.add("experts_down", "measured", GROUPED_GEMM, hw=h, dtype=cdt, row=i, m=pairs, groups=groups, n=H,
                  k=inter, w_bytes=wb, a_bytes=ab, o_bytes=ACT16)
            if not kernel_only:
                b.add("moe_unpermute", "measured", ELEMENTWISE, hw=h, row=i, m=pairs, n=H, a_bytes=ACT16,
                      o_bytes=ACT16 / max(g["top_k"], 1.0))
        elif op == "memcpy":
            b.add("memcpy", "measured", ELEMENTWISE, hw=h, row=i, m=g["bytes"], n=1.0, a_bytes=1.0, o_bytes=1.0)
        elif op in _COLL:
            world = max(g["world"], 1.0)
            domain = min(world, float(hw.scale_up.domain_size))
            b.add(op, "measured", _COLL[op], hw=h, row=i, msg_bytes=g["bytes"], ranks=world, domain=domain,
                  fanout=0.0)
        else:  # pragma: no cover - the reader rejects unknown ops
            raise MeasurementError(f"row {i + 2}: op {op!r} has no op record")
    return b.finish()


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
    overrides = overrides or {}
    return {hid: overrides.get(hid) or load_hardware(hid) for hid in sorted(set(df["hardware"]))}


def predict(df: pd.DataFrame, specs: dict[str, HardwareSpec], timing: TimingModel | None = None) -> pd.DataFrame:
    """Add ``predicted_us``, ``ape``, ``ratio`` (predicted / measured) and ``bound`` columns."""
    missing = sorted(set(df["hardware"]) - set(specs))
    if missing:
        raise MeasurementError(f"no hardware profile for {', '.join(missing)}")
    ops = ops_from_measurements(df, specs)
    times = (timing or RooflineModel()).evaluate(ops)
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
    groups = [{"hardware": hw, "op": op, **_score(g)} for (hw, op), g in pred.groupby(["hardware", "op"], sort=True)]
    return {"overall": _score(pred), "groups": groups}
