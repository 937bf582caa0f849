"""The ``measured`` timing model: a user's table of measured kernels (the measurement CSV contract:
harness output from their GPU, or any vendor table converted to it) answers for the shapes it
covers, and a fallback model (calibrated or roofline) answers for the rest.

Lookup is by shape, per (device, kernel family, dtype): each table row becomes the same op records
the simulator emits, and its correction ``measured / fallback`` is known. An op is answered by the
inverse-distance-weighted log correction of the table rows nearest to it in log-shape space,
applied to the fallback's time for the op itself, so the fallback's shape dependence interpolates
between measured points. Rows further than ``tolerance`` (a factor per shape dimension) are not
used; an op with no row in reach falls back and is counted in ``last_fallbacks``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..ops.kinds import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    ATTN_DECODE,
    ATTN_PREFILL,
    ELEMENTWISE,
    GEMM,
    GROUPED_GEMM,
    P2P,
    OpTable,
    wire_bytes,
)
from .base import OpTimes, TimingModel
from .roofline import RooflineModel, pure_roofline_s


def shape_features(ops: OpTable) -> np.ndarray:
    """[n_ops, n, 6] log-shape features per op (what makes two ops 'the same kernel, nearly')."""
    a = ops.arrays
    kind = ops.kind[:, None]
    lg = lambda x: np.log(np.maximum(np.asarray(x, dtype=float), 1.0))  # noqa: E731
    z = np.zeros((ops.n_ops, ops.n))
    gemm = [lg(a["m"]), lg(a["n"]), lg(a["k"]), z, z, z]
    grouped = [lg(a["m"] / np.maximum(a["groups"], 1.0)), lg(a["n"]), lg(a["k"]), lg(a["groups"]), z, z]
    attn = [lg(a["batch"]), lg(a["q_len"]), lg(a["kv_len"]), lg(a["heads"]), lg(a["kv_heads"]), lg(a["d_qk"])]
    elem = [lg(a["m"] * a["n"] * (a["a_bytes"] + a["o_bytes"])), z, z, z, z, z]
    coll = [lg(wire_bytes(ops.kind, a)), 10.0 * lg(a["ranks"]), z, z, z, z]  # another rank count is another topology
    out = np.zeros((ops.n_ops, ops.n, 6))
    for kinds, f in (((GEMM,), gemm), ((GROUPED_GEMM,), grouped), ((ATTN_PREFILL, ATTN_DECODE), attn),
                     ((ELEMENTWISE,), elem), ((ALL_REDUCE, ALL_GATHER, ALL_TO_ALL, P2P), coll)):
        m = np.isin(kind, kinds)
        out = np.where(m[..., None], np.stack(f, axis=-1), out)
    return out


class MeasuredModel:
    """Answer from a measured table where it covers the shape; fall back elsewhere."""

    name = "measured"

    def __init__(self, table: pd.DataFrame, fallback: TimingModel | None = None, *, tolerance: float = 2.0,
                 neighbours: int = 4, source: str = ""):
        from ..validation.validate import load_specs, ops_from_measurements

        self.fallback = fallback or RooflineModel()
        self.tolerance = float(tolerance)
        self.neighbours = int(neighbours)
        self.source = source
        self.last_fallbacks = 0
        self.last_ops = 0
        specs = load_specs(table)
        ops = ops_from_measurements(table, specs)
        base = self.fallback.evaluate(ops)
        rows = ops["row"][:, 0]
        per_row_fb = base.per_row()[: len(table)]
        # each row is keyed by its longest op (a quantisation kernel in front of a GEMM does not define it)
        t = (base.time_s * ops["count"])[:, 0]
        main = pd.DataFrame({"row": rows, "t": t, "i": np.arange(ops.n_ops)}).sort_values("t").groupby("row").last()
        idx = main["i"].to_numpy()
        feats = shape_features(ops)[idx, 0, :]
        meas = table["latency_us"].to_numpy()[main.index.to_numpy()] * 1e-6
        corr = np.log(meas / np.maximum(per_row_fb[main.index.to_numpy()], 1e-15))
        keys = [self._key(ops.devices[ops["hw"][i, 0]].id, int(ops.kind[i]), int(ops["dtype"][i, 0])) for i in idx]
        self._groups: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        for key in set(keys):
            sel = np.array([k == key for k in keys])
            self._groups[key] = (feats[sel], corr[sel])

    @property
    def device_ids(self) -> set[str]:
        """Profile ids the table has measured rows for."""
        return {k[0] for k in self._groups}

    @staticmethod
    def _key(hw_id: str, kind: int, dtype: int) -> tuple:
        return (hw_id, kind, dtype if kind < ALL_REDUCE else -1)

    def evaluate(self, ops: OpTable) -> OpTimes:
        base = self.fallback.evaluate(ops)
        if ops.n_ops == 0:
            return base
        feats = shape_features(ops)
        log_corr = np.zeros((ops.n_ops, ops.n))
        covered = np.zeros((ops.n_ops, ops.n), dtype=bool)
        reach = np.log(self.tolerance)
        for i in range(ops.n_ops):
            for hw_i in np.unique(ops["hw"][i]):
                for dt in np.unique(ops["dtype"][i]):
                    key = self._key(ops.devices[hw_i].id, int(ops.kind[i]), int(dt))
                    group = self._groups.get(key)
                    if group is None:
                        continue
                    cols = np.flatnonzero((ops["hw"][i] == hw_i) & (ops["dtype"][i] == dt))
                    f, c = group
                    q = feats[i, cols, :]  # [nq, 6]
                    for start in range(0, len(cols), 20000):
                        qs = q[start:start + 20000]
                        d = np.abs(qs[:, None, :] - f[None, :, :]).max(axis=2)  # L-inf in log space
                        k = min(self.neighbours, f.shape[0])
                        near = np.argpartition(d, k - 1, axis=1)[:, :k] if f.shape[0] > k else \
                            np.broadcast_to(np.arange(f.shape[0]), (len(qs), f.shape[0]))
                        dn = np.take_along_axis(d, near, axis=1)
                        ok = dn <= reach
                        w = np.where(ok, 1.0 / np.maximum(dn, 1e-3), 0.0)
                        wsum = w.sum(axis=1)
                        has = wsum > 0
                        est = np.where(has, (w * c[near]).sum(axis=1) / np.where(has, wsum, 1.0), 0.0)
                        sl = cols[start:start + 20000]
                        log_corr[i, sl] = est
                        covered[i, sl] = has
        active = base.time_s > 0
        self.last_ops += int(active.sum())
        self.last_fallbacks += int((active & ~covered).sum())
        scale = np.exp(log_corr)
        # never below the pure bound: the correction scales the fallback, which already respects it
        time = np.maximum(base.time_s * scale, pure_roofline_s(ops))
        return OpTimes(ops, base.compute_s * scale, base.memory_s * scale, base.comm_s * scale,
                       base.overhead_s * scale, time)

    def coverage_note(self) -> str:
        if not self.last_ops:
            return ""
        return (f"measured table {self.source}: {self.last_ops - self.last_fallbacks} of {self.last_ops} op "
                f"evaluations answered from measurements, {self.last_fallbacks} fell back to {self.fallback.name}")
