"""The default timing model: a roofline at the level of mechanisms, per kernel family.

For a compute op on one device::

    t = floor + max(tc, tm) + overlap * min(tc, tm)
    tc = compute_ramp + FLOP_eff / (compute_fraction * size_efficiency * peak * sustained_clock)
    tm = memory_ramp + bytes / (memory_fraction * bandwidth)

with the family's parameters from the hardware profile's ``efficiency.kernels`` block (each cites
its measurement) and these size mechanisms:

* **GEMM** (``gemm``, ``gemm_fp8``): wave quantisation of 128x128 output tiles over the SMs, and a
  K-loop efficiency ``K / (K + size_half)`` (prologue/epilogue per output tile).
* **Grouped GEMM** (routed experts): the busiest rank's token-expert pairs (``imbalance`` x the mean)
  and an efficiency that grows with tokens per expert, ``t_e / (t_e + size_half)``.
* **Prefill attention**: FLOP efficiency grows with the keys each query sees,
  ``kv / (kv + size_half)``, loses the diagonal tiles of causal masking, ``1 / (1 + c * 128 / q)``,
  and grows with head dim, ``d / (d + 32)`` normalised to d = 128 (FlashAttention-3 figure,
  published-kernels rows P055-P089).
* **Decode attention**: bandwidth plus a cost per (sequence x KV head) work block per wave of SMs.
* **Elementwise**: bandwidth plus its floor.

Collectives are costed in ``collectives.py``. The model never returns less than the pure bound
``max(FLOP/peak, bytes/bandwidth)`` (``pure_roofline_s``; a property test checks it).
"""

from __future__ import annotations

import numpy as np

from ..ops.kinds import ATTN_DECODE, ATTN_PREFILL, ELEMENTWISE, GEMM, GROUPED_GEMM, OpTable, is_collective, wire_bytes
from .base import OpTimes, empty_times
from .collectives import collective_time_s
from .params import DeviceTable, collective_family_index, kernel_family_index

TILE = 128.0  # output tile edge of Hopper/Ampere tensor-core GEMM and attention kernels (CUTLASS, FA2/FA3)
# Causal diagonal-tile waste of prefill attention, fitted on FlashAttention-3 forward, H100, head dim
# 128, causal vs non-causal (published-kernels rows P067-P078): 2.26 x TILE / q_len extra work.
CAUSAL_DIAGONAL = 2.26
HEAD_DIM_HALF = 32.0  # FA3 rows P055-P089: efficiency grows with head dim as d / (d + 32)


