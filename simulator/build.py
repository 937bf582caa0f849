"""Turn command-line style options into a ServingPlan (the what-if and quick-simulate paths).

Everything per quadrant defaults to the global option: ``--precision`` applies to every quadrant
unless ``--attn-precision`` / ``--ffn-precision`` override it; prefill and decode use
``--hardware`` / ``--devices`` unless their own options are given, in which case the two phases
run on separate pools (prefill/decode disaggregation).
"""

from __future__ import annotations

from dataclasses import dataclass

from .checks import real, whole
from .errors import SimulatorError
from .plan import ServingPlan, SpeculativeSpec, simple_phase, validate_phase
from .precision import KV_PRECISIONS, canonical_precision
from .specs.catalog import load_hardware, load_model
from .specs.hardware import HardwareSpec

MAX_DRAFT_TOKENS = 64  # speculative draft tokens a step (the CLI's --spec-draft / --spec-tokens bound)


@dataclass(frozen=True)
class PlanOptions:
    """A quick plan as the CLI's flags describe it: model, hardware, devices and parallelism, precisions, P/D
    pools, speculative decoding and price; ``plan_from_options`` turns it into a ``ServingPlan``. Checked on
    construction (None means the default; 0 is refused where it would not be one), and frozen so that it stays as
    checked (``dataclasses.replace`` makes a changed copy, checked again)."""

    model: str
    hardware: str = "h100-sxm"
    devices: int = 8
    tp: int | None = None
    pp: int = 1
    ep: int = 1
    dp: int | None = None
    expert_tp: int | None = None
    precision: str = "bf16"
    attn_precision: str | None = None
    ffn_precision: str | None = None
    kv_precision: str = "bf16"
    kv_scale_tokens: int = 128
    chunk: int = 0
    overlap_comm: bool = False
    prefill_hardware: str | None = None
    prefill_devices: int | None = None
    prefill_tp: int | None = None
    prefill_pp: int | None = None
    decode_hardware: str | None = None
    decode_devices: int | None = None
    decode_tp: int | None = None
    decode_ep: int | None = None
    spec_draft_tokens: int = 0
    spec_acceptance: float = 0.7
    spec_draft_cost: float = 0.05
    price_usd_per_hour: float | None = None  # every device of the plan

    def __post_init__(self):
        # the engines' and checkpoints' spellings (FP8, fp8_e4m3, NVFP4, bfloat16, AWQ) as this package's names
        for k in ("precision", "attn_precision", "ffn_precision", "kv_precision"):
            object.__setattr__(self, k, canonical_precision(getattr(self, k)))
        # counts: whole numbers (a whole-number float is taken as its integer); None: the default, 0 is not one
        for k, lo in (("devices", 1), ("pp", 1), ("ep", 1), ("kv_scale_tokens", 1), ("chunk", 0),
                      ("spec_draft_tokens", 0), ("tp", 1), ("dp", 1), ("expert_tp", 1), ("prefill_devices", 1),
                      ("prefill_tp", 1), ("prefill_pp", 1), ("decode_devices", 1), ("decode_tp", 1), ("decode_ep", 1)):
            if getattr(self, k) is not None:
                object.__setattr__(self, k, whole(f"PlanOptions.{k}", getattr(self, k), lo))
        if not isinstance(self.overlap_comm, bool):
            raise SimulatorError(f"PlanOptions.overlap_comm: expected True or False, got {self.overlap_comm!r}")
        if self.kv_precision not in KV_PRECISIONS:
            raise SimulatorError(f"PlanOptions.kv_precision: expected one of {', '.join(KV_PRECISIONS)}, got "
                                 f"{self.kv_precision!r}")
        if self.spec_draft_tokens > MAX_DRAFT_TOKENS:
            raise SimulatorError(f"PlanOptions.spec_draft_tokens: expected at most {MAX_DRAFT_TOKENS} draft tokens a "
                                 f"step, got {self.spec_draft_tokens}")
        real("PlanOptions.spec_acceptance", self.spec_acceptance, 0, 1)
        real("PlanOptions.spec_draft_cost", self.spec_draft_cost, 0, 1)
        if self.price_usd_per_hour is not None:
            real("PlanOptions.price_usd_per_hour", self.price_usd_per_hour, 0, above=True)


def _hw(ref: str, price: float | None) -> HardwareSpec:
    hw = load_hardware(ref)
    if price is not None:
        hw = hw.with_price(price)
    return hw


