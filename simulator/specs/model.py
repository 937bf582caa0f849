"""Model architecture specs (dense and MoE decoders; GQA and MLA attention), read from
``workloads/models/<id>.yaml`` or imported from a HuggingFace ``config.json``.

Parameter counts are derived here (never stored in YAML) so they can be checked against the
published figures.
"""

from __future__ import annotations

import json
import re
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
    # Sliding-window attention as recorded from the checkpoint: window in tokens (0 = none) and how many
    # layers use it. Recorded only: the op builders cost every layer as full attention (an upper bound on
    # KV-cache bytes and attention time for these models).
    sliding_window: int = 0
    sliding_window_layers: int = 0

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
    native_precision: str | None = None  # precision of the released weights (HF quantization_config), if known
    # the model's own FP8 release scales its weights per 2-D block (HF quantization_config weight_block_size, e.g.
    # 128x128: DeepSeek-V3, Qwen3-*-FP8) rather than per tensor or channel; engines run such GEMMs with other kernels
    fp8_block_scaled: bool = False
    context_tokens: int = 0  # longest sequence the model serves (max_position_embeddings); 0 = not stated
    aliases: tuple[str, ...] = ()  # other names it goes by (Hugging Face repo ids, variants of the same architecture)

    # -- derived structure ---------------------------------------------------------------------
    def exceeds_context(self, tokens: float) -> bool:
        """Whether a sequence of ``tokens`` (prompt + output) is longer than the context window, which every
        server refuses (an unstated window never is)."""
        return 0 < self.context_tokens < tokens

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

_NATIVE_PRECISIONS = ("bf16", "fp16", "fp32", "fp8", "int8", "w4a8", "w4a16", "fp4")
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


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
        sliding_window=att.int("sliding_window", 0),
        sliding_window_layers=att.int("sliding_window_layers", 0),
    )
    att.done()
    if kind == "gqa":
        if attention.head_dim < 1:
            raise att.error("head_dim", f"expected an integer >= 1 for gqa attention, got {attention.head_dim}")
        if attention.num_heads % attention.num_kv_heads:
            raise att.error("num_kv_heads", f"{attention.num_kv_heads} KV heads do not divide "
                                            f"{attention.num_heads} attention heads")
    num_layers = arch.int("num_layers", minimum=1)
    if attention.sliding_window_layers > num_layers:
        raise att.error("sliding_window_layers", f"more than num_layers ({num_layers})")
    if bool(attention.sliding_window) != bool(attention.sliding_window_layers):
        raise att.error("sliding_window", "give both sliding_window and sliding_window_layers (or neither)")
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
        ffn_intermediate=arch.int("ffn_intermediate", ... if needs_dense else 0, minimum=1 if needs_dense else 0),
        moe=moe,
        context_tokens=arch.int("context_tokens", 0, minimum=0),
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
        native_precision=r.str("native_precision", None, choices=_NATIVE_PRECISIONS),
        fp8_block_scaled=r.bool("fp8_block_scaled", False),
        aliases=r.names("aliases"),
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


# Defaults of ``tie_word_embeddings`` in the transformers config classes of these model types (each passes
# ``tie_word_embeddings=False`` to PretrainedConfig); every other type inherits PretrainedConfig's True.
_UNTIED_BY_DEFAULT = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "deepseek_v2", "deepseek_v3",
    "kimi_k2", "dbrx", "phi3", "olmo2", "granite", "ernie4_5", "ernie4_5_moe", "glm4", "glm4_moe"})

# model_type values the importer is written for (decoder-only GQA/MLA, gated FFN or MoE): those above and the
# tied-embedding Gemma family; anything else is read the same way and flagged for a check against its model card
HF_KNOWN_TYPES = _UNTIED_BY_DEFAULT | {"gemma", "gemma2", "gemma3_text"}

