"""Number formats: how many bytes a weight / activation / KV element takes and which peak applies.

W4A8 stores 4-bit weights (half the bytes of fp8) but computes on 8-bit tensor cores; FP8 KV caches
carry one fp32 scale per N tokens per KV head (per-N-token quantisation).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InfeasibleError, SimulatorError
from .specs.hardware import HardwareSpec


@dataclass(frozen=True)
class Precision:
    name: str
    weight_bytes: float  # per parameter, scales included
    act_bytes: float  # per activation element read or written by a GEMM
    compute_dtypes: tuple[str, ...]  # peaks to use, in order of preference
    note: str


# Group-wise scales: W4 uses one fp16 scale per 128 weights (+2/128 B); NVFP4 one fp8 scale per 16.
PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", 4.0, 4.0, ("fp32",), "fp32 weights and activations (non-tensor-core rate)"),
    Precision("bf16", 2.0, 2.0, ("bf16", "fp16"), "bf16 weights and activations"),
    Precision("fp16", 2.0, 2.0, ("fp16", "bf16"), "fp16 weights and activations"),
    Precision("fp8", 1.0, 1.0, ("fp8",), "fp8 (e4m3) weights and activations, per-tensor/block scales ignored"),
    Precision("int8", 1.0, 1.0, ("int8",), "int8 weights and activations (W8A8)"),
    Precision("w4a8", 0.5 + 2 / 128, 1.0, ("int8", "fp8"),
              "4-bit weights (group-128 fp16 scales) on 8-bit tensor cores"),
    Precision("w4a16", 0.5 + 2 / 128, 2.0, ("bf16", "fp16"), "4-bit weights dequantised to bf16 (weight-only)"),
    Precision("fp4", 0.5 + 1 / 16, 0.5 + 1 / 16, ("fp4",), "NVFP4/MXFP4 weights and activations"),
)}

KV_PRECISIONS: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}
KV_SCALE_BYTES = 4.0  # one fp32 scale per (N tokens x KV head) for K and for V


# other spellings engines, checkpoints and benchmark logs use for the precisions above
_SPELLINGS = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
              "fp8_e4m3": "fp8", "fp8-e4m3": "fp8", "e4m3": "fp8", "fp8_e5m2": "fp8", "float8": "fp8",
              "nvfp4": "fp4", "mxfp4": "fp4", "modelopt_fp4": "fp4", "awq": "w4a16", "gptq": "w4a16",
              "int4": "w4a16", "w8a8": "int8"}


def canonical_precision(name: str | None) -> str | None:
    """``name`` as this package spells a precision (``FP8``, ``fp8_e4m3`` -> ``fp8``; ``NVFP4`` -> ``fp4``;
    ``bfloat16`` -> ``bf16``; ``AWQ`` -> ``w4a16``); unknown names are returned as given, for the caller's error."""
    if name is None:
        return None
    n = str(name).strip().lower()
    return _SPELLINGS.get(n, n)


def get_precision(name: str) -> Precision:
    try:
        return PRECISIONS[name]
    except KeyError:
        raise SimulatorError(f"unknown precision {name!r} (choose from {', '.join(PRECISIONS)})") from None


def kv_bytes_per_element(kv_precision: str, scale_tokens: int, elements_per_scale: int) -> float:
    """Bytes per cached K/V element, amortising per-N-token scales (8-bit formats only)."""
    try:
        base = KV_PRECISIONS[kv_precision]
    except KeyError:
        raise SimulatorError(
            f"unknown KV precision {kv_precision!r} (choose from {', '.join(KV_PRECISIONS)})") from None
    if base >= 2.0 or scale_tokens <= 0:
        return base
    return base + KV_SCALE_BYTES / (scale_tokens * max(elements_per_scale, 1))


def compute_dtype(precision: Precision, hw: HardwareSpec) -> str:
    """The peak that applies to this precision on this device, or a clear error."""
    for dtype in precision.compute_dtypes:
        if hw.peak(dtype) > 0:
            return dtype
    have = ", ".join(sorted(hw.peak_flop_per_s)) or "none"
    raise InfeasibleError(
        f"{hw.id} has no {'/'.join(precision.compute_dtypes)} rate for precision {precision.name} "
        f"(its profile lists: {have})")


def attention_dtype(precision: Precision, kv_precision: str, hw: HardwareSpec) -> str:
    """8-bit attention (FP8 FlashAttention) when both activations and KV are 8-bit; else 16-bit."""
    if precision.act_bytes <= 1.0 and KV_PRECISIONS.get(kv_precision, 2.0) <= 1.0:
        for dtype in ("fp8", "int8"):
            if hw.peak(dtype) > 0:
                return dtype
    for dtype in ("bf16", "fp16", "fp32"):
        if hw.peak(dtype) > 0:
            return dtype
    return compute_dtype(precision, hw)
