"""Parallel plans: how one quadrant (attention or FFN of one phase) is laid out on devices.

Frozen data plus validation. Device order inside a pool is TP innermost, then attention DP, then
PP, so a group's members are contiguous and share a scale-up domain when they fit in one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import LayoutError, SimulatorError
from .precision import Precision, attention_dtype, compute_dtype, get_precision
from .specs.hardware import HardwareSpec
from .specs.model import ModelSpec


@dataclass(frozen=True)
class AttentionPlacement:
    hardware: HardwareSpec
    tp: int = 1
    dp: int = 1
    precision: str = "bf16"
    overlap_comm: bool = False

    @property
    def devices_per_stage(self) -> int:
        return self.tp * self.dp


@dataclass(frozen=True)
class FFNPlacement:
    hardware: HardwareSpec
    tp: int = 1  # dense FFN / shared experts (and experts when ep == 1)
    ep: int = 1
    expert_tp: int = 1  # TP inside each expert group
    precision: str = "bf16"
    overlap_comm: bool = False  # e.g. two-micro-batch overlap of EP all-to-all with compute
    devices: int = 1  # devices of one pipeline stage serving the FFN

    @property
    def replicas(self) -> int:
        return self.devices // (self.ep * self.expert_tp)


@dataclass(frozen=True)
class PhasePlan:
    """One phase (prefill or decode): attention and FFN placements and how they are coupled."""

    attention: AttentionPlacement
    ffn: FFNPlacement
    pp: int = 1
    af_disaggregated: bool = False  # attention and FFN on separate device pools
    micro_batches: int = 1  # ping-pong micro-batches between attention and FFN pools
    chunk_tokens: int = 0  # prefill chunk size (0 = whole prompt in one chunk)
    moe_imbalance: float = 1.0  # extra load-imbalance factor over EP ranks on top of random routing (ep > 1 only)

    @property
    def devices(self) -> int:
        a = self.attention.devices_per_stage * self.pp
        if not self.af_disaggregated:
            return a
        return a + self.ffn.devices * self.pp

    def precisions(self) -> tuple[Precision, Precision]:
        return get_precision(self.attention.precision), get_precision(self.ffn.precision)


@dataclass(frozen=True)
class SpeculativeSpec:
    draft_tokens: int  # k tokens proposed per step
    acceptance_rate: float  # per-token probability a draft token is accepted
    draft_cost_fraction: float  # one draft step's time as a fraction of a target decode step

    @property
    def expected_tokens_per_step(self) -> float:
        a, k = self.acceptance_rate, self.draft_tokens
        if a >= 1.0:
            return k + 1.0
        return (1.0 - a ** (k + 1)) / (1.0 - a)


@dataclass(frozen=True)
class ServingPlan:
    """A model and its prefill and decode phase plans (placements of attention and FFN, parallelism,
    precision, P/D and A/F disaggregation, speculative decoding, KV cache precision)."""

    model: ModelSpec
    prefill: PhasePlan
    decode: PhasePlan
    kv_precision: str = "bf16"
    kv_scale_tokens: int = 128
    colocated: bool = True  # prefill and decode share one pool (else PD-disaggregated)
    speculative: SpeculativeSpec | None = None
    prefill_replicas: int = 1  # model replicas of the prefill pool (the decode pool's when colocated)
    decode_replicas: int = 1
    # P/D: the deployment's KV transfer (``specs.deployment.KVTransfer``: bandwidth or None, latency, streaming);
    # None: the devices' scale-out links, streamed
    kv_transfer: object = None

    def __post_init__(self):
        """Checked on construction (the API builds plans directly): replica counts and the KV scale group are whole
        and >= 1, the KV precision a known one (a negative replica count gave negative throughput)."""
        from .checks import choice, whole
        from .precision import KV_PRECISIONS

        if not isinstance(self.model, ModelSpec) or not isinstance(self.prefill, PhasePlan) \
                or not isinstance(self.decode, PhasePlan):
            raise SimulatorError("ServingPlan: expected a ModelSpec (load_model(...)) and two PhasePlans "
                                 "(simple_phase(...))")
        for key in ("prefill_replicas", "decode_replicas", "kv_scale_tokens"):
            object.__setattr__(self, key, whole(f"ServingPlan.{key}", getattr(self, key), 1))
        choice("ServingPlan.kv_precision", self.kv_precision, KV_PRECISIONS)

    @property
    def device_ids(self) -> list[str]:
        """The profile ids of every device the plan runs on (attention and FFN of both phases)."""
        return list(dict.fromkeys(q.hardware.id for ph in (self.prefill, self.decode) for q in (ph.attention, ph.ffn)))

    @property
    def devices(self) -> int:
        if self.colocated:
            return max(self.prefill.devices, self.decode.devices)
        return self.prefill.devices + self.decode.devices



def kv_link(prefill: PhasePlan, decode: PhasePlan) -> tuple[str, float]:
    """The link a P/D KV transfer crosses and its bandwidth for one request (B/s): the scale-up fabric (NVLink)
    when both replicas fit in one scale-up domain of the same device type (e.g. an NVL72 rack), else the
    scale-out network (one RDMA NIC a device). One request's KV sits on the tp x pp devices of one
    attention-DP rank and lands on one rank's tp x pp devices of the decode replica; each device moves its
    share over its own port, so the slower side bounds the transfer."""
    a, b = prefill.attention, decode.attention
    same = a.hardware.id == b.hardware.id
    level = "scale_up" if same and a.hardware.scale_up.domain_size >= prefill.devices + decode.devices else "scale_out"
    bw = min(getattr(a.hardware, level).bandwidth_bytes_per_s * a.tp * prefill.pp,
             getattr(b.hardware, level).bandwidth_bytes_per_s * b.tp * decode.pp)
    return level, bw


def kv_link_latency_s(prefill: PhasePlan, decode: PhasePlan, level: str) -> float:
    """A P/D KV transfer's fixed latency at ``level`` (``kv_link``'s) where the deployment sets none: the slower side's
    latency there, as the device profiles source it."""
    return max(getattr(ph.attention.hardware, level).latency_s for ph in (prefill, decode))


def repriced(plan: PhasePlan, prices_usd_per_hour: dict[str, float]) -> PhasePlan:
    """The phase with its devices priced from ``prices_usd_per_hour`` (profile id -> USD per device-hour);
    devices not named keep their profile's price."""
    def hw(h: HardwareSpec) -> HardwareSpec:
        usd = prices_usd_per_hour.get(h.id)
        return h if usd is None else h.with_price(usd)

    return replace(plan, attention=replace(plan.attention, hardware=hw(plan.attention.hardware)),
                   ffn=replace(plan.ffn, hardware=hw(plan.ffn.hardware)))


