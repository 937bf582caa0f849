"""Step costs for the serving simulator: how long one batch step of one replica takes, split
over the four quadrants.

``StepCostModel`` is the seam: the analytic implementation asks the op builder and a TimingModel
for the actual batch shape (memoised on a shape quantised to 1/16 octave, ~4%); tests use
``ConstantStepCost``.

Attention data parallelism (``plan.attention.dp > 1``) gives every rank its own sequences and KV
cache; the ranks meet at every layer's collectives, so a step lasts as long as its busiest rank.
By default (``ranks=None``) a step's decode sequences are taken as spread evenly over the ranks,
each with the mean KV length. ``DecodeRanks`` passes the actual spread (sequences and cached
tokens per rank); a model then times each rank's decode attention (the attention core on that
rank's sequences and mean KV length, plus the per-rank attention GEMMs on its token count) and
charges the busiest one, and sizes the other per-rank ops (norms, dense FFN, LM head) by the
busiest rank's token count. That is what makes one long-context sequence slow down every short
one batched with it on the same rank, and what a long/short context split removes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

import numpy as np

from ..analysis.whatif import time_phase
from ..ops.build import StepShape, build_ops, token_groups
from ..ops.kinds import OpTable
from ..plan import PhasePlan
from ..specs.model import ModelSpec
from ..timing.base import TimingModel
from ..timing.roofline import RooflineModel


class StepCost(NamedTuple):
    """One step's time and its split over the four quadrants (seconds); the rest of ``time_s`` is the
    engine's own overhead. A named tuple: one is made per simulated step."""

    time_s: float
    prefill_attention_s: float = 0.0
    prefill_ffn_s: float = 0.0
    decode_attention_s: float = 0.0
    decode_ffn_s: float = 0.0
    # pipeline-parallel prefill: how long after the step's end its last prefill micro-batch leaves the last stage
    # (``time_s`` is the first stage's occupancy, when the next step can start); a prompt the step completes has its
    # prefill done, and its first token, then
    drain_s: float = 0.0


@dataclass(frozen=True, slots=True)
class DecodeRanks:
    """How a step's decode sequences sit on the replica's attention-DP ranks: ``seqs[r]`` decode
    sequences on rank ``r`` holding ``kv_tokens[r]`` cached tokens in total (one entry per rank,
    ``len == plan.attention.dp``; the totals are the step's ``decode_seqs`` / ``decode_kv_tokens``).
    Prefill sequences are still taken as spread evenly over the ranks."""

    seqs: tuple[int, ...]
    kv_tokens: tuple[int, ...]

    @classmethod
    def even(cls, dp: int, decode_seqs: int, decode_kv_tokens: int) -> DecodeRanks:
        """``decode_seqs`` sequences dealt out evenly (the first ranks take the remainder), each
        holding the mean KV length: what ``ranks=None`` stands for."""
        seqs = tuple(decode_seqs // dp + (r < decode_seqs % dp) for r in range(dp))
        kv = tuple(int(round(decode_kv_tokens * s / decode_seqs)) if decode_seqs else 0 for s in seqs)
        return cls(seqs, kv)

    def grown(self, steps: int, tokens_per_step: int = 1) -> DecodeRanks:
        """The ranks after ``steps`` decode steps that add ``tokens_per_step`` tokens to every sequence."""
        return DecodeRanks(self.seqs, tuple(k + steps * tokens_per_step * s for s, k in zip(self.seqs, self.kv_tokens)))

    def shapes(self) -> tuple[tuple[int, float], ...]:
        """The distinct (sequences, mean KV length quantised to 1/16 octave) of the ranks holding any:
        what the op-built models time (and memoise on) to find the busiest rank."""
        return tuple(sorted({(s, _q(k / s)) for s, k in zip(self.seqs, self.kv_tokens) if s}))


class StepCostModel(Protocol):
    def cost(self, prefill_seqs: int, prefill_tokens: int, prefill_ctx_tokens: int,
             decode_seqs: int, decode_len: int, decode_kv_tokens: int,
             ranks: DecodeRanks | None = None) -> StepCost:
        """``prefill_tokens`` new prompt tokens over ``prefill_seqs`` sequences that already hold
        ``prefill_ctx_tokens`` cached tokens in total; ``decode_seqs`` sequences adding
        ``decode_len`` tokens each over ``decode_kv_tokens`` cached tokens in total, spread over the
        attention-DP ranks as ``ranks`` says (None: evenly, each at the mean KV length)."""
        ...


def decode_stretch_costs(cost, n: int, kv0: int, k: int, ranks: DecodeRanks | None = None
                         ) -> tuple[list, list, list]:
    """Times, decode-attention and decode-FFN seconds of ``k`` consecutive pure-decode steps of ``n``
    sequences holding ``kv0`` cached tokens at the first step (each step adds one token per sequence;
    ``ranks``: their spread over attention-DP ranks at the first step, None: even): the model's
    ``decode_stretch`` where it has one, else its ``cost`` step by step."""
    fast = getattr(cost, "decode_stretch", None)
    if fast is not None:
        return fast(n, kv0, k) if ranks is None else fast(n, kv0, k, ranks=ranks)
    if ranks is None:
        steps = [cost.cost(0, 0, 0, n, 1, kv0 + i * n) for i in range(k)]
    else:
        steps = [cost.cost(0, 0, 0, n, 1, kv0 + i * n, ranks=ranks.grown(i)) for i in range(k)]
    return [c.time_s for c in steps], [c.decode_attention_s for c in steps], [c.decode_ffn_s for c in steps]


class ConstantStepCost:
    """Test double: every step takes ``prefill_s`` if it prefills anything, else ``decode_s``."""

    wants_ranks = False  # the time does not depend on how sequences sit on attention-DP ranks
    attention_dp = 1

    def __init__(self, decode_s: float, prefill_s: float | None = None):
        self.decode_s, self.prefill_s = decode_s, decode_s if prefill_s is None else prefill_s

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens,
             ranks=None):
        if prefill_tokens:
            return StepCost(self.prefill_s, self.prefill_s / 2, self.prefill_s / 2)
        return StepCost(self.decode_s, 0.0, 0.0, self.decode_s / 2, self.decode_s / 2)


