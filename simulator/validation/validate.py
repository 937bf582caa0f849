"""Predict measured kernels with the same TimingModel the simulator uses, and score the error.

Each measurement row becomes one op (FLOP, bytes, collective) of an op table, so thousands of
rows are predicted in one vectorised pass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import MeasurementError
from ..ops.build import ALL_GATHER, ALL_REDUCE, ALL_TO_ALL, COMPUTE, FrozenOpTable
from ..precision import KV_PRECISIONS, PRECISIONS
from ..specs.catalog import load_hardware
from ..specs.hardware import OP_CLASSES, HardwareSpec
from ..timing.base import TimingModel
from ..timing.roofline import RooflineModel

OP_CLASS = {"gemm": "gemm", "attn_prefill": "attention", "attn_decode": "attention", "moe": "moe",
            "memcpy": "elementwise", "all_reduce": "comm", "all_gather": "comm", "all_to_all": "comm"}
OP_KIND = {"all_reduce": ALL_REDUCE, "all_gather": ALL_GATHER, "all_to_all": ALL_TO_ALL}


def _peak(hw: HardwareSpec, op: str, dtype: str, kv_dtype: str) -> float:
    if op.startswith("attn"):
        eight = dtype in ("fp8", "int8", "w4a8") and KV_PRECISIONS.get(kv_dtype or "bf16", 2.0) <= 1.0
        order = ("fp8", "int8", "bf16") if eight else ((dtype,) if dtype in ("fp32", "bf16", "fp16") else ("bf16",))
        order = order + ("bf16", "fp16", "fp32")
    elif dtype in PRECISIONS:
        order = PRECISIONS[dtype].compute_dtypes
    else:
        order = ("bf16", "fp16", "fp32")
    return next((hw.peak(d) for d in order if hw.peak(d) > 0), 0.0)


def op_table(df: pd.DataFrame, specs: dict[str, HardwareSpec]) -> FrozenOpTable:
    """One op per measurement row (n_ops = rows, one configuration)."""
    n = len(df)
    op = df["op"].to_numpy()
    dtype = df["dtype"].to_numpy()
    kvd = df["kv_dtype"].to_numpy()
    g = {c: df[c].fillna(0.0).to_numpy(dtype=float) for c in
         ("m", "n", "k", "batch", "q_len", "kv_len", "num_heads", "num_kv_heads", "head_dim", "tokens", "hidden",
          "intermediate", "num_experts", "top_k", "bytes", "world")}
    wb = np.array([PRECISIONS[d].weight_bytes if d in PRECISIONS else 2.0 for d in dtype])
    ab = np.array([PRECISIONS[d].act_bytes if d in PRECISIONS else 2.0 for d in dtype])
    ob = np.where(dtype == "fp32", 4.0, 2.0)
    kvb = np.array([KV_PRECISIONS.get(k or "", None) or (4.0 if d == "fp32" else 2.0) for k, d in zip(kvd, dtype)])

    flop = np.zeros(n)
    byts = np.zeros(n)
    m, nn, k = g["m"], g["n"], g["k"]
    is_ = {name: op == name for name in OP_CLASS}
    flop = np.where(is_["gemm"], 2 * m * nn * k, flop)
    byts = np.where(is_["gemm"], m * k * ab + k * nn * wb + m * nn * ob, byts)
    b, q, L, h, kh, d = g["batch"], g["q_len"], g["kv_len"], g["num_heads"], g["num_kv_heads"], g["head_dim"]
    q = np.where(is_["attn_decode"], np.maximum(q, 1.0), q)
    prior = np.maximum(L - q, 0.0)
    pairs = np.where(is_["attn_prefill"], b * (q * prior + q * (q + 1) / 2), b * q * L)
    att = is_["attn_prefill"] | is_["attn_decode"]
    flop = np.where(att, 4 * pairs * h * d, flop)
    byts = np.where(att, b * (2 * q * h * d * ob + 2 * L * kh * d * kvb), byts)
    T, H, inter, E, tk = g["tokens"], g["hidden"], g["intermediate"], g["num_experts"], g["top_k"]
    moe = is_["moe"]
    hit = np.where(moe, np.minimum(E, T * tk), 0.0)  # the contract's routing is balanced
    flop = np.where(moe, 2 * T * tk * 3 * H * inter, flop)
    byts = np.where(moe, hit * 3 * H * inter * wb + T * tk * (2 * H + 3 * inter) * ab, byts)
    byts = np.where(is_["memcpy"], 2 * g["bytes"], byts)

    ids = sorted(specs)
    hw_idx = np.array([ids.index(h) for h in df["hardware"]])
    hws = [specs[i] for i in ids]

    def per_hw(fn):
        return np.array([fn(h) for h in hws], dtype=float)[hw_idx]

    peak = np.array([_peak(specs[h], o, dt, kv) for h, o, dt, kv in zip(df["hardware"], op, dtype, kvd)])
    cls = np.array([OP_CLASS[o] if OP_CLASS[o] != "comm" else "elementwise" for o in op])
    cls_idx = np.array([OP_CLASSES.index(c) for c in cls])
    eff = np.array([[[getattr(h.efficiency.classes[c], p) for p in ("compute_fraction", "compute_ramp_s",
                                                                       "memory_fraction", "memory_ramp_s")]
                     for c in OP_CLASSES] for h in hws])  # [hw, class, 4]
    e = eff[hw_idx, cls_idx]  # [rows, 4]
    kind = np.array([OP_KIND.get(o, COMPUTE) for o in op], dtype=np.int64)
    world = np.maximum(g["world"], 1.0)
    domain = np.minimum(world, per_hw(lambda h: h.scale_up.domain_size))
    arrays = {
        "count": np.ones(n), "flop": flop, "bytes": byts, "peak": peak, "bw": per_hw(lambda h: h.hbm_bytes_per_s),
        "cf": e[:, 0], "cr": e[:, 1], "mf": e[:, 2], "mr": e[:, 3],
        "launch": per_hw(lambda h: h.efficiency.launch_overhead_s),
        "comm_bytes": np.where(kind != COMPUTE, g["bytes"], 0.0), "group": world, "domain": domain,
        "up_bw": per_hw(lambda h: h.scale_up.bandwidth_bytes_per_s), "up_lat": per_hw(lambda h: h.scale_up.latency_s),
        "out_bw": per_hw(lambda h: h.scale_out.bandwidth_bytes_per_s),
        "out_lat": per_hw(lambda h: h.scale_out.latency_s),
        "coll_frac": per_hw(lambda h: h.efficiency.collective_bandwidth_fraction),
    }
    arrays = {c: v.reshape(n, 1).astype(float) for c, v in arrays.items()}
    return FrozenOpTable(tuple(op), tuple("measured" for _ in op), tuple(cls), kind, arrays, 1)


def load_specs(df: pd.DataFrame, hardware: str | None = None,
               overrides: dict[str, HardwareSpec] | None = None) -> dict[str, HardwareSpec]:
    overrides = overrides or {}
    specs = {}
    for hid in sorted(set(df["hardware"])):
        specs[hid] = overrides.get(hid) or load_hardware(hid)
    return specs


def predict(df: pd.DataFrame, specs: dict[str, HardwareSpec], timing: TimingModel | None = None) -> pd.DataFrame:
    """Add ``predicted_us``, ``ape`` and ``ratio`` (predicted / measured) columns."""
    missing = sorted(set(df["hardware"]) - set(specs))
    if missing:
        raise MeasurementError(f"no hardware profile for {', '.join(missing)}")
    times = (timing or RooflineModel()).evaluate(op_table(df, specs))
    out = df.copy()
    out["predicted_us"] = times.time_s[:, 0] * 1e6
    out["ratio"] = out["predicted_us"] / out["latency_us"]
    out["ape"] = (out["ratio"] - 1.0).abs()
    out["bound"] = np.where(times.comm_s[:, 0] > 0, "communication",
                            np.where(times.compute_s[:, 0] >= times.memory_s[:, 0], "compute", "memory"))
    return out


def _score(g: pd.DataFrame) -> dict:
    ape = g["ape"].to_numpy()
    return {"n": int(len(g)), "median_ape": float(np.median(ape)), "p90_ape": float(np.percentile(ape, 90)),
            "within_25pct": float(np.mean(ape <= 0.25)), "bias": float(np.exp(np.mean(np.log(g["ratio"]))))}


def score(pred: pd.DataFrame) -> dict:
    """The validate JSON contract: overall and per (hardware, op) error figures."""
    groups = [{"hardware": hw, "op": op, **_score(g)} for (hw, op), g in pred.groupby(["hardware", "op"], sort=True)]
    return {"overall": _score(pred), "groups": groups}
