"""Deployments: one or more device pools, each serving some quadrants with its own hardware,
parallelism and precision. Read from ``workloads/deployments/<id>.yaml``.

A pool serves ``prefill``, ``decode`` or both (colocated, continuous batching with chunked
prefill). A decode pool may put its FFN on a separate pool of devices (attention/FFN
disaggregation, micro-batches ping-ponging between the two).

Several pools may serve the same role (all colocated, or several prefill / decode pools). A pool's
``route: {min_prompt_tokens: A, max_prompt_tokens: B}`` makes it take only requests whose prompt
length is within [A, B] (both inclusive; either bound may be left out): arrivals for a colocated or
prefill pool, the prefilled KV cache for a decode pool. That expresses a long/short context split,
e.g. long prompts decoded on their own replicas so they do not slow the short ones batched with
them. The pools of one role must together take every prompt length.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..checks import choice, real, whole
from ..errors import InfeasibleError, SimulatorError, SpecError
from ..plan import (
    AttentionPlacement,
    FFNPlacement,
    PhasePlan,
    ServingPlan,
    SpeculativeSpec,
    default_expert_tp,
    repriced,
    validate_phase,
)
from ..precision import KV_PRECISIONS, PRECISIONS
from ._reader import Reader, load_yaml
from .catalog import load_hardware, load_model
from .hardware import HardwareSpec
from .model import ModelSpec

ROUTE_MAX_TOKENS = 2 ** 62  # "no upper bound" for a pool's route
ENGINES = ("vllm", "sglang", "trtllm")  # simulator/serving/engines.yaml holds their profiles
MAX_REPLICAS = 100_000  # the CLI's --replicas has the same cap: keeps a run bounded in memory and time
# a request's time in a server frontend before the scheduler has it: engines measure it in milliseconds (engines.yaml
# frontend_latency_s: 0-155 ms); an hour is no frontend, and past the clock's horizon it broke the run
MAX_FRONTEND_LATENCY_S = 3600.0
MAX_BATCH_WAIT = 10_000  # batch_wait_timeout_iters: steps a prompt may be held back (InferenceX runs 40)
BATCH_WAIT_UNPAIRED = ("TensorRT-LLM's batch waiting needs both batch_wait_timeout_iters and "
                       "batch_wait_max_tokens_ratio (either alone holds nothing back)")


def batch_wait_unpaired(iters: float, ratio: float) -> bool:
    """Whether only one of TensorRT-LLM's two batch-waiting settings is on (refused: ``BATCH_WAIT_UNPAIRED``)."""
    return (iters > 0) != (ratio > 0)
PREEMPTIONS = ("recompute", "swap", "none")


