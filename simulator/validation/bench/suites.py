"""Shape suites: which kernels to measure.

``tiny``  a handful of small shapes (seconds; what CI runs),
``quick`` CPU-friendly shapes across the op kinds (under a minute on a laptop),
``full``  GPU shapes of the real models in workloads/ at realistic batch and context sizes,
or a CSV file of shapes in the measurement-contract columns (latency_us left empty).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ...errors import SimulatorError
from ..measurements import COLUMNS


def _gemm(m, n, k, dtype):
    return dict(op="gemm", dtype=dtype, m=m, n=n, k=k)


def _decode(b, kv, h, kvh, d, dtype, kv_dtype=None):
    return dict(op="attn_decode", dtype=dtype, kv_dtype=kv_dtype or dtype, batch=b, q_len=1, kv_len=kv,
                num_heads=h, num_kv_heads=kvh, head_dim=d)


def _prefill(b, s, h, kvh, d, dtype):
    return dict(op="attn_prefill", dtype=dtype, kv_dtype=dtype, batch=b, q_len=s, kv_len=s, num_heads=h,
                num_kv_heads=kvh, head_dim=d)


def _moe(t, hidden, inter, e, k, dtype):
    return dict(op="moe", dtype=dtype, tokens=t, hidden=hidden, intermediate=inter, num_experts=e, top_k=k)


def tiny() -> list[dict]:
    return [_gemm(m, 256, 256, "fp32") for m in (1, 16, 64, 256)] + [
        _gemm(128, 512, 512, "fp32"), _gemm(8, 1024, 512, "fp32"),
        _decode(4, 256, 8, 2, 64, "fp32"), _decode(16, 1024, 8, 2, 64, "fp32"), _decode(1, 2048, 8, 2, 64, "fp32"),
        _prefill(1, 128, 8, 2, 64, "fp32"), _prefill(1, 512, 8, 2, 64, "fp32"), _prefill(2, 256, 8, 2, 64, "fp32"),
        {**_prefill(1, 128, 8, 2, 64, "fp32"), "kv_len": 512},  # a chunk after 384 cached tokens
        _moe(8, 256, 512, 8, 2, "fp32"), _moe(64, 256, 512, 8, 2, "fp32"), _moe(256, 256, 512, 8, 2, "fp32"),
        dict(op="memcpy", dtype="", bytes=2**20), dict(op="memcpy", dtype="", bytes=2**24),
        dict(op="memcpy", dtype="", bytes=2**26)]


def quick() -> list[dict]:
    """fp32 only: many CPUs have no fast bf16 matmul path (bf16 GEMMs can run 100x slower there)."""
    rows = []
    for m in (1, 4, 16, 64, 256, 1024):
        for n, k in ((1024, 1024), (4096, 1024), (1024, 4096), (2048, 2048)):
            rows.append(_gemm(m, n, k, "fp32"))
    for b in (1, 4, 16, 64):
        for kv in (256, 1024, 4096):
            rows.append(_decode(b, kv, 16, 4, 64, "fp32"))
    for b, s in ((1, 128), (1, 512), (1, 1024), (2, 512), (4, 256), (1, 2048)):
        rows.append(_prefill(b, s, 16, 4, 64, "fp32"))
    for t in (1, 8, 32, 128, 512, 2048):
        rows.append(_moe(t, 512, 1024, 8, 2, "fp32"))
    for p in range(16, 29, 2):
        rows.append(dict(op="memcpy", dtype="", bytes=2**p))
    return rows


def full() -> list[dict]:
    """On a GPU: exactly the GEMM and attention shapes the simulator emits for the models in workloads/
    (per device, TP 1 and 8, decode batches and prefill chunks at several context lengths, taken from
    the op builder's own records), their MoE layers, and copies."""
    from ...ops.build import StepShape, build_ops
    from ...plan import simple_phase
    from ...specs.catalog import load_hardware, load_model
    from ..validate import shapes_from_ops

    hw = load_hardware("h100-sxm")  # the shapes do not depend on the device
    rows: list[dict] = []
    seen: set = set()
    for mid, tps in (("llama-3.1-8b", (1,)), ("llama-3.1-70b", (8,)), ("mixtral-8x7b", (1, 8)), ("dbrx", (8,)),
                     ("qwen3-30b-a3b", (1,))):
        m = load_model(mid)
        for tp in tps:
            plan = simple_phase(hw, m, tp, tp=tp)
            shapes = [StepShape(decode_seqs=b, decode_kv=kv) for b in (1, 8, 32, 128, 256) for kv in (2048, 8192)
                      if b * kv <= 256 * 8192]
            shapes += [StepShape(prefill_seqs=b, prefill_len=s, prefill_ctx=c)
                       for b, s, c in ((1, 512, 0), (1, 2048, 0), (1, 8192, 0), (4, 2048, 0), (1, 2048, 6144))]
            for dtype in ("bf16", "fp8"):
                for shape in shapes:
                    for row in shapes_from_ops(build_ops(m, plan, shape, "bench"), dtype):
                        if row["op"].startswith("attn") and dtype == "fp8":
                            continue
                        key = tuple(sorted(row.items()))
                        if key not in seen:
                            seen.add(key)
                            rows.append(row)
            if m.moe:
                for t in (1, 8, 64, 256, 1024, 4096, 16384):
                    rows.append(_moe(t, m.hidden_size, m.moe.expert_intermediate // tp, m.moe.num_experts,
                                     m.moe.top_k, "bf16"))
    for p in range(16, 33):
        rows.append(dict(op="memcpy", dtype="", bytes=2**p))
    return rows


SUITES = {"tiny": tiny, "quick": quick, "full": full}


def load_suite(name_or_file: str) -> pd.DataFrame:
    if name_or_file in SUITES:
        rows = SUITES[name_or_file]()
        df = pd.DataFrame(rows)
    else:
        path = Path(name_or_file)
        if not path.exists():
            raise SimulatorError(f"unknown suite {name_or_file!r}: use tiny, quick, full or a shape CSV file")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise SimulatorError(f"{path}: cannot read the shape file ({' '.join(str(exc).split())})") from None
        if "op" not in df.columns:
            raise SimulatorError(f"{path}: a shape file needs at least an 'op' column")
        if df.empty:
            raise SimulatorError(f"{path}: no shapes (a header line and one shape per line)")
        _check_shapes(df, str(path))
    df = df.reindex(columns=[c for c in COLUMNS if c not in ("hardware", "latency_us")])
    for c in ("op", "dtype", "kv_dtype"):
        df[c] = df[c].astype(object).where(df[c].notna(), "")
    return df.reset_index(drop=True)


def _check_shapes(df: pd.DataFrame, path: str) -> None:
    """Every row of a shape file, before anything is measured: a known op, the shape columns it needs as whole
    numbers >= 1, and only shapes the harness times as written (a decode attention row of one query token, a MoE
    row whose token-expert pairs spread evenly over the experts hit), so a bad row cannot end a long run midway
    nor be written as a shape that was not timed."""
    from ..measurements import NEEDS

    def bad(i: int, col: str, why: str):
        return SimulatorError(f"{path}: line {i + 2}, column {col!r}: {why}")

    for i, row in enumerate(df.to_dict("records")):
        op = str(row.get("op", "")).strip()
        if op not in NEEDS:
            raise bad(i, "op", f"expected one of {', '.join(NEEDS)}, got {op!r}")
        vals = {}
        need = tuple(c for c in NEEDS[op] if c != "world")  # (a collective's world is the torchrun one it runs in)
        for col in need + (("q_len",) if op == "attn_decode" and str(row.get("q_len", "")).strip() else ()):
            raw = str(row.get(col, "")).strip()
            try:
                v = float(raw)
            except ValueError:
                v = math.nan
            if not (math.isfinite(v) and v >= 1 and v == int(v)):
                raise bad(i, col, f"expected a whole number >= 1 for op {op}, got {raw!r}")
            vals[col] = int(v)
        if op == "attn_decode" and vals.get("q_len", 1) != 1:
            raise bad(i, "q_len", "decode attention is timed for one query token a sequence: 1 or empty")
        if op == "moe":
            pairs = vals["tokens"] * vals["top_k"]
            if pairs % min(vals["num_experts"], pairs):
                raise bad(i, "tokens", f"{pairs} token-expert pairs do not spread evenly over "
                                       f"{min(vals['num_experts'], pairs)} experts (the harness times them so)")
