"""Per-quadrant op builders: a step shape and a phase plan become op records (ops/kinds.py) for one
device of each quadrant, vectorised over configurations.

Each row is one kernel of one layer on one device; ``count`` says how many times it runs per
micro-batch on that device (layers per pipeline stage). Shapes only: FLOP and bytes are derived in
``kinds.derive_flop_bytes`` and nowhere else.

Quadrants: ``attention`` (norm, QKV or MLA projections, attention core, output projection, TP
all-reduce, the attention-to-FFN dispatch when A/F are disaggregated), ``ffn`` (norm, router,
dispatch, routed experts as a grouped GEMM over the experts actually hit, shared experts, dense
FFN, combine, all-reduce) and ``other`` (embedding, LM head, sampling, pipeline send/recv).
8-bit activations add the quantisation kernel that feeds each 8-bit GEMM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..devices import DeviceArrays
from ..errors import SimulatorError
from ..plan import PhasePlan
from ..precision import attention_dtype, compute_dtype, get_precision, kv_bytes_per_element
from ..specs.model import ModelSpec
from .kinds import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    ATTN_DECODE,
    ATTN_PREFILL,
    DTYPE_INDEX,
    ELEMENTWISE,
    GEMM,
    GROUPED_GEMM,
    P2P,
    OpTable,
    OpTableBuilder,
    distinct_destinations,
)

ACT16 = 2.0  # bytes: norms, residual stream, collectives that stay in 16-bit


@dataclass(frozen=True)
class StepShape:
    """What one forward pass (one micro-batch) processes, vectorised over configurations.

    Prefill part: ``prefill_seqs`` sequences each adding ``prefill_len`` tokens on top of
    ``prefill_ctx`` already-cached tokens (chunked prefill). Decode part: ``decode_seqs`` sequences
    each adding ``decode_len`` tokens (1, or k+1 when verifying k draft tokens) to a KV cache of
    ``decode_kv`` tokens. Either part may be zero.
    """

    prefill_seqs: np.ndarray | float = 0.0
    prefill_len: np.ndarray | float = 0.0
    prefill_ctx: np.ndarray | float = 0.0
    decode_seqs: np.ndarray | float = 0.0
    decode_len: np.ndarray | float = 1.0
    decode_kv: np.ndarray | float = 0.0

    def __post_init__(self):
        # nonsense is refused here, not computed into negative op times further down (the API takes these directly)
        for name in ("prefill_seqs", "prefill_len", "prefill_ctx", "decode_seqs", "decode_len", "decode_kv"):
            v = getattr(self, name)
            if type(v) in (int, float) and 0 <= v < math.inf:  # (the common case, per evaluated step: kept cheap)
                continue
            try:
                a = np.asarray(v, dtype=float)
            except (TypeError, ValueError):
                a = None
            if a is None or not (np.isfinite(a).all() and (a >= 0).all()):
                raise SimulatorError(f"StepShape.{name}: expected finite numbers >= 0, got {v!r}")

    @property
    def tokens(self):
        return np.asarray(self.prefill_seqs) * self.prefill_len + np.asarray(self.decode_seqs) * self.decode_len


def token_groups(tp, dp, ep, expert_tp):
    """How many distinct token sets a colocated pool's expert groups route: its tp x dp devices form
    tp x dp / (ep x expert_tp) expert groups, each fed by the attention-DP ranks it spans (a TP group's ranks hold
    the same tokens), so between 1 (one group takes every rank's tokens) and dp (every rank its own replica)."""
    return np.clip(np.asarray(tp, dtype=float) * dp / (np.asarray(ep, dtype=float) * expert_tp), 1.0, dp)


def expected_experts_hit(num_experts: int, top_k: int, tokens) -> np.ndarray:
    """E[# distinct experts] when ``tokens`` tokens each pick top_k of E experts uniformly."""
    tokens = np.maximum(np.asarray(tokens, dtype=float), 0.0)
    miss = np.power(1.0 - top_k / num_experts, tokens)
    return num_experts * (1.0 - miss)



def random_routing_imbalance(tokens, top_k: int, ep) -> np.ndarray:
    """Expected max/mean load over ``ep`` ranks when assignments land uniformly at random
    (normal approximation of the maximum of ep binomials: 1 + sqrt(2 ln ep) * sigma / mean)."""
    ep = np.maximum(np.asarray(ep, dtype=float), 1.0)
    n = np.maximum(np.asarray(tokens, dtype=float) * top_k, 1e-9)
    mean = n / ep
    sigma = np.sqrt(n * (1.0 / ep) * (1.0 - 1.0 / ep))
    return np.where(ep > 1, 1.0 + np.sqrt(2.0 * np.log(ep)) * sigma / mean, 1.0)


class _Dev:
    """One quadrant's device(s) in the builder: hw index per configuration, dtype indices, domain."""

    def __init__(self, b: OpTableBuilder, dev: DeviceArrays):
        idx = np.array([b.device(s) for s in dev.specs])
        self.dev = dev
        self.hw = idx[dev.index]
        self.domain = dev.link("scale_up", "domain_size")

    def dtype(self, fn) -> np.ndarray:
        return np.array([DTYPE_INDEX[fn(s)] for s in self.dev.specs])[self.dev.index]

    def group(self, ranks, stride=1.0) -> dict:
        """Collective columns for ``ranks`` devices whose members are ``stride`` apart."""
        ranks = np.asarray(ranks, dtype=float)
        in_domain = np.maximum(np.floor(self.domain / np.maximum(stride, 1.0)), 1.0)
        return dict(ranks=ranks, domain=np.minimum(ranks, in_domain), hw=self.hw)


def build_ops(model: ModelSpec, plan: PhasePlan, shape: StepShape, phase: str, *,
              kv_precision: str = "bf16", kv_scale_tokens: int = 128,
              tp=None, dp=None, ep=None, expert_tp=None, pp=None,
              attn_dev: DeviceArrays | None = None, ffn_dev: DeviceArrays | None = None) -> OpTable:
    """Ops of one micro-batch's forward pass on one device of each quadrant.

    Parallel degrees default to the plan's; pass arrays to sweep them. ``phase`` labels the
    quadrants (``prefill``, ``decode`` or ``step`` for a mixed serving step).
    """
    a_pl, f_pl = plan.attention, plan.ffn
    tp = np.asarray(a_pl.tp if tp is None else tp, dtype=float)
    dp = np.asarray(a_pl.dp if dp is None else dp, dtype=float)
    ep = np.asarray(f_pl.ep if ep is None else ep, dtype=float)
    pp = np.asarray(plan.pp if pp is None else pp, dtype=float)
    if expert_tp is None:  # swept layouts: ``plan.default_expert_tp`` column by column
        if tp.ndim == 0 and ep.ndim == 0:
            expert_tp = f_pl.expert_tp
        elif not model.is_moe:
            expert_tp = np.ones_like(ep)
        elif plan.af_disaggregated:
            expert_tp = np.where(ep > 1, np.maximum(float(f_pl.devices) // ep, 1.0), 1.0)
        else:
            expert_tp = np.maximum(tp * dp / ep, 1.0)
    etp = np.asarray(expert_tp, dtype=float)
    attn_dev = attn_dev or DeviceArrays.of(a_pl.hardware)
    ffn_dev = ffn_dev or DeviceArrays.of(f_pl.hardware)
    n = int(np.broadcast_shapes(np.shape(tp), np.shape(dp), np.shape(ep), np.shape(pp), np.shape(shape.tokens),
                                np.shape(attn_dev.index), np.shape(ffn_dev.index), (1,))[0])
    b = OpTableBuilder(n=n)
    A, F = _Dev(b, attn_dev), _Dev(b, ffn_dev)
    pa, pf = get_precision(a_pl.precision), get_precision(f_pl.precision)
    a_dt = A.dtype(lambda s: compute_dtype(pa, s))
    f_dt = F.dtype(lambda s: compute_dtype(pf, s))
    att_dt = A.dtype(lambda s: attention_dtype(pa, kv_precision, s))
    a16 = A.dtype(_sixteen_bit)
    att = model.attention
    h = float(model.hidden_size)
    layers_stage = float(model.num_layers) / pp
    moe_stage = model.num_moe_layers / pp
    dense_stage = model.num_dense_layers / pp
    aq, fq, oq = f"{phase}_attention", f"{phase}_ffn", f"{phase}_other"

    # --- token bookkeeping -------------------------------------------------------------------
    T = np.asarray(shape.tokens, dtype=float)  # tokens of this micro-batch across the stage
    ps, pl, pc = (np.asarray(x, dtype=float) for x in (shape.prefill_seqs, shape.prefill_len, shape.prefill_ctx))
    ds, dl, dk = (np.asarray(x, dtype=float) for x in (shape.decode_seqs, shape.decode_len, shape.decode_kv))
    # attention DP splits sequences, not tokens: the busiest rank holds ceil(seqs / dp) of them
    p_seqs_dev, d_seqs_dev = np.ceil(ps / dp), np.ceil(ds / dp)
    T_dev = p_seqs_dev * pl + d_seqs_dev * dl  # tokens per attention device

    def gemm(name, q, dev, dt, prec, m, n_out, k_in, count, out_bytes=None):
        """A linear layer, with the activation-quantisation kernel in front of an 8-bit GEMM."""
        if prec.act_bytes < 2.0:
            b.add(f"{name}_quant", q, ELEMENTWISE, hw=dev.hw, dtype="bf16", count=count, m=m, n=k_in, k=2.0,
                  a_bytes=ACT16, o_bytes=prec.act_bytes)
        b.add(name, q, GEMM, hw=dev.hw, dtype=dt, count=count, m=m, n=n_out, k=k_in, w_bytes=prec.weight_bytes,
              a_bytes=prec.act_bytes, o_bytes=ACT16 if out_bytes is None else out_bytes)

    # ================================ attention quadrant ======================================
    b.add("attn_norm", aq, ELEMENTWISE, hw=A.hw, count=layers_stage, m=T_dev, n=h, k=5.0, a_bytes=ACT16,
          o_bytes=ACT16)
    groups = att.param_groups(model.hidden_size)
    kv_heads_dev = np.maximum(np.ceil(att.num_kv_heads / tp), 1.0)  # KV heads replicate once TP exceeds them
    if att.kind == "mla":
        # down-projections (q_a, kv_a) are replicated on every TP rank; the up-projections are sharded
        down = float((att.q_lora_rank or 0) + att.kv_lora_rank + att.qk_rope_head_dim)
        gemm("qkv_down", aq, A, a_dt, pa, T_dev, down, h, layers_stage)
        if att.q_lora_rank:
            gemm("q_up", aq, A, a_dt, pa, T_dev, att.num_heads * att.qk_head_dim / tp, float(att.q_lora_rank),
                 layers_stage)
        else:
            gemm("q_proj", aq, A, a_dt, pa, T_dev, att.num_heads * att.qk_head_dim / tp, h, layers_stage)
        gemm("kv_up", aq, A, a_dt, pa, T_dev, att.num_heads * (att.qk_nope_head_dim + att.v_head_dim) / tp,
             float(att.kv_lora_rank), layers_stage)
    elif att.q_lora_rank:  # low-rank query (Step-3 MFA): q_a replicated, q_b sharded, KV heads per device
        gemm("q_down", aq, A, a_dt, pa, T_dev, float(att.q_lora_rank), h, layers_stage)
        gemm("q_up", aq, A, a_dt, pa, T_dev, att.num_heads * att.head_dim / tp, float(att.q_lora_rank),
             layers_stage)
        gemm("kv_proj", aq, A, a_dt, pa, T_dev, 2 * kv_heads_dev * att.head_dim, h, layers_stage)
    else:
        qkv_out = att.num_heads * att.head_dim / tp + 2 * kv_heads_dev * att.head_dim
        gemm("qkv_proj", aq, A, a_dt, pa, T_dev, qkv_out, h, layers_stage)

    heads_dev = att.num_heads / tp
    if att.kind == "mla":
        kv_elems_dev = np.full_like(tp, float(att.kv_elements_per_token))  # latent is not split by TP
        elems_per_scale = att.kv_elements_per_token
        dqk_prefill, dv_prefill = att.qk_head_dim, att.v_dim
        dqk_decode, dv_decode = att.kv_lora_rank + att.qk_rope_head_dim, att.kv_lora_rank  # absorbed
        kvh_prefill, kvh_decode = heads_dev, np.ones_like(tp)
    else:
        kvh = kv_heads_dev
        kv_elems_dev = 2.0 * kvh * att.head_dim
        elems_per_scale = att.head_dim
        dqk_prefill = dqk_decode = dv_prefill = dv_decode = att.head_dim
        kvh_prefill = kvh_decode = kvh
    kvb = kv_bytes_per_element(kv_precision, kv_scale_tokens, elems_per_scale)
    kv_tok_bytes = kv_elems_dev * kvb  # per token per layer on one device
    att_ab = np.where(np.isin(att_dt, [DTYPE_INDEX["fp8"], DTYPE_INDEX["int8"]]), 1.0, ACT16)

    # prefill attention core: causal over the new chunk plus everything cached before it
    if att.kind == "mla":  # cached latents are up-projected for the chunk's attention
        gemm("mla_kv_up", aq, A, a_dt, pa, p_seqs_dev * pc, heads_dev * (att.qk_nope_head_dim + att.v_head_dim),
             att.kv_lora_rank, np.where((ps > 0) & (pc > 0), layers_stage, 0.0))
    b.add("attn_core_prefill", aq, ATTN_PREFILL, hw=A.hw, dtype=att_dt, count=np.where(ps > 0, layers_stage, 0.0),
          batch=p_seqs_dev, q_len=pl, kv_len=pc + pl, heads=heads_dev, kv_heads=kvh_prefill, d_qk=dqk_prefill,
          d_v=dv_prefill, kv_token_bytes=kv_tok_bytes, a_bytes=att_ab, causal=1.0)
    # decode attention core: every query token reads the sequence's whole KV cache
    b.add("attn_core_decode", aq, ATTN_DECODE, hw=A.hw, dtype=att_dt, count=np.where(ds > 0, layers_stage, 0.0),
          batch=d_seqs_dev, q_len=dl, kv_len=dk + dl, heads=heads_dev, kv_heads=kvh_decode, d_qk=dqk_decode,
          d_v=dv_decode, kv_token_bytes=kv_tok_bytes, a_bytes=ACT16, causal=0.0)

    gemm("o_proj", aq, A, a_dt, pa, T_dev, h, groups["o"] / tp / h, layers_stage)
    b.add("attn_all_reduce", aq, ALL_REDUCE, count=np.where(tp > 1, layers_stage, 0.0), msg_bytes=T_dev * h * ACT16,
          **A.group(tp))

    # ================================ FFN quadrant ============================================
    af = plan.af_disaggregated
    if af:
        f_devices = float(f_pl.devices)
        ffn_tp_dense = np.asarray(float(f_pl.tp))  # dense/shared FFN: TP groups replicated over the pool
        T_ffn_dev_dense = T * ffn_tp_dense / f_devices
        replicas = np.maximum(f_devices / (ep * etp), 1.0)
    else:
        T_ffn_dev_dense = T_dev
        ffn_tp_dense = tp
        replicas = np.maximum(tp * dp / (ep * etp), 1.0)
    b.add("ffn_norm", fq, ELEMENTWISE, hw=F.hw, count=layers_stage, m=T_ffn_dev_dense, n=h, k=5.0, a_bytes=ACT16,
          o_bytes=ACT16)

    if model.num_dense_layers:
        inter = model.ffn_intermediate / ffn_tp_dense
        gemm("dense_gate_up", fq, F, f_dt, pf, T_ffn_dev_dense, 2 * inter, h, dense_stage)
        gemm("dense_down", fq, F, f_dt, pf, T_ffn_dev_dense, h, inter, dense_stage)
        b.add("dense_all_reduce", fq, ALL_REDUCE, count=np.where(ffn_tp_dense > 1, dense_stage, 0.0),
              msg_bytes=T_ffn_dev_dense * h * ACT16, **F.group(ffn_tp_dense))

    if model.moe:
        m = model.moe
        E, k, inter = m.num_experts, m.top_k, float(m.expert_intermediate)
        if af:  # the FFN pool takes every attention rank's tokens and spreads them over its expert groups
            T_group = T / replicas
        else:
            # tokens routed inside one expert-parallel group: the tokens of the attention-DP ranks that feed it
            # (a TP group's ranks all hold the same tokens, so groups inside one TP group each see all of them);
            # like the attention side, the busiest group takes the rounded-up share of the sequences
            r_eff = token_groups(tp, dp, ep, etp)
            T_group = np.where(r_eff > 1.0, np.ceil(ps / r_eff) * pl + np.ceil(ds / r_eff) * dl, T)
        T_disp = T_group / (ep * etp)  # tokens each device dispatches
        b.add("router", fq, GEMM, hw=F.hw, dtype=F.dtype(_sixteen_bit), count=moe_stage, m=T_ffn_dev_dense,
              n=float(E), k=h, w_bytes=ACT16, a_bytes=ACT16, o_bytes=4.0)
        # With attention TP and no attention DP every rank of the TP group already holds every token
        # after the attention all-reduce: the engines run each rank's local experts on them and sum the
        # expert outputs with one all-reduce (SGLang with --moe-a2a-backend none: the rank-local
        # StandardDispatcher; TensorRT-LLM with attention DP off). The dispatch/combine all-to-all is
        # the attention-DP path (or an explicit all-to-all backend such as DeepEP).
        a2a = (ep > 1) & (dp > 1)
        ep_ar = (ep > 1) & (dp <= 1)
        if not af:  # with A/F apart, attention ranks dispatch straight to the expert owners (attn_to_ffn)
            b.add("moe_dispatch", fq, ALL_TO_ALL, count=np.where(a2a, moe_stage, 0.0), m=T_disp, n=h,
                  a_bytes=pf.act_bytes, fanout=float(k), **F.group(ep * etp))
        # the busiest EP rank's share over the mean: random routing, and the deployment's skew on top; one rank
        # (ep = 1, experts split by TP) holds every expert, so no skew makes one rank busier than another
        imbalance = random_routing_imbalance(T_group, k, ep) * np.where(ep > 1, plan.moe_imbalance, 1.0)
        routed_dev = T_group * k / ep  # mean token-expert pairs per EP rank
        # distinct experts whose weights the busiest EP rank reads (the rank that sets the time, as for its pairs):
        # the mean rank's scaled by the same imbalance, at most the rank's own experts and its own pairs; one rank
        # (ep = 1) reads every expert hit, whatever the skew
        hit_mean = expected_experts_hit(E, k, T_group) / ep
        hit_dev = np.where(ep > 1, np.minimum(np.minimum(hit_mean * imbalance, E / ep), routed_dev * imbalance),
                           hit_mean)
        if pf.act_bytes < 2.0:
            b.add("experts_quant", fq, ELEMENTWISE, hw=F.hw, count=moe_stage, m=routed_dev * imbalance, n=h, k=2.0,
                  a_bytes=ACT16, o_bytes=pf.act_bytes)
        b.add("experts_gate_up", fq, GROUPED_GEMM, hw=F.hw, dtype=f_dt, count=moe_stage, m=routed_dev,
              groups=hit_dev, imbalance=imbalance, n=2 * inter / etp, k=h, w_bytes=pf.weight_bytes,
              a_bytes=pf.act_bytes, o_bytes=ACT16)
        b.add("experts_down", fq, GROUPED_GEMM, hw=F.hw, dtype=f_dt, count=moe_stage, m=routed_dev,
              groups=hit_dev, imbalance=imbalance, n=h, k=inter / etp, w_bytes=pf.weight_bytes,
              a_bytes=pf.act_bytes, o_bytes=ACT16)
        if m.num_shared_experts:
            s_inter = m.shared_intermediate * m.num_shared_experts / ffn_tp_dense
            gemm("shared_gate_up", fq, F, f_dt, pf, T_ffn_dev_dense, 2 * s_inter, h, moe_stage)
            gemm("shared_down", fq, F, f_dt, pf, T_ffn_dev_dense, h, s_inter, moe_stage)
        if not af:
            b.add("moe_combine", fq, ALL_TO_ALL, count=np.where(a2a, moe_stage, 0.0), m=T_disp, n=h,
                  a_bytes=ACT16, fanout=float(k), **F.group(ep * etp))
            # back to the attention layout: all-gather tokens over TP (EP), or all-reduce TP-sharded experts
            b.add("moe_all_gather", fq, ALL_GATHER, count=np.where(a2a & (tp > 1), moe_stage, 0.0),
                  msg_bytes=T_ffn_dev_dense * h * ACT16, **F.group(tp))
            b.add("moe_ep_all_reduce", fq, ALL_REDUCE, count=np.where(ep_ar, moe_stage, 0.0),
                  msg_bytes=T_ffn_dev_dense * h * ACT16, **F.group(ep * etp))
            # experts TP-sharded across attention-DP ranks (no EP, expert TP beyond the attention's): each rank's
            # tokens are gathered into the expert group and the outputs reduce-scattered back, two NCCL collectives
            # over the group's tokens (vLLM's allgather_reducescatter path for DP without EP; a reduce-scatter moves
            # an all-gather's ring traffic, so both are timed as all-gathers, not as the engines' one-shot
            # all-reduce); else the experts' TP group all-reduces its own tokens
            across = (ep <= 1) & (etp > tp) & (dp > 1)
            b.add("moe_all_reduce", fq, ALL_REDUCE, count=np.where((ep <= 1) & (etp > 1) & ~across, moe_stage, 0.0),
                  msg_bytes=T_group * h * ACT16, **F.group(etp))
            for name in ("moe_dp_gather", "moe_dp_scatter"):
                b.add(name, fq, ALL_GATHER, count=np.where(across, moe_stage, 0.0), msg_bytes=T_group * h * ACT16,
                      **F.group(etp))

    if af:
        # attention ranks send each token once to every FFN rank that owns one of its experts (top-k fan-out,
        # de-duplicated per rank, all of them on other devices, over the scale-out link); the TP ranks of an
        # attention group hold the same tokens and split the sending. The FFN ranks send back one partial sum
        # per (token, rank) pair they served.
        fan = float(model.moe.top_k) if model.moe else 1.0
        f_ranks = np.asarray(float(f_pl.devices))
        copies = distinct_destinations(fan, f_ranks)  # FFN ranks one token visits
        attn_groups = float(a_pl.dp) if a_pl.dp else 1.0
        tokens_all = T_dev * attn_groups  # tokens of the micro-batch over every attention group of the stage
        b.add("attn_to_ffn", aq, ALL_TO_ALL, hw=A.hw, count=layers_stage, m=T_dev / tp, n=h, a_bytes=pa.act_bytes,
              fanout=fan, ranks=f_ranks, domain=1.0, all_remote=1.0)
        b.add("ffn_to_attn", fq, ALL_TO_ALL, hw=F.hw, count=layers_stage, m=tokens_all * copies / f_ranks, n=h,
              a_bytes=ACT16, fanout=1.0, ranks=np.maximum(tp * attn_groups, 1.0), domain=1.0, all_remote=1.0)

    # ================================ other ===================================================
    logits_dev = p_seqs_dev + d_seqs_dev * dl  # prefill: last position of each sequence; decode: every new token
    b.add("embedding", oq, ELEMENTWISE, hw=A.hw, count=1.0, m=T_dev, n=h, a_bytes=ACT16, o_bytes=ACT16)
    vocab_dev = model.vocab_size / tp
    b.add("lm_head", oq, GEMM, hw=A.hw, dtype=a16, count=1.0, m=logits_dev, n=vocab_dev, k=h, w_bytes=ACT16,
          a_bytes=ACT16, o_bytes=ACT16)
    b.add("sampling", oq, ELEMENTWISE, hw=A.hw, count=1.0, m=logits_dev, n=float(model.vocab_size), a_bytes=4.0,
          o_bytes=0.0)
    b.add("pp_send_recv", oq, P2P, count=pp - 1, msg_bytes=T_dev * h * ACT16, **A.group(2.0, stride=tp * dp))
    return b.finish(served=True)  # a forward pass of a served step


def _sixteen_bit(hw) -> str:
    return next(d for d in ("bf16", "fp16", "fp32") if hw.peak(d) > 0)
