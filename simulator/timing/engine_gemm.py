"""Dense FP8 GEMMs of a block-scaled checkpoint run by a serving engine's own kernels.

A model released in FP8 with 2-D block scales (128x128 weight blocks and per-token-group activation scales:
DeepSeek-V3/R1, the Qwen3 FP8 releases; ``ModelSpec.fp8_block_scaled``) needs GEMMs that apply a scale per
block of the K loop. The device profiles time an FP8 GEMM at the rate of the best published ones (DeepGEMM, rows
P001-P018 of the published-kernel set), which is what per-tensor FP8 GEMMs (cuBLASLt, CUTLASS) reach too. A
serving engine's own block-scaled kernels can be slower where compute binds (prefill), and
``EngineBlockFp8Gemms`` wraps any TimingModel and times every dense GEMM with 8-bit FP8 weights, on the devices the
engine profile lists (measured there, or of the same architecture), at ``factor`` times the device profile's compute
time as a kernel benchmark sees it (at the sustained clock; a kernel this far below peak is not held back by the
power limit that ``served`` models), keeping the wrapped time where that is longer (a memory-bound decode GEMM,
whose time the factor does not describe). The engine profiles (``serving/engines.yaml``, ``block_fp8_gemm_factor``)
give the factor, the releases and the devices with their sources; ``whatif`` and the kernel checks keep the device
profile's kernels, and a model whose FP8 weights are scaled per tensor or channel is not wrapped.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ops.kinds import DTYPE_INDEX, GEMM, OpTable
from .base import OpTimes, TimingModel
from .params import DeviceTable, per_row

_FP8 = DTYPE_INDEX["fp8"]


class EngineBlockFp8Gemms:
    """``inner`` with every dense FP8 GEMM (8-bit weights) on a device of ``hardware`` (profile ids) at no less than
    ``factor`` x its unthrottled compute time."""

    def __init__(self, inner: TimingModel, factor: float, hardware: tuple[str, ...]):
        if not np.isfinite(factor) or factor < 1.0:
            raise ValueError(f"EngineBlockFp8Gemms: expected a factor >= 1, got {factor!r}")
        self.inner, self.factor, self.hardware = inner, float(factor), frozenset(hardware)
        self.name = f"{getattr(inner, 'name', 'timing')}+engine-block-fp8"

    def evaluate(self, ops: OpTable) -> OpTimes:
        t = self.inner.evaluate(ops)
        rows = np.flatnonzero(ops.kind == GEMM)
        if not len(rows) or self.factor == 1.0:
            return t
        sub = ops.select(rows)
        hw = per_row(sub["hw"])
        measured = np.array([d.id in self.hardware for d in ops.devices])[hw.astype(int)]
        fp8 = (per_row(sub["dtype"]) == _FP8) & (per_row(sub["w_bytes"]) == 1.0) & measured
        if not fp8.any():
            return t
        # the compute time a kernel benchmark sees: a served step's is at the served fraction of the clock (so the
        # roofline and the models built on it time it; a measured model's compute time is taken the same way)
        bench = t.compute_s[rows] * (DeviceTable.of(ops.devices).served[hw.astype(int)] if ops.served else 1.0)
        comp = np.maximum(t.compute_s[rows], self.factor * bench)
        engine = t.overhead_s[rows] + comp
        slower = fp8 & (engine > t.time_s[rows])
        time_s, compute_s = t.time_s.copy(), t.compute_s.copy()
        time_s[rows] = np.where(slower, engine, t.time_s[rows])
        compute_s[rows] = np.where(slower, comp, t.compute_s[rows])
        return replace(t, time_s=time_s, compute_s=compute_s)


__all__ = ["EngineBlockFp8Gemms"]
