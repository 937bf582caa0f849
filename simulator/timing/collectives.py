"""Collectives on a two-level network (scale-up domain, scale-out fabric), with the mechanisms that
make real NCCL/DeepEP timings differ from a bare alpha-beta line:

* **latency that grows with ranks**: ``latency + latency_per_rank * (ranks - 1)`` (ring hops);
  across domains the scale-out latency is paid ``ceil(log2(domains))`` times (tree);
* **protocol switch**: small messages run a low-latency protocol at about half the bandwidth,
  large ones the bandwidth protocol; the per-byte cost moves smoothly between the two around
  ``half_size`` (``1 + half / (S + half)`` times the asymptotic cost);
* **NVLS** (in-switch reduction on NVSwitch systems): all-reduce busBW ~480 GB/s vs ~370 GB/s for
  ring on 8 x H100 (published-kernels rows P112-P114), a 1.30 x bandwidth gain;
* **shared host links on PCIe boards**: without NVLink, ranks share their host's PCIe root
  complexes, so per-rank bandwidth is at most ``host_link * 2 / ranks`` (two sockets);
* **all-to-all**: wire bytes from top-k fan-out with per-rank de-duplication (ops/kinds.py). When
  the group spans scale-up domains, a token crosses the fabric once per distinct *remote domain*
  among its top-k experts' owners (per-node de-duplication, forwarded over the scale-up link inside
  the node, as DeepEP does), and the rest stays on the scale-up link. Node-limited routing (at most
  M nodes per token) is not modelled: the cross-node share is the unconstrained expectation.

Volumes are the ring algorithms': all-reduce ``2 (d-1)/d S``, all-gather ``(d-1)/d S``.
"""

from __future__ import annotations

import numpy as np

from ..ops.kinds import ALL_GATHER, ALL_REDUCE, ALL_TO_ALL, OpTable, alltoall_wire_bytes, distinct_destinations
from .params import per_row

NVLS_GAIN = 480.0 / 370.0  # rows P112/P114 (NVLS busBW ~476-480 GB/s) over P113 (ring ~370 GB/s), 8 x H100


def _log2(x):
    return np.ceil(np.log2(np.maximum(x, 1.0)))


def _latency_s(C: dict, d, nodes, out_lat):
    """The fixed part of a collective: ``latency + latency_per_rank * (d - 1)`` inside the scale-up domain, plus
    the scale-out latency ``ceil(log2(nodes))`` times across domains."""
    return C["latency_s"] + C["latency_per_rank_s"] * (d - 1.0) + np.where(nodes > 1, out_lat * _log2(nodes), 0.0)


def collective_latency_s(ops: OpTable, dev, fam: np.ndarray) -> np.ndarray:
    """The fixed (latency) part of ``collective_time_s`` for every row (P2P rows: their own latency)."""
    a, hw = ops.arrays, per_row(ops["hw"])
    p = np.maximum(a["ranks"], 1.0)
    d = np.clip(a["domain"], 1.0, p)
    flat = hw * dev.coll["latency_s"].shape[1] + per_row(fam)
    C = {f: np.take(dev.coll[f], flat) for f in ("latency_s", "latency_per_rank_s")}
    return _latency_s(C, d, np.ceil(p / d), dev.out_lat[hw])


def collective_time_s(ops: OpTable, dev, fam: np.ndarray, *, ideal: bool = False) -> np.ndarray:
    """Time of every collective row (0 for other rows), each kind's rows by its own formula."""
    kinds = sorted(set(ops.kind.tolist()))
    fam = per_row(fam)  # (the device and family gathers are a row's where the table keeps one value a row)
    with np.errstate(divide="ignore", invalid="ignore"):
        if len(kinds) == 1:
            return _collective_time_s(ops, dev, fam, ideal, kinds[0])
        out = np.zeros((ops.n_ops, ops.n))
        for k in kinds:  # (elementwise: a kind's rows alone get the values they get among the others)
            idx = np.flatnonzero(ops.kind == k)
            out[idx] = _collective_time_s(ops.select(idx), dev, fam[idx], ideal, k)
        return out