def _div(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return np.divide(a, b, out=np.full(a.shape, np.inf), where=b > 0)


def size_efficiency(ops: OpTable, dev: DeviceTable, fam: np.ndarray) -> np.ndarray:
    """Fraction of the family's best FLOP efficiency that an op of this shape reaches (0, 1]."""
    a, hw = ops.arrays, ops["hw"]
    kind = ops.kind[:, None]
    eff = np.ones((ops.n_ops, ops.n))
    if not np.any(np.isin(ops.kind, (GEMM, GROUPED_GEMM, ATTN_PREFILL))):
        return eff
    half = dev.kernel["size_half"][hw, fam]
    # GEMM: wave quantisation of output tiles and the K-loop ramp. With at least a wave of tiles, the
    # kernel computes whole tiles in whole waves (padded work, a non-decreasing step function of the
    # shape); with fewer tiles than SMs, kernels split K (or stream-K) to fill the machine.
    sms = dev.sms[hw]
    m_tile = np.where(a["m"] > 64, TILE, 64.0)
    tiles = np.ceil(a["m"] / m_tile) * np.ceil(a["n"] / TILE)
    waves = np.ceil(tiles / np.maximum(sms, 1.0))
    padded = waves * np.maximum(sms, 1.0) * m_tile * TILE
    wave_eff = np.where((sms > 0) & (tiles >= sms), _div(a["m"] * a["n"], padded), 1.0)
    k_eff = _div(a["k"], a["k"] + half)
    eff = np.where(kind == GEMM, np.minimum(wave_eff, 1.0) * np.where(a["k"] > 0, k_eff, 1.0), eff)
    # grouped GEMM: tokens per expert
    per_expert = _div(a["m"], np.maximum(a["groups"], 1.0))
    eff = np.where(kind == GROUPED_GEMM, _div(per_expert, per_expert + half), eff)
    # prefill attention: keys per query, causal diagonal, head dim
    kv, q, d = a["kv_len"], np.maximum(a["q_len"], 1.0), np.maximum(a["d_qk"], 1.0)
    head = (d / (d + HEAD_DIM_HALF)) / (128.0 / (128.0 + HEAD_DIM_HALF))
    diag = 1.0 / (1.0 + (a["causal"] > 0) * CAUSAL_DIAGONAL * TILE / q)
    eff = np.where(kind == ATTN_PREFILL, np.minimum(_div(kv, kv + half) * diag * head, 1.0), eff)
    return np.clip(np.nan_to_num(eff, nan=1.0), 1e-6, 1.0)


class RooflineModel:
    """Mechanism-level roofline (the default). Stateless; parameters come from the profiles."""

    name = "roofline"

    def evaluate(self, ops: OpTable) -> OpTimes:
        if ops.n_ops == 0:
            return empty_times(ops)
        dev = DeviceTable.of(ops.devices)
        shape = (ops.n_ops, ops.n)
        tc_all, tm_all, comm_all, over_all = (np.zeros(shape) for _ in range(4))
        time = np.zeros(shape)
        coll_rows = is_collective(ops.kind)
        flop_all, bytes_all = ops.flop_bytes()
        comp = np.flatnonzero(~coll_rows)
        if len(comp):
            sub = ops.select(comp)
            tc, tm, overhead, body = self._compute(sub, dev, flop_all[comp], bytes_all[comp])
            tc_all[comp], tm_all[comp], over_all[comp], time[comp] = tc, tm, overhead, overhead + body
        coll = np.flatnonzero(coll_rows)
        if len(coll):
            sub = ops.select(coll)
            c = collective_time_s(sub, dev, collective_family_index(sub))
            comm_all[coll], time[coll] = c, c
        return OpTimes(ops, tc_all, tm_all, comm_all, over_all, time)

    @staticmethod
    def _compute(ops: OpTable, dev: DeviceTable, flop: np.ndarray, nbytes: np.ndarray):
        a, hw, dt = ops.arrays, ops["hw"], ops["dtype"]
        kind = ops.kind[:, None]
        fam = kernel_family_index(ops)
        K = {f: dev.kernel[f][hw, fam] for f in ("floor_s", "compute_fraction", "memory_fraction",
                                                  "compute_ramp_s", "memory_ramp_s", "overlap", "block_s")}
        tensor = (kind != ELEMENTWISE)
        peak = dev.peak[hw, dt] * np.where(tensor, dev.clock[hw], 1.0)
        eff = size_efficiency(ops, dev, fam)
        busiest = np.where(kind == GROUPED_GEMM, np.maximum(a["imbalance"], 1.0), 1.0)
        tc = np.where(flop > 0, K["compute_ramp_s"] + _div(flop * busiest, K["compute_fraction"] * eff * peak), 0.0)
        tm = np.where(nbytes > 0, K["memory_ramp_s"] + _div(nbytes, K["memory_fraction"] * dev.bw[hw]), 0.0)
        # decode attention: a fixed cost per (sequence x KV head) block per wave of SMs
        if np.any(ops.kind == ATTN_DECODE):
            blocks = a["batch"] * np.maximum(a["kv_heads"], 1.0)
            waves = np.where(dev.sms[hw] > 0, np.ceil(blocks / np.maximum(dev.sms[hw], 1.0)), 1.0)
            tm = np.where(kind == ATTN_DECODE, tm + K["block_s"] * waves, tm)
        overhead = np.where((flop > 0) | (nbytes > 0), K["floor_s"], 0.0)
        body = np.maximum(tc, tm) + K["overlap"] * np.minimum(tc, tm)
        return tc, tm, overhead, body


def pure_roofline_s(ops: OpTable) -> np.ndarray:
    """The unattainable bound: max(FLOP/peak, bytes/bandwidth); ideal link time for collectives."""
    dev = DeviceTable.of(ops.devices)
    hw, dt = ops["hw"], ops["dtype"]
    flop, nbytes = ops.flop_bytes()
    bound = np.maximum(np.where(flop > 0, _div(flop, dev.peak[hw, dt]), 0.0),
                       np.where(nbytes > 0, _div(nbytes, dev.bw[hw]), 0.0))
    coll = is_collective(ops.kind)[:, None]
    comm = collective_time_s(ops, dev, collective_family_index(ops), ideal=True) if coll.any() else 0.0
    return np.where(coll, comm, bound)


__all__ = ["RooflineModel", "pure_roofline_s", "size_efficiency", "wire_bytes"]