@dataclass(frozen=True)
class Pool:
    name: str
    serves: tuple[str, ...]  # ("prefill",), ("decode",) or ("prefill", "decode")
    replicas: int
    plan: PhasePlan  # the parallel layout of one replica
    max_batch_tokens: int | None  # token budget per step (chunked prefill); None: the engine server's default
    max_seqs: int | None  # running sequences per replica; None: the engine server's default
    speculative: SpeculativeSpec | None = None
    engine: str = "vllm"  # serving engine profile: vllm | sglang | trtllm (batching policy + step overheads)
    preemption: str | None = None  # recompute | swap | none; None: the engine's default
    prompt_range: tuple[int, int] = (0, ROUTE_MAX_TOKENS)  # prompt lengths (inclusive) routed here (``route:``)
    scheduler_recv_interval: int = 1  # SGLang --scheduler-recv-interval: a busy scheduler receives every N decode steps
    frontend_latency_s: float | None = None  # time in the server frontend before the scheduler; None: the engine's
    memory_fraction: float | None = None  # the engine's KV memory flag (vLLM gpu_memory_utilization, SGLang
    # mem_fraction_static, TRT-LLM free_gpu_memory_fraction); None: the engine's default (engines.yaml memory:)
    engine_version: str | None = None  # the engine release served ("0.8.4"), where a constant depends on it (an
    # older release's kernels, engines.yaml); None: the release the profile models now
    # TensorRT-LLM's batch waiting (its llm_args of the same names): prompts beside decodes wait up to this many steps
    # while a step would schedule under this fraction of max_batch_tokens; 0 and 0.0: off, the engine's default
    batch_wait_timeout_iters: int = 0
    batch_wait_max_tokens_ratio: float = 0.0

    def __post_init__(self):
        """The fields a caller can set through the API (``quick_deployment``, ``dataclasses.replace``) held to what
        the YAML reader takes: a negative frontend latency crashed the engine, a NaN budget the step tables."""
        at = f"Pool {self.name!r}"
        object.__setattr__(self, "replicas", whole(f"{at}.replicas", self.replicas, 1, MAX_REPLICAS))
        for key in ("max_batch_tokens", "max_seqs"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, whole(f"{at}.{key}", getattr(self, key), 1))
        object.__setattr__(self, "scheduler_recv_interval",
                           whole(f"{at}.scheduler_recv_interval", self.scheduler_recv_interval, 1))
        choice(f"{at}.engine", self.engine, ENGINES)
        if self.preemption is not None:
            choice(f"{at}.preemption", self.preemption, PREEMPTIONS)
        if not isinstance(self.serves, tuple) or not self.serves or not set(self.serves) <= {"prefill", "decode"} \
                or len(set(self.serves)) != len(self.serves):
            raise SimulatorError(f"{at}.serves: expected ('prefill',), ('decode',) or ('prefill', 'decode'), got "
                                 f"{self.serves!r}")
        lo, hi = self.prompt_range
        if not 0 <= lo <= hi:
            raise SimulatorError(f"{at}.prompt_range: expected (low, high) with 0 <= low <= high, got "
                                 f"{self.prompt_range!r}")
        if self.frontend_latency_s is not None:
            real(f"{at}.frontend_latency_s", self.frontend_latency_s, 0, MAX_FRONTEND_LATENCY_S)
        if self.memory_fraction is not None:
            real(f"{at}.memory_fraction", self.memory_fraction, 0.01, 1.0)
        object.__setattr__(self, "batch_wait_timeout_iters",
                           whole(f"{at}.batch_wait_timeout_iters", self.batch_wait_timeout_iters, 0, MAX_BATCH_WAIT))
        real(f"{at}.batch_wait_max_tokens_ratio", self.batch_wait_max_tokens_ratio, 0.0, 1.0)
        if batch_wait_unpaired(self.batch_wait_timeout_iters, self.batch_wait_max_tokens_ratio):
            raise SimulatorError(f"{at}: {BATCH_WAIT_UNPAIRED}")
        if self.engine_version is not None:
            from ..serving.profiles import release_problem

            if problem := release_problem(self.engine_version, self.engine):
                raise SimulatorError(f"{at}.engine_version: {problem}")

    @property
    def role(self) -> str:
        """``colocated``, ``prefill`` or ``decode``."""
        return "colocated" if set(self.serves) == {"prefill", "decode"} else self.serves[0]

    @property
    def devices_per_replica(self) -> int:
        return self.plan.devices

    @property
    def devices(self) -> int:
        return self.replicas * self.plan.devices

    @property
    def price_usd_per_s(self) -> float:
        p = self.plan
        a = p.attention.hardware.price_usd_per_s * p.attention.devices_per_stage * p.pp
        if p.af_disaggregated:
            a += p.ffn.hardware.price_usd_per_s * p.ffn.devices * p.pp
        return a * self.replicas


@dataclass(frozen=True)
class KVTransfer:
    bandwidth_bytes_per_s: float | None  # None: the link between the two pools (``plan.kv_link``)
    latency_s: float | None  # None: that link's latency, as the device profiles give it
    overlap_with_prefill: bool  # layer-by-layer streaming hides all but the last layer's share


@dataclass(frozen=True)
class Deployment:
    id: str
    model: ModelSpec
    pools: tuple[Pool, ...]
    kv_precision: str
    kv_scale_tokens: int
    transfer: KVTransfer
    file: str = ""

    @property
    def devices(self) -> int:
        return sum(p.devices for p in self.pools)

    @property
    def disaggregated(self) -> bool:
        return not any(p.role == "colocated" for p in self.pools)

    def pools_serving(self, phase: str) -> list[Pool]:
        return [p for p in self.pools if phase in p.serves]

    @property
    def device_ids(self) -> list[str]:
        """The profile ids of every device the deployment runs on (attention and FFN of every pool)."""
        return list(dict.fromkeys(q.hardware.id for p in self.pools for q in (p.plan.attention, p.plan.ffn)))

    def repriced(self, prices_usd_per_hour: dict[str, float]) -> Deployment:
        """The deployment with its devices priced from ``prices_usd_per_hour`` (profile id -> USD per
        device-hour; devices not named keep their price)."""
        return replace(self, pools=tuple(replace(p, plan=repriced(p.plan, prices_usd_per_hour)) for p in self.pools))

    def serving_plan(self) -> ServingPlan:
        """The analytic view (first pool of each phase) used by ``quadrant whatif --deployment``."""
        pre, dec = self.pools_serving("prefill")[0], self.pools_serving("decode")[0]
        return ServingPlan(self.model, pre.plan, dec.plan, self.kv_precision, self.kv_scale_tokens,
                           colocated=pre is dec, speculative=dec.speculative,
                           prefill_replicas=pre.replicas, decode_replicas=dec.replicas,
                           kv_transfer=self.transfer)