def _collective_time_s(ops, dev, fam, ideal, kind: int):
    """``collective_time_s`` of rows that are all of collective ``kind``."""
    if kind < ALL_REDUCE:
        return np.zeros((ops.n_ops, ops.n))
    a, hw = ops.arrays, per_row(ops["hw"])
    S = alltoall_wire_bytes(a) if kind == ALL_TO_ALL else a["msg_bytes"]
    p = np.maximum(a["ranks"], 1.0)
    d = np.clip(a["domain"], 1.0, p)  # members of the group inside one scale-up domain
    nodes = np.ceil(p / d)
    flat = hw * dev.coll["latency_s"].shape[1] + fam
    C = {f: np.take(dev.coll[f], flat) for f in dev.coll}
    frac = 1.0 if ideal else C["bandwidth_fraction"]
    up_bw = dev.up_bw[hw]
    nvls = (dev.nvls[hw] > 0) & (nodes <= 1) if kind == ALL_REDUCE else False
    # NVLS reduces in the switch: each GPU sends and receives the buffer once instead of 2(d-1)/d times,
    # so its ideal bound is that much lower; measured, it gains NVLS_GAIN over the ring
    up_eff = up_bw * frac * np.where(nvls, 2.0 * (d - 1.0) / d if ideal else NVLS_GAIN, 1.0)
    # PCIe boards share the host's links: two root complexes (a dual-socket server, the usual 8-card PCIe box; an
    # assumption, as PCIE-BOX in the profiles says), each with its own host_link, split over the p ranks
    shared_host = np.where((dev.pcie[hw] > 0) & (dev.host_bw[hw] > 0), dev.host_bw[hw] * 2.0 / p, np.inf)
    bw_in = np.minimum(up_eff, shared_host * (1.0 if ideal else frac))
    bw_out = dev.out_bw[hw] * frac
    if ideal:
        falloff = 1.0
    else:
        falloff = 1.0 + C["half_bytes"] / (S + C["half_bytes"])  # low-latency protocol at small sizes
    if kind == ALL_REDUCE:
        vol = 2 * (d - 1) / d * S / bw_in + 2 * (nodes - 1) / nodes * (S / d) / bw_out
    elif kind == ALL_GATHER:
        vol = (d - 1) / d * S / bw_in + (nodes - 1) / nodes * (S / d) / bw_out
    elif kind == ALL_TO_ALL:
        # tokens routed top-k cross the fabric once per distinct remote domain (per-node de-duplication); a
        # uniform all-to-all (fanout 0) sends each remote peer its share
        routed = a["fanout"] > 0
        tok_bytes = a["m"] * a["n"] * a["a_bytes"]
        nodes_hit = distinct_destinations(a["fanout"], nodes)
        cross_routed = tok_bytes * np.where(a["all_remote"] > 0, nodes_hit, nodes_hit * (nodes - 1) / nodes)
        remote = np.where(p > 1, (p - d) / np.maximum(p - 1, 1.0), 0.0)  # share of destinations off-domain
        cross = np.where(routed & (nodes > 1), np.minimum(cross_routed, S), S * remote)
        local = S * (1 - remote)
        vol = np.maximum(local / bw_in, cross / bw_out)
    else:  # P2P, the one collective kind left: a pair split over two domains crosses the fabric, with its latency
        crosses = a["domain"] < 2
        vol = np.where(crosses, S / bw_out, S / bw_in)
        p2p_lat = 0.0 if ideal else np.where(crosses, dev.out_lat[hw], C["latency_s"])
        return np.where(S > 0, np.nan_to_num(p2p_lat + vol * falloff, nan=0.0, posinf=np.inf), 0.0)
    lat = 0.0 if ideal else _latency_s(C, d, nodes, dev.out_lat[hw])
    t = np.where(p <= 1, 0.0, lat + vol * falloff)
    return np.where(S > 0, np.nan_to_num(t, nan=0.0, posinf=np.inf), 0.0)
