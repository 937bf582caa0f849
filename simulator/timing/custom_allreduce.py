"""Small all-reduces run by a serving engine's own one-shot kernel instead of NCCL.

Serving engines do not send a decode step's all-reduces (a few hundred KB per layer) through NCCL: vLLM's
custom all-reduce, SGLang's custom all-reduce and TensorRT-LLM's one-shot / two-shot AllReduce read the peers'
buffers directly over NVLink, with a fixed cost of about half of NCCL's. ``CustomAllReduce`` wraps any
TimingModel and times every all-reduce that such a kernel can take (inside one NVLink domain, not on PCIe
boards, at most ``max_bytes``) as the engine's fixed cost plus the same bandwidth term as NCCL, keeping the
wrapped model's time where that is shorter. The engine profiles (``serving/engines.yaml``) give the constants
with their sources; ``whatif`` and the kernel checks keep NCCL's figures.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ops.kinds import ALL_REDUCE, OpTable, wire_bytes
from .base import OpTimes, TimingModel
from .collectives import collective_latency_s, collective_time_s
from .params import DeviceTable, collective_family_index


class CustomAllReduce:
    """``inner`` with the small all-reduces of one NVLink domain at ``latency_s`` + NCCL's bandwidth term."""

    def __init__(self, inner: TimingModel, latency_s: float, max_bytes: float):
        self.inner, self.latency_s, self.max_bytes = inner, float(latency_s), float(max_bytes)
        self.name = f"{getattr(inner, 'name', 'timing')}+custom-allreduce"

    def evaluate(self, ops: OpTable) -> OpTimes:
        t = self.inner.evaluate(ops)
        rows = np.flatnonzero(ops.kind == ALL_REDUCE)
        if not len(rows):
            return t
        sub = ops.select(rows)
        dev = DeviceTable.of(ops.devices)
        fam = collective_family_index(sub)
        a, hw = sub.arrays, sub["hw"]
        ranks = np.maximum(a["ranks"], 1.0)
        one_domain = (ranks <= np.maximum(a["domain"], 1.0)) & (dev.pcie[hw] == 0) & (ranks > 1)
        small = wire_bytes(sub.kind, a) <= self.max_bytes
        nccl = collective_time_s(sub, dev, fam)
        custom = nccl - collective_latency_s(sub, dev, fam) + self.latency_s
        mine = np.where(one_domain & small, np.minimum(t.time_s[rows], custom), t.time_s[rows])
        time_s, comm_s = t.time_s.copy(), t.comm_s.copy()
        time_s[rows], comm_s[rows] = mine, mine
        return replace(t, time_s=time_s, comm_s=comm_s)


__all__ = ["CustomAllReduce"]
