"""Model architecture specs (dense and MoE decoders; GQA and MLA attention), read from
``workloads/models/<id>.yaml`` or imported from a HuggingFace ``config.json``.

Parameter counts are derived here (never stored in YAML) so they can be checked against the
published figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SpecError
from ._reader import Reader, load_yaml


@dataclass(frozen=True)
class AttentionSpec:
    kind: str  # "gqa" (MHA/MQA/GQA, optionally with a low-rank query) or "mla" (latent KV)
    num_heads: int
    num_kv_heads: int
    head_dim: int
    q_lora_rank: int = 0  # low-rank query projection (MLA, Step-3 MFA); 0 = full-rank
    kv_lora_rank: int = 0  # MLA only
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.kind == "mla" else self.head_dim

    @property
    def v_dim(self) -> int:
        return self.v_head_dim if self.kind == "mla" else self.head_dim

    @property
    def kv_elements_per_token(self) -> int:
        """KV-cache elements stored per token per layer (all KV heads)."""
        if self.kind == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def param_groups(self, hidden: int) -> dict[str, int]:
        """Weights of one layer's attention, split by projection (the op that reads them)."""
        h, nh = hidden, self.num_heads
        if self.q_lora_rank:
            q = h * self.q_lora_rank + self.q_lora_rank * nh * self.qk_head_dim + self.q_lora_rank
        else:
            q = h * nh * self.qk_head_dim
        if self.kind == "mla":
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv += self.kv_lora_rank * nh * (self.qk_nope_head_dim + self.v_head_dim)
        else:
            kv = 2 * h * self.num_kv_heads * self.head_dim
        o = nh * self.v_dim * h
        return {"qkv": q + kv, "o": o}


@dataclass(frozen=True)
class MoESpec:
    num_experts: int
    top_k: int
    expert_intermediate: int
    num_shared_experts: int = 0
    shared_intermediate: int = 0  # width of each shared expert
    dense_layers: int = 0  # layers whose FFN is dense instead of MoE (e.g. DeepSeek first_k_dense_replace)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    tie_word_embeddings: bool
    attention: AttentionSpec
    ffn_intermediate: int  # dense FFN width (dense models and the dense layers of MoE models)
    moe: MoESpec | None = None
    hypothetical: bool = False
    published_total_params: float | None = None
    published_active_params: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    file: str = ""

    # -- derived structure ---------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.moe.dense_layers if self.moe else 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def expert_params(self) -> int:
        """Weights of one routed expert (gated FFN: gate, up, down)."""
        return 3 * self.hidden_size * self.moe.expert_intermediate if self.moe else 0

    @property
    def shared_params(self) -> int:
        m = self.moe
        return 3 * self.hidden_size * m.shared_intermediate * m.num_shared_experts if m else 0

    @property
    def dense_ffn_params(self) -> int:
        return 3 * self.hidden_size * self.ffn_intermediate

    @property
    def attention_params_per_layer(self) -> int:
        return sum(self.attention.param_groups(self.hidden_size).values())

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.moe.num_experts if self.moe else 0

    def _layer_total(self, experts: int) -> int:
        norms = 2 * self.hidden_size
        base = self.attention_params_per_layer + norms
        moe = self.num_moe_layers * (experts * self.expert_params + self.shared_params + self.router_params)
        return self.num_layers * base + self.num_dense_layers * self.dense_ffn_params + moe

    @property
    def total_params(self) -> int:
        experts = self.moe.num_experts if self.moe else 0
        return self._layer_total(experts) + self.embedding_params + self.lm_head_params + self.hidden_size

    @property
    def active_params(self) -> int:
        """Weights touched per token: embedding, head, attention, dense/shared FFN and top-k experts."""
        experts = self.moe.top_k if self.moe else 0
        return self._layer_total(experts) + self.embedding_params + self.lm_head_params + self.hidden_size

    @property
    def matmul_params_per_token(self) -> int:
        """Active weights that take part in a matmul for each token (everything but the lookup table
        and the norms); 2x this is the linear-layer FLOP per token."""
        head = self.vocab_size * self.hidden_size
        experts = self.moe.top_k if self.moe else 0
        body = self._layer_total(experts) - self.num_layers * 2 * self.hidden_size
        return body + head

    def kv_bytes_per_token(self, kv_bytes_per_element: float = 2.0) -> float:
        """KV-cache bytes per token over all layers."""
        return self.num_layers * self.attention.kv_elements_per_token * kv_bytes_per_element


