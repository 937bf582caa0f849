"""The one timing interface: ``TimingModel.evaluate(ops) -> OpTimes``.

An op table carries its devices (``ops.devices``, indexed by the ``hw`` column), so a model needs
nothing else. Every implementation (the mechanism-level roofline, a calibrated overlay, a table of
measurements) returns the same per-op breakdown: compute, memory, communication and fixed
overhead seconds, the total, and what bounds each op. Times are for one execution of the op;
multiply by ``ops['count']`` to aggregate.

Contract (``tests/test_timing_contract.py`` runs it on every implementation): times are finite and
non-negative, never below the pure roofline bound (``pure_roofline_s``), monotone in op size,
vectorised and scalar evaluation agree, an empty table works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..ops.kinds import COLLECTIVE_KINDS, OpTable, is_collective

BOUNDS = ("compute", "memory", "communication", "overhead")
BOUND_CODES = {b: i for i, b in enumerate(BOUNDS)}


@dataclass(frozen=True)
class OpTimes:
    ops: OpTable
    compute_s: np.ndarray  # [n_ops, n] the compute part (FLOP over the achievable rate, with its ramp)
    memory_s: np.ndarray  # the memory part (bytes over the achievable bandwidth, with its ramp)
    comm_s: np.ndarray  # collective time (communication ops)
    overhead_s: np.ndarray  # fixed per-kernel floor
    time_s: np.ndarray  # what the op takes

    @property
    def bound(self) -> np.ndarray:
        """Index into BOUNDS of what limits each op (the largest of its attributed parts)."""
        parts = self.attributed()
        return np.argmax(np.stack([parts[b] for b in BOUNDS]), axis=0)

    def weighted(self, arr: np.ndarray) -> np.ndarray:
        return arr * self.ops["count"]

    def attributed(self) -> dict[str, np.ndarray]:
        """Split each op's time over the four bounds: its overhead, then the rest goes to whichever
        of compute or memory is larger (communication ops are all communication)."""
        body = self.time_s - self.overhead_s
        is_comm = is_collective(self.ops.kind)[:, None]
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
        comm = is_collective(self.ops.kind[sel])[:, None]
        return np.maximum(np.where(comm, 0.0, w).sum(axis=0), np.where(comm, w, 0.0).sum(axis=0))

    def per_row(self) -> np.ndarray:
        """Time per measurement row (ops sharing a ``row`` id add up), for config 0."""
        rows = self.ops["row"][:, 0]
        out = np.zeros(int(rows.max()) + 1 if len(rows) else 0)
        np.add.at(out, rows, (self.time_s * self.ops["count"])[:, 0])
        return out


@runtime_checkable
class TimingModel(Protocol):
    """Anything that can time an op table. Implementations must never return a time below the
    pure roofline bound (FLOP/peak, bytes/bandwidth, wire bytes/link bandwidth)."""

    name: str

    def evaluate(self, ops: OpTable) -> OpTimes: ...


def checked_timing(where: str, timing):
    """``timing`` where an API call takes one: None (the caller's default) or a TimingModel; anything else (a spec
    string such as "roofline", meant for the CLI's --timing) is refused with what to pass instead."""
    if timing is not None and not isinstance(timing, TimingModel):
        from ..errors import SimulatorError

        raise SimulatorError(f"{where}: timing must be a TimingModel (RooflineModel(), or resolve_timing(spec) for a "
                             f"--timing spec string), got {type(timing).__name__}")
    return timing


def empty_times(ops: OpTable) -> OpTimes:
    z = np.zeros((ops.n_ops, ops.n))
    return OpTimes(ops, z, z.copy(), z.copy(), z.copy(), z.copy())


__all__ = ["BOUNDS", "COLLECTIVE_KINDS", "OpTimes", "TimingModel", "checked_timing", "empty_times"]
