"""Step costs for the serving simulator: how long one batch step of one replica takes, split
over the four quadrants.

``StepCostModel`` is the seam: the analytic implementation asks the op builder and a TimingModel
for the actual batch shape (memoised on a shape quantised to 1/16 octave, ~4%); tests use
``ConstantStepCost``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ..analysis.whatif import time_phase
from ..ops.build import StepShape
from ..plan import PhasePlan
from ..specs.model import ModelSpec
from ..timing.base import TimingModel
from ..timing.roofline import RooflineModel, compute_op_time_s


@dataclass(frozen=True)
class StepCost:
    time_s: float
    prefill_attention_s: float = 0.0
    prefill_ffn_s: float = 0.0
    decode_attention_s: float = 0.0
    decode_ffn_s: float = 0.0


class StepCostModel(Protocol):
    def cost(self, prefill_seqs: int, prefill_tokens: int, prefill_ctx_tokens: int,
             decode_seqs: int, decode_len: int, decode_kv_tokens: int) -> StepCost:
        """``prefill_tokens`` new prompt tokens over ``prefill_seqs`` sequences that already hold
        ``prefill_ctx_tokens`` cached tokens in total; ``decode_seqs`` sequences adding
        ``decode_len`` tokens each over ``decode_kv_tokens`` cached tokens in total."""
        ...


class ConstantStepCost:
    """Test double: every step takes ``prefill_s`` if it prefills anything, else ``decode_s``."""

    def __init__(self, decode_s: float, prefill_s: float | None = None):
        self.decode_s, self.prefill_s = decode_s, decode_s if prefill_s is None else prefill_s

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens):
        if prefill_tokens:
            return StepCost(self.prefill_s, self.prefill_s / 2, self.prefill_s / 2)
        return StepCost(self.decode_s, 0.0, 0.0, self.decode_s / 2, self.decode_s / 2)


def _q(x: float) -> float:
    """Quantise to 1/16 octave (keeps memo keys few; <= 2.2% error)."""
    if x <= 0:
        return 0.0
    return 2.0 ** (round(16 * math.log2(x)) / 16)


class AnalyticStepCost:
    """Step times from the op builder + TimingModel for one replica's phase plan."""

    def __init__(self, model: ModelSpec, plan: PhasePlan, timing: TimingModel | None = None,
                 kv_precision: str = "bf16", kv_scale_tokens: int = 128):
        self.model, self.plan = model, plan
        self.timing = timing or RooflineModel()
        self.kw = dict(kv_precision=kv_precision, kv_scale_tokens=kv_scale_tokens)
        self._memo: dict[tuple, StepCost] = {}
        self.misses = 0

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens):
        key = (prefill_seqs, _q(prefill_tokens / prefill_seqs) if prefill_seqs else 0.0,
               _q(prefill_ctx_tokens / prefill_seqs) if prefill_seqs else 0.0,
               decode_seqs, decode_len, _q(decode_kv_tokens / decode_seqs) if decode_seqs else 0.0)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._evaluate(*key)
            self.misses += 1
        return hit

    def _evaluate(self, ps, pl, pc, ds, dl, dk) -> StepCost:
        plan = self.plan
        mb = plan.micro_batches if plan.af_disaggregated else plan.pp
        shape = StepShape(prefill_seqs=ps / mb, prefill_len=pl, prefill_ctx=pc, decode_seqs=ds / mb,
                          decode_len=dl, decode_kv=dk)
        pt = time_phase(self.model, plan, shape, "step", self.timing, **self.kw)
        if plan.af_disaggregated:
            total = float(pt.af_step_s[0])
        else:  # pp micro-batches keep every stage busy: a stage runs them back to back each step
            total = float(plan.pp * pt.layer_stage_s[0] + pt.head_s[0] + (plan.pp - 1) * pt.p2p_s[0])
        t, ops = pt.times, pt.ops
        w = t.weighted(t.time_s)[:, 0] * (plan.pp if not plan.af_disaggregated else 1)
        names = np.array(ops.names)
        a_mask, f_mask = ops.mask("step_attention"), ops.mask("step_ffn")
        core_p = float(w[names == "attn_core_prefill"].sum())
        core_d = float(w[names == "attn_core_decode"].sum())
        tok_p, tok_d = ps * pl, ds * dl
        share_p = tok_p / (tok_p + tok_d) if tok_p + tok_d else 0.0
        rest_a = float(w[a_mask].sum()) - core_p - core_d
        ffn = float(w[f_mask].sum())
        return StepCost(total, core_p + share_p * rest_a, share_p * ffn, core_d + (1 - share_p) * rest_a,
                        (1 - share_p) * ffn)


