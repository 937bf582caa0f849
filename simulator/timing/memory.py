"""Memory fit per device: weights, KV cache, activations, runtime reserve and headroom."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..plan import PhasePlan
from ..precision import get_precision, kv_bytes_per_element
from ..specs.model import ModelSpec
from ..units import GB


@dataclass(frozen=True)
class MemoryFit:
    role: str  # which devices: "attention+ffn", "attention", "ffn"
    hardware: str
    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float
    reserve_bytes: float
    capacity_bytes: float
    kv_bytes_per_token: float  # KV bytes one cached token costs on one device (all local layers)

    @property
    def used_bytes(self) -> float:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.reserve_bytes

    @property
    def headroom_bytes(self) -> float:
        return self.capacity_bytes - self.used_bytes

    @property
    def fits(self) -> bool:
        return self.headroom_bytes >= 0

    @property
    def kv_token_capacity(self) -> float:
        """Tokens of KV cache that fit in what weights, activations and reserve leave free."""
        free = self.capacity_bytes - self.weights_bytes - self.activation_bytes - self.reserve_bytes
        return max(free, 0.0) / self.kv_bytes_per_token if self.kv_bytes_per_token else math.inf

    def explain(self) -> str:
        return (f"needs {self.used_bytes / GB:.1f} GB per {self.hardware} device ({self.role}: weights "
                f"{self.weights_bytes / GB:.1f} GB, KV cache {self.kv_cache_bytes / GB:.1f} GB, activations "
                f"{self.activation_bytes / GB:.1f} GB, reserve {self.reserve_bytes / GB:.1f} GB) but has "
                f"{self.capacity_bytes / GB:.1f} GB: short by {-self.headroom_bytes / GB:.1f} GB")


def kv_bytes_per_token_model(model: ModelSpec, kv_precision: str, kv_scale_tokens: int) -> float:
    """KV-cache bytes of one token over all layers and heads (what PD disaggregation ships)."""
    att = model.attention
    per_scale = att.head_dim if att.kind == "gqa" else att.kv_elements_per_token
    return model.kv_bytes_per_token(kv_bytes_per_element(kv_precision, kv_scale_tokens, per_scale))


def kv_bytes_per_token_device(model: ModelSpec, tp: int, pp: int, kv_precision: str, kv_scale_tokens: int) -> float:
    att = model.attention
    if att.kind == "mla":
        elems, per_scale = att.kv_elements_per_token, att.kv_elements_per_token
    else:
        elems, per_scale = 2 * max(math.ceil(att.num_kv_heads / tp), 1) * att.head_dim, att.head_dim
    layers = math.ceil(model.num_layers / pp)
    return elems * kv_bytes_per_element(kv_precision, kv_scale_tokens, per_scale) * layers


def attention_params_per_device(model: ModelSpec, tp: int) -> float:
    """One layer's attention weights on one TP rank: query and output projections are sharded; MLA and
    low-rank-query down-projections are replicated; KV projections replicate once TP exceeds the KV heads."""
    att, h = model.attention, model.hidden_size
    total = model.attention_params_per_layer
    if att.kind == "mla":
        replicated = h * ((att.q_lora_rank or 0) + att.kv_lora_rank + att.qk_rope_head_dim)
        return replicated + (total - replicated) / tp
    kv_total = 2 * h * att.num_kv_heads * att.head_dim
    kv_dev = 2 * h * max(math.ceil(att.num_kv_heads / tp), 1) * att.head_dim
    replicated = h * att.q_lora_rank if att.q_lora_rank else 0
    return replicated + kv_dev + (total - replicated - kv_total) / tp


def memory_fit(model: ModelSpec, plan: PhasePlan, *, kv_tokens_per_replica: float, step_tokens: float,
               kv_precision: str = "bf16", kv_scale_tokens: int = 128) -> list[MemoryFit]:
    """Per-device memory of a phase plan holding ``kv_tokens_per_replica`` cached tokens (over all
    sequences of one model replica) while running steps of ``step_tokens`` tokens."""
    from ..checks import real

    real("memory_fit: kv_tokens_per_replica", kv_tokens_per_replica, 0)
    real("memory_fit: step_tokens", step_tokens, 0)
    a, f = plan.attention, plan.ffn
    pa, pf = get_precision(a.precision), get_precision(f.precision)
    pp = plan.pp
    h = model.hidden_size
    stage = lambda n: math.ceil(n / pp)  # noqa: E731  (the largest stage bounds memory)
    attn_w = stage(model.num_layers) * attention_params_per_device(model, a.tp) * pa.weight_bytes
    embed = (model.embedding_params + model.lm_head_params) if pp == 1 else max(model.embedding_params,
                                                                                model.lm_head_params)
    attn_w += embed / a.tp * 2.0
    ffn_tp = f.tp if plan.af_disaggregated else a.tp
    ffn_w = stage(model.num_dense_layers) * model.dense_ffn_params / ffn_tp * pf.weight_bytes
    if model.moe:
        per_layer = (math.ceil(model.moe.num_experts / f.ep) * model.expert_params / f.expert_tp
                     + model.shared_params / ffn_tp) * pf.weight_bytes + model.router_params * 2.0
        ffn_w += stage(model.num_moe_layers) * per_layer
    kv_tok = kv_bytes_per_token_device(model, a.tp, pp, kv_precision, kv_scale_tokens)
    kv = kv_tokens_per_replica / a.dp * kv_tok
    moe_width = 2 * (model.moe.expert_intermediate * model.moe.top_k if model.moe else 0) / max(f.expert_tp, 1)
    width = max(2 * model.ffn_intermediate / ffn_tp, moe_width,
                (model.attention.num_heads * model.attention.qk_head_dim) / a.tp)
    tokens_dev = step_tokens / a.dp
    act = tokens_dev * (4 * h + width) * 2.0  # residual, norm output, widest intermediate (16-bit)
    if model.moe and not plan.af_disaggregated and f.ep <= 1 and a.dp > 1 and f.expert_tp > a.tp:
        # experts TP-sharded across attention-DP ranks run on the tokens gathered from the group's ranks
        group_tokens = tokens_dev * f.expert_tp / a.tp
        act = max(act, (tokens_dev * 4 * h + group_tokens * (h + moe_width)) * 2.0)
    if plan.af_disaggregated:
        return [
            MemoryFit("attention", a.hardware.id, attn_w, kv, tokens_dev * 4 * h * 2.0,
                      a.hardware.efficiency.memory_reserve_bytes, a.hardware.hbm_bytes, kv_tok),
            MemoryFit("ffn", f.hardware.id, ffn_w, 0.0,
                      step_tokens * ffn_tp / max(f.devices, 1) * (4 * h + width) * 2.0,
                      f.hardware.efficiency.memory_reserve_bytes, f.hardware.hbm_bytes, 0.0),
        ]
    return [MemoryFit("attention+ffn", a.hardware.id, attn_w + ffn_w, kv, act,
                      a.hardware.efficiency.memory_reserve_bytes, a.hardware.hbm_bytes, kv_tok)]
