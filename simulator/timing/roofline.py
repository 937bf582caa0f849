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

from ..ops.kinds import (
    ALL_REDUCE,
    ATTN_DECODE,
    ATTN_PREFILL,
    ELEMENTWISE,
    GEMM,
    GROUPED_GEMM,
    OpTable,
    is_collective,
    rows_of,
)
from .base import OpTimes, empty_times
from .collectives import collective_time_s
from .params import DeviceTable, collective_family_index, kernel_family_index, per_row

TILE = 128.0  # output tile edge of Hopper/Ampere tensor-core GEMM and attention kernels (CUTLASS, FA2/FA3)
# Causal diagonal-tile waste of prefill attention, fitted on FlashAttention-3 forward, H100, head dim
# 128, causal vs non-causal (published-kernels rows P067-P078): 2.26 x TILE / q_len extra work.
CAUSAL_DIAGONAL = 2.26
HEAD_DIM_HALF = 32.0  # FA3 rows P055-P089: efficiency grows with head dim as d / (d + 32)


def _div(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return np.divide(a, b, out=np.full(a.shape, np.inf), where=b > 0)


def _gemm_efficiency(r: dict, sms: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Wave quantisation of output tiles and the K-loop ramp. With at least a wave of tiles, the
    kernel computes whole tiles in whole waves (padded work, a non-decreasing step function of the
    shape); with fewer tiles than SMs, kernels split K (or stream-K) to fill the machine."""
    m, n, k = r["m"], r["n"], r["k"]
    m_tile = np.where(m > 64, TILE, 64.0)
    tiles = np.ceil(m / m_tile) * np.ceil(n / TILE)
    waves = np.ceil(tiles / np.maximum(sms, 1.0))
    padded = waves * np.maximum(sms, 1.0) * m_tile * TILE
    wave_eff = np.where((sms > 0) & (tiles >= sms), _div(m * n, padded), 1.0)
    k_eff = np.where(k > 0, _div(k, k + half), 1.0)
    return np.minimum(wave_eff, 1.0) * k_eff


def _prefill_attention_efficiency(r: dict, half: np.ndarray) -> np.ndarray:
    """Keys per query, the causal diagonal and head dim (FlashAttention-3 rows P055-P089)."""
    kv, q, d = r["kv_len"], np.maximum(r["q_len"], 1.0), np.maximum(r["d_qk"], 1.0)
    head = (d / (d + HEAD_DIM_HALF)) / (128.0 / (128.0 + HEAD_DIM_HALF))
    diag = 1.0 / (1.0 + (r["causal"] > 0) * CAUSAL_DIAGONAL * TILE / q)
    return np.minimum(_div(kv, kv + half) * diag * head, 1.0)


_FIELDS = ("floor_s", "compute_fraction", "memory_fraction", "compute_ramp_s", "memory_ramp_s", "overlap",
           "size_half", "block_s")


class RooflineModel:
    """Mechanism-level roofline (the default). Stateless; parameters come from the profiles."""

    name = "roofline"

    def evaluate(self, ops: OpTable) -> OpTimes:
        if ops.n_ops == 0:
            return empty_times(ops)
        dev = DeviceTable.of(ops.devices)
        shape = (ops.n_ops, ops.n)
        tc_all, tm_all, comm_all, over_all, time = (np.zeros(shape) for _ in range(5))
        flop_all, bytes_all = ops.flop_bytes()
        fam_all = None
        coll = np.flatnonzero(ops.kind >= ALL_REDUCE)
        if len(coll):  # every collective kind in one pass
            sub = ops.select(coll)
            c = collective_time_s(sub, dev, collective_family_index(sub))
            comm_all[coll], time[coll] = c, c
        for k in sorted(set(ops.kind.tolist())):  # (np.unique would import numpy.ma: 13 ms at start-up)
            if k >= ALL_REDUCE:
                continue
            idx = np.flatnonzero(ops.kind == k)
            if fam_all is None:
                fam_all = per_row(kernel_family_index(ops))
            tc, tm, overhead, body = self._compute(int(k), rows_of(ops.arrays, idx), dev, fam_all[idx],
                                                   flop_all[idx], bytes_all[idx], ops.served)
            tc_all[idx], tm_all[idx], over_all[idx], time[idx] = tc, tm, overhead, overhead + body
        return OpTimes(ops, tc_all, tm_all, comm_all, over_all, time)

    @staticmethod
    def _compute(kind: int, r: dict, dev: DeviceTable, fam: np.ndarray, flop: np.ndarray, nbytes: np.ndarray,
                 served: bool = False):
        hw = per_row(r["hw"])  # (one value a row where the table keeps it so: the gathers below are a row's)
        flat = hw * dev.kernel["floor_s"].shape[1] + fam  # one gather index for every family parameter
        K = {f: np.take(dev.kernel[f], flat) if dev.kernel[f].any() else 0.0 for f in _FIELDS}
        peak = np.take(dev.peak, hw * dev.peak.shape[1] + per_row(r["dtype"]))
        if kind != ELEMENTWISE:  # tensor-core work runs at the sustained clock
            peak = peak * dev.clock[hw]
            if served:  # ... and in a served step, at what the card keeps up under continuous load
                peak = peak * dev.served[hw]
        if kind == GEMM:
            eff = _gemm_efficiency(r, dev.sms[hw], K["size_half"])
        elif kind == GROUPED_GEMM:  # efficiency by the busiest rank's tokens per expert (its pairs over its experts)
            per_expert = _div(r["m"] * np.maximum(r["imbalance"], 1.0), np.maximum(r["groups"], 1.0))
            eff = np.where(K["size_half"] > 0, _div(per_expert, per_expert + K["size_half"]), 1.0)
        elif kind == ATTN_PREFILL:
            eff = _prefill_attention_efficiency(r, K["size_half"])
        else:
            eff = 1.0
        eff = np.clip(np.nan_to_num(eff, nan=1.0), 1e-6, 1.0)
        tc = np.where(flop > 0, K["compute_ramp_s"] + _div(flop, K["compute_fraction"] * eff * peak), 0.0)
        tm = np.where(nbytes > 0, K["memory_ramp_s"] + _div(nbytes, K["memory_fraction"] * dev.bw[hw]), 0.0)
        if kind == ATTN_DECODE:  # a fixed cost per (sequence x KV head) block per wave of SMs
            blocks = r["batch"] * np.maximum(r["kv_heads"], 1.0)
            sms = dev.sms[hw]
            waves = np.where(sms > 0, np.ceil(blocks / np.maximum(sms, 1.0)), 1.0)
            tm = tm + K["block_s"] * waves
        overhead = np.where((flop > 0) | (nbytes > 0), K["floor_s"], 0.0)
        body = np.maximum(tc, tm)
        if np.any(K["overlap"]):
            body = body + K["overlap"] * np.minimum(tc, tm)
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


__all__ = ["RooflineModel", "pure_roofline_s"]
