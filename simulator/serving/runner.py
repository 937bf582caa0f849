"""Build a simulation from a deployment and traffic, run it, and summarise it.

Returns pandas DataFrames (per request, per step) and a summary dict; nothing here prints."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..errors import InfeasibleError, SimulatorError
from ..specs.deployment import PREEMPTIONS, Deployment, Pool
from ..specs.traffic import Traffic
from ..timing.base import TimingModel
from ..timing.memory import kv_bytes_per_token_device
from ..timing.roofline import RooflineModel
from .disagg import PingPongStepCost, kv_shipping
from .engine import PREFILL_RECV_WEIGHT, ReplicaConfig, Requests, Simulation
from .kvmemory import replica_kv_capacity
from .metrics import PERCENTILES, summarise  # noqa: F401  (PERCENTILES: re-exported)
from .overheads import OverheadStepCost
from .pipeline import PipelinedPrefill
from .policies import make_policy
from .profiles import ENGINES, EngineProfile, engine_profile, engine_timing, pool_release, server_defaults
from .stepcost import AnalyticStepCost, StepCostModel, TabulatedStepCost


@dataclass
class SimulationResult:
    """What ``simulate`` returns: ``requests`` and ``steps`` (DataFrames, one row per request / batch step),
    ``summary`` (a plain dict) and ``events`` (the event log)."""

    requests: pd.DataFrame
    steps: pd.DataFrame
    summary: dict
    events: list = field(default_factory=list, repr=False)


def batch_limits(pool: Pool, profile: EngineProfile) -> tuple[int, int, EngineProfile]:
    """``pool``'s running-sequence and step-token limits, the engine server's defaults for its device where the
    pool sets none, and the engine profile with that server's CUDA-graph batch limit for the device."""
    a = pool.plan.attention
    d = server_defaults(profile.name, a.hardware.hbm_bytes, a.hardware.name, a.tp, a.dp)
    if d.cuda_graph_max_bs is not None:
        profile = replace(profile, cuda_graph_max_bs=d.cuda_graph_max_bs)
    seqs = d.speculative_max_seqs if pool.speculative is not None and d.speculative_max_seqs else d.max_seqs
    return (pool.max_seqs if pool.max_seqs is not None else seqs,
            pool.max_batch_tokens if pool.max_batch_tokens is not None else d.max_batch_tokens, profile)


def kv_capacity_tokens(dep: Deployment, pool: Pool, step_tokens: int, *, max_seqs: int | None = None,
                       profile: EngineProfile | None = None, engine_version: str | None = None) -> int:
    """KV tokens one replica of ``pool`` holds as its engine server sizes them at startup (``kvmemory``):
    ``profile``'s memory rule (default: the pool's engine) as release ``engine_version`` applies it (default: the
    pool's where ``profile`` is its engine's), ``step_tokens`` per step and ``max_seqs`` running sequences (default:
    the pool's, else the server's), the pool's ``memory_fraction`` where it sets one."""
    if profile is None:
        profile = engine_profile(pool.engine)
        engine_version = engine_version if engine_version is not None else pool.engine_version
    if max_seqs is None:
        max_seqs = batch_limits(pool, profile)[0]
    memory = profile.memory.for_release(engine_version) if profile.memory is not None else None
    cap = replica_kv_capacity(dep.model, pool.plan, memory, max_seqs=max_seqs, max_batch_tokens=step_tokens,
                              kv_precision=dep.kv_precision, kv_scale_tokens=dep.kv_scale_tokens,
                              fraction=pool.memory_fraction, speculative=pool.speculative is not None)
    if cap.problem:
        raise InfeasibleError(f"pool {pool.name}: {dep.model.id} does not fit: {cap.problem}")
    return int(cap.tokens)


# Step-cost models built by ``replica_configs`` for the default (roofline) timing model, by the specs they depend on. A
# model's tables and memos are pure functions of those specs, so a later run of the same pool (a planner's
# verification runs, a sweep over traffic, a notebook re-running a deployment) reuses them and gives the same
# numbers; a few MB each, the least recently built dropped first.
COST_CACHE_SIZE = 16
SWAP_SPACE_BYTES = 4 * 2**30  # vLLM V0's default host swap space a GPU (--swap-space 4, GiB)
_COST_CACHE: dict[str, StepCostModel] = {}


