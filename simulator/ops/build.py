"""Ops per quadrant: a step shape and a phase plan become a table of ops (FLOP, bytes moved,
collectives) for one device, vectorised over configurations.

Each row is one kernel of one layer on one device; ``count`` says how many times it runs per
micro-batch on that device (layers per pipeline stage). Columns are numpy arrays of length N
(configurations), so thousands of configurations are built and costed in one pass.

Quadrants: ``attention`` (norm, QKV or MLA projections, attention core, output projection, TP
all-reduce, attention-to-FFN transfer), ``ffn`` (norm, router, dispatch, routed experts as a
grouped GEMM over the experts actually hit, shared experts, dense FFN, combine, all-reduce) and
``other`` (embedding, LM head, sampling, pipeline send/recv).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..devices import DeviceArrays
from ..plan import PhasePlan
from ..precision import get_precision, kv_bytes_per_element
from ..specs.model import ModelSpec

# collective kinds
COMPUTE, ALL_REDUCE, ALL_GATHER, ALL_TO_ALL, P2P = 0, 1, 2, 3, 4
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

    @property
    def tokens(self):
        return np.asarray(self.prefill_seqs) * self.prefill_len + np.asarray(self.decode_seqs) * self.decode_len


@dataclass
class OpTable:
    """Struct of arrays: ``n_ops`` rows x ``n`` configurations."""

    names: list[str] = field(default_factory=list)
    quadrant: list[str] = field(default_factory=list)  # attention | ffn | other
    op_class: list[str] = field(default_factory=list)  # gemm | attention | moe | elementwise | comm
    kind: list[int] = field(default_factory=list)
    cols: dict[str, list] = field(default_factory=dict)
    n: int = 1

    COLUMNS = ("count", "flop", "bytes", "peak", "bw", "cf", "cr", "mf", "mr", "launch",
               "comm_bytes", "group", "domain", "up_bw", "up_lat", "out_bw", "out_lat", "coll_frac")

    def __post_init__(self):
        for c in self.COLUMNS:
            self.cols.setdefault(c, [])

    def add(self, name: str, quadrant: str, op_class: str, kind: int = COMPUTE, **values) -> None:
        self.names.append(name)
        self.quadrant.append(quadrant)
        self.op_class.append(op_class)
        self.kind.append(kind)
        for c in self.COLUMNS:
            self.cols[c].append(values.get(c, 0.0))

    def finish(self) -> FrozenOpTable:
        arrays = {}
        for c, values in self.cols.items():
            arr = np.empty((len(values), self.n))
            for i, v in enumerate(values):
                arr[i] = v  # broadcasts scalars and length-n arrays
            arrays[c] = arr
        return FrozenOpTable(tuple(self.names), tuple(self.quadrant), tuple(self.op_class),
                             np.asarray(self.kind, dtype=np.int64), arrays, self.n)


@dataclass(frozen=True)
class FrozenOpTable:
    names: tuple[str, ...]
    quadrant: tuple[str, ...]
    op_class: tuple[str, ...]
    kind: np.ndarray
    arrays: dict[str, np.ndarray]
    n: int

    def __getitem__(self, col: str) -> np.ndarray:
        return self.arrays[col]

    @property
    def n_ops(self) -> int:
        return len(self.names)

    def mask(self, quadrant: str) -> np.ndarray:
        return np.array([q == quadrant for q in self.quadrant], dtype=bool)


def _expected_experts_hit(num_experts: int, top_k: int, tokens) -> np.ndarray:
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


class _Links:
    """Link parameters for a group on one device type."""

    def __init__(self, dev: DeviceArrays):
        self.up_bw = dev.link("scale_up", "bandwidth_bytes_per_s")
        self.up_lat = dev.link("scale_up", "latency_s")
        self.domain = dev.link("scale_up", "domain_size")
        self.out_bw = dev.link("scale_out", "bandwidth_bytes_per_s")
        self.out_lat = dev.link("scale_out", "latency_s")
        self.frac = dev.collective_fraction()

    def cols(self, group, stride=1.0) -> dict:
        """Columns for a group of ``group`` devices whose members are ``stride`` apart."""
        group = np.asarray(group, dtype=float)
        in_domain = np.maximum(np.floor(self.domain / np.maximum(stride, 1.0)), 1.0)
        return dict(group=group, domain=np.minimum(group, in_domain), up_bw=self.up_bw, up_lat=self.up_lat,
                    out_bw=self.out_bw, out_lat=self.out_lat, coll_frac=self.frac)


def build_ops(model: ModelSpec, plan: PhasePlan, shape: StepShape, phase: str, *,
              kv_precision: str = "bf16", kv_scale_tokens: int = 128,
              tp=None, dp=None, ep=None, expert_tp=None, pp=None,
              attn_dev: DeviceArrays | None = None, ffn_dev: DeviceArrays | None = None) -> FrozenOpTable:
    """Ops of one micro-batch's forward pass on one device of each quadrant.

    Parallel degrees default to the plan's; pass arrays to sweep them. ``phase`` labels the
    quadrants (``prefill`` or ``decode``).
    """
    a_pl, f_pl = plan.attention, plan.ffn
    tp = np.asarray(a_pl.tp if tp is None else tp, dtype=float)
    dp = np.asarray(a_pl.dp if dp is None else dp, dtype=float)
    ep = np.asarray(f_pl.ep if ep is None else ep, dtype=float)
    pp = np.asarray(plan.pp if pp is None else pp, dtype=float)
    if expert_tp is None:
        expert_tp = f_pl.expert_tp if (tp.ndim == 0 and ep.ndim == 0) else np.where(ep > 1, 1.0, tp)
    etp = np.asarray(expert_tp, dtype=float)
    attn_dev = attn_dev or DeviceArrays.of(a_pl.hardware)
    ffn_dev = ffn_dev or DeviceArrays.of(f_pl.hardware)
    n = int(np.broadcast_shapes(np.shape(tp), np.shape(dp), np.shape(ep), np.shape(pp),
                                np.shape(shape.tokens), np.shape(attn_dev.index), np.shape(ffn_dev.index),
                                (1,))[0])
    t = OpTable(n=n)
    pa, pf = get_precision(a_pl.precision), get_precision(f_pl.precision)
    att = model.attention
    h = float(model.hidden_size)
    L = float(model.num_layers)
    layers_stage = L / pp
    moe_stage = model.num_moe_layers / pp
    dense_stage = model.num_dense_layers / pp

    # --- token bookkeeping -------------------------------------------------------------------
    T = np.asarray(shape.tokens, dtype=float)  # tokens of this micro-batch across the stage
    ps, pl, pc = (np.asarray(x, dtype=float) for x in (shape.prefill_seqs, shape.prefill_len, shape.prefill_ctx))
    ds, dl, dk = (np.asarray(x, dtype=float) for x in (shape.decode_seqs, shape.decode_len, shape.decode_kv))
    # attention DP splits sequences, not tokens: the busiest rank holds ceil(seqs / dp) of them
    p_seqs_dev, d_seqs_dev = np.ceil(ps / dp), np.ceil(ds / dp)
    T_dev = p_seqs_dev * pl + d_seqs_dev * dl  # tokens per attention device

    # --- per-device hardware columns ---------------------------------------------------------
    def hwcols(dev: DeviceArrays, op_class: str, peak) -> dict:
        cf, cr, mf, mr = dev.efficiency(op_class)
        return dict(peak=peak, bw=dev.field("hbm_bytes_per_s"), cf=cf, cr=cr, mf=mf, mr=mr, launch=dev.launch_s())

    a_gemm = hwcols(attn_dev, "gemm", attn_dev.peak_for(pa))
    a_attn = hwcols(attn_dev, "attention", attn_dev.attention_peak(pa, kv_precision))
    a_elem = hwcols(attn_dev, "elementwise", attn_dev.peak_16bit())
    f_gemm = hwcols(ffn_dev, "gemm", ffn_dev.peak_for(pf))
    f_moe = hwcols(ffn_dev, "moe", ffn_dev.peak_for(pf))
    f_elem = hwcols(ffn_dev, "elementwise", ffn_dev.peak_16bit())
    head16 = hwcols(attn_dev, "gemm", attn_dev.peak_16bit())
    a_links, f_links = _Links(attn_dev), _Links(ffn_dev)

    aq, fq = f"{phase}_attention", f"{phase}_ffn"
    oq = f"{phase}_other"

    # ================================ attention quadrant ======================================
    t.add("attn_norm", aq, "elementwise", count=layers_stage, flop=5 * T_dev * h,
          bytes=2 * T_dev * h * ACT16, **a_elem)
    groups = att.param_groups(model.hidden_size)
    w_qkv, w_o = groups["qkv"] / tp, groups["o"] / tp
    qkv_out = (att.num_heads * att.qk_head_dim + 2 * att.num_kv_heads * att.head_dim) / tp
    t.add("qkv_proj", aq, "gemm", count=layers_stage, flop=2 * T_dev * w_qkv,
          bytes=w_qkv * pa.weight_bytes + T_dev * (h + qkv_out) * pa.act_bytes, **a_gemm)

    heads_dev = att.num_heads / tp
    if att.kind == "mla":
        kv_elems_dev = np.full_like(tp, float(att.kv_elements_per_token))  # latent is not split by TP
        elems_per_scale = att.kv_elements_per_token
        dqk_prefill, dv_prefill = att.qk_head_dim, att.v_dim
        dqk_decode, dv_decode = att.kv_lora_rank + att.qk_rope_head_dim, att.kv_lora_rank  # absorbed
    else:
        kv_elems_dev = 2.0 * np.maximum(np.ceil(att.num_kv_heads / tp), 1.0) * att.head_dim
        elems_per_scale = att.head_dim
        dqk_prefill = dqk_decode = att.head_dim
        dv_prefill = dv_decode = att.head_dim
    kvb = kv_bytes_per_element(kv_precision, kv_scale_tokens, elems_per_scale)
    kv_tok_bytes = kv_elems_dev * kvb  # per token per layer on one device

    # prefill attention core: causal over the new chunk plus everything cached before it
    p_pairs = p_seqs_dev * pl * (pc + (pl + 1) / 2)  # (query, key) pairs
    p_flop = 2 * p_pairs * heads_dev * (dqk_prefill + dv_prefill)
    p_bytes = p_seqs_dev * ((pc + pl) * kv_tok_bytes + pl * kv_tok_bytes
                            + 2 * pl * heads_dev * att.v_dim * pa.act_bytes)
    if att.kind == "mla":  # cached latents are up-projected for the chunk's attention
        p_flop = p_flop + 2 * p_seqs_dev * pc * att.kv_lora_rank * heads_dev * (att.qk_nope_head_dim + att.v_head_dim)
    t.add("attn_core_prefill", aq, "attention", count=np.where(ps > 0, layers_stage, 0.0),
          flop=p_flop, bytes=p_bytes, **a_attn)
    # decode attention core: every query token reads the sequence's whole KV cache
    d_flop = 2 * d_seqs_dev * dl * (dk + dl) * heads_dev * (dqk_decode + dv_decode)
    d_bytes = d_seqs_dev * ((dk + dl) * kv_tok_bytes + 2 * dl * heads_dev * dqk_decode * pa.act_bytes)
    t.add("attn_core_decode", aq, "attention", count=np.where(ds > 0, layers_stage, 0.0),
          flop=d_flop, bytes=d_bytes, **a_attn)

    t.add("o_proj", aq, "gemm", count=layers_stage, flop=2 * T_dev * w_o,
          bytes=w_o * pa.weight_bytes + T_dev * (heads_dev * att.v_dim + h) * pa.act_bytes, **a_gemm)
    t.add("attn_all_reduce", aq, "comm", ALL_REDUCE, count=np.where(tp > 1, layers_stage, 0.0),
          comm_bytes=T_dev * h * ACT16, **a_links.cols(tp))

    # attention -> FFN transfer when the quadrants live on different pools
    if plan.af_disaggregated:
        xfer = T_dev * h * pa.act_bytes
        t.add("attn_to_ffn", aq, "comm", P2P, count=layers_stage, comm_bytes=xfer,
              **dict(a_links.cols(2.0, stride=a_links.domain), out_bw=np.minimum(a_links.out_bw, f_links.out_bw)))

    # ================================ FFN quadrant ============================================
    if plan.af_disaggregated:
        f_devices = float(f_pl.devices)
        ffn_tp_dense = np.asarray(float(f_pl.tp))  # dense/shared FFN: TP groups replicated over the pool
        T_ffn_dev_dense = T * ffn_tp_dense / f_devices
        replicas = np.maximum(f_devices / (ep * etp), 1.0)
    else:
        T_ffn_dev_dense = T_dev
        ffn_tp_dense = tp
        replicas = np.maximum(tp * dp / (ep * etp), 1.0)
    t.add("ffn_norm", fq, "elementwise", count=layers_stage, flop=5 * T_ffn_dev_dense * h,
          bytes=2 * T_ffn_dev_dense * h * ACT16, **f_elem)

    if model.num_dense_layers:
        w = model.dense_ffn_params / ffn_tp_dense
        inter = model.ffn_intermediate / ffn_tp_dense
        t.add("dense_gate_up", fq, "gemm", count=dense_stage, flop=2 * T_ffn_dev_dense * w * 2 / 3,
              bytes=w * 2 / 3 * pf.weight_bytes + T_ffn_dev_dense * (h + 2 * inter) * pf.act_bytes, **f_gemm)
        t.add("dense_down", fq, "gemm", count=dense_stage, flop=2 * T_ffn_dev_dense * w / 3,
              bytes=w / 3 * pf.weight_bytes + T_ffn_dev_dense * (inter + h) * pf.act_bytes, **f_gemm)
        t.add("dense_all_reduce", fq, "comm", ALL_REDUCE, count=np.where(ffn_tp_dense > 1, dense_stage, 0.0),
              comm_bytes=T_ffn_dev_dense * h * ACT16, **f_links.cols(ffn_tp_dense))

    if model.moe:
        m = model.moe
        E, k, inter = m.num_experts, m.top_k, float(m.expert_intermediate)
        T_group = T / replicas  # tokens routed inside one expert-parallel group
        T_disp = T_group / (ep * etp)  # tokens each device dispatches
        t.add("router", fq, "gemm", count=moe_stage, flop=2 * T_ffn_dev_dense * h * E,
              bytes=h * E * ACT16 + T_ffn_dev_dense * (h + E) * ACT16, **f_gemm)
        disp_bytes = T_disp * k * h * pf.act_bytes * (ep - 1) / np.maximum(ep, 1.0)
        t.add("moe_dispatch", fq, "comm", ALL_TO_ALL, count=np.where(ep > 1, moe_stage, 0.0),
              comm_bytes=disp_bytes, **f_links.cols(ep * etp))
        imbalance = random_routing_imbalance(T_group, k, ep) * plan.moe_imbalance
        routed_dev = T_group * k / ep * imbalance  # token-expert pairs on the busiest EP rank
        hit_dev = _expected_experts_hit(E, k, T_group) / ep
        w_gu = hit_dev * 2 * h * inter / etp
        w_dn = hit_dev * h * inter / etp
        t.add("experts_gate_up", fq, "moe", count=moe_stage, flop=2 * routed_dev * 2 * h * inter / etp,
              bytes=w_gu * pf.weight_bytes + routed_dev * (h + 2 * inter / etp) * pf.act_bytes, **f_moe)
        t.add("experts_down", fq, "moe", count=moe_stage, flop=2 * routed_dev * h * inter / etp,
              bytes=w_dn * pf.weight_bytes + routed_dev * (inter / etp + h) * pf.act_bytes, **f_moe)
        if m.num_shared_experts:
            w = model.shared_params / ffn_tp_dense
            t.add("shared_experts", fq, "gemm", count=moe_stage, flop=2 * T_ffn_dev_dense * w,
                  bytes=w * pf.weight_bytes + T_ffn_dev_dense * (2 * h + 3 * m.shared_intermediate
                                                                  * m.num_shared_experts / ffn_tp_dense) * pf.act_bytes,
                  **f_gemm)
        t.add("moe_combine", fq, "comm", ALL_TO_ALL, count=np.where(ep > 1, moe_stage, 0.0),
              comm_bytes=T_disp * k * h * ACT16 * (ep - 1) / np.maximum(ep, 1.0), **f_links.cols(ep * etp))
        # back to the attention layout: all-gather tokens over TP (EP), or all-reduce TP-sharded experts
        t.add("moe_all_gather", fq, "comm", ALL_GATHER, count=np.where((ep > 1) & (tp > 1), moe_stage, 0.0),
              comm_bytes=T_ffn_dev_dense * h * ACT16, **f_links.cols(tp))
        t.add("moe_all_reduce", fq, "comm", ALL_REDUCE, count=np.where((ep <= 1) & (etp > 1), moe_stage, 0.0),
              comm_bytes=T_ffn_dev_dense * h * ACT16, **f_links.cols(etp))

    if plan.af_disaggregated:
        t.add("ffn_to_attn", fq, "comm", P2P, count=layers_stage, comm_bytes=T_dev * h * pf.act_bytes,
              **dict(f_links.cols(2.0, stride=f_links.domain), out_bw=np.minimum(a_links.out_bw, f_links.out_bw)))

    # ================================ other ===================================================
    logits_dev = p_seqs_dev + d_seqs_dev * dl  # prefill: last position of each sequence; decode: every new token
    t.add("embedding", oq, "elementwise", count=1.0, bytes=2 * T_dev * h * ACT16, **a_elem)
    w_head = model.vocab_size * h / tp
    t.add("lm_head", oq, "gemm", count=1.0, flop=2 * logits_dev * w_head,
          bytes=w_head * ACT16 + logits_dev * (h + model.vocab_size / tp) * ACT16, **head16)
    t.add("sampling", oq, "elementwise", count=1.0, bytes=logits_dev * model.vocab_size * 4.0, **a_elem)
    t.add("pp_send_recv", oq, "comm", P2P, count=pp - 1, comm_bytes=T_dev * h * ACT16,
          **a_links.cols(2.0, stride=tp * dp))
    return t.finish()