class TabulatedStepCost:
    """Exact fast path of ``AnalyticStepCost`` for roofline timing, one pipeline stage, colocated
    attention/FFN and no overlapped collectives.

    Every op but the attention cores and the LM head depends only on the step's token count, so
    their summed time is tabulated once for every token count up to the step budget (one
    vectorised op-builder call). The attention cores' FLOP and bytes are linear in a few shape
    terms; the coefficients are read off the op builder at basis shapes, and the roofline formula
    is applied in plain floats. Lookups then cost microseconds instead of a rebuild per new shape.
    """

    CORE_P, CORE_D, HEAD = "attn_core_prefill", "attn_core_decode", ("lm_head", "sampling")

    @staticmethod
    def supports(plan: PhasePlan, timing: TimingModel | None) -> bool:
        return (timing is None or type(timing) is RooflineModel) and plan.pp == 1 and not plan.af_disaggregated \
            and not plan.attention.overlap_comm and not plan.ffn.overlap_comm

    def __init__(self, model: ModelSpec, plan: PhasePlan, max_tokens: int, kv_precision: str = "bf16",
                 kv_scale_tokens: int = 128):
        if not self.supports(plan, None):
            raise ValueError("TabulatedStepCost needs pp = 1, colocated attention/FFN and no comm overlap")
        self.dp = plan.attention.dp
        kw = dict(kv_precision=kv_precision, kv_scale_tokens=kv_scale_tokens)
        tm = RooflineModel()
        T = np.arange(0, max_tokens + 1, dtype=float)
        pt = time_phase(model, plan, StepShape(decode_seqs=T, decode_len=1.0, decode_kv=0.0), "step", tm, **kw)
        ops, w = pt.ops, pt.times.weighted(pt.times.time_s)
        names = np.array(ops.names)
        core = np.isin(names, (self.CORE_P, self.CORE_D))
        head = np.isin(names, self.HEAD)
        a, f = ops.mask("step_attention"), ops.mask("step_ffn")
        body = ~core & ~head
        self.lin_attn = w[body & a].sum(axis=0)
        self.lin_ffn = w[body & f].sum(axis=0)
        self.lin_other = w[body & ~a & ~f].sum(axis=0)
        self.head = w[head].sum(axis=0)  # logits = T here (one per decoded token)
        # attention cores: FLOP and bytes are linear in (pairs, seqs*ctx, seqs*len) per device
        seqs, lens, ctxs = (1, 1, 1), (1, 1, 2), (0, 1, 0)  # a basis: the three terms are independent
        basis = StepShape(prefill_seqs=np.array(seqs, float), prefill_len=np.array(lens, float),
                          prefill_ctx=np.array(ctxs, float), decode_seqs=np.array(seqs, float),
                          decode_len=np.array(lens, float), decode_kv=np.array(ctxs, float))
        b = time_phase(model, replace(plan, attention=replace(plan.attention, dp=1)), basis, "step", tm, **kw).ops
        self.params = {}
        for name, terms in ((self.CORE_P, self._prefill_terms), (self.CORE_D, self._decode_terms)):
            i = b.names.index(name)
            X = np.array([terms(*args) for args in zip(seqs, lens, ctxs)], dtype=float)
            coef_f = np.linalg.solve(X, b["flop"][i])
            coef_b = np.linalg.solve(X, b["bytes"][i])
            cols = {c: float(b[c][i, 0]) for c in ("peak", "bw", "cf", "cr", "mf", "mr", "launch")}
            self.params[name] = (coef_f, coef_b, cols, float(model.num_layers))

    @staticmethod
    def _prefill_terms(seqs, length, ctx):
        return (seqs * length * (ctx + (length + 1) / 2), seqs * ctx, seqs * length)

    @staticmethod
    def _decode_terms(seqs, length, kv):
        return (seqs * length * (kv + length), seqs * kv, seqs * length)

    def _core(self, name: str, terms: tuple) -> float:
        coef_f, coef_b, c, layers = self.params[name]
        flop = float(coef_f[0] * terms[0] + coef_f[1] * terms[1] + coef_f[2] * terms[2])
        nbytes = float(coef_b[0] * terms[0] + coef_b[1] * terms[1] + coef_b[2] * terms[2])
        return layers * compute_op_time_s(flop, nbytes, c["peak"], c["bw"], c["cf"], c["cr"], c["mf"], c["mr"],
                                          c["launch"])

    def decode_stretch(self, n: int, kv0: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` consecutive decode steps of ``n`` sequences (one new token each), vectorised."""
        ds_dev = -(-n // self.dp)
        dk = (kv0 + n * np.arange(k)) / n
        coef_f, coef_b, c, layers = self.params[self.CORE_D]
        t1, t2, t3 = ds_dev * (dk + 1), ds_dev * dk, float(ds_dev)
        flop = coef_f[0] * t1 + coef_f[1] * t2 + coef_f[2] * t3
        nbytes = coef_b[0] * t1 + coef_b[1] * t2 + coef_b[2] * t3
        core = layers * (c["launch"] + np.maximum(c["cr"] + flop / (c["cf"] * c["peak"]),
                                                  c["mr"] + nbytes / (c["mf"] * c["bw"])))
        lin_a, lin_f = float(self.lin_attn[n]), float(self.lin_ffn[n])
        times = lin_a + lin_f + float(self.lin_other[n]) + float(self.head[n]) + core
        quad = np.vstack([np.zeros(k), np.zeros(k), core + lin_a, np.full(k, lin_f)])
        return times, quad

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens):
        dp = self.dp
        ps_dev = -(-prefill_seqs // dp)
        ds_dev = -(-decode_seqs // dp)
        pl = prefill_tokens / prefill_seqs if prefill_seqs else 0.0
        pc = prefill_ctx_tokens / prefill_seqs if prefill_seqs else 0.0
        dk = decode_kv_tokens / decode_seqs if decode_seqs else 0.0
        tok_p, tok_d = prefill_tokens, decode_seqs * decode_len
        T = tok_p + tok_d
        core_p = self._core(self.CORE_P, self._prefill_terms(ps_dev, pl, pc)) if prefill_seqs else 0.0
        core_d = self._core(self.CORE_D, self._decode_terms(ds_dev, decode_len, dk)) if decode_seqs else 0.0
        logits = prefill_seqs + decode_seqs * decode_len  # the table spreads them over dp like tokens
        share_p = tok_p / T if T else 0.0
        lin_a, lin_f = float(self.lin_attn[T]), float(self.lin_ffn[T])
        total = lin_a + lin_f + float(self.lin_other[T]) + float(self.head[logits]) + core_p + core_d
        return StepCost(total, core_p + share_p * lin_a, share_p * lin_f, core_d + (1 - share_p) * lin_a,
                        (1 - share_p) * lin_f)