_DTYPE_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def _quant_precision(q: dict, file: str) -> str:
    """The precision of released weights from a HF ``quantization_config``."""
    method = str(q.get("quant_method", "")).lower()
    if method in ("fp8", "fbgemm_fp8"):
        return "fp8"
    if method in ("mxfp4", "nvfp4", "modelopt") and "4" in str(q.get("quant_algo", method)):
        return "fp4"
    if method in ("awq", "gptq", "autoround", "hqq", "quark") or "bits" in q:
        bits = _check_int(file, "quantization_config.bits", q.get("bits", q.get("w_bit", 4))) or 4
        return {4: "w4a16", 8: "int8"}.get(bits) or _bad_quant(file, f"{bits}-bit {method}")
    if method == "bitsandbytes":
        return "w4a16" if q.get("load_in_4bit") else "int8"
    if method == "compressed-tensors":
        groups = q.get("config_groups") or {}
        if not isinstance(groups, dict) or not all(isinstance(g, dict) or g is None for g in groups.values()):
            return _bad_quant(file, "compressed-tensors whose config_groups is not a mapping of groups")
        for group in groups.values():
            w = (group or {}).get("weights") or {}
            a = (group or {}).get("input_activations") or {}
            if not isinstance(w, dict) or not isinstance(a, dict):
                return _bad_quant(file, "compressed-tensors whose weights / input_activations are not mappings")
            wb = _check_int(file, "quantization_config.config_groups.weights.num_bits", w.get("num_bits", 16))
            wt = str(w.get("type", "int"))
            ab = _check_int(file, "quantization_config.config_groups.input_activations.num_bits",
                            a.get("num_bits", 16)) if a else 16
            if wb == 8 and wt == "float":
                return "fp8"
            if wb == 8:
                return "int8"
            if wb == 4 and wt == "float":
                return "fp4"
            if wb == 4:
                return "w4a8" if ab == 8 else "w4a16"
        return _bad_quant(file, "compressed-tensors without weight groups")
    return _bad_quant(file, method or "(no quant_method)")


def _compressed_tensors_blocks(q: dict) -> bool:
    """Whether an llm-compressor (compressed-tensors) config scales its FP8 weights per 2-D block: a weight group
    with ``strategy: block`` (its ``block_structure``, e.g. [128, 128])."""
    if str(q.get("quant_method", "")).lower() != "compressed-tensors":
        return False
    groups = q.get("config_groups") or {}
    return any(isinstance(g, dict) and isinstance(g.get("weights"), dict)
               and str(g["weights"].get("strategy", "")).lower() == "block" for g in groups.values())


def _bad_quant(file: str, what: str) -> str:
    raise SpecError(file, "quantization_config", f"unsupported quantisation {what}; supported: fp8, awq/gptq "
                                                 "4/8-bit, bitsandbytes, mxfp4, compressed-tensors")


def _sliding(cfg: dict, layers: int, mtype: str, file: str) -> tuple[int, int]:
    """(window, layers using it) as HF defines them: ``layer_types`` when given; else ``sliding_window`` with
    ``use_sliding_window`` (Qwen2-style, off by default there) and ``max_window_layers`` (layers below it use
    full attention); Mistral-style configs apply ``sliding_window`` to every layer."""
    window = cfg.get("sliding_window")
    window = _check_int(file, "sliding_window", None if window is False else window)  # (false: no window)
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        n = sum(1 for t in types if "sliding" in str(t))
        return (int(window or 0), n) if n and window else (0, 0)
    if not window:
        return 0, 0
    if "use_sliding_window" in cfg or mtype.startswith("qwen"):
        if not cfg.get("use_sliding_window", False):
            return 0, 0
        full = _check_int(file, "max_window_layers", cfg.get("max_window_layers")) or 0
        return int(window), max(layers - min(full, layers), 0)
    if int(window) >= (_check_int(file, "max_position_embeddings", cfg.get("max_position_embeddings")) or 0) > 0:
        return 0, 0  # a window as long as the context is no window
    return int(window), layers


