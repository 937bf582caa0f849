"""Candidate arrangements for the capacity planner: what can be enumerated, and how one chosen
candidate becomes a :class:`~simulator.specs.deployment.Deployment` (and its YAML).

A *layout* is one replica of one pool role: ``colocated`` (prefill + decode on one pool), ``prefill``,
``decode`` or ``afd-decode`` (decode attention on one pool, decode FFN on another, micro-batches
ping-ponging). A *candidate* is a fleet: for ``agg`` one colocated layout x replicas, for ``pd`` a
prefill layout x replicas plus a decode layout x replicas, for ``afd`` a prefill layout x replicas
plus an A/F decode layout x replicas. Layout rows are plain dicts (one per parallel layout) so that
screening can turn them into numpy columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InfeasibleError, SimulatorError
from ..plan import AttentionPlacement, FFNPlacement, PhasePlan, default_expert_tp, validate_phase
from ..precision import compute_dtype, get_precision
from ..specs.deployment import Deployment, KVTransfer, Pool
from ..specs.hardware import HardwareSpec
from ..specs.model import ModelSpec

MODES = ("agg", "pd", "afd")
# (attention, FFN) precision pairs tried by default; w4a8 experts only for MoE models
DEFAULT_PRECISIONS = ("bf16/bf16", "fp8/fp8", "fp8/w4a8")
DEVICE_COUNTS = (1, 2, 4, 8, 16)
AFD_FFN_DEVICES = (2, 4, 8, 16)
MICRO_BATCHES = (2, 3)
# serving-engine knobs written into every generated deployment (vLLM-style defaults)
COLOCATED_BATCH_TOKENS = 8192
PREFILL_BATCH_TOKENS = 16384
PREFILL_MAX_SEQS = 64
DECODE_BATCH_TOKENS = 4096


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def parse_precision_pairs(text: str) -> list[tuple[str, str]]:
    """``--precisions``: comma-separated ATTN[/FFN] pairs (FFN defaults to ATTN); an empty entry ("a,,b", "fp8/")
    is refused, as every list flag refuses one."""
    items = [x.strip() for x in text.split(",")]
    if not any(items):
        raise SimulatorError("--precisions: give at least one ATTN[/FFN] precision, e.g. fp8/w4a8")
    pairs = []
    for item in items:
        a, sep, f = (x.strip() for x in item.partition("/"))
        if not a or (sep and not f):
            raise SimulatorError(f"--precisions {text!r}: an empty entry in the comma-separated list "
                                 "(each is ATTN or ATTN/FFN, e.g. fp8/w4a8)")
        pairs.append((a, f or a))
    for a, f in pairs:
        for p in (a, f):
            try:
                get_precision(p)
            except Exception as exc:  # noqa: BLE001 - re-raised as one line
                raise SimulatorError(f"--precisions: {exc}") from None
    return pairs


def kv_for(attn_precision: str) -> str:
    """KV-cache precision that goes with an attention precision (8-bit attention keeps an 8-bit cache)."""
    return "fp8" if attn_precision in ("fp8", "int8", "w4a8", "fp4") else "bf16"


def supports(hw: HardwareSpec, precision: str) -> bool:
    try:
        compute_dtype(get_precision(precision), hw)
    except InfeasibleError:
        return False
    return True


def colocated_layouts(model: ModelSpec, hw: HardwareSpec, pairs, max_devices: int) -> list[dict]:
    """One replica on identical devices: devices x TP x attention-DP x PP x EP, per precision pair."""
    rows = []
    heads = model.attention.num_heads
    experts = model.moe.num_experts if model.moe else 1
    for a_prec, f_prec in pairs:
        if not (supports(hw, a_prec) and supports(hw, f_prec)):
            continue
        if f_prec != a_prec and not model.moe:
            continue  # mixed precision is the MoE expert recipe
        for d in DEVICE_COUNTS:
            if d > max_devices:
                continue
            for pp in (1, 2) if d >= 16 else (1,):
                stage = d // pp
                for tp in _divisors(stage):
                    if heads % tp or tp > hw.scale_up.domain_size:
                        continue
                    dp = stage // tp
                    eps = [e for e in _divisors(stage) if experts % e == 0] if model.moe else [1]
                    for ep in eps:
                        if dp > 1 and ep == 1 and model.moe:
                            continue  # attention DP goes with expert parallelism here (DP without EP, experts
                            # TP-sharded over the stage, is a layout whatif, sweep and simulate score; not searched)
                        etp = default_expert_tp(model, stage, ep)
                        rows.append(dict(hw=hw.id, devices=d, tp=tp, dp=dp, pp=pp, ep=ep, etp=etp,
                                         attn_precision=a_prec, ffn_precision=f_prec, kv_precision=kv_for(a_prec)))
    return rows


def afd_layouts(model: ModelSpec, attn_hw: HardwareSpec, ffn_hw: HardwareSpec, pairs, max_devices: int) -> list[dict]:
    """A/F decode replicas: attention devices (TP x DP) + FFN devices (EP x expert-TP) + micro-batches."""
    if not model.moe:
        return []
    rows = []
    heads, experts = model.attention.num_heads, model.moe.num_experts
    for a_prec, f_prec in pairs:
        if not (supports(attn_hw, a_prec) and supports(ffn_hw, f_prec)):
            continue
        for da in DEVICE_COUNTS[:4]:
            for tp in _divisors(da):
                if heads % tp or tp > attn_hw.scale_up.domain_size:
                    continue
                for df in AFD_FFN_DEVICES:
                    if da + df > max_devices:
                        continue
                    for ep in (e for e in _divisors(df) if experts % e == 0 and e > 1):
                        for mb in MICRO_BATCHES:
                            rows.append(dict(hw=attn_hw.id, ffn_hw=ffn_hw.id, devices=da + df, attn_devices=da,
                                             ffn_devices=df, tp=tp, dp=da // tp, pp=1, ep=ep, etp=df // ep,
                                             micro_batches=mb, attn_precision=a_prec, ffn_precision=f_prec,
                                             kv_precision=kv_for(a_prec)))
    return rows


def phase_plan(row: dict, specs: dict[str, HardwareSpec], model: ModelSpec) -> PhasePlan:
    """The PhasePlan of one layout row (validated)."""
    hw = specs[row["hw"]]
    if row.get("ffn_hw"):
        att = AttentionPlacement(hw, row["tp"], row["dp"], row["attn_precision"])
        ffn = FFNPlacement(specs[row["ffn_hw"]], 1, row["ep"], row["etp"], row["ffn_precision"], False,
                           row["ffn_devices"])
        plan = PhasePlan(att, ffn, 1, af_disaggregated=True, micro_batches=row["micro_batches"])
    else:
        stage = row["devices"] // row["pp"]
        att = AttentionPlacement(hw, row["tp"], row["dp"], row["attn_precision"])
        ffn = FFNPlacement(hw, row["tp"], row["ep"], row["etp"], row["ffn_precision"], False, stage)
        plan = PhasePlan(att, ffn, row["pp"])
    validate_phase(plan, model, row["kv_precision"])
    return plan


@dataclass(frozen=True)
class PoolChoice:
    """One pool of a candidate fleet."""

    role: str  # colocated | prefill | decode
    layout: dict
    replicas: int
    max_seqs: int

    @property
    def devices(self) -> int:
        return self.layout["devices"] * self.replicas

    def to_dict(self) -> dict:
        lay = self.layout
        d = {"role": self.role, "hardware": lay["hw"], "devices": self.devices,
             "devices_per_replica": lay["devices"], "replicas": self.replicas,
             "parallelism": {"tp": lay["tp"], "dp": lay["dp"], "pp": lay["pp"], "ep": lay["ep"],
                             "expert_tp": lay["etp"]},
             "precision": {"attention": lay["attn_precision"], "ffn": lay["ffn_precision"],
                           "kv_cache": lay["kv_precision"]},
             "engine": {"max_seqs": self.max_seqs, "max_batch_tokens": batch_tokens(self.role, self.max_seqs)}}
        if lay.get("ffn_hw"):
            d["ffn_pool"] = {"hardware": lay["ffn_hw"], "devices_per_replica": lay["ffn_devices"],
                             "micro_batches": lay["micro_batches"]}
            d["attention_devices_per_replica"] = lay["attn_devices"]
        return d


def batch_tokens(role: str, max_seqs: int) -> int:
    if role == "colocated":
        return COLOCATED_BATCH_TOKENS
    if role == "prefill":
        return PREFILL_BATCH_TOKENS
    return max(DECODE_BATCH_TOKENS, max_seqs)


def build_deployment(cand_id: str, mode: str, pools: list[PoolChoice], model: ModelSpec,
                     specs: dict[str, HardwareSpec], engine: str = "vllm",
                     frontend_latency_s: float | None = None, engine_version: str | None = None) -> Deployment:
    """A simulatable Deployment for a candidate (``specs`` carry the prices in force), every pool served
    by ``engine`` (at release ``engine_version`` where given), behind a frontend of ``frontend_latency_s`` (None: the
    engine's)."""
    built = []
    kv = pools[0].layout["kv_precision"]
    for pc in pools:
        serves = ("prefill", "decode") if pc.role == "colocated" else (pc.role,)
        plan = phase_plan(pc.layout, specs, model)
        built.append(Pool(pc.role if pc.role != "colocated" else "fleet", serves, pc.replicas, plan,
                          batch_tokens(pc.role, pc.max_seqs), PREFILL_MAX_SEQS if pc.role == "prefill"
                          else pc.max_seqs, engine=engine,
                          frontend_latency_s=frontend_latency_s if pc.role != "decode" else None,
                          engine_version=engine_version))
    return Deployment(cand_id, model, tuple(built), kv, 128, KVTransfer(None, None, True))


def deployment_yaml(dep: Deployment, description: str, price_notes: dict[str, str]) -> dict:
    """A deployment document that ``read_deployment`` / ``quadrant simulate`` accepts.

    Prices that did not come from the hardware profile (``price_notes[id] != 'profile'``) are written
    as ``price_per_device_hour`` overrides so the YAML reproduces the planner's cost."""

    def price(hw: HardwareSpec) -> dict:
        if price_notes.get(hw.id, "profile") == "profile":
            return {}
        return {"price_per_device_hour": f"{hw.price_usd_per_hour:.6g} USD/h"}

    pools = []
    for p in dep.pools:
        plan = p.plan
        a, f = plan.attention, plan.ffn
        doc = {"name": p.name, "serves": list(p.serves), "hardware": a.hardware.id, **price(a.hardware)}
        if plan.af_disaggregated:
            doc["devices"] = a.devices_per_stage
        else:
            doc["devices"] = plan.devices
            if plan.pp > 1:
                doc["pp"] = plan.pp
        doc["replicas"] = p.replicas
        doc["attention"] = {"tp": a.tp, "dp": a.dp, "precision": a.precision}
        ffn = {"ep": f.ep, "expert_tp": f.expert_tp, "precision": f.precision}
        if plan.af_disaggregated:
            doc["ffn_pool"] = {"hardware": f.hardware.id, "devices": f.devices, **price(f.hardware)}
            ffn["tp"] = f.tp
            doc["micro_batches"] = plan.micro_batches
        doc["ffn"] = ffn
        doc["engine"] = p.engine
        if p.engine_version is not None:
            doc["engine_version"] = p.engine_version
        if p.frontend_latency_s is not None:
            doc["frontend_latency"] = f"{p.frontend_latency_s * 1e3:.6g} ms"
        if p.memory_fraction is not None:
            doc["memory_fraction"] = p.memory_fraction
        for k in ("max_batch_tokens", "max_seqs"):  # (unset: the engine server's default)
            if getattr(p, k) is not None:
                doc[k] = getattr(p, k)
        pools.append(doc)
    out = {"schema_version": 1, "id": dep.id, "description": description, "model": dep.model.id,
           "kv_cache": {"precision": dep.kv_precision, "scale_tokens": dep.kv_scale_tokens}}
    if dep.disaggregated:
        out["kv_transfer"] = {"overlap_with_prefill": True}  # (bandwidth and latency: the link's, from the profiles)
    out["pools"] = pools
    return out