MAX_SCALE_OUT_LATENCY_S = 0.01  # per level: the slowest published fabric measures ~136 us (TCPXO); 10 ms is nonsense


def _scale_out_latency(node: Reader) -> float | None:
    if not node.has("scale_out_latency"):
        node.raw("scale_out_latency", None)
        return None
    lat = node.quantity("scale_out_latency", "s", positive=True)
    if lat > MAX_SCALE_OUT_LATENCY_S:
        raise node.error("scale_out_latency", f"expected at most {MAX_SCALE_OUT_LATENCY_S * 1e3:g} ms per level "
                                              f"(published fabrics measure 3-136 us), got {lat * 1e6:g} us")
    return lat


def _pool_device(hw: HardwareSpec, node: Reader, scale_out_s: float | None = None) -> HardwareSpec:
    """The pool's device with the deployment's own price (``price_per_device_hour``) and cross-node latency
    (``scale_out_latency``: the fabric's small-message latency per log2(nodes) level, e.g. a cloud's EFA or
    TCPXO instead of the profile's InfiniBand; reports/validation/scale-out-latency.md), where the file sets them."""
    lat = _scale_out_latency(node)
    lat = scale_out_s if lat is None else lat  # (an FFN pool inherits its attention pool's fabric unless it sets one)
    if lat is not None:
        hw = replace(hw, scale_out=replace(hw.scale_out, latency_s=lat))
    if not node.has("price_per_device_hour"):
        node.raw("price_per_device_hour", None)
        return hw
    from ..planning.cost import MAX_PRICE_USD_PER_HOUR

    usd = node.quantity("price_per_device_hour", "usd_per_s", positive=True)
    if usd * 3600 > MAX_PRICE_USD_PER_HOUR:
        raise node.error("price_per_device_hour", f"expected at most {MAX_PRICE_USD_PER_HOUR:,.0f} USD per device-hour "
                                                  f"(a typo?), got {usd * 3600:g}")
    return replace(hw, price_usd_per_s=usd, price_note="set in the deployment file (unsourced unless the file says)")


MAX_MICRO_BATCHES = 64  # ping-pong micro-batches of an A/F pool (MegaScale-Infer-style pipelines use a few)


def _moe_imbalance(r: Reader, model) -> float:
    """``moe_imbalance``: the busiest expert rank's load over the mean (>= 1), for an MoE model only (refused, not
    ignored, on a dense one)."""
    if r.has("moe_imbalance") and not model.is_moe:
        raise r.error("moe_imbalance", f"applies to MoE models; {model.id} is dense")
    return r.number("moe_imbalance", 1.0, minimum=1.0)


def _micro_batches(r: Reader, af: bool) -> int:
    """``micro_batches``: the attention/FFN ping-pong depth of a pool with an ``ffn_pool`` (refused elsewhere:
    a colocated pool's micro-batches are its pipeline stages)."""
    if not af:
        if r.raw("micro_batches", None) is not None:
            raise r.error("micro_batches", "applies to a pool whose FFN runs on an ffn_pool (attention/FFN "
                                           "ping-pong); a colocated pool pipelines micro-batches over its pp stages")
        return 1
    m = r.int("micro_batches", 2, minimum=1)
    if m > MAX_MICRO_BATCHES:
        raise r.error("micro_batches", f"expected at most {MAX_MICRO_BATCHES} micro-batches, got {m}")
    return m