def _q(x: float) -> float:
    """Quantise to 1/16 octave (keeps memo keys few; <= 2.2% error)."""
    if x <= 0:
        return 0.0
    return 2.0 ** (round(16 * math.log2(x)) / 16)


def memo_key(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens) -> tuple:
    """A step's shape per sequence, quantised to 1/16 octave: the memo key of the analytic step costs."""
    return (prefill_seqs, _q(prefill_tokens / prefill_seqs) if prefill_seqs else 0.0,
            _q(prefill_ctx_tokens / prefill_seqs) if prefill_seqs else 0.0,
            decode_seqs, decode_len, _q(decode_kv_tokens / decode_seqs) if decode_seqs else 0.0)


class AnalyticStepCost:
    """Step times from the op builder + TimingModel for one replica's phase plan.

    With ``ranks`` (attention DP, colocated attention/FFN), the attention side of the step (the
    attention quadrant's ops on one stage) is timed for every distinct rank shape as if every rank
    held that shape, and the busiest one replaces the even spread's; the FFN side and the head keep
    the even spread's token count (``TabulatedStepCost`` sizes them by the busiest rank as well).
    """

    def __init__(self, model: ModelSpec, plan: PhasePlan, timing: TimingModel | None = None,
                 kv_precision: str = "bf16", kv_scale_tokens: int = 128):
        self.model, self.plan = model, plan
        self.timing = timing or RooflineModel()
        self.kw = dict(kv_precision=kv_precision, kv_scale_tokens=kv_scale_tokens)
        self._memo: dict[tuple, StepCost] = {}
        self._attn: dict[tuple, tuple[float, float]] = {}  # memo key -> attention side (stage time, busy time)
        self.misses = 0
        self.attention_dp = plan.attention.dp
        self.wants_ranks = plan.attention.dp > 1 and not plan.af_disaggregated

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens,
             ranks: DecodeRanks | None = None):
        key = memo_key(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._evaluate(*key)
            self.misses += 1
        if ranks is None or not decode_seqs or not self.wants_ranks:
            return hit
        # memoised per rank shape (not per combination of them, which would rarely repeat)
        dp = self.plan.attention.dp
        even_stage, even_busy = self._attn[key]
        stage, busy = max(self._attn_side(key[:3] + (s * dp, decode_len, dk)) for s, dk in ranks.shapes())
        mult = self.plan.pp  # a stage runs its pp micro-batches back to back (as in ``_evaluate``)
        return hit._replace(time_s=hit.time_s + mult * (stage - even_stage),
                            decode_attention_s=hit.decode_attention_s + busy - even_busy)

    def _attn_side(self, key: tuple) -> tuple[float, float]:
        if key not in self._attn:
            self._memo.setdefault(key, self._evaluate(*key))
            self.misses += 1
        return self._attn[key]

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
        a_mask, f_mask = ops.mask("step_attention"), ops.mask("step_ffn")

        def exposed(mask, overlap: bool) -> float:
            """The share of a side's op time the step shows: 1, or with ``overlap_comm`` its time with the
            collectives hidden behind compute (as the step's time counts it) over the plain sum, so that the
            quadrants split the step's time and never add up to more (each op keeps its share of the side)."""
            if not overlap:
                return 1.0
            full = float(t.total_s(mask)[0])
            return float(t.total_s(mask, True)[0]) / full if full > 0 else 1.0

        sa, sf = exposed(a_mask, plan.attention.overlap_comm), exposed(f_mask, plan.ffn.overlap_comm)
        self._attn[(ps, pl, pc, ds, dl, dk)] = (float(t.total_s(a_mask, plan.attention.overlap_comm)[0]),
                                                float(w[a_mask].sum()) * sa)
        core_p = float(w[ops.named("attn_core_prefill", *TabulatedStepCost.CTX_OPS)].sum()) * sa
        core_d = float(w[ops.named("attn_core_decode")].sum()) * sa
        tok_p, tok_d = ps * pl, ds * dl
        share_p = tok_p / (tok_p + tok_d) if tok_p + tok_d else 0.0
        rest_a = float(w[a_mask].sum()) * sa - core_p - core_d
        ffn = float(w[f_mask].sum()) * sf
        return StepCost(total, core_p + share_p * rest_a, share_p * ffn, core_d + (1 - share_p) * rest_a,
                        (1 - share_p) * ffn)


class TabulatedStepCost:
    """Fast, exact path of ``AnalyticStepCost`` for any TimingModel, one pipeline stage, colocated
    attention/FFN and no overlapped collectives.

    Every op but the attention cores and the LM head depends only on the step's token count, so
    their summed time is tabulated once for every token count up to the step budget (one
    vectorised evaluation). The attention cores are the builder's own records with only their
    batch/length columns changed, timed by the same TimingModel (memoised per shape), so lookups
    cost microseconds instead of a rebuild per new shape.
    """

    CORE_P, CORE_D, HEAD = "attn_core_prefill", "attn_core_decode", ("lm_head", "sampling")
    CTX_OPS = ("mla_kv_up", "mla_kv_up_quant")  # ops whose rows scale with the cached prefix, not the step
    # ops that see an expert group's tokens (``build_ops``' T_group), not the busiest attention-DP rank's: the routed
    # experts, their all-to-alls, and the all-reduce of experts TP-sharded over several ranks' tokens
    ROUTED_OPS = ("moe_dispatch", "experts_quant", "experts_gate_up", "experts_down", "moe_combine", "moe_all_reduce",
                  "moe_dp_gather", "moe_dp_scatter")

    @staticmethod
    def supports(plan: PhasePlan, timing: TimingModel | None = None) -> bool:
        return plan.pp == 1 and not plan.af_disaggregated and not plan.attention.overlap_comm \
            and not plan.ffn.overlap_comm

    def __init__(self, model: ModelSpec, plan: PhasePlan, max_tokens: int, kv_precision: str = "bf16",
                 kv_scale_tokens: int = 128, timing: TimingModel | None = None):
        if not self.supports(plan, timing):
            raise ValueError("TabulatedStepCost needs pp = 1, colocated attention/FFN and no comm overlap")
        self.timing = timing or RooflineModel()
        self.dp = dp = plan.attention.dp
        self.attention_dp, self.wants_ranks = dp, dp > 1
        kw = dict(kv_precision=kv_precision, kv_scale_tokens=kv_scale_tokens)
        # Per-rank ops (attention, norms, dense FFN, TP collectives, LM head) see the busiest attention-DP
        # rank's tokens; the routed experts and their all-to-alls see every rank's tokens. Table 1 holds
        # t tokens on every rank (dp x t in all), table 2 t tokens in all; a step reads each at its count.
        t_rank = np.arange(0, max_tokens + 1, dtype=float)
        ops, w = self._weighted_table(model, plan, StepShape(decode_seqs=t_rank * dp, decode_len=1.0, decode_kv=0.0),
                                      kw)  # (without the attention cores)
        head = ops.named(*self.HEAD)
        routed = ops.named(*self.ROUTED_OPS)
        a, f = ops.mask("step_attention"), ops.mask("step_ffn")
        body = ~head & ~routed
        self.lin_attn = w[body & a].sum(axis=0)
        self.lin_ffn = w[body & f].sum(axis=0)
        self.lin_other = w[body & ~a & ~f].sum(axis=0)
        self.head = w[head].sum(axis=0)  # logits on the busiest rank = its tokens here
        if routed.any() and dp == 1:  # one rank: table 2 is table 1 (the same token counts)
            self.routed = w[routed].sum(axis=0)
        elif routed.any():
            t_all = np.arange(0, max_tokens * dp + 1, dtype=float)
            every, w2 = self._weighted_table(model, plan, StepShape(decode_seqs=t_all, decode_len=1.0, decode_kv=0.0),
                                             kw)
            self.routed = w2[every.named(*self.ROUTED_OPS)].sum(axis=0)
        else:
            self.routed = np.zeros(max_tokens * dp + 1)
        # Expert groups fed by different attention-DP ranks (experts replicated over groups: tp x dp > ep x
        # expert_tp) each route their own ranks' tokens, and the step waits for the busiest group. Table 2 spreads
        # its t tokens evenly over those groups (``build_ops``: ceil(t / groups) each), so a step reads it at
        # groups x (the busiest group's tokens): whole sequences, ceil(seqs / groups) of them (as ``build_ops``
        # counts a step's own sequences).
        self._groups = int(token_groups(plan.attention.tp, dp, plan.ffn.ep, plan.ffn.expert_tp))
        # the same tables as Python lists: a step reads a few entries, and list indexing is what is cheap
        self._lin_attn, self._lin_ffn = self.lin_attn.tolist(), self.lin_ffn.tolist()
        self._lin_other, self._head, self._routed = self.lin_other.tolist(), self.head.tolist(), self.routed.tolist()
        # the two attention-core records of a one-sequence step: only batch/q_len/kv_len change later
        one = StepShape(prefill_seqs=1.0, prefill_len=1.0, prefill_ctx=1.0, decode_seqs=1.0, decode_len=1.0,
                        decode_kv=0.0)
        dp1 = replace(plan, attention=replace(plan.attention, dp=1))
        base = build_ops(model, dp1, one, "step", **kw)
        # prefill: the attention core plus, for MLA, the up-projection of the cached latents (m = cached tokens)
        self._ctx_exact = bool(base.named(*self.CTX_OPS).any())  # MLA: see ``_ctx_core``
        self._templates = {self.CORE_P: base.select(base.named(self.CORE_P, *self.CTX_OPS)),
                           self.CORE_D: base.select(base.named(self.CORE_D))}
        self._memo: dict[tuple, float] = {}
        self._ctx_grid: dict[tuple, float] = {}  # (batch, i, j) -> prefill core at grid point (2^(i/32), 2^(j/32))
        self._grids: dict[tuple, np.ndarray] = {}
        self._fresh: dict[tuple, np.ndarray] = {}
        self._stretch_parts: dict[int, tuple] = {}
        self._ends_terms: dict[int, tuple] = {}  # ``decode_ends``'s terms and decode-core table per batch size

    def _weighted_table(self, model: ModelSpec, plan: PhasePlan, shape: StepShape, kw: dict
                        ) -> tuple[OpTable, np.ndarray]:
        """The step's ops at every shape and their times x counts, leaving out the attention cores (timed per
        step instead) and ops that never run (count 0 at every shape: they would add exact zeros), so a
        16,384-token table times ~30% fewer rows."""
        ops = build_ops(model, plan, shape, "step", **kw)
        ops = ops.select(ops["count"].any(axis=1) & ~ops.named(self.CORE_P, self.CORE_D, *self.CTX_OPS))
        times = self.timing.evaluate(ops)
        return ops, times.weighted(times.time_s)

    def _core_s(self, name: str, batch, q_len, kv_len) -> np.ndarray:
        """Time of one attention core (all layers) for arrays of shapes, by the TimingModel."""
        tpl = self._templates[name]
        batch, q_len, kv_len = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, dtype=float))
                                                     for x in (batch, q_len, kv_len)))
        n = batch.shape[0]
        rows = tpl.n_ops
        arrays = {c: np.broadcast_to(v[:, :1], (rows, n)).copy() for c, v in tpl.arrays.items()}
        core = np.array([nm in (self.CORE_P, self.CORE_D) for nm in tpl.names])
        arrays["batch"][core], arrays["q_len"][core], arrays["kv_len"][core] = batch, q_len, kv_len
        ctx = ~core  # MLA up-projection of the cached latents: one row per cached token (none without a prefix)
        cached = batch * np.maximum(kv_len - q_len, 0.0)
        arrays["m"][ctx] = cached
        arrays["count"][ctx] = np.where(cached > 0, arrays["count"][ctx], 0.0)
        ops = OpTable(tpl.names, tpl.quadrant, tpl.kind, arrays, n, tpl.devices, served=tpl.served)
        times = self.timing.evaluate(ops)
        return (times.time_s * ops["count"]).sum(axis=0)

    # decode-core times are tabulated over the KV length on a geometric grid (1/32 octave) per batch and
    # query length, then interpolated linearly: between grid points the time of a bandwidth- or
    # compute-bound attention kernel is linear in the KV length, so this is exact but at a kink.
    GRID = 2.0 ** (np.arange(0, 24 * 32 + 1) / 32.0)
    DECODE_BLOCK = 8  # decode-core tables are evaluated for this many consecutive batch sizes at a time
    _GRID_L = GRID.tolist()

    def _decode_tab(self, batch: float, q_len: float) -> tuple[list, np.ndarray]:
        """The decode-core times on ``GRID`` for one batch and query length (as a list and an array)."""
        key = (batch, q_len)
        tab = self._grids.get(key)
        if tab is None:
            # a whole-number batch brings the other missing ones of its block of DECODE_BLOCK sizes along (decode
            # batches drift by a few sequences): one evaluation, elementwise, so each table is the one-batch one
            g, grids = self.GRID, self._grids
            if batch == int(batch) and batch >= 1:
                lo = max(1, int(batch) // self.DECODE_BLOCK * self.DECODE_BLOCK)
                batches = [b for b in map(float, range(lo, lo + self.DECODE_BLOCK)) if (b, q_len) not in grids]
            else:
                batches = [batch]
            a = self._core_s(self.CORE_D, np.repeat(batches, len(g)), np.full(len(g) * len(batches), q_len),
                             np.tile(g, len(batches)))
            for i, b in enumerate(batches):
                t = a[i * len(g):(i + 1) * len(g)].copy()
                grids[(b, q_len)] = (t.tolist(), t)
            tab = grids[key]
        return tab

    def _decode_core(self, batch: float, q_len: float, kv_len: float) -> float:
        """The decode core at one KV length: linear interpolation on the grid (``np.interp``'s formula,
        in Python: this runs once per simulated step)."""
        return self._interp(self._decode_tab(batch, q_len)[0], kv_len)

    def _cell(self, x: float) -> int:
        """The grid cell of ``x``: ``GRID[i] <= x < GRID[i + 1]``; -1 below the grid, its last index at or
        beyond its end."""
        g, last = self._GRID_L, len(self._GRID_L) - 1
        if x <= 1.0:
            return -1
        i = int(math.log2(x) * 32.0)
        if i >= last:
            return last
        if g[i] > x:  # log2 rounding at a grid point
            return i - 1
        return i + 1 if g[i + 1] <= x else i

    def _interp(self, tab: list, x: float) -> float:
        """``np.interp(x, GRID, tab)``, in Python (its formula, so the same bits)."""
        i, g = self._cell(x), self._GRID_L
        if i < 0:
            return tab[0]
        if i >= len(g) - 1:
            return tab[-1]
        return (tab[i + 1] - tab[i]) / (g[i + 1] - g[i]) * (x - g[i]) + tab[i]

    def _interp_run(self, tab: list, kv0: int, n: int, k: int) -> list:
        """``_interp(tab, (kv0 + n * j) / n + 1)`` for j < k: the KV length grows by one token a step, so
        consecutive steps share a grid cell and its slope (the same formula, fewer lookups)."""
        g, last = self._GRID_L, len(self._GRID_L) - 1
        out, j = [], 0
        while j < k:
            x = (kv0 + n * j) / n + 1.0
            i = self._cell(x)
            if i < 0 or i >= last:
                out.append(tab[0] if i < 0 else tab[-1])
                j += 1
                continue
            lo, hi, base = g[i], g[i + 1], tab[i]
            slope = (tab[i + 1] - base) / (hi - lo)
            while True:
                out.append(slope * (x - lo) + base)
                j += 1
                if j == k:
                    break
                x = (kv0 + n * j) / n + 1.0
                if x >= hi:
                    break
        return out

    def _core(self, name: str, batch: float, q_len: float, kv_len: float) -> float:
        if name == self.CORE_D:
            return self._decode_core(batch, q_len, kv_len)
        return self._ctx_core(batch, q_len, kv_len - q_len)

    def _ctx_core(self, batch: float, q_len: float, ctx: float) -> float:
        """A prompt chunk of ``q_len`` tokens after ``ctx`` cached ones: bilinear interpolation in
        (log2 q_len, log2 ctx) between timing-model evaluations on a 1/32-octave grid (the attention
        core is close to a product of the two: <= 2e-4 over random shapes of four models), so the
        chunks of long prompts share a few hundred evaluations instead of one each. Evaluated exactly
        (memoised) where MLA's up-projection of the cached latents is part of it: a GEMM over the
        cached tokens whose wave quantisation steps do not interpolate."""
        if ctx <= 0 or q_len <= 0 or self._ctx_exact:
            key = (batch, q_len, ctx)
            hit = self._memo.get(key)
            if hit is None:
                if len(self._memo) > 200_000:
                    self._memo.clear()
                hit = self._memo[key] = float(self._core_s(self.CORE_P, batch, q_len, q_len + max(ctx, 0.0))[0])
            return hit
        lq, lc = 32.0 * math.log2(q_len), 32.0 * math.log2(ctx)
        iq, ic = math.floor(lq), math.floor(lc)
        fq, fc = lq - iq, lc - ic
        corners = ((iq, ic), (iq + 1, ic), (iq, ic + 1), (iq + 1, ic + 1))
        memo = self._ctx_grid
        todo = [c for c in corners if (batch,) + c not in memo]
        if todo:
            if len(memo) > 200_000:
                memo.clear()
                todo = list(corners)
            q = np.array([2.0 ** (i / 32.0) for i, _ in todo])
            kv = q + np.array([2.0 ** (j / 32.0) for _, j in todo])
            for c, v in zip(todo, self._core_s(self.CORE_P, np.full(len(todo), float(batch)), q, kv).tolist()):
                memo[(batch,) + c] = v
        v00, v10, v01, v11 = (memo[(batch,) + c] for c in corners)
        return (1 - fc) * ((1 - fq) * v00 + fq * v10) + fc * ((1 - fq) * v01 + fq * v11)

    def _fresh_core(self, ps_dev: int, prefill_seqs: int) -> list:
        """Prefill-core times of ``prefill_seqs`` sequences with no cached context, indexed by the
        step's prefill tokens (0 .. the step budget): the same TimingModel evaluation as ``_core`` for
        each of those shapes, done in one vectorised call the first time the sequence count is seen
        (elementwise, so every entry equals the one-shape result bit for bit)."""
        key = (ps_dev, prefill_seqs)
        tab = self._fresh.get(key)
        if tab is None:
            pl = np.arange(len(self.lin_attn), dtype=float) / prefill_seqs
            tab = self._fresh[key] = self._core_s(self.CORE_P, np.full(len(pl), float(ps_dev)), pl, 0.0 + pl).tolist()
        return tab

    def _rank_arrays(self, ranks: DecodeRanks) -> tuple[np.ndarray, np.ndarray]:
        if len(ranks.seqs) != self.dp or len(ranks.kv_tokens) != self.dp:
            raise ValueError(f"DecodeRanks has {len(ranks.seqs)} ranks; the plan has attention dp = {self.dp}")
        return np.asarray(ranks.seqs, dtype=np.int64), np.asarray(ranks.kv_tokens, dtype=float)

    def _rank_cores(self, seqs: np.ndarray, kv: np.ndarray, q_len: float) -> np.ndarray:
        """Decode-core time of every rank (``kv``: cached tokens per rank, one row per step or a
        single row), by the same tabulated interpolation as ``cost``; 0 for a rank without sequences.
        One lookup per distinct sequence count, not per rank or step."""
        core = np.zeros(np.shape(kv))
        for b in np.unique(seqs[seqs > 0]).tolist():
            m = seqs == b
            core[..., m] = np.interp(kv[..., m] / b + q_len, self.GRID, self._decode_tab(float(b), q_len)[1])
        return core

    def decode_stretch(self, n: int, kv0: int, k: int, ranks: DecodeRanks | None = None
                       ) -> tuple[list, list, list]:
        """``k`` consecutive decode steps of ``n`` sequences (one new token each) holding ``kv0`` cached
        tokens at the first: each step's time, decode-attention and decode-FFN seconds, as ``cost``
        gives them step by step. With ``ranks`` (the spread at the first step; each rank's KV grows by
        its sequence count a step) a step's decode attention is its busiest rank's (a k x dp evaluation)."""
        if ranks is not None and self.dp > 1:
            seqs, kv = self._rank_arrays(ranks)
            kv_steps = kv[None, :] + np.arange(k, dtype=float)[:, None] * seqs[None, :]
            attn = self._rank_cores(seqs, kv_steps, 1.0) + self.lin_attn[seqs][None, :]
            attn = attn.max(axis=1)  # the busiest rank's attention side, per step
            busy = int(seqs.max())
            lin_f = float(self.lin_ffn[busy]) + float(self.routed[self._routed_at(0, 0.0, n, 1.0, n)])
            times = attn + (lin_f + float(self.lin_other[busy]) + float(self.head[busy]))
            return times.tolist(), attn.tolist(), [lin_f] * k
        ds_dev, lin_a, lin_f, fixed = self._stretch_terms(n)
        if k <= 32:  # up to a few dozen steps: scalar Python beats numpy's per-call cost
            cores = self._interp_run(self._decode_tab(ds_dev, 1.0)[0], kv0, n, k)
            return [fixed + c for c in cores], [c + lin_a for c in cores], [lin_f] * k
        cores = np.interp((kv0 + n * np.arange(k)) / n + 1.0, self.GRID, self._decode_tab(ds_dev, 1.0)[1])
        return (fixed + cores).tolist(), (cores + lin_a).tolist(), [lin_f] * k

    def _routed_at(self, prefill_seqs: int, prefill_len: float, decode_seqs: int, decode_len: float, total: int) -> int:
        """Where a step reads the routed-expert table: at its ``total`` tokens when one expert group takes every
        token, else at groups x the busiest group's tokens (see ``__init__``)."""
        g = self._groups
        if g <= 1:
            return total
        busiest = -(-prefill_seqs // g) * prefill_len + -(-decode_seqs // g) * decode_len
        return min(int(round(busiest * g)), len(self._routed) - 1)

    def _stretch_terms(self, n: int) -> tuple:
        """The batch-size-only terms of a pure-decode step of ``n`` sequences (summed in ``cost``'s order)."""
        parts = self._stretch_parts.get(n)
        if parts is None:
            ds_dev = -(-n // self.dp)
            routed = self._routed[self._routed_at(0, 0.0, n, 1.0, n)]
            lin_a, lin_f = self._lin_attn[ds_dev], self._lin_ffn[ds_dev] + routed
            fixed = lin_a + lin_f + self._lin_other[ds_dev] + self._head[ds_dev]
            parts = self._stretch_parts[n] = (float(ds_dev), lin_a, lin_f, fixed)
        return parts

    def decode_ends(self, n: int, kv0: int, k: int, start: float, extra: float = 0.0) -> tuple[list, float, float]:
        """``decode_stretch(n, kv0, k)`` (even ranks) folded into the step ends: each step's end, ``start``
        plus the step times one by one, a step's time being its ``cost`` time plus ``extra`` (an engine's
        overhead: ``(time + extra)``, added in that order). The quadrant split comes as two floats, not
        per-step lists: a step's decode attention is its time less the first (the batch-size-only terms
        but the attention ops'), its decode FFN the second. One pass of scalar Python over the steps: each
        grid cell's slope is found once (``_interp_run``'s walk, written out here on purpose: building the
        cores first and accumulating after costs P/D chat ~10%)."""
        terms = self._ends_terms.get(n)
        if terms is None:  # (the batch's table, looked up once per batch size)
            ds_dev, lin_a, lin_f, fixed = self._stretch_terms(n)
            terms = self._ends_terms[n] = (lin_a, lin_f, fixed, self._decode_tab(ds_dev, 1.0)[0])
        lin_a, lin_f, fixed, tab = terms
        g, last, log2 = self._GRID_L, len(self._GRID_L) - 1, math.log2
        ends = []
        end_app = ends.append
        s, kv, stop = start, kv0, kv0 + n * k
        while kv < stop:
            x = kv / n + 1.0
            if x <= 1.0:  # the grid cell of x, GRID[i] <= x < GRID[i + 1] (``_cell``, inlined)
                i = -1
            else:
                i = int(log2(x) * 32.0)
                if i >= last:
                    i = last
                elif g[i] > x:  # log2 rounding at a grid point
                    i -= 1
                elif g[i + 1] <= x:
                    i += 1
            if i < 0 or i >= last:  # off the grid: a constant core
                s += fixed + (tab[0] if i < 0 else tab[-1]) + extra
                end_app(s)
                kv += n
                continue
            lo, hi, base = g[i], g[i + 1], tab[i]
            slope = (tab[i + 1] - base) / (hi - lo)
            while True:  # the steps in this cell
                s += fixed + (slope * (x - lo) + base) + extra
                end_app(s)
                kv += n
                if kv >= stop:
                    break
                x = kv / n + 1.0
                if x >= hi:
                    break
        return ends, (fixed - lin_a) + extra, lin_f

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens,
             ranks: DecodeRanks | None = None):
        dp = self.dp
        ps_dev = -(-prefill_seqs // dp)
        ds_dev = -(-decode_seqs // dp)
        pl = prefill_tokens / prefill_seqs if prefill_seqs else 0.0
        pc = prefill_ctx_tokens / prefill_seqs if prefill_seqs else 0.0
        dk = decode_kv_tokens / decode_seqs if decode_seqs else 0.0
        tok_p, tok_d = prefill_tokens, decode_seqs * decode_len
        T = tok_p + tok_d
        if not prefill_seqs:
            core_p = 0.0
        elif prefill_ctx_tokens == 0 and 0 < prefill_tokens < len(self._lin_attn):  # a fresh prompt (chunk)
            core_p = self._fresh_core(ps_dev, prefill_seqs)[prefill_tokens]
        else:
            core_p = self._core(self.CORE_P, ps_dev, pl, pc + pl)
        share_p = tok_p / T if T else 0.0
        if ranks is not None and decode_seqs and dp > 1:
            # each rank's attention side: its decode core plus the per-rank attention ops on its tokens
            seqs, kv = self._rank_arrays(ranks)
            tok = (ps_dev * pl + seqs * decode_len).astype(np.int64)
            core_r = self._rank_cores(seqs, kv, float(decode_len))
            i = int(np.argmax(core_r + self.lin_attn[tok]))
            core_d, lin_a = float(core_r[i]), float(self.lin_attn[tok[i]])
            busy = int(tok.max())  # the other per-rank ops see the rank with the most tokens
            logits = ps_dev + int(seqs.max()) * decode_len
        else:
            core_d = self._decode_core(float(ds_dev), float(decode_len), dk + decode_len) if decode_seqs else 0.0
            busy = int(ps_dev * pl + ds_dev * decode_len)  # tokens on the busiest attention-DP rank
            logits = ps_dev + ds_dev * decode_len
            lin_a = self._lin_attn[busy]
        lin_f = self._lin_ffn[busy] + self._routed[self._routed_at(prefill_seqs, pl, decode_seqs, decode_len, T)]
        total = lin_a + lin_f + self._lin_other[busy] + self._head[logits] + core_p + core_d
        return StepCost(total, core_p + share_p * lin_a, share_p * lin_f, core_d + (1 - share_p) * lin_a,
                        (1 - share_p) * lin_f)
