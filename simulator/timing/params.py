"""Hardware parameters as arrays, gathered per op: peaks by dtype, bandwidth, SMs, clocks, links and
the kernel-family / collective-family efficiency parameters, so a timing model evaluates a whole
op table (thousands of configurations, several devices) in one vectorised pass."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..ops.kinds import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    ATTN_DECODE,
    ATTN_PREFILL,
    DTYPE_INDEX,
    DTYPES,
    ELEMENTWISE,
    GEMM,
    GROUPED_GEMM,
    P2P,
    OpTable,
)
from ..specs.hardware import COLLECTIVE_FAMILIES, KERNEL_FAMILIES, CollectiveFamily, HardwareSpec, KernelFamily

_EIGHT_BIT = np.array([d in ("fp8", "int8", "fp4") for d in DTYPES])
_KIND_FAMILY = {GEMM: "gemm", GROUPED_GEMM: "grouped_gemm", ATTN_PREFILL: "attn_prefill",
                ATTN_DECODE: "attn_decode", ELEMENTWISE: "elementwise"}
_KIND_COLLECTIVE = {ALL_REDUCE: "all_reduce", ALL_GATHER: "all_gather", ALL_TO_ALL: "all_to_all", P2P: "p2p"}


@dataclass(frozen=True)
class DeviceTable:
    """Per-device arrays (first axis = device index of an op table)."""

    peak: np.ndarray  # [dev, dtype] FLOP/s at the datasheet clock
    bw: np.ndarray  # [dev] HBM B/s
    sms: np.ndarray  # [dev] compute units (0 = unknown)
    clock: np.ndarray  # [dev] sustained dense tensor-core clock / datasheet clock
    served: np.ndarray  # [dev] tensor-core throughput of a served step under load / a benchmarked kernel's
    kernel: dict[str, np.ndarray]  # field -> [dev, family]
    coll: dict[str, np.ndarray]  # field -> [dev, collective family]
    up_bw: np.ndarray
    up_lat: np.ndarray
    up_domain: np.ndarray
    nvls: np.ndarray
    out_bw: np.ndarray
    out_lat: np.ndarray
    pcie: np.ndarray  # 1 where the board hangs off PCIe (collectives share the host links)
    host_bw: np.ndarray

    @classmethod
    def of(cls, devices: tuple[HardwareSpec, ...]) -> DeviceTable:
        cached = _CACHE.get(tuple(id(d) for d in devices))
        if cached is not None and all(a is b for a, b in zip(cached[0], devices)):
            return cached[1]
        arr = lambda f: np.array([f(d) for d in devices], dtype=float)  # noqa: E731
        kernel = {f.name: np.array([[getattr(d.efficiency.kernels[fam], f.name) for fam in KERNEL_FAMILIES]
                                    for d in devices], dtype=float) for f in fields(KernelFamily)}
        coll = {f.name: np.array([[getattr(d.efficiency.collectives[fam], f.name) for fam in COLLECTIVE_FAMILIES]
                                  for d in devices], dtype=float) for f in fields(CollectiveFamily)}
        table = cls(
            peak=np.array([[d.peak(dt) for dt in DTYPES] for d in devices], dtype=float).reshape(len(devices), -1),
            bw=arr(lambda d: d.hbm_bytes_per_s), sms=arr(lambda d: d.compute_units),
            clock=arr(lambda d: d.efficiency.sustained_clock_fraction),
            served=arr(lambda d: 1.0 if d.efficiency.served_compute_fraction is None
                       else d.efficiency.served_compute_fraction), kernel=kernel, coll=coll,
            up_bw=arr(lambda d: d.scale_up.bandwidth_bytes_per_s), up_lat=arr(lambda d: d.scale_up.latency_s),
            up_domain=arr(lambda d: d.scale_up.domain_size), nvls=arr(lambda d: d.scale_up.nvls),
            out_bw=arr(lambda d: d.scale_out.bandwidth_bytes_per_s), out_lat=arr(lambda d: d.scale_out.latency_s),
            pcie=arr(lambda d: d.attach == "pcie"), host_bw=arr(lambda d: d.host_link_bytes_per_s))
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[tuple(id(d) for d in devices)] = (devices, table)
        return table


_CACHE: dict[tuple, tuple] = {}


def per_row(x: np.ndarray) -> np.ndarray:
    """``x`` ([n_ops, n]) as its first column ([n_ops, 1], which broadcasts to the same values) where it is a
    broadcast view holding one value per row, as an op table keeps its per-row constants; else ``x`` itself.
    Per-row lookups (device parameters by hardware, family and dtype) then gather one value a row, not one a
    configuration, and elementwise arithmetic on the column gives the same results as on the full array."""
    if x.ndim == 2 and x.shape[1] > 1 and x.strides[1] == 0:
        return x[:, :1]
    return x


def kernel_family_index(ops: OpTable) -> np.ndarray:
    """[n_ops, n] index into KERNEL_FAMILIES (8-bit GEMMs use the ``gemm_fp8`` family); a read-only broadcast
    of one value per row where the dtype is one per row (``per_row``)."""
    fam = np.array([KERNEL_FAMILIES.index(_KIND_FAMILY.get(int(k), "elementwise")) for k in ops.kind])[:, None]
    eight = _EIGHT_BIT[per_row(ops["dtype"])] & (ops.kind == GEMM)[:, None]
    return np.broadcast_to(np.where(eight, KERNEL_FAMILIES.index("gemm_fp8"), fam), (ops.n_ops, ops.n))


def collective_family_index(ops: OpTable) -> np.ndarray:
    fam = np.array([COLLECTIVE_FAMILIES.index(_KIND_COLLECTIVE.get(int(k), "p2p")) for k in ops.kind])
    return np.broadcast_to(fam[:, None], (ops.n_ops, ops.n))


__all__ = ["DTYPE_INDEX", "DeviceTable", "collective_family_index", "kernel_family_index", "per_row"]