def _pool(r: Reader, model: ModelSpec, kv_precision: str) -> Pool:
    name = r.str("name")
    serves = r.raw("serves")
    if isinstance(serves, str):
        serves = [serves]
    if not isinstance(serves, list) or not serves or not set(serves) <= {"prefill", "decode"}:
        raise r.error("serves", "expected a list of phases: [prefill], [decode] or [prefill, decode]")
    hw = _pool_device(r.ref("hardware", load_hardware), r)
    devices = r.int("devices", minimum=1)
    replicas = r.int("replicas", 1, minimum=1)
    if replicas > MAX_REPLICAS:
        raise r.error("replicas", f"expected at most {MAX_REPLICAS} replicas, got {replicas}")
    pp = r.int("pp", 1, minimum=1)
    if devices % pp:
        raise r.error("pp", f"pp={pp} does not divide devices={devices}")
    per_stage = devices // pp
    att = r.child("attention", {})
    tp = att.int("tp", per_stage, minimum=1)
    dp = att.int("dp", per_stage // tp if per_stage % tp == 0 else 1, minimum=1)
    if tp * dp != per_stage:
        raise att.error("tp", f"tp x dp = {tp} x {dp} must equal devices / pp = {per_stage}")
    a_prec = att.str("precision", "bf16", choices=tuple(PRECISIONS))
    a_overlap = att.bool("overlap_comm", False)
    att.done()
    ffn = r.child("ffn", {})
    af = r.child("ffn_pool", {}) if r.has("ffn_pool") else None
    if af is None:
        r.raw("ffn_pool", None)
    ep = ffn.int("ep", 1, minimum=1)
    ffn_devices = per_stage
    ffn_hw = hw
    if af is not None:
        ffn_hw = _pool_device(af.ref("hardware", load_hardware), af, hw.scale_out.latency_s
                                 if r.has("scale_out_latency") else None)
        ffn_devices = af.int("devices", minimum=1)
        af.done()
    expert_tp = ffn.int("expert_tp", default_expert_tp(model, ffn_devices, ep, ffn_pool=af is not None), minimum=1)
    f_tp = ffn.int("tp", tp if af is None else 1, minimum=1)
    if af is None and f_tp != tp:  # colocated: the dense and shared FFN run on the attention's TP group
        raise ffn.error("tp", f"a colocated FFN runs on the attention's TP group (tp {tp}); drop ffn.tp, set "
                              "attention.tp, or shard the experts with ffn.ep / ffn.expert_tp")
    if af is not None and ffn_devices % f_tp:
        raise ffn.error("tp", f"tp {f_tp} does not divide the {ffn_devices} devices of the FFN pool")
    f_prec = ffn.str("precision", a_prec, choices=tuple(PRECISIONS))
    f_overlap = ffn.bool("overlap_comm", False)
    ffn.done()
    if ffn_devices % (ep * expert_tp):
        raise r.error("ffn.ep", f"ep x expert_tp = {ep} x {expert_tp} does not divide {ffn_devices} FFN devices")
    spec = None
    if r.has("speculative"):
        s = r.child("speculative")
        spec = SpeculativeSpec(s.int("draft_tokens", minimum=1), s.number("acceptance_rate", minimum=0, maximum=1),
                               s.number("draft_cost_fraction", minimum=0, maximum=1))  # (as --spec-draft-cost)
        s.done()
    else:
        r.raw("speculative", None)
    plan = PhasePlan(
        AttentionPlacement(hw, tp, dp, a_prec, a_overlap),
        FFNPlacement(ffn_hw, f_tp, ep, expert_tp, f_prec, f_overlap, ffn_devices),
        pp=pp, af_disaggregated=af is not None, micro_batches=_micro_batches(r, af is not None),
        chunk_tokens=r.int("chunk_tokens", 0), moe_imbalance=_moe_imbalance(r, model))
    try:
        validate_phase(plan, model, kv_precision)
    except InfeasibleError as exc:
        raise SpecError(r.file, r.path, str(exc)) from None
    engine = r.str("engine", "vllm", choices=ENGINES)
    preemption = r.str("preemption", None, choices=PREEMPTIONS)
    prompt_range = (0, ROUTE_MAX_TOKENS)
    if r.has("route"):
        rt = r.child("route")
        lo = rt.int("min_prompt_tokens", 0, minimum=0)
        hi = rt.int("max_prompt_tokens", ROUTE_MAX_TOKENS, minimum=1)
        if hi < lo:
            raise rt.error("max_prompt_tokens", f"expected max_prompt_tokens >= min_prompt_tokens = {lo}, got {hi}")
        rt.done()
        prompt_range = (lo, hi)
    else:
        r.raw("route", None)
    frontend = r.quantity("frontend_latency", "s", None)
    if frontend is not None and frontend > MAX_FRONTEND_LATENCY_S:
        raise r.error("frontend_latency", f"expected at most {MAX_FRONTEND_LATENCY_S:g} s, got {frontend:g} s")
    if frontend is not None and tuple(serves) == ("decode",):
        raise r.error("frontend_latency", "a decode pool has no frontend (its requests arrive by KV transfer); "
                                          "set it on the prefill pool")
    wait_iters = r.int("batch_wait_timeout_iters", 0, minimum=0, maximum=MAX_BATCH_WAIT)
    wait_ratio = r.number("batch_wait_max_tokens_ratio", 0.0, minimum=0.0, maximum=1.0)
    if batch_wait_unpaired(wait_iters, wait_ratio):
        raise r.error("batch_wait_timeout_iters" if wait_iters else "batch_wait_max_tokens_ratio", BATCH_WAIT_UNPAIRED)
    # unset: what the engine's server picks for this device (simulator/serving/engines.yaml, server_defaults)
    pool = Pool(name, tuple(serves), replicas, plan, r.int("max_batch_tokens", None, minimum=1),
                r.int("max_seqs", None, minimum=1), spec, engine, preemption, prompt_range,
                r.int("scheduler_recv_interval", 1, minimum=1), frontend,
                r.number("memory_fraction", None, minimum=0.01, maximum=1.0), _engine_version(r, engine),
                wait_iters, wait_ratio)
    r.done()
    return pool


def _engine_version(r, engine: str) -> str | None:
    """A pool's ``engine_version``: a quoted release (``'0.8.4'``; a bare 0.10 would reach here as the number 0.1) of
    an engine whose constants depend on it."""
    from ..serving.profiles import release_problem

    v = r.raw("engine_version", None)
    if v is not None and (problem := release_problem(v, engine)):
        raise r.error("engine_version", problem)
    return v


def route_gap(ranges: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The first run of prompt lengths (>= 1, inclusive) that none of ``ranges`` takes, or None (also
    when there are no ranges: that role is not served)."""
    if not ranges:
        return None
    covered = 1  # every length below this is taken
    for lo, hi in sorted(ranges):
        if lo > covered:
            return covered, lo - 1
        covered = max(covered, hi + 1)
    return (covered, ROUTE_MAX_TOKENS) if covered <= ROUTE_MAX_TOKENS else None


def read_deployment(path: str | Path) -> Deployment:
    """A deployment YAML (``workloads/deployments/``): the model, KV cache and pools (hardware, devices,
    replicas, parallelism and precision per quadrant, engine, batch limits, routing). ``SpecError`` names the
    file and key of anything wrong; an infeasible layout is refused at the pool's key."""
    from .catalog import resolve_workload

    if not isinstance(path, (str, Path)):
        raise SpecError(str(path), "", "expected a path to a YAML file or a catalogue id")
    path = resolve_workload(path, "deployments", "deployment")  # (a catalogue id, e.g. "dbrx-8xh100", or a path)
    data = load_yaml(path)
    r = Reader(path, data)
    r.schema_version()
    r.str("description", "")
    model = r.ref("model", load_model)
    kv = r.child("kv_cache", {})
    kv_precision = kv.str("precision", "bf16", choices=tuple(KV_PRECISIONS))
    kv_scale = kv.int("scale_tokens", 128, minimum=1)
    kv.done()
    pools = tuple(_pool(p, model, kv_precision) for p in r.children("pools"))
    if not pools:
        raise r.error("pools", "at least one pool is required")
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise r.error("pools", "pool names must be unique")
    for phase in ("prefill", "decode"):
        if not any(phase in p.serves for p in pools):
            raise r.error("pools", f"no pool serves {phase}")
    colocated = [p for p in pools if p.role == "colocated"]
    if colocated and len(colocated) < len(pools):
        raise r.error("pools", "mix of colocated and disaggregated pools is not supported; use one or the other")
    for role in ("colocated", "prefill", "decode"):
        gap = route_gap([p.prompt_range for p in pools if p.role == role])
        if gap is not None:
            names = ", ".join(p.name for p in pools if p.role == role)
            upto = "and longer" if gap[1] >= ROUTE_MAX_TOKENS else f"to {gap[1]}"
            raise r.error("pools", f"no {role} pool takes prompts of {gap[0]} {upto} tokens: the route ranges of "
                                   f"{names} must together cover every prompt length")
    if r.has("kv_transfer") and not any(p.role == "decode" for p in pools):  # refused, not ignored
        raise r.error("kv_transfer", "applies to prefill/decode pools (role: prefill and role: decode), and every "
                                     "pool here is colocated; drop the key")
    tr = r.child("kv_transfer", {})
    bw = tr.quantity("bandwidth", "bytes_per_s", None, positive=True)
    lat = tr.quantity("latency", "s", None)
    if lat is not None and not 0 <= lat <= MAX_SCALE_OUT_LATENCY_S:
        raise tr.error("latency", f"expected a latency in [0, {MAX_SCALE_OUT_LATENCY_S * 1e3:g} ms], got {lat:g} s")
    overlap = tr.bool("overlap_with_prefill", True)
    tr.done()
    dep = Deployment(r.str("id", Path(path).stem), model, pools, kv_precision, kv_scale,
                     KVTransfer(bw, lat, overlap), str(path))
    r.done()
    return dep