def plan_from_options(o: PlanOptions) -> ServingPlan:
    """The ``ServingPlan`` (prefill and decode phase plans) that ``o`` describes; ``InfeasibleError`` for a
    layout that cannot run."""
    model = load_model(o.model)
    disagg = any(v is not None for v in (o.prefill_hardware, o.prefill_devices, o.decode_hardware, o.decode_devices))
    if not disagg:  # a pool's own layout with no pools to apply it to: refused, not applied to both or dropped
        split = [flag for flag, v in (("--prefill-tp", o.prefill_tp), ("--prefill-pp", o.prefill_pp),
                                      ("--decode-tp", o.decode_tp), ("--decode-ep", o.decode_ep)) if v is not None]
        if split:
            raise SimulatorError(f"{', '.join(split)}: a prefill or decode pool's own layout, for a prefill/decode "
                                 "split; give --prefill-devices / --decode-devices (or --prefill-hardware / "
                                 "--decode-hardware) too, or use --tp / --pp / --ep for one colocated pool")
    if o.expert_tp is not None and model.moe is None:
        raise SimulatorError(f"--expert-tp: {model.id} is dense (no experts to split); use --tp")
    common = dict(ep=o.ep, dp=o.dp, expert_tp=o.expert_tp, precision=o.precision, attn_precision=o.attn_precision,
                  ffn_precision=o.ffn_precision, overlap_comm=o.overlap_comm)
    pre = simple_phase(_hw(o.prefill_hardware or o.hardware, o.price_usd_per_hour), model,
                       o.prefill_devices or o.devices, tp=o.prefill_tp or o.tp, pp=o.prefill_pp or o.pp,
                       chunk_tokens=o.chunk, **common)
    if disagg:
        dec_common = dict(common, ep=o.decode_ep or o.ep)
        dec = simple_phase(_hw(o.decode_hardware or o.hardware, o.price_usd_per_hour), model,
                           o.decode_devices or o.devices, tp=o.decode_tp or o.tp, pp=1 if o.decode_devices else o.pp,
                           **dec_common)
    else:
        dec = pre
    for ph in (pre, dec):
        validate_phase(ph, model, o.kv_precision)
    spec = None
    if o.spec_draft_tokens:
        if not 0 <= o.spec_acceptance <= 1:
            raise SimulatorError("--spec-acceptance must be within [0, 1]")
        spec = SpeculativeSpec(o.spec_draft_tokens, o.spec_acceptance, o.spec_draft_cost)
    return ServingPlan(model, pre, dec, o.kv_precision, o.kv_scale_tokens, colocated=not disagg, speculative=spec)



def quick_deployment(o: PlanOptions, *, max_batch_tokens: int | None = None, max_seqs: int | None = None,
                     replicas: int = 1, engine: str = "vllm", scheduler_recv_interval: int = 1,
                     frontend_latency_s: float | None = None, memory_fraction: float | None = None,
                     engine_version: str | None = None, batch_wait: tuple[int, float] = (0, 0.0)):
    """One colocated pool from command-line options (``quadrant simulate --model ...``). Batch limits left at
    None are the engine server's defaults for the device (``serving.profiles.server_defaults``), and a
    ``frontend_latency_s`` or ``memory_fraction`` (the engine's KV memory flag) left at None the engine
    profile's; ``engine_version`` names the engine release served (None: the one the profile models now);
    ``batch_wait``: TensorRT-LLM's (batch_wait_timeout_iters, batch_wait_max_tokens_ratio), (0, 0.0) off."""
    from .specs.deployment import Deployment, KVTransfer, Pool

    plan = plan_from_options(o)
    if not plan.colocated:
        raise SimulatorError("quick simulate runs one colocated pool; use a deployment YAML for disaggregation")
    pool = Pool("pool", ("prefill", "decode"), replicas, plan.prefill, max_batch_tokens, max_seqs, plan.speculative,
                engine, scheduler_recv_interval=scheduler_recv_interval, frontend_latency_s=frontend_latency_s,
                memory_fraction=memory_fraction, engine_version=engine_version,
                batch_wait_timeout_iters=batch_wait[0], batch_wait_max_tokens_ratio=batch_wait[1])
    return Deployment("cli", plan.model, (pool,), o.kv_precision, o.kv_scale_tokens, KVTransfer(None, None, True))
