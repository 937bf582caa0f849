"""Step costs for the serving simulator: how long one batch step of one replica takes, split
over the four quadrants.

``StepCostModel`` is the seam: the analytic implementation asks the op builder and a TimingModel
for the actual batch shape (memoised on a shape quantised to 1/16 octave, ~4%); tests use
``ConstantStepCost``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..analysis import time_phase
from ..ops import StepShape
from ..perf.roofline import RooflineModel
from ..perf.timing import TimingModel
from ..plan import PhasePlan
from ..specs.model import ModelSpec


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