def model_from_hf_config(path: str | Path, model_id: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a HuggingFace config.json (Llama/Qwen dense, Mixtral, DBRX, Qwen3-MoE,
    DeepSeek-V3/Kimi-K2 families). A multimodal config's ``text_config`` is read as the language model;
    ``tie_word_embeddings`` defaults as in transformers; sliding windows and ``quantization_config`` are
    recorded (``attention.sliding_window*``, ``native_precision``)."""
    from ._reader import read_text_file

    file = str(path)
    text = read_text_file(path, "HuggingFace config.json")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(file, f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    except ValueError as exc:  # (an integer of thousands of digits: Python's int-string conversion limit)
        raise SpecError(file, "", f"invalid JSON: {' '.join(str(exc).split())[:120]}") from None
    except RecursionError:
        raise SpecError(file, "", "invalid JSON: nested too deeply") from None
    if not isinstance(cfg, dict):
        raise SpecError(file, "", "expected a JSON object")
    top = cfg
    if isinstance(cfg.get("text_config"), dict):  # multimodal wrapper: the language model lives here
        cfg = {**{k: v for k, v in top.items() if k in ("quantization_config", "torch_dtype", "tie_word_embeddings")},
               **top["text_config"]}
    mtype = cfg.get("model_type", top.get("model_type", "")) or ""
    if not isinstance(mtype, str):
        raise SpecError(file, "model_type", f"expected a string such as 'llama', got {mtype!r}")
    mtype = mtype.lower()
    for key in ("attn_config", "ffn_config", "rope_scaling"):
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            raise SpecError(file, key, f"expected an object, got {cfg[key]!r}")
    mid = model_id or Path(path).parent.name or "imported"
    g = lambda *k, default=...: _check_int(file, k[0], _need(cfg, file, *k, default=default))  # noqa: E731
    tie = cfg.get("tie_word_embeddings", top.get("tie_word_embeddings"))
    if tie is None:
        tie = mtype not in _UNTIED_BY_DEFAULT
    elif not isinstance(tie, bool):
        raise SpecError(file, "tie_word_embeddings", f"expected true or false, got {tie!r}")
    native, block_scaled = None, False
    q = top.get("quantization_config") or cfg.get("quantization_config")
    if q is not None:
        if not isinstance(q, dict):
            raise SpecError(file, "quantization_config", "expected an object")
        native = _quant_precision(q, file)
        block = q.get("weight_block_size")
        if block is not None and not (isinstance(block, (list, tuple)) and len(block) == 2 and all(
                isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
            raise SpecError(file, "quantization_config.weight_block_size",
                            f"expected two positive whole numbers such as [128, 128], got {block!r}")
        block_scaled = native == "fp8" and (block is not None or _compressed_tensors_blocks(q))
    else:
        native = _DTYPE_PRECISION.get(str(cfg.get("torch_dtype") or cfg.get("dtype") or ""))
    ctx_key = "max_position_embeddings" if cfg.get("max_position_embeddings") else "max_seq_len"
    common = dict(file=file, sources={"config": file}, native_precision=native, fp8_block_scaled=block_scaled,
                  context_tokens=_check_int(file, ctx_key, cfg.get(ctx_key)) or 0)
    moe = None
    if mtype == "dbrx":
        h, layers, heads = g("d_model"), g("n_layers"), g("n_heads")
        kv = g("attn_config.kv_n_heads", default=heads)
        attention = AttentionSpec("gqa", heads, kv, h // heads if heads else 0)  # (0 heads: _finish refuses)
        moe = MoESpec(g("ffn_config.moe_num_experts"), g("ffn_config.moe_top_k"),
                      g("ffn_config.ffn_hidden_size"))
        return _finish(ModelSpec(mid, mid, layers, h, g("vocab_size"), tie, attention, 0, moe, **common))
    h = g("hidden_size")
    layers = g("num_hidden_layers")
    heads = g("num_attention_heads")
    kv = g("num_key_value_heads", default=heads)
    vocab = g("vocab_size")
    dense_width = g("intermediate_size", default=0)
    window, window_layers = _sliding(cfg, layers, mtype, file)
    if mtype in ("deepseek_v3", "deepseek_v2", "kimi_k2") or "kv_lora_rank" in cfg:
        attention = AttentionSpec(
            "mla", heads, heads, 0, q_lora_rank=g("q_lora_rank", default=0) or 0,
            kv_lora_rank=g("kv_lora_rank"), qk_nope_head_dim=g("qk_nope_head_dim"),
            qk_rope_head_dim=g("qk_rope_head_dim"), v_head_dim=g("v_head_dim"))
        for key in ("kv_lora_rank", "qk_rope_head_dim", "v_head_dim"):  # (the KV cache and output sizes)
            if g(key) < 1:
                raise SpecError(file, key, f"expected an integer >= 1 for MLA attention, got {g(key)}")
        if g("n_routed_experts", default=None):
            moe = MoESpec(g("n_routed_experts"), g("num_experts_per_tok"), g("moe_intermediate_size"),
                          g("n_shared_experts", default=0) or 0, g("moe_intermediate_size"),
                          g("first_k_dense_replace", default=0))
    else:
        if cfg.get("head_dim") is None and heads and h % heads:
            raise SpecError(file, "num_attention_heads", f"{heads} heads do not divide hidden_size {h}, and no "
                                                         "head_dim is given")
        attention = AttentionSpec("gqa", heads, kv, g("head_dim", default=h // heads if heads else 0),
                                  sliding_window=window, sliding_window_layers=window_layers)
        if mtype == "mixtral" or "num_local_experts" in cfg:
            moe = MoESpec(g("num_local_experts"), g("num_experts_per_tok"), dense_width)
            dense_width = 0
        elif g("num_experts", default=None) and g("moe_intermediate_size", default=None) is not None:
            if g("moe_intermediate_size") < 1:
                raise SpecError(file, "moe_intermediate_size", f"expected an integer >= 1 with num_experts "
                                                               f"{g('num_experts')}, got {g('moe_intermediate_size')}")
            only = _need(cfg, file, "mlp_only_layers", default=[]) or []
            if not isinstance(only, list) or len(set(map(str, only))) != len(only) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layers for i in only):
                raise SpecError(file, "mlp_only_layers", f"expected a list of distinct layer indices in [0, "
                                                         f"{layers}), got {only!r}")
            dense_layers = len(only)
            if g("decoder_sparse_step", default=1) != 1:
                raise SpecError(file, "decoder_sparse_step", "only every-layer MoE (step 1) is supported")
            shared = g("shared_expert_intermediate_size", default=0) or 0
            moe = MoESpec(g("num_experts"), g("num_experts_per_tok"), g("moe_intermediate_size"),
                          1 if shared else 0, shared, dense_layers)
        elif g("n_routed_experts", default=None):  # DeepSeek-style MoE fields under GQA attention (GLM-4.5 MoE)
            moe = MoESpec(g("n_routed_experts"), g("num_experts_per_tok"), g("moe_intermediate_size"),
                          g("n_shared_experts", default=0) or 0, g("moe_intermediate_size"),
                          g("first_k_dense_replace", default=0))
        elif g("num_experts", default=None) or g("num_local_experts", default=None):  # (OLMoE-style: no expert width)
            raise SpecError(file, "num_experts", "an MoE config without moe_intermediate_size (the expert width): "
                                                 "this layout is not one the importer reads; write the spec by hand")
    return _finish(ModelSpec(mid, mid, layers, h, vocab, tie, attention, dense_width, moe, **common))


# The largest size a config.json field may hold: far above any released model's (vocabularies of 256k, 126 layers,
# hidden sizes of 16-20k, contexts of 10M tokens), so a larger one is a corrupt or mistyped file
HF_MAX_SIZE = 1_000_000_000


def _check_int(file: str, key: str, value):
    """config.json sizes must be integers in [0, HF_MAX_SIZE] (a whole-number float such as 4096.0 is taken as
    its integer; None passes through for optional keys)."""
    if value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(file, key, f"expected a non-negative integer, got {value!r}")
    if value > HF_MAX_SIZE:
        got = f"{value:,}" if value < 10**30 else f"a {len(str(value))}-digit integer"
        raise SpecError(file, key, f"expected at most {HF_MAX_SIZE:,}, got {got}")
    return value


def _finish(spec: ModelSpec) -> ModelSpec:
    a = spec.attention
    for name, key in (("num_layers", "num_hidden_layers"), ("hidden_size", "hidden_size"),
                      ("vocab_size", "vocab_size")):
        if getattr(spec, name) < 1:  # named by the config.json key (DBRX's own names differ: n_layers, d_model)
            raise SpecError(spec.file, key, "expected an integer >= 1")
    if spec.context_tokens < 0:
        raise SpecError(spec.file, "max_position_embeddings", f"expected an integer >= 0, got {spec.context_tokens}")
    if a.num_heads < 1 or a.num_kv_heads < 1 or (a.kind == "gqa" and a.head_dim < 1):
        raise SpecError(spec.file, "num_attention_heads", "attention heads and head_dim must be >= 1")
    if a.kind == "gqa" and a.num_heads % a.num_kv_heads:
        raise SpecError(spec.file, "num_key_value_heads", f"{a.num_kv_heads} does not divide {a.num_heads} heads")
    if spec.moe and spec.moe.top_k > spec.moe.num_experts:
        raise SpecError(spec.file, "num_experts_per_tok", "exceeds the number of experts")
    if not spec.moe and spec.ffn_intermediate < 1:
        raise SpecError(spec.file, "intermediate_size", "required for a dense model")
    return spec


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
    if att.sliding_window:
        attention.update(sliding_window=att.sliding_window, sliding_window_layers=att.sliding_window_layers)
    arch: dict = {
        "num_layers": spec.num_layers, "hidden_size": spec.hidden_size, "vocab_size": spec.vocab_size,
        "tie_word_embeddings": spec.tie_word_embeddings, "attention": attention,
    }
    if spec.ffn_intermediate:
        arch["ffn_intermediate"] = spec.ffn_intermediate
    if spec.context_tokens:
        arch["context_tokens"] = spec.context_tokens
    if spec.moe:
        m = spec.moe
        arch["moe"] = {"num_experts": m.num_experts, "top_k": m.top_k,
                       "expert_intermediate": m.expert_intermediate}
        if m.num_shared_experts:
            arch["moe"].update(num_shared_experts=m.num_shared_experts,
                               shared_intermediate=m.shared_intermediate)
        if m.dense_layers:
            arch["moe"]["dense_layers"] = m.dense_layers
    doc = {"schema_version": 1, "id": spec.id, "name": spec.name,
           "sources": {"config": source_note}, "architecture": arch}
    if spec.native_precision:
        doc["native_precision"] = spec.native_precision
    if spec.fp8_block_scaled:
        doc["fp8_block_scaled"] = True
    if spec.notes:
        doc["notes"] = spec.notes
    return doc
