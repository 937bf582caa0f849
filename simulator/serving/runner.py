"""Build a simulation from a deployment and traffic, run it, and summarise it.

Returns pandas DataFrames (per request, per step) and a summary dict; nothing here prints."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InfeasibleError
from ..specs.deployment import Deployment, Pool, transfer_time_s
from ..specs.traffic import Traffic
from ..timing.base import TimingModel
from ..timing.memory import kv_bytes_per_token_model, memory_fit
from .engine import ReplicaConfig, Requests, Simulation
from .stepcost import AnalyticStepCost, StepCostModel, TabulatedStepCost

PERCENTILES = (50, 90, 99)


@dataclass
class SimulationResult:
    requests: pd.DataFrame
    steps: pd.DataFrame
    summary: dict
    events: list = field(default_factory=list, repr=False)


def kv_capacity_tokens(dep: Deployment, pool: Pool) -> int:
    fits = memory_fit(dep.model, pool.plan, kv_tokens_per_replica=0, step_tokens=pool.max_batch_tokens,
                      kv_precision=dep.kv_precision, kv_scale_tokens=dep.kv_scale_tokens)
    holders = [m for m in fits if m.kv_bytes_per_token > 0]
    for m in fits:
        if not m.fits or (m.kv_bytes_per_token > 0 and m.kv_token_capacity <= 0):
            raise InfeasibleError(f"pool {pool.name}: {dep.model.id} does not fit: {m.explain()}")
    per_device = min(m.kv_token_capacity for m in holders)
    return int(per_device * pool.plan.attention.dp)


def replica_configs(dep: Deployment, cost_for: Callable[[Pool], StepCostModel] | None = None,
                    timing: TimingModel | None = None) -> list[ReplicaConfig]:
    configs = []
    kv_tok = kv_bytes_per_token_model(dep.model, dep.kv_precision, dep.kv_scale_tokens)
    for pool in dep.pools:
        role = "colocated" if set(pool.serves) == {"prefill", "decode"} else pool.serves[0]
        spec = pool.speculative
        q_len = 1 + (spec.draft_tokens if spec else 0)
        if cost_for:
            cost = cost_for(pool)
        elif TabulatedStepCost.supports(pool.plan, timing):
            cost = TabulatedStepCost(dep.model, pool.plan, max(pool.max_batch_tokens, pool.max_seqs * q_len),
                                     dep.kv_precision, dep.kv_scale_tokens, timing)
        else:
            cost = AnalyticStepCost(dep.model, pool.plan, timing, dep.kv_precision, dep.kv_scale_tokens)
        cap = kv_capacity_tokens(dep, pool)
        for i in range(pool.replicas):
            configs.append(ReplicaConfig(
                pool.name, i, role, cost, cap, pool.max_batch_tokens, pool.max_seqs, pool.devices_per_replica,
                spec.draft_tokens if spec else 0, spec.acceptance_rate if spec else 0.0,
                kv_bytes_per_token=kv_tok))
    return configs


def simulate(dep: Deployment, traffic: Traffic, *, timing: TimingModel | None = None,
             cost_for: Callable[[Pool], StepCostModel] | None = None, horizon_s: float = math.inf,
             progress: Callable[[int], None] | None = None) -> SimulationResult:
    reqs = traffic.sample()
    r = Requests(reqs["arrival_s"].to_numpy(dtype=float).copy(), reqs["prompt_tokens"].to_numpy(np.int64),
                 reqs["output_tokens"].to_numpy(np.int64))
    configs = replica_configs(dep, cost_for, timing)
    pools = {p.name: p for p in dep.pools}
    pre_pool = next((p for p in dep.pools if p.serves == ("prefill",)), None)
    dec_pool = next((p for p in dep.pools if "decode" in p.serves), None)

    sim: Simulation | None = None

    def kv_transfer(rid: int, src: int) -> float:
        prefill_time = float(r.first_token_s[rid] - r.admitted_s[rid])
        return transfer_time_s(dep, pools[sim.replicas[src].cfg.pool], dec_pool, float(r.prompt[rid]), prefill_time)

    closed = traffic.concurrency if traffic.arrival == "closed" else 0
    sim = Simulation(r, configs, seed=traffic.seed, closed_concurrency=closed,
                     kv_transfer_s=kv_transfer if pre_pool else None, horizon_s=horizon_s)
    if progress:
        sim.on_done = progress
    sim.run()
    requests, steps = sim.request_frame(), sim.step_frame()
    return SimulationResult(requests, steps, summarise(requests, steps, sim, dep, traffic), sim.events)


def _stats(x: pd.Series) -> dict:
    v = x.dropna().to_numpy(dtype=float)
    if not len(v):
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    out = {"mean": float(v.mean())}
    out.update({f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES})
    return out


def summarise(requests: pd.DataFrame, steps: pd.DataFrame, sim: Simulation, dep: Deployment, traffic: Traffic) -> dict:
    done = requests[requests.status == "finished"]
    rejected = requests[requests.status == "rejected"]
    t0 = float(requests.arrival_s.min()) if len(requests) else 0.0
    t1 = float(np.nanmax(requests.finish_s.to_numpy())) if len(done) else t0
    makespan = max(t1 - t0, 1e-12)
    in_tok = float(done.prompt_tokens.sum())
    out_tok = float(done.output_tokens.sum())
    devices = dep.devices
    slo = traffic.slo
    ok = (done.ttft_s <= slo.ttft_s) & ((done.tpot_s <= slo.tpot_s) | done.tpot_s.isna())
    price_s = sum(p.price_usd_per_s for p in dep.pools)
    util = {}
    for rep in sim.replicas:
        u = util.setdefault(rep.cfg.pool, {"replicas": 0, "busy": 0.0, "prefill_attention": 0.0, "prefill_ffn": 0.0,
                                           "decode_attention": 0.0, "decode_ffn": 0.0})
        u["replicas"] += 1
        u["busy"] += rep.busy_s / makespan
        for k, v in zip(("prefill_attention", "prefill_ffn", "decode_attention", "decode_ffn"), rep.quadrant_s):
            u[k] += v / makespan
    for u in util.values():
        for k in u:
            if k != "replicas":
                u[k] /= u["replicas"]
    kv = {pool: {"mean": float((g.kv_occupancy * (g.end_s - g.start_s)).sum() / max((g.end_s - g.start_s).sum(),
                                                                                     1e-12)),
                 "max": float(g.kv_occupancy.max())} for pool, g in steps.groupby("pool")} if len(steps) else {}
    lam = len(done) / makespan
    W = float(done.e2e_s.mean()) if len(done) else 0.0
    L = float(done.e2e_s.sum()) / makespan
    summary = {
        "requests_total": int(len(requests)),
        "requests_completed": int(len(done)),
        "requests_rejected": int(len(rejected)),
        "rejection_reasons": rejected.reason.value_counts().to_dict(),
        "makespan_s": makespan,
        "ttft_s": _stats(done.ttft_s), "tpot_s": _stats(done.tpot_s), "e2e_s": _stats(done.e2e_s),
        "queue_s": _stats(done.queue_s),
        "input_tokens_per_s": in_tok / makespan,
        "output_tokens_per_s": out_tok / makespan,
        "input_tokens_per_s_per_device": in_tok / makespan / devices,
        "output_tokens_per_s_per_device": out_tok / makespan / devices,
        "devices": devices,
        "goodput": {"slo": {"ttft_s": _finite(slo.ttft_s), "tpot_s": _finite(slo.tpot_s),
                            "percentile": slo.percentile},
                    "fraction_of_requests": float(ok.mean()) if len(done) else 0.0,
                    "requests_per_s": float(ok.sum()) / makespan,
                    "output_tokens_per_s": float(done.output_tokens[ok].sum()) / makespan,
                    "slo_met": bool(len(done) and _pct(done.ttft_s, slo.percentile) <= slo.ttft_s
                                    and (_pct(done.tpot_s, slo.percentile) or 0.0) <= slo.tpot_s)},
        "utilisation": util,
        "preemptions": int(requests.preemptions.sum()),
        "kv_occupancy": kv,
        "steps": int(len(steps)),
        "cost_usd_per_mtok": _finite(price_s * makespan / out_tok * 1e6) if out_tok else None,
        "cost_usd_per_hour": _finite(price_s * 3600),
        "littles_law": {"arrival_rate_per_s": lam, "mean_time_in_system_s": W, "mean_in_system": L},
    }
    return summary


def _pct(x: pd.Series, p: float) -> float:
    v = x.dropna().to_numpy(dtype=float)
    return float(np.percentile(v, p)) if len(v) else 0.0


def _finite(x: float):
    return float(x) if x is not None and math.isfinite(x) else None