# ------------------------------------------------------------------------------------------------
# YAML reader
# ------------------------------------------------------------------------------------------------

def read_model(path: str | Path) -> ModelSpec:
    data = load_yaml(path)
    r = Reader(path, data)
    r.schema_version()
    model_id = r.str("id")
    if Path(path).stem != model_id:
        raise r.error("id", f"id {model_id!r} must match the file name {Path(path).stem!r}")
    sources = r.raw("sources")
    if not isinstance(sources, dict) or not sources:
        raise r.error("sources", "expected a mapping of source id -> citation")
    arch = r.child("architecture")
    att = arch.child("attention")
    kind = att.str("kind", choices=("gqa", "mla"))
    heads = att.int("num_heads", minimum=1)
    attention = AttentionSpec(
        kind=kind,
        num_heads=heads,
        num_kv_heads=att.int("num_kv_heads", heads, minimum=1),
        head_dim=att.int("head_dim", 0 if kind == "mla" else ..., minimum=0),
        q_lora_rank=att.int("q_lora_rank", 0),
        kv_lora_rank=att.int("kv_lora_rank", ... if kind == "mla" else 0),
        qk_nope_head_dim=att.int("qk_nope_head_dim", ... if kind == "mla" else 0),
        qk_rope_head_dim=att.int("qk_rope_head_dim", ... if kind == "mla" else 0),
        v_head_dim=att.int("v_head_dim", ... if kind == "mla" else 0),
    )
    att.done()
    num_layers = arch.int("num_layers", minimum=1)
    moe = None
    if arch.has("moe"):
        m = arch.child("moe")
        moe = MoESpec(
            num_experts=m.int("num_experts", minimum=1),
            top_k=m.int("top_k", minimum=1),
            expert_intermediate=m.int("expert_intermediate", minimum=1),
            num_shared_experts=m.int("num_shared_experts", 0),
            shared_intermediate=m.int("shared_intermediate", 0),
            dense_layers=m.int("dense_layers", 0),
        )
        m.done()
        if moe.top_k > moe.num_experts:
            raise m.error("top_k", f"top_k {moe.top_k} exceeds num_experts {moe.num_experts}")
        if moe.dense_layers > num_layers:
            raise m.error("dense_layers", "more dense layers than layers")
        if moe.num_shared_experts and not moe.shared_intermediate:
            raise m.error("shared_intermediate", "required when num_shared_experts > 0")
    else:
        arch.raw("moe", None)
    needs_dense = moe is None or moe.dense_layers > 0
    spec_kwargs = dict(
        num_layers=num_layers,
        hidden_size=arch.int("hidden_size", minimum=1),
        vocab_size=arch.int("vocab_size", minimum=1),
        tie_word_embeddings=arch.bool("tie_word_embeddings"),
        attention=attention,
        ffn_intermediate=arch.int("ffn_intermediate", ... if needs_dense else 0),
        moe=moe,
    )
    arch.done()
    published = r.child("published", {})
    total = published.number("total_params", None, minimum=0)
    active = published.number("active_params", None, minimum=0)
    published.str("source", None)
    published.done()
    spec = ModelSpec(
        id=model_id,
        name=r.str("name"),
        hypothetical=r.bool("hypothetical", False),
        published_total_params=total,
        published_active_params=active,
        sources={str(k): str(v) for k, v in sources.items()},
        notes=r.str("notes", ""),
        file=str(path),
        **spec_kwargs,
    )
    r.done()
    return spec


# ------------------------------------------------------------------------------------------------
# HuggingFace config.json import
# ------------------------------------------------------------------------------------------------

def _need(cfg: dict, file: str, *keys: str, default=...):
    for key in keys:
        node = cfg
        ok = True
        for part in key.split("."):
            if isinstance(node, dict) and part in node and node[part] is not None:
                node = node[part]
            else:
                ok = False
                break
        if ok:
            return node
    if default is ...:
        raise SpecError(file, keys[0], "required key is missing from config.json")
    return default


