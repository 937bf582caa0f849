"""The one timing interface: ``TimingModel.evaluate(ops) -> OpTimes``.

Every implementation (the roofline fallback, a calibrated overlay, a table of measurements)
returns the same per-op breakdown: compute, memory, communication and fixed overhead seconds,
and the total. Times are for one execution of the op; multiply by ``ops['count']`` to aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..ops.build import FrozenOpTable

BOUNDS = ("compute", "memory", "communication", "overhead")


@dataclass(frozen=True)
class OpTimes:
    ops: FrozenOpTable
    compute_s: np.ndarray  # [n_ops, n] time the op would take if only FLOP mattered
    memory_s: np.ndarray  # ... if only bytes mattered
    comm_s: np.ndarray  # collective time (communication ops)
    overhead_s: np.ndarray  # fixed per-kernel overhead
    time_s: np.ndarray  # what the op takes

    def weighted(self, arr: np.ndarray) -> np.ndarray:
        return arr * self.ops["count"]

    def attributed(self) -> dict[str, np.ndarray]:
        """Split each op's time over the four bounds: its overhead, then the roofline part goes to
        whichever of compute or memory is larger (communication ops are all communication)."""
        body = self.time_s - self.overhead_s
        is_comm = (self.ops.kind != 0)[:, None]
        comp_wins = self.compute_s >= self.memory_s
        return {
            "compute": np.where(is_comm | ~comp_wins, 0.0, body),
            "memory": np.where(is_comm | comp_wins, 0.0, body),
            "communication": np.where(is_comm, self.time_s, 0.0),
            "overhead": np.where(is_comm, 0.0, self.overhead_s),
        }

    def total_s(self, mask: np.ndarray | None = None, overlap_comm: bool = False) -> np.ndarray:
        """Sum of count x time over the selected ops, per configuration. With ``overlap_comm`` the
        communication of the selection hides behind its compute (max instead of sum)."""
        sel = np.ones(self.ops.n_ops, dtype=bool) if mask is None else mask
        w = self.weighted(self.time_s)[sel]
        if not overlap_comm:
            return w.sum(axis=0)
        comm = (self.ops.kind[sel] != 0)[:, None]
        return np.maximum(np.where(comm, 0.0, w).sum(axis=0), np.where(comm, w, 0.0).sum(axis=0))


class TimingModel(Protocol):
    """Anything that can time an op table. Implementations must never return a time below the
    pure roofline bound (FLOP/peak, bytes/bandwidth, bytes/link bandwidth)."""

    name: str

    def evaluate(self, ops: FrozenOpTable) -> OpTimes: ...
