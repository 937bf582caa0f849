"""Routed-expert GEMMs run by a serving engine's own fused-MoE kernels.

The device profiles time a grouped GEMM with the efficiency of the best published kernels (DeepGEMM's grouped
GEMMs, rows P001-P028 of the published-kernel set: about 87% of HBM bandwidth when memory-bound). A serving engine
runs its own MoE kernels, and a served decode step, where a routed-expert GEMM streams expert weights for a few
tokens each, can take longer than those GEMMs at that rate. ``EngineMoEKernels`` wraps any TimingModel and times
every grouped GEMM of a listed format as the wrapped model's fixed floor plus its bytes over the engine's fraction of
the device bandwidth, keeping the wrapped model's time where that is longer (a compute-bound expert GEMM). A format
is a compute dtype with weights of that width (``fp8``: 8-bit weights, 8-bit math); a weight-only format (W4A16:
4-bit weights, 16-bit math) runs other kernels and keeps the wrapped model's time. The engine profiles
(``serving/engines.yaml``, ``moe_memory_fraction``) give the fractions with their sources; ``whatif`` and the
kernel checks keep the device profile's kernels. The fractions are read off decode steps, where expert GEMMs are
memory-bound; a prefill or mixed step's expert GEMMs take the same fraction where their bytes bind (a few hundred
tokens per expert at most), an extrapolation no measurement here has checked, and keep the wrapped model's time where
compute binds. A fraction is a serving-level figure: the engines' own fused-MoE kernel benchmarks run at about the
device profile's rate (reports/validation/engine-kernels.md), so it carries decode-step time that the modelled
kernels do not show, booked on the expert GEMMs.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ops.kinds import DTYPES, GROUPED_GEMM, OpTable
from ..precision import PRECISIONS
from .base import OpTimes, TimingModel
from .params import DeviceTable, per_row

# bytes of one weight element in each compute dtype's own format, scales included (``precision.PRECISIONS``; NaN: no
# such format, never matched)
_WEIGHT_BYTES = np.array([PRECISIONS[d].weight_bytes if d in PRECISIONS else np.nan for d in DTYPES])


class EngineMoEKernels:
    """``inner`` with each grouped GEMM whose weights are in ``fractions`` (dtype name -> fraction of the device's
    bandwidth, in (0, 1]) at no more than that fraction when memory-bound."""

    def __init__(self, inner: TimingModel, fractions: dict[str, float]):
        bad = {d: f for d, f in fractions.items() if d not in PRECISIONS or d not in DTYPES or not 0.0 < f <= 1.0}
        if bad:
            raise ValueError(f"EngineMoEKernels: expected dtype -> fraction in (0, 1], got {bad}")
        self.inner, self.fractions = inner, dict(fractions)
        self.name = f"{getattr(inner, 'name', 'timing')}+engine-moe"
        self._by_dtype = np.zeros(len(DTYPES))  # 0: the dtype keeps the wrapped model's time
        self._bytes = _WEIGHT_BYTES
        for d, f in fractions.items():
            self._by_dtype[DTYPES.index(d)] = f

    def evaluate(self, ops: OpTable) -> OpTimes:
        t = self.inner.evaluate(ops)
        rows = np.flatnonzero(ops.kind == GROUPED_GEMM)
        if not len(rows):
            return t
        sub = ops.select(rows)
        dt = per_row(sub["dtype"])
        frac = np.where(per_row(sub["w_bytes"]) == self._bytes[dt], self._by_dtype[dt], 0.0)
        if not frac.any():
            return t
        dev = DeviceTable.of(ops.devices)
        _, nbytes = sub.flop_bytes()
        bw = dev.bw[per_row(sub["hw"])]
        mem = np.divide(nbytes, frac * bw, out=np.zeros(np.broadcast(nbytes, frac * bw).shape), where=frac > 0)
        engine = t.overhead_s[rows] + mem
        slower = engine > t.time_s[rows]
        time_s, memory_s = t.time_s.copy(), t.memory_s.copy()
        time_s[rows] = np.where(slower, engine, t.time_s[rows])
        memory_s[rows] = np.where(slower, mem, t.memory_s[rows])
        return replace(t, time_s=time_s, memory_s=memory_s)


__all__ = ["EngineMoEKernels"]
