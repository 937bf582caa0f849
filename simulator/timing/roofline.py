"""The roofline timing model with efficiency curves and fixed per-kernel overhead.

    time = launch_overhead + max(compute_ramp + FLOP / (compute_fraction x peak),
                                 memory_ramp + bytes / (memory_fraction x bandwidth))

The fractions and ramps come from the hardware profile's efficiency block (per op class), so the
same formula is right for microsecond decode kernels (overhead-dominated) and for large prefill
GEMMs (close to fraction x peak). A bare max(FLOP/peak, bytes/bandwidth) is ``pure_roofline_s``.
"""

from __future__ import annotations

import numpy as np

from ..ops.build import COMPUTE, FrozenOpTable
from .base import OpTimes
from .collectives import collective_time_s


def _safe_div(a, b):
    return np.divide(a, b, out=np.full(np.broadcast_shapes(np.shape(a), np.shape(b)), np.inf),
                     where=np.asarray(b) > 0)


class RooflineModel:
    name = "roofline"

    def evaluate(self, ops: FrozenOpTable) -> OpTimes:
        a = ops.arrays
        is_comp = (ops.kind == COMPUTE)[:, None]
        flop, byts = a["flop"], a["bytes"]
        compute = np.where(flop > 0, a["cr"] + _safe_div(flop, a["cf"] * a["peak"]), 0.0)
        memory = np.where(byts > 0, a["mr"] + _safe_div(byts, a["mf"] * a["bw"]), 0.0)
        comm = collective_time_s(ops.kind, a["comm_bytes"], a["group"], a["domain"], a["up_bw"], a["up_lat"],
                                 a["out_bw"], a["out_lat"], a["coll_frac"])
        overhead = np.where(is_comp & ((flop > 0) | (byts > 0)), a["launch"], 0.0)
        comm = np.where(is_comp, 0.0, comm)
        compute = np.where(is_comp, compute, 0.0)
        memory = np.where(is_comp, memory, 0.0)
        time = np.where(is_comp, overhead + np.maximum(compute, memory), comm)
        return OpTimes(ops, compute, memory, comm, overhead, time)


def compute_op_time_s(flop: float, nbytes: float, peak: float, bw: float, cf: float, cr: float, mf: float,
                      mr: float, launch: float) -> float:
    """The same formula for one compute op, in plain floats (the serving simulator's hot path)."""
    if flop <= 0 and nbytes <= 0:
        return 0.0
    tc = cr + flop / (cf * peak) if flop > 0 else 0.0
    tm = mr + nbytes / (mf * bw) if nbytes > 0 else 0.0
    return launch + max(tc, tm)


def pure_roofline_s(ops: FrozenOpTable) -> np.ndarray:
    """The unattainable bound: max(FLOP/peak, bytes/bandwidth), and ideal link time for comms."""
    a = ops.arrays
    is_comp = (ops.kind == COMPUTE)[:, None]
    bound = np.maximum(np.where(a["flop"] > 0, _safe_div(a["flop"], a["peak"]), 0.0),
                       np.where(a["bytes"] > 0, _safe_div(a["bytes"], a["bw"]), 0.0))
    comm = collective_time_s(ops.kind, a["comm_bytes"], a["group"], a["domain"], a["up_bw"], a["up_lat"],
                             a["out_bw"], a["out_lat"], a["coll_frac"], ideal=True)
    return np.where(is_comp, bound, comm)