def default_expert_tp(model: ModelSpec, ffn_devices: int, ep: int, ffn_pool: bool = False) -> int:
    """Expert TP where a layout gives none: the expert groups span the FFN devices (a stage's tp x dp, or an FFN
    pool's), so with attention DP and no EP the experts are TP-sharded over tp x dp, as vLLM flattens TP across DP
    for its MoE layers (FusedMoEParallelConfig.make, vllm/model_executor/layers/fused_moe/config.py) and SGLang runs
    them on its whole --tp group under DP attention; an FFN pool without EP holds every expert on each device; a
    dense model has no experts to shard (1)."""
    if not model.is_moe or (ffn_pool and ep <= 1):
        return 1
    return max(ffn_devices // ep, 1)


def simple_phase(hw: HardwareSpec, model: ModelSpec, devices: int, tp: int | None = None, pp: int = 1,
                 ep: int = 1, dp: int | None = None, expert_tp: int | None = None,
                 precision: str = "bf16", attn_precision: str | None = None,
                 ffn_precision: str | None = None, chunk_tokens: int = 0,
                 overlap_comm: bool = False) -> PhasePlan:
    """A colocated phase on one pool of ``devices`` identical devices (the what-if default:
    TP over every device unless told otherwise)."""
    if devices < 1:
        raise LayoutError(f"--devices must be >= 1, got {devices}")
    if pp < 1 or devices % pp:
        raise LayoutError(f"--pp {pp} does not divide --devices {devices}")
    per_stage = devices // pp
    if tp is None:
        if dp and (dp < 1 or per_stage % dp):
            where = f"the {per_stage} devices of a pipeline stage" if pp > 1 else f"--devices {devices}"
            raise LayoutError(f"--dp {dp} does not divide {where}")
        tp = per_stage // dp if dp else per_stage
    if tp < 1 or per_stage % tp:
        raise LayoutError(f"--tp {tp} does not divide the {per_stage} devices of a pipeline stage")
    if dp is None:
        dp = per_stage // tp
    if tp * dp != per_stage:
        raise LayoutError(f"tp x dp x pp = {tp} x {dp} x {pp} must equal --devices {devices}")
    if ep < 1 or per_stage % ep:
        raise LayoutError(f"--ep {ep} does not divide the {per_stage} devices of a pipeline stage")
    if expert_tp is None:
        expert_tp = default_expert_tp(model, per_stage, ep)
    if per_stage % (ep * expert_tp):
        raise LayoutError(f"ep x expert-tp = {ep} x {expert_tp} does not divide {per_stage} devices")
    att = AttentionPlacement(hw, tp, dp, attn_precision or precision, overlap_comm)
    ffn = FFNPlacement(hw, tp, ep, expert_tp, ffn_precision or precision, overlap_comm, per_stage)
    plan = PhasePlan(att, ffn, pp, chunk_tokens=chunk_tokens)
    validate_phase(plan, model)
    return plan


def attention_tp_problem(model: ModelSpec, tp: int) -> str | None:
    """Why attention TP ``tp`` cannot serve ``model`` (None: it can): the query heads must split evenly, and
    the KV heads must split evenly or each be replicated over tp / kv ranks, as vLLM's and SGLang's
    tensor-parallel attention require (vLLM QKVParallelLinear: "num_kv_heads % tp_size == 0 or tp_size %
    num_kv_heads == 0")."""
    heads, kv = model.attention.num_heads, model.attention.num_kv_heads
    if tp > heads or heads % tp:
        return f"attention tp={tp} must divide {model.id}'s {heads} heads"
    if model.attention.kind == "gqa" and kv and kv % tp and tp % kv:
        return f"attention tp={tp} must divide {model.id}'s {kv} KV heads or be a multiple of them"
    return None


def validate_phase(plan: PhasePlan, model: ModelSpec, kv_precision: str = "bf16") -> None:
    """Divisibility and capability checks with one-line reasons."""
    a, f = plan.attention, plan.ffn  # uneven pipeline stages are allowed: memory uses the largest stage
    why = attention_tp_problem(model, a.tp)
    if why:
        raise LayoutError(why)
    if plan.pp > model.num_layers:  # a stage holds at least one layer
        raise LayoutError(f"pp={plan.pp} exceeds {model.id}'s {model.num_layers} layers (a stage holds at least one)")
    if model.moe:
        if f.ep > model.moe.num_experts * max(f.devices // max(f.ep, 1), 1) and f.ep > model.moe.num_experts:
            raise LayoutError(f"ep={f.ep} exceeds {model.id}'s {model.moe.num_experts} experts")
        # an EP width that does not divide the experts holds ceil(E / ep) per rank (redundant experts)
    elif f.ep > 1:
        raise LayoutError(f"{model.id} is dense: expert parallelism (ep={f.ep}) does not apply")
    pa, pf = plan.precisions()
    compute_dtype(pa, a.hardware)
    compute_dtype(pf, f.hardware)
    attention_dtype(pa, kv_precision, a.hardware)