def _step_cost(dep: Deployment, pool: Pool, profile: EngineProfile, timing: TimingModel | None,
               cost_for: Callable[[Pool], StepCostModel] | None, overheads: bool, max_batch_tokens: int,
               max_seqs: int, q_len: int, spec, version: str | None = None) -> StepCostModel:
    """The step-cost model of one replica of ``pool``: the timing model's step costs (tabulated where it
    can be), chunked-PP prefill pipelined, and the engine's overheads on top; with overheads, the engine's own
    kernels (its one-shot all-reduce, its fused-MoE bandwidth) in place of the device profile's."""
    # the engine's own kernels take the small all-reduces and the routed experts, whatever kernels the timing model
    # describes (the device profile's, a calibration of them, or the harness's torch kernels)
    timing_pool = engine_timing(timing, profile, dep.model, version) if overheads else timing
    if cost_for:
        cost = cost_for(pool)
    elif pool.plan.af_disaggregated:
        cost = PingPongStepCost(dep.model, pool.plan, timing_pool, dep.kv_precision, dep.kv_scale_tokens)
    elif TabulatedStepCost.supports(pool.plan, timing_pool):
        cost = TabulatedStepCost(dep.model, pool.plan, max(max_batch_tokens, max_seqs * q_len),
                                 dep.kv_precision, dep.kv_scale_tokens, timing_pool)
    else:
        cost = AnalyticStepCost(dep.model, pool.plan, timing_pool, dep.kv_precision, dep.kv_scale_tokens)
    if pool.plan.pp > 1 and not pool.plan.af_disaggregated:
        cost = PipelinedPrefill(cost, pool.plan.pp)
    if overheads:
        cost = OverheadStepCost(cost, profile, dep.model.num_layers, dep.model.is_moe,
                                spec.draft_cost_fraction if spec else 0.0)
    return cost


