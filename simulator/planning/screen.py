"""Analytic screening of candidate fleets, vectorised.

Per layout (one replica of one pool), the timing core is called once per (hardware, precision)
group with numpy arrays over every parallel layout x decode batch (``time_phase`` with arrays):
prefill time of a mean and a p-percentile prompt, TPOT over a grid of decode batches, and the KV
capacity (memory fit). Fleets are then scored in one broadcast pass over layouts x replica counts
(and prefill side x decode side for disaggregated modes), with queueing approximations:

* decode: the running batch per replica b solves Little's law b = r x OSL x TPOT(b) (r = the
  replica's share of the rate); the p-percentile TPOT is read at b + z_p sqrt(b) (Poisson spread);
* prefill: M/D/1 with utilisation rho = r x t_prefill; mean wait rho t / (2 (1 - rho)), the
  p-percentile wait taken as the mean times -ln(1 - p) (exponential tail);
* colocated: prefill steals a fraction rho of the replica's time, so TPOT is divided by (1 - rho).

Under a serving engine (``engine``, as the simulation runs it) five parts of its profile apply: its own
all-reduce for small messages (``CustomAllReduce``), its own fused-MoE kernels' bandwidth where it gives one
(``EngineMoEKernels``), its block-FP8 GEMMs for a block-scaled FP8 model where it gives a factor
(``EngineBlockFp8Gemms``), its frontend latency on TTFT, and its rule for sizing the KV cache
(``serving.kvmemory.replica_kv_capacity``, the function the simulation uses). Its per-step
overheads (CPU time, unlisted kernels) are left to the simulation: the colocated decode model above is
already pessimistic (Llama-3.1-405B BF16 on 16 H100 at 2 req/s of chat, reports/case-study-llama405b.md:
p90 TPOT 94 ms screened under vLLM, 67 ms simulated), and a screen that over-estimates drops fleets the
simulation would pass, while one that under-estimates only costs extra simulations. ``engine=None``
screens on the bare timing model and the engine-agnostic memory fit.

These are screening estimates only; the discrete-event simulation decides (``verify``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from ..analysis.whatif import time_phase
from ..devices import DeviceArrays
from ..errors import InfeasibleError
from ..ops.build import StepShape
from ..serving.kvmemory import BLOCK_TOKENS, replica_kv_capacity
from ..serving.profiles import EngineProfile, engine_profile, engine_timing
from ..timing.roofline import RooflineModel
from .candidates import (
    PREFILL_BATCH_TOKENS,
    PREFILL_MAX_SEQS,
    afd_layouts,
    batch_tokens,
    colocated_layouts,
    phase_plan,
)

BATCH_GRID = np.array([1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512], dtype=float)
MAX_UTILISATION = 0.95


@dataclass(frozen=True)
class Workload:
    """What screening needs to know about the traffic: the target rate, mean and p-percentile
    lengths, and the SLOs (seconds; inf = none)."""

    rate_per_s: float
    isl_mean: float
    osl_mean: float
    isl_pct: float
    ttft_slo_s: float
    tpot_slo_s: float
    percentile: float
    request_max_tokens: float = 0.0  # the longest request (prompt + output) the traffic draws: every replica holds it


@dataclass
class Screening:
    layouts: list[dict]  # every layout row; candidates point into it
    candidates: pd.DataFrame  # feasible (within tolerance) fleets, cheapest first
    evaluated: int  # fleets scored
    layout_count: int


def _group_key(row: dict) -> tuple:
    return (row["hw"], row.get("ffn_hw"), row.get("ffn_devices"), row.get("micro_batches"),
            row["attn_precision"], row["ffn_precision"], row["kv_precision"])


def _layout_metrics(model, rows: list[dict], specs, w: Workload, timing, profile: EngineProfile | None = None,
                    engine_version: str | None = None) -> None:
    """Fill each row (in place) with t_prefill_mean_s, t_prefill_pct_s, tpot_grid (array), kv cap, fit
    (with ``profile``'s own all-reduce and MoE kernels where given, as release ``engine_version`` runs them)."""
    memory = None
    if profile is not None:  # (the engine's own all-reduce and MoE kernels, as the simulation times them)
        timing = engine_timing(timing, profile, model, engine_version)
        memory = profile.memory.for_release(engine_version) if profile.memory is not None else None
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(_group_key(r), []).append(i)
    nb = len(BATCH_GRID)
    for idx in groups.values():
        base_row = rows[idx[0]]
        try:
            base = phase_plan(base_row, specs, model)
        except InfeasibleError:
            for i in idx:
                rows[i]["ok"] = False
            continue
        kw = dict(kv_precision=base_row["kv_precision"], kv_scale_tokens=128)
        col = {k: np.array([rows[i][k] for i in idx], dtype=float) for k in ("tp", "dp", "ep", "etp", "pp")}
        attn_dev = DeviceArrays.of(base.attention.hardware)
        ffn_dev = DeviceArrays.of(base.ffn.hardware)
        sweep = dict(tp=col["tp"], dp=col["dp"], ep=col["ep"], expert_tp=col["etp"], pp=col["pp"],
                     attn_dev=attn_dev, ffn_dev=ffn_dev)
        af = base.af_disaggregated
        if not af:
            pre_mean = time_phase(model, base, StepShape(prefill_seqs=1.0, prefill_len=w.isl_mean), "prefill",
                                  timing, **kw, **sweep).forward_s
            pre_pct = time_phase(model, base, StepShape(prefill_seqs=1.0, prefill_len=w.isl_pct), "prefill",
                                 timing, **kw, **sweep).forward_s
        rep = {k: np.repeat(v, nb) for k, v in col.items()}
        mb = np.repeat(col["pp"], nb) if not af else float(base.micro_batches)
        batch = np.tile(BATCH_GRID, len(idx))
        d_shape = StepShape(decode_seqs=batch / mb, decode_kv=w.isl_mean + w.osl_mean / 2)
        dt = time_phase(model, base, d_shape, "decode", timing, **kw, tp=rep["tp"], dp=rep["dp"], ep=rep["ep"],
                        expert_tp=rep["etp"], pp=rep["pp"], attn_dev=attn_dev, ffn_dev=ffn_dev)
        tpot = (dt.af_step_s if af else dt.forward_s).reshape(len(idx), nb)
        for j, i in enumerate(idx):
            r = rows[i]
            r["tpot_grid"] = tpot[j]
            if not af:
                r["t_prefill_mean_s"], r["t_prefill_pct_s"] = float(pre_mean[j]), float(pre_pct[j])
            try:
                plan = phase_plan(r, specs, model)
            except InfeasibleError:
                r["ok"] = False
                continue
            r["ok"] = True
            for role in (("decode",) if af else ("colocated", "prefill", "decode")):
                # the limits the built deployment gets (candidates.build_deployment): the largest screened batch
                # bounds max_seqs, so the engine's capacity here is a lower bound of the simulated one
                seqs = PREFILL_MAX_SEQS if role == "prefill" else int(BATCH_GRID[-1])
                step = PREFILL_BATCH_TOKENS if role == "prefill" else batch_tokens(role, seqs)
                cap = replica_kv_capacity(model, plan, memory,
                                          max_seqs=seqs, max_batch_tokens=step, kv_precision=r["kv_precision"],
                                          kv_scale_tokens=128)
                r[f"kv_tokens_{role}"] = float(cap.tokens)


def _interp_rows(grid_vals: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation of per-layout TPOT curves (rows of ``grid_vals``) at batch ``b``."""
    b = np.broadcast_to(np.asarray(b, dtype=float), grid_vals.shape[:-1])[..., None]
    bc = np.clip(b, BATCH_GRID[0], BATCH_GRID[-1])
    hi = np.clip(np.searchsorted(BATCH_GRID, bc), 1, len(BATCH_GRID) - 1)
    lo = hi - 1
    x0, x1 = BATCH_GRID[lo], BATCH_GRID[hi]
    y0 = np.take_along_axis(grid_vals, lo, axis=-1)
    y1 = np.take_along_axis(grid_vals, hi, axis=-1)
    frac = (bc - x0) / (x1 - x0)
    y = y0 + frac * (y1 - y0)
    # beyond the grid: linear extrapolation with the last slope (never below the last point)
    over = b > BATCH_GRID[-1]
    if np.any(over):
        slope = (grid_vals[..., -1:] - grid_vals[..., -2:-1]) / (BATCH_GRID[-1] - BATCH_GRID[-2])
        y = np.where(over, grid_vals[..., -1:] + slope * (b - BATCH_GRID[-1]), y)
    return y[..., 0]


def _holds(cap: np.ndarray, dp: np.ndarray, w: Workload) -> np.ndarray:
    """Replicas whose KV cache holds the traffic's longest request: the simulator (as vLLM's and SGLang's
    servers, whose context limit the KV cache bounds) rejects a request it cannot hold, and a candidate that
    rejects any misses the SLOs. Counted as the simulation admits it: in whole KV blocks, on one attention-DP
    rank's share of the replica's cache (``cap``: the replica's KV tokens, ``dp``: its attention-DP ranks)."""
    rank_blocks = np.floor(np.floor(cap / BLOCK_TOKENS) / dp)
    return (cap > 0) & (rank_blocks >= np.ceil(w.request_max_tokens / BLOCK_TOKENS))


def _decode_side(tpot_grid: np.ndarray, kv_cap: np.ndarray, n: np.ndarray, w: Workload, steal: np.ndarray | float,
                 z: float, tol: float):
    """Decode figures for layouts (rows) x replica counts (columns): feasible, p-TPOT, max_seqs, batch."""
    L = tpot_grid.shape[0]
    r = w.rate_per_s / n  # (N,) or (L, N)
    r = np.broadcast_to(r, (L, len(n)) if np.ndim(r) == 1 else np.shape(r))
    steal = np.broadcast_to(steal, r.shape)
    grid = np.broadcast_to(tpot_grid[:, None, :], (L, r.shape[1], len(BATCH_GRID)))
    eff_grid = grid / np.maximum(1.0 - steal, 1e-3)[..., None]
    # engine cap: largest grid batch meeting the TPOT target (with tolerance) and the KV capacity
    mem_b = (kv_cap / (w.isl_mean + w.osl_mean))[:, None, None]
    ok_b = (eff_grid <= w.tpot_slo_s * (1 + tol)) & (BATCH_GRID[None, None, :] <= mem_b)
    any_ok = ok_b.any(axis=-1)
    cap_idx = len(BATCH_GRID) - 1 - np.argmax(ok_b[..., ::-1], axis=-1)
    max_seqs = np.where(any_ok, BATCH_GRID[cap_idx], 0.0)
    b = np.zeros(r.shape)
    for _ in range(40):  # Little's law fixed point, monotone from below
        b = np.minimum(r * w.osl_mean * _interp_rows(eff_grid, np.maximum(b, 1.0)), 4 * BATCH_GRID[-1])
    settled = r * w.osl_mean * _interp_rows(eff_grid, np.maximum(b, 1.0)) <= b * 1.001 + 1e-9
    b_p = b + z * np.sqrt(np.maximum(b, 0.0))
    tpot_p = _interp_rows(eff_grid, np.maximum(np.minimum(b_p, np.maximum(max_seqs, 1.0)), 1.0))
    feasible = any_ok & settled & (b <= max_seqs) & (steal < MAX_UTILISATION)
    return feasible, tpot_p, max_seqs, b


def _prefill_side(t_mean: np.ndarray, t_pct: np.ndarray, n: np.ndarray, w: Workload, p: float,
                  frontend_s: float = 0.0):
    """TTFT figures for layouts (rows) x replica counts (columns): utilisation and p-percentile TTFT (plus the
    engine's frontend latency, which holds a request before it queues and occupies no device)."""
    rho = w.rate_per_s * t_mean[:, None] / n[None, :]
    wait = rho * t_mean[:, None] / (2 * np.maximum(1 - rho, 1e-6))
    ttft = frontend_s + t_pct[:, None] + wait * -math.log(max(1 - p, 1e-6))
    return rho, np.where(rho < MAX_UTILISATION, ttft, np.inf)


def screen(model, specs: dict, prices, w: Workload, *, modes=("agg", "pd", "afd"), pairs=(("fp8", "fp8"),),
           max_devices: int = 64, timing=None, tolerance: float = 0.25, keep: int = 2000, side_keep: int = 400,
           prefill_hw=None, decode_hw=None, progress=None, engine: str | None = "vllm",
           frontend_latency_s: float | None = None, engine_version: str | None = None) -> Screening:
    """Score every fleet; return the feasible ones (analytic p-latencies within ``tolerance`` of the
    SLOs), cheapest first. ``prices.usd_per_hour(hw_id)`` gives device-hour prices; ``engine``: the serving
    engine whose all-reduce and frontend apply (None: the bare timing model), at release ``engine_version`` (None:
    the one its profile models by default); ``frontend_latency_s``: the fleets' frontend latency where it is not
    the engine's."""
    timing = timing or RooflineModel()
    profile = engine_profile(engine) if engine is not None else None
    if frontend_latency_s is not None:
        frontend_s = frontend_latency_s
    else:
        frontend_s = profile.frontend_for(model) if profile is not None else 0.0
    p = w.percentile / 100.0
    z = NormalDist().inv_cdf(min(max(p, 0.5), 0.9999))
    ids = list(specs)
    lay: list[dict] = []
    for hw_id in ids:
        lay += colocated_layouts(model, specs[hw_id], pairs, max_devices)
    if "afd" in modes:
        for a_id, f_id in itertools.product(ids, ids):
            lay += afd_layouts(model, specs[a_id], specs[f_id], pairs, max_devices)
    _layout_metrics(model, lay, specs, w, timing, profile, engine_version)
    if progress:
        progress(0.3)
    for r in lay:
        price = prices.usd_per_hour(r["hw"]) * (r.get("attn_devices") or r["devices"])
        if r.get("ffn_hw"):
            price += prices.usd_per_hour(r["ffn_hw"]) * r["ffn_devices"]
        r["usd_per_hour"] = price
    ttft_lim = w.ttft_slo_s * (1 + tolerance)
    frames, evaluated = [], 0
    plain = [i for i, r in enumerate(lay) if r.get("ok") and not r.get("ffn_hw")]
    af = [i for i, r in enumerate(lay) if r.get("ok") and r.get("ffn_hw") and (not decode_hw or r["hw"] in decode_hw)]
    # optional placement constraints: which hardware may prefill, which may decode (attention)
    plain_p = [i for i in plain if not prefill_hw or lay[i]["hw"] in prefill_hw]
    plain_d = [i for i in plain if not decode_hw or lay[i]["hw"] in decode_hw]
    plain_c = [i for i in plain_p if i in set(plain_d)]

    def side_arrays(idx, role):
        idx = np.array(idx, dtype=int)
        dev = np.array([lay[i]["devices"] for i in idx], dtype=float)
        nmax = int(max(max_devices // dev.min(), 1)) if len(idx) else 1
        n = np.arange(1, nmax + 1, dtype=float)
        cap = np.array([lay[i].get(f"kv_tokens_{role}", 0.0) for i in idx])
        # the attention-DP ranks a replica's requests are spread over (an A/F-disaggregated pool keeps one cache)
        dp = np.array([1.0 if lay[i].get("ffn_hw") else float(lay[i]["dp"]) for i in idx])
        dev_tot = dev[:, None] * n[None, :]
        cost = np.array([lay[i]["usd_per_hour"] for i in idx])[:, None] * n[None, :]
        return idx, n, cap, dp, dev_tot, cost

    # ---- aggregated: colocated layouts x replicas ------------------------------------------------
    if "agg" in modes and plain_c:
        idx, n, cap, dps, dev_tot, cost = side_arrays(plain_c, "colocated")
        tm = np.array([lay[i]["t_prefill_mean_s"] for i in idx])
        tpc = np.array([lay[i]["t_prefill_pct_s"] for i in idx])
        rho, ttft = _prefill_side(tm, tpc, n, w, p, frontend_s)
        grid = np.stack([lay[i]["tpot_grid"] for i in idx])
        feas_d, tpot_p, max_seqs, b = _decode_side(grid, cap, n, w, np.minimum(rho, 0.999), z, tolerance)
        ttft = ttft + _interp_rows(grid, np.ones(len(idx)))[:, None]  # a decode step shares the prefill's step
        feas = feas_d & (ttft <= ttft_lim) & (dev_tot <= max_devices) & _holds(cap, dps, w)[:, None]
        evaluated += feas.size
        li, ni = np.nonzero(feas)
        frames.append(pd.DataFrame({
            "mode": "agg", "layout_a": idx[li], "replicas_a": n[ni].astype(int), "layout_b": -1, "replicas_b": 0,
            "max_seqs": max_seqs[li, ni].astype(int), "devices": dev_tot[li, ni].astype(int),
            "cost_per_hour_usd": cost[li, ni], "ttft_p_s": ttft[li, ni], "tpot_p_s": tpot_p[li, ni],
            "decode_batch": b[li, ni], "prefill_utilisation": rho[li, ni]}))

    # ---- disaggregated: prefill side x decode side -----------------------------------------------
    def cross(mode, dec_idx):
        nonlocal evaluated
        if not plain_p or not dec_idx:
            return
        pi, pn, pcap, pdp, pdev, pcost = side_arrays(plain_p, "prefill")
        tm = np.array([lay[i]["t_prefill_mean_s"] for i in pi])
        tpc = np.array([lay[i]["t_prefill_pct_s"] for i in pi])
        rho, ttft = _prefill_side(tm, tpc, pn, w, p, frontend_s)
        p_ok = (ttft <= ttft_lim) & _holds(pcap, pdp, w)[:, None]
        di, dn, dcap, ddp, ddev, dcost = side_arrays(dec_idx, "decode")
        grid = np.stack([lay[i]["tpot_grid"] for i in di])
        d_ok, tpot_p, max_seqs, b = _decode_side(grid, dcap, dn, w, 0.0, z, tolerance)
        d_ok &= _holds(dcap, ddp, w)[:, None]
        pkv = np.array([lay[i]["kv_precision"] for i in pi])
        dkv = np.array([lay[i]["kv_precision"] for i in di])
        # every prefill option x every decode option, scored in one broadcast (chunked by prefill layout)
        P_flat = dict(ok=p_ok.ravel(), dev=pdev.ravel(), cost=pcost.ravel(), ttft=ttft.ravel(), rho=rho.ravel(),
                      lay=np.repeat(pi, len(pn)), n=np.tile(pn, len(pi)), kv=np.repeat(pkv, len(pn)))
        D_flat = dict(ok=d_ok.ravel(), dev=ddev.ravel(), cost=dcost.ravel(), tpot=tpot_p.ravel(),
                      ms=max_seqs.ravel(), b=b.ravel(), lay=np.repeat(di, len(dn)), n=np.tile(dn, len(di)),
                      kv=np.repeat(dkv, len(dn)))
        # each side keeps its ``side_keep`` cheapest feasible options (then the lowest latency)
        ps = np.nonzero(P_flat["ok"])[0]
        ps = ps[np.lexsort((P_flat["ttft"][ps], P_flat["cost"][ps]))][:side_keep]
        ds = np.nonzero(D_flat["ok"])[0]
        ds = ds[np.lexsort((D_flat["tpot"][ds], D_flat["cost"][ds]))][:side_keep]
        evaluated += len(ps) * len(ds)
        if not len(ps) or not len(ds):
            return
        ok = (P_flat["dev"][ps, None] + D_flat["dev"][None, ds] <= max_devices) \
            & (P_flat["kv"][ps, None] == D_flat["kv"][None, ds])
        cost = P_flat["cost"][ps, None] + D_flat["cost"][None, ds]
        cost = np.where(ok, cost, np.inf)
        flat = cost.ravel()
        k = min(keep, int(np.isfinite(flat).sum()))
        if k == 0:
            return
        best = np.argpartition(flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
        best = best[np.isfinite(flat[best])]
        a, c = np.unravel_index(best, cost.shape)
        a, c = ps[a], ds[c]
        frames.append(pd.DataFrame({
            "mode": mode, "layout_a": P_flat["lay"][a], "replicas_a": P_flat["n"][a].astype(int),
            "layout_b": D_flat["lay"][c], "replicas_b": D_flat["n"][c].astype(int),
            "max_seqs": D_flat["ms"][c].astype(int), "devices": (P_flat["dev"][a] + D_flat["dev"][c]).astype(int),
            "cost_per_hour_usd": P_flat["cost"][a] + D_flat["cost"][c], "ttft_p_s": P_flat["ttft"][a],
            "tpot_p_s": D_flat["tpot"][c], "decode_batch": D_flat["b"][c], "prefill_utilisation": P_flat["rho"][a]}))

    if "pd" in modes:
        cross("pd", plain_d)
    if "afd" in modes:
        cross("afd", af)
    if progress:
        progress(1.0)
    cands = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["mode", "layout_a", "replicas_a", "layout_b", "replicas_b", "max_seqs", "devices",
                 "cost_per_hour_usd", "ttft_p_s", "tpot_p_s", "decode_batch", "prefill_utilisation"])
    if len(cands):
        sig = [_signature(lay, r) for r in cands[["mode", "layout_a", "replicas_a", "layout_b", "replicas_b"]]
               .itertuples(index=False)]
        cands = representatives(cands.assign(arrangement=sig), w.ttft_slo_s, w.tpot_slo_s).head(keep)
    return Screening(lay, cands, int(evaluated), len(lay))


def representatives(cands: pd.DataFrame, ttft_slo_s: float, tpot_slo_s: float) -> pd.DataFrame:
    """Screened fleets ranked cheapest first, one per ``arrangement`` (mode, hardware and devices of each pool; its
    layouts differ in TP / DP / EP): the one with the best analytic margin, ``slo_ratio`` = the larger of TTFT / its
    SLO and TPOT / its SLO (the binding one), and among equal margins (layouts of one arrangement often bind on the
    same TPOT) the smaller other ratio, then fewer devices."""
    ttft_r, tpot_r = cands.ttft_p_s / ttft_slo_s, cands.tpot_p_s / tpot_slo_s
    cands = cands.assign(slo_ratio=np.maximum(ttft_r, tpot_r).replace([np.inf], np.nan),
                         _other=np.minimum(ttft_r, tpot_r))
    cands = cands.sort_values(["cost_per_hour_usd", "slo_ratio", "_other", "devices"], kind="stable")
    return cands.drop(columns="_other").drop_duplicates("arrangement").reset_index(drop=True)


def _signature(lay: list[dict], r) -> str:
    a = lay[r.layout_a]
    parts = [f"{r.replicas_a}x{a['devices']} {a['hw']} {a['attn_precision']}/{a['ffn_precision']}"]
    if r.layout_b >= 0:
        b = lay[r.layout_b]
        if b.get("ffn_hw"):
            parts.append(f"{r.replicas_b}x({b['attn_devices']} {b['hw']} attn + {b['ffn_devices']} {b['ffn_hw']} ffn, "
                         f"{b['micro_batches']} mb) {b['attn_precision']}/{b['ffn_precision']}")
        else:
            parts.append(f"{r.replicas_b}x{b['devices']} {b['hw']} {b['attn_precision']}/{b['ffn_precision']}")
    return f"{r.mode}: " + " + ".join(parts)