def model_from_hf_config(path: str | Path, model_id: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a HuggingFace config.json (Llama/Qwen dense, Mixtral, DBRX,
    Qwen3-MoE, DeepSeek-V3/Kimi-K2 families)."""
    file = str(path)
    try:
        cfg = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SpecError(file, "", f"cannot read file ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SpecError(file, f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    if not isinstance(cfg, dict):
        raise SpecError(file, "", "expected a JSON object")
    mtype = str(cfg.get("model_type", "")).lower()
    mid = model_id or Path(path).parent.name or "imported"
    g = lambda *k, default=...: _need(cfg, file, *k, default=default)  # noqa: E731
    moe = None
    if mtype == "dbrx":
        h, layers, heads = g("d_model"), g("n_layers"), g("n_heads")
        kv = g("attn_config.kv_n_heads", default=heads)
        attention = AttentionSpec("gqa", heads, kv, h // heads)
        moe = MoESpec(g("ffn_config.moe_num_experts"), g("ffn_config.moe_top_k"),
                      g("ffn_config.ffn_hidden_size"))
        return ModelSpec(mid, mid, layers, h, g("vocab_size"), bool(g("tie_word_embeddings", default=False)),
                         attention, 0, moe, file=file, sources={"config": file})
    h = g("hidden_size")
    layers = g("num_hidden_layers")
    heads = g("num_attention_heads")
    kv = g("num_key_value_heads", default=heads)
    vocab = g("vocab_size")
    tie = bool(g("tie_word_embeddings", default=False))
    dense_width = g("intermediate_size", default=0)
    if mtype in ("deepseek_v3", "deepseek_v2", "kimi_k2") or "kv_lora_rank" in cfg:
        attention = AttentionSpec(
            "mla", heads, heads, 0, q_lora_rank=g("q_lora_rank", default=0) or 0,
            kv_lora_rank=g("kv_lora_rank"), qk_nope_head_dim=g("qk_nope_head_dim"),
            qk_rope_head_dim=g("qk_rope_head_dim"), v_head_dim=g("v_head_dim"))
        if g("n_routed_experts", default=None):
            moe = MoESpec(g("n_routed_experts"), g("num_experts_per_tok"), g("moe_intermediate_size"),
                          g("n_shared_experts", default=0) or 0, g("moe_intermediate_size"),
                          g("first_k_dense_replace", default=0))
    else:
        attention = AttentionSpec("gqa", heads, kv, g("head_dim", default=h // heads))
        if mtype == "mixtral" or "num_local_experts" in cfg:
            moe = MoESpec(g("num_local_experts"), g("num_experts_per_tok"), dense_width)
            dense_width = 0
        elif g("num_experts", default=None) and g("moe_intermediate_size", default=None):
            dense_layers = len(g("mlp_only_layers", default=[]) or [])
            if g("decoder_sparse_step", default=1) != 1:
                raise SpecError(file, "decoder_sparse_step", "only every-layer MoE (step 1) is supported")
            shared = g("shared_expert_intermediate_size", default=0) or 0
            moe = MoESpec(g("num_experts"), g("num_experts_per_tok"), g("moe_intermediate_size"),
                          1 if shared else 0, shared, dense_layers)
    return ModelSpec(mid, mid, layers, h, vocab, tie, attention, dense_width, moe,
                     file=file, sources={"config": file})


def model_to_yaml_dict(spec: ModelSpec, source_note: str) -> dict:
    """The YAML form of a spec (used by ``quadrant model import``)."""
    att = spec.attention
    attention: dict = {"kind": att.kind, "num_heads": att.num_heads}
    if att.kind == "gqa":
        attention.update(num_kv_heads=att.num_kv_heads, head_dim=att.head_dim)
    else:
        attention.update(kv_lora_rank=att.kv_lora_rank, qk_nope_head_dim=att.qk_nope_head_dim,
                         qk_rope_head_dim=att.qk_rope_head_dim, v_head_dim=att.v_head_dim)
    if att.q_lora_rank:
        attention["q_lora_rank"] = att.q_lora_rank
    arch: dict = {
        "num_layers": spec.num_layers, "hidden_size": spec.hidden_size, "vocab_size": spec.vocab_size,
        "tie_word_embeddings": spec.tie_word_embeddings, "attention": attention,
    }
    if spec.ffn_intermediate:
        arch["ffn_intermediate"] = spec.ffn_intermediate
    if spec.moe:
        m = spec.moe
        arch["moe"] = {"num_experts": m.num_experts, "top_k": m.top_k,
                       "expert_intermediate": m.expert_intermediate}
        if m.num_shared_experts:
            arch["moe"].update(num_shared_experts=m.num_shared_experts,
                               shared_intermediate=m.shared_intermediate)
        if m.dense_layers:
            arch["moe"]["dense_layers"] = m.dense_layers
    return {"schema_version": 1, "id": spec.id, "name": spec.name,
            "sources": {"config": source_note}, "architecture": arch}