def replica_configs(dep: Deployment, cost_for: Callable[[Pool], StepCostModel] | None = None,
                    timing: TimingModel | None = None, *, engine: str | None = None, preemption: str | None = None,
                    overheads: bool = True, engine_version: str | None = None) -> list[ReplicaConfig]:
    """One ReplicaConfig per replica. ``engine`` / ``preemption`` / ``engine_version`` override every pool's choice
    (a pool's own ``engine_version`` is its engine's, so it is dropped when ``engine`` names another);
    ``overheads=False`` leaves out the engine's step overheads (the bare timing model)."""
    configs = []
    if engine is not None and engine not in ENGINES:
        raise SimulatorError(f"--engine: unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    for i, pool in enumerate(dep.pools):
        at = f"{dep.file}: pools[{i}]." if dep.file else f"pool {pool.name}: "  # where its settings are (+ the key)

        under = f" (--engine {engine})" if engine is not None and engine != pool.engine else ""
        if engine is not None and engine != pool.engine and pool.memory_fraction is not None:
            # the fraction is that engine's own flag (vLLM gpu_memory_utilization, SGLang mem_fraction_static,
            # TRT-LLM free_gpu_memory_fraction): under another engine it would mean something else
            raise SimulatorError(f"{at}memory_fraction: {pool.memory_fraction:g} is {pool.engine}'s KV memory "
                                 f"flag; --engine {engine} would read it as its own. Drop memory_fraction from the "
                                 "pool or simulate it under its own engine")
        max_seqs, max_batch_tokens, profile = batch_limits(pool, engine_profile(engine or pool.engine))
        if profile.policy == "vllm" and max_batch_tokens < max_seqs:
            # vLLM refuses this at startup (vllm/config/scheduler.py SchedulerConfig: "max_num_batched_tokens must be
            # greater than or equal to max_num_seqs"): a step could not hold a token of every running sequence
            raise SimulatorError(f"{at}max_batch_tokens: {max_batch_tokens} is below max_seqs {max_seqs}, which "
                                 f"vLLM{under} refuses at startup (a step must hold a token of every running "
                                 "sequence); raise max_batch_tokens or lower max_seqs")
        mode = preemption or pool.preemption or profile.preemption
        if pool.scheduler_recv_interval > 1 and profile.name != "sglang":
            raise SimulatorError(f"{at}scheduler_recv_interval: an SGLang server flag (--scheduler-recv-interval); "
                                 f"{profile.name}{under} has none")
        if pool.scheduler_recv_interval > 1 and pool.role == "decode":
            raise SimulatorError(f"{at}scheduler_recv_interval: not modelled on a decode pool (its requests arrive "
                                 "by KV transfer after a handshake the simulator does not model)")
        if pool.scheduler_recv_interval > PREFILL_RECV_WEIGHT:
            raise SimulatorError(f"{at}scheduler_recv_interval: above {PREFILL_RECV_WEIGHT} is not modelled "
                                 "(SGLang weighs a prefill step 1000 toward it)")
        if pool.batch_wait_timeout_iters and profile.name != "trtllm":
            raise SimulatorError(f"{at}batch_wait_timeout_iters: TensorRT-LLM's batch waiting; {profile.name}{under} "
                                 "has none")
        if pool.batch_wait_timeout_iters and pool.role == "decode":
            raise SimulatorError(f"{at}batch_wait_timeout_iters: a decode pool runs no prompts to hold back (its "
                                 "requests arrive with their KV)")
        if pool.frontend_latency_s is not None and pool.role == "decode":  # (the YAML reader refuses it too)
            raise SimulatorError(f"{at}frontend_latency: a decode pool has no frontend (its requests arrive by "
                                 "KV transfer, not from clients); set it on the prefill pool")
        # the pool's own frontend (a deployment served through another one) applies whatever ``overheads`` says;
        # the engine profile's only with the engine's overheads
        if pool.frontend_latency_s is not None:
            frontend_s = pool.frontend_latency_s
        else:
            frontend_s = profile.frontend_for(dep.model) if overheads else 0.0
        if mode == "none" and profile.policy != "trtllm":
            where = "--preemption" if preemption else f"{at}preemption"
            raise SimulatorError(f"{where}: 'none' (reserve KV for the whole request) is TensorRT-LLM's "
                                 f"GUARANTEED_NO_EVICT; {profile.name}{under} preempts by recompute or swap")
        role = pool.role
        spec = pool.speculative
        q_len = 1 + (spec.draft_tokens if spec else 0)
        version = pool_release(pool, engine, engine_version)
        key = None
        # the default timing model (none given, or the stateless roofline itself): a pure function of the specs
        if cost_for is None and (timing is None or type(timing) is RooflineModel):
            key = repr((dep.model, pool.plan, dep.kv_precision, dep.kv_scale_tokens, max(max_batch_tokens,
                        max_seqs * q_len), profile if overheads else None, spec.draft_cost_fraction if spec else 0.0,
                        version))
        cost = _COST_CACHE.get(key) if key is not None else None
        if cost is None:
            cost = _step_cost(dep, pool, profile, timing, cost_for, overheads, max_batch_tokens, max_seqs, q_len, spec,
                              version)
            if key is not None:
                _COST_CACHE[key] = cost
                while len(_COST_CACHE) > COST_CACHE_SIZE:  # the oldest first (dicts keep insertion order)
                    del _COST_CACHE[next(iter(_COST_CACHE))]
        cap = kv_capacity_tokens(dep, pool, max_batch_tokens, max_seqs=max_seqs, profile=profile,
                                 engine_version=version)
        policy = make_policy(profile.policy, mode)
        # swap: one device's share of a token's KV (its attention TP shard of its pipeline stage's layers)
        kv_tok = kv_bytes_per_token_device(dep.model, pool.plan.attention.tp, pool.plan.pp, dep.kv_precision,
                                           dep.kv_scale_tokens)
        for i in range(pool.replicas):
            configs.append(ReplicaConfig(
                pool.name, i, role, cost, cap, max_batch_tokens, max_seqs, pool.devices_per_replica,
                spec.draft_tokens if spec else 0, spec.acceptance_rate if spec else 0.0,
                preemption="swap" if mode == "swap" else "recompute", kv_bytes_per_token=kv_tok, policy=policy,
                # swapped KV crosses each device's host link where its profile gives one (PCIE-HOST), else PCIe Gen5
                # x16, into vLLM V0's default host swap space: --swap-space 4 GiB a GPU (vllm/engine/arg_utils.py
                # EngineArgs.swap_space = 4, "CPU swap space size (GiB) per GPU"). Where it is full, V0 stops the
                # engine (vllm/core/scheduler.py _preempt_by_swap: "Aborted due to the lack of CPU swap space");
                # the simulator preempts that request by recompute instead
                swap_bytes_per_s=pool.plan.attention.hardware.host_link_bytes_per_s or 64e9,
                swap_space_bytes=SWAP_SPACE_BYTES,
                context_range=pool.prompt_range,
                # the engine's frontend holds each arriving request first (a decode pool gets them by KV transfer)
                frontend_s=frontend_s if role != "decode" else 0.0,
                recv_interval=pool.scheduler_recv_interval,
                batch_wait_iters=pool.batch_wait_timeout_iters,
                batch_wait_tokens_ratio=pool.batch_wait_max_tokens_ratio,
                max_chunk_tokens=max_chunk_tokens(pool, max_batch_tokens), pp=pool.plan.pp,
                max_model_len=dep.model.context_tokens))
    return configs


def max_chunk_tokens(pool: Pool, max_batch_tokens: int) -> int:
    """One request's prompt tokens per step at most (0: any): the pool's ``chunk_tokens`` where it sets one (the
    chunk each pipeline micro-batch carries, as ``whatif --chunk`` takes it), and under attention DP one rank's
    share of the step budget."""
    limits = [x for x in (pool.plan.chunk_tokens,
                          max_batch_tokens // pool.plan.attention.dp if pool.plan.attention.dp > 1 else 0) if x > 0]
    return min(limits) if limits else 0


def closed_loop_ramp_s(configs: list[ReplicaConfig], traffic: Traffic) -> float:
    """Auto ramp for a closed loop: the estimated lifetime of a mean request at full concurrency
    (the engine's frontend, one prefill of the mean prompt, and the mean output at a decode batch of C /
    decode replicas), so the C clients start spread evenly over one request lifetime instead of in lock step."""
    first = next(c for c in configs if c.role in ("colocated", "prefill"))
    dec = [c for c in configs if c.role in ("colocated", "decode")]
    isl, osl = max(int(round(traffic.prompt.mean)), 1), max(int(round(traffic.output.mean)), 1)
    n = max(1, min(-(-traffic.concurrency // len(dec)), dec[0].max_seqs))
    pre = first.cost.cost(1, min(isl, first.max_batch_tokens), 0, 0, 0, 0).time_s * -(-isl // first.max_batch_tokens)
    step = dec[0].cost.cost(0, 0, 0, n, 1, n * (isl + osl // 2)).time_s
    return float(first.frontend_s + pre + osl * step)


def kv_transfer_for(dep: Deployment, configs: list[ReplicaConfig], r: Requests
                    ) -> Callable[[int, int, int], tuple[float, float, int]]:
    """The engine's ``kv_transfer_s(rid, src, dst)``: how request ``rid``'s KV travels from prefill replica ``src``
    to decode replica ``dst`` (uid = index in ``configs``): (seconds of link time, latency, layers it streams over;
    0: after the prefill), with one ``kv_shipping`` per pool pair."""
    pools = {p.name: p for p in dep.pools}
    models: dict[tuple[str, str], tuple[float, float, int]] = {}
    links: dict[tuple[int, int], tuple[float, float, int]] = {}  # by (src, dst) replica, one per pool pair
    prompt = r.prompt.tolist()

    def kv_transfer(rid: int, src: int, dst: int) -> tuple[float, float, int]:
        link = links.get((src, dst))
        if link is None:
            key = (configs[src].pool, configs[dst].pool)
            if key not in models:
                models[key] = kv_shipping(dep, pools[key[0]], pools[key[1]])
            link = links[(src, dst)] = models[key]
        return link[0] * prompt[rid], link[1], link[2]

    return kv_transfer


def simulate(dep: Deployment, traffic: Traffic, *, timing: TimingModel | None = None,
             cost_for: Callable[[Pool], StepCostModel] | None = None, horizon_s: float = math.inf,
             progress: Callable[[int], None] | None = None, engine: str | None = None,
             preemption: str | None = None, overheads: bool = True,
             engine_version: str | None = None) -> SimulationResult:
    """Run ``traffic`` through ``dep`` and return a ``SimulationResult``: ``requests`` (one row per request:
    arrival, admission, first token, finish, TTFT / TPOT / E2E, status and reason), ``steps`` (one row per batch
    step of every replica), ``summary`` (a plain dict: latency statistics, throughput, goodput and SLO attainment,
    utilisation per pool and quadrant, KV occupancy, cost, the measurement window) and ``events``.

    ``engine`` (vllm | sglang | trtllm) overrides every pool's engine profile; ``engine_version`` (a release such
    as ``0.8.4``) the release it serves; ``preemption`` (recompute | swap | none) its preemption mode;
    ``overheads=False`` drops the engines' step overheads. ``timing`` times the ops (the roofline by default);
    ``cost_for`` replaces the step-cost model of a pool outright (tests). The run stops
    at ``horizon_s`` simulated seconds if given: requests unfinished then end ``rejected`` (``engine.UNFINISHED``,
    which the SLO figures count as a miss only where the horizon already makes one certain, or
    ``engine.NOT_ARRIVED`` for those not yet arrived, which they leave out).
    ``progress(n)`` is called as requests finish."""
    from ..checks import choice, real
    from ..units import MAX_ARRIVAL_S

    if not isinstance(dep, Deployment):
        raise SimulatorError(f"simulate: dep must be a Deployment (read_deployment / quick_deployment), got "
                             f"{type(dep).__name__}")
    if not isinstance(traffic, Traffic):
        raise SimulatorError(f"simulate: traffic must be a Traffic (read_traffic / simple_traffic), got "
                             f"{type(traffic).__name__}")
    real("simulate: horizon_s", horizon_s, 0, above=True, infinite=True)
    if engine is not None:
        choice("simulate: engine", engine, ENGINES)
    if preemption is not None:
        choice("simulate: preemption", preemption, PREEMPTIONS)
    if timing is not None and not isinstance(timing, TimingModel):
        raise SimulatorError(f"simulate: timing must be a TimingModel (RooflineModel(), a calibrated overlay), got "
                             f"{type(timing).__name__}")
    if progress is not None and not callable(progress):
        raise SimulatorError(f"simulate: progress must be a callable taking the requests ended so far, got "
                             f"{type(progress).__name__}")
    if not isinstance(overheads, bool):
        raise SimulatorError(f"simulate: overheads must be True or False, got {overheads!r}")
    if traffic.arrival in ("poisson", "gamma") and traffic.requests / traffic.rate_per_s > MAX_ARRIVAL_S:
        # the arrivals' expected span (the rate and the request count as the run has them): past 1e9 s the clock's
        # float resolution breaks (``units.MAX_ARRIVAL_S``)
        raise SimulatorError(f"simulate: {traffic.requests} requests at {traffic.rate_per_s:g}/s would arrive over "
                             f"~{traffic.requests / traffic.rate_per_s:.3g} s, past the 1e9 s the simulator's clock "
                             "resolves: give a higher rate or fewer requests")
    if not any(p.replicas > 0 for p in dep.pools):
        raise SimulatorError("simulate: the deployment has no replica to serve with (pools, or replicas >= 1)")
    reqs = traffic.sample()
    r = Requests(reqs["arrival_s"].to_numpy(dtype=float).copy(), reqs["prompt_tokens"].to_numpy(np.int64),
                 reqs["output_tokens"].to_numpy(np.int64))
    if engine_version is not None:
        from .profiles import engine_release, versioned_engines

        engine_release(engine_version, "--engine-version")
        if not any((engine or p.engine) in versioned_engines() for p in dep.pools):
            raise SimulatorError(f"--engine-version {engine_version}: names a release of "
                                 f"{', '.join(versioned_engines())}, whose constants depend on it, and no pool runs "
                                 f"{'it' if len(versioned_engines()) == 1 else 'one'} here")
    configs = replica_configs(dep, cost_for, timing, engine=engine, preemption=preemption, overheads=overheads,
                              engine_version=engine_version)
    pre_pool = next((p for p in dep.pools if p.serves == ("prefill",)), None)

    closed = traffic.concurrency if traffic.arrival == "closed" else 0
    starts = None
    ramp_s = 0.0
    if closed:
        ramp_s = traffic.ramp_up_s if traffic.ramp_up_s is not None else closed_loop_ramp_s(configs, traffic)
        if not math.isfinite(ramp_s) or ramp_s < 0:
            raise SimulatorError(f"closed-loop ramp-up: expected a finite time >= 0 (s), got {ramp_s}")
        starts = np.arange(min(closed, len(r.prompt))) * (ramp_s / closed)
    sim = Simulation(r, configs, seed=traffic.seed, closed_concurrency=closed,
                     kv_transfer_s=kv_transfer_for(dep, configs, r) if pre_pool else None, horizon_s=horizon_s,
                     closed_starts_s=starts)
    sim.ramp_s = ramp_s
    sim.engine_override = engine
    sim.engine_versions = {p.name: v for p in dep.pools if (v := pool_release(p, engine, engine_version)) is not None}
    sim.engine_version_override = engine_version
    if progress:
        sim.on_done = progress
    sim.run()
    requests, steps = sim.request_frame(), sim.step_frame()
    summary = summarise(requests, steps, sim, dep, traffic)
    if not overheads:  # (recorded only when off, so results written before the flag existed read the same)
        summary["overheads"] = False
    return SimulationResult(requests, steps, summary, sim.events)
