"""Disaggregation in time: the attention/FFN ping-pong step, and the P/D KV transfer.

A decode pool whose FFN runs on a separate pool splits its batch into ``mb`` micro-batches that
alternate between the two: micro-batch i's attention runs while micro-batch i-1's FFN runs. Per
layer, one micro-batch needs its attention, the activations' trip to the FFN pool, the FFN and the
trip back, in that order; each pool works through all ``mb`` micro-batches per layer. So a layer
takes

    cycle = max(mb * t_attn, mb * t_ffn, mb * t_link, t_attn + t_a2f + t_ffn + t_f2a)

(``t_*`` for one micro-batch; ``t_link`` the busier direction of the link), and a step takes
``layers * cycle`` plus the LM head for every micro-batch. With one micro-batch nothing overlaps
and the step is at least attention + transfers + FFN; neither pool is ever busier than the step,
so utilisation stays <= 1. Quadrant fields report each pool's busy time (attention pool:
attention; FFN pool: FFN), split between prefill and decode by token share.

With attention DP on the attention pool and ``ranks`` given, ``t_attn`` is the busiest rank's: each
distinct rank shape (its sequences, its mean KV length) is timed as if every rank held it, and the
largest attention time of one micro-batch replaces the even spread's (the FFN side keeps the even
spread's tokens).

Built on the op builder and TimingModel through ``analysis.whatif.time_phase``; memoised on the
same quantised shape key as ``stepcost.AnalyticStepCost``.
"""

from __future__ import annotations

import math
from itertools import accumulate, repeat

import numpy as np

from ..analysis.whatif import time_phase
from ..ops.build import StepShape
from ..plan import PhasePlan, kv_link_latency_s
from ..plan import kv_link as plan_kv_link
from ..specs.deployment import Deployment, Pool
from ..specs.model import ModelSpec
from ..timing.base import TimingModel
from ..timing.memory import kv_bytes_per_token_model
from ..timing.roofline import RooflineModel
from .stepcost import DecodeRanks, StepCost, memo_key


class PingPongStepCost:
    def __init__(self, model: ModelSpec, plan: PhasePlan, timing: TimingModel | None = None,
                 kv_precision: str = "bf16", kv_scale_tokens: int = 128):
        if not plan.af_disaggregated:
            raise ValueError("PingPongStepCost is for attention/FFN-disaggregated plans")
        self.model, self.plan = model, plan
        self.timing = timing or RooflineModel()
        self.kw = dict(kv_precision=kv_precision, kv_scale_tokens=kv_scale_tokens)
        self._memo: dict[tuple, StepCost] = {}
        self._parts: dict[tuple, dict] = {}  # memo key -> ``parts`` (steps with decode ranks only)
        self._runs: dict[tuple, tuple] = {}  # (decode seqs, KV exponent) -> (the KV total ending it, the cost)
        self.attention_dp = plan.attention.dp
        self.wants_ranks = plan.attention.dp > 1

    # decode-only misses are filled a block of quantised KV lengths at a time (one vectorised evaluation;
    # elementwise, so each entry equals the one-shape result): a decode batch's KV grows step by step
    DECODE_BLOCK = 64  # 1/16-octave grid points per fill (four octaves)
    BATCH_BLOCK = 32  # batch sizes per fill

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens,
             ranks: DecodeRanks | None = None):
        key = memo_key(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens)
        if ranks is not None and decode_seqs and self.wants_ranks:
            return self._ranked(key, ranks)
        hit = self._memo.get(key)
        if hit is None:
            if not prefill_seqs and decode_seqs and decode_kv_tokens > 0:
                self._fill_decode(decode_seqs, decode_len, round(16 * math.log2(decode_kv_tokens / decode_seqs)))
                hit = self._memo.get(key)
            if hit is None:
                hit = self._memo[key] = self._evaluate(*key)
        return hit

    def decode_stretch(self, n: int, kv0: int, k: int, ranks: DecodeRanks | None = None) -> tuple[list, list, list]:
        """``k`` pure-decode steps of ``n`` sequences from ``kv0`` cached tokens, as ``cost`` gives them step
        by step: the steps fall into runs that share one quantised memo key (the mean KV length moves by
        one token a step), found by bisection on the key, so a stretch costs a few lookups, not k."""
        if ranks is not None and self.wants_ranks:
            steps = [self.cost(0, 0, 0, n, 1, kv0 + i * n, ranks=ranks.grown(i)) for i in range(k)]
            return [c.time_s for c in steps], [c.decode_attention_s for c in steps], [c.decode_ffn_s for c in steps]

        times, attn, ffn = [], [], []
        for c, m in self._equal_runs(n, kv0, k):
            times += [c.time_s] * m
            attn += [c.decode_attention_s] * m
            ffn += [c.decode_ffn_s] * m
        return times, attn, ffn

    def _equal_runs(self, n: int, kv0: int, k: int):
        """The ``k`` decode steps of ``n`` sequences from ``kv0`` cached tokens as runs of steps that share one
        quantised memo key, in step order: (the run's ``cost``, its length). The key rounds the mean KV length
        to 1/16 octave (``_q``'s exponent ``round(16 * log2(kv / n))``), which never decreases as the KV total
        ``kv`` grows by ``n`` a step; so a run lasts until ``kv`` reaches the first total whose exponent moves
        on, found once per (``n``, exponent) and kept with the run's cost."""
        log2, runs = math.log2, self._runs
        j = 0
        while j < k:
            kv = kv0 + j * n
            if kv <= 0:  # no KV (the key's 0.0): one step at a time
                yield self.cost(0, 0, 0, n, 1, kv), 1
                j += 1
                continue
            r = round(16 * log2(kv / n))
            hit = runs.get((n, r))
            if hit is None:
                hit = runs[(n, r)] = (self._exponent_end(n, r, kv), self.cost(0, 0, 0, n, 1, kv))
            end, c = hit
            # the first step whose KV total reaches ``end`` (at least the next one, should a libm's log2 ever fail to
            # be monotone and a threshold found from a larger total be served here)
            lo = j + max(1, -(-(end - kv) // n))
            if lo > k:
                lo = k
            yield c, lo - j
            j = lo

    @staticmethod
    def _exponent_end(n: int, r: int, kv: int) -> int:
        """The least KV total above ``kv`` whose exponent ``round(16 * log2(total / n))`` exceeds ``r`` (the
        exponent of ``kv``): from the closed form ``n * 2^((r + 1/2) / 16)``, checked on the exponent itself."""
        log2 = math.log2

        def past(total: int) -> bool:
            return round(16 * log2(total / n)) > r

        t = max(kv + 1, math.ceil(n * 2.0 ** ((r + 0.5) / 16)))
        while t > kv + 1 and past(t - 1):
            t -= 1
        while not past(t):
            t += 1
        return t

    def decode_ends(self, n: int, kv0: int, k: int, start: float, extra: float = 0.0) -> tuple[list, list, list]:
        """``decode_stretch(n, kv0, k)`` (even ranks) folded into the step ends: ``start`` plus the step times
        one by one, a step's time being ``cost``'s plus ``extra`` (in that order), and each step's decode
        attention and FFN seconds."""
        ends, attn, ffn = [], [], []
        s = start
        for c, m in self._equal_runs(n, kv0, k):
            t = c.time_s + extra
            ends += accumulate(repeat(t, m - 1), initial=s + t)  # s + t, then + t a step (as step by step)
            s = ends[-1]
            attn += [c.decode_attention_s] * m
            ffn += [c.decode_ffn_s] * m
        return ends, attn, ffn

    def _parts_of(self, key: tuple, stride: int = 1) -> dict:
        p = self._parts.get(key)
        if p is None:
            ps, _, _, ds, dl, dk = key
            if not ps and ds and dk > 0:  # decode only: fill a block of neighbouring shapes in one evaluation
                self._fill_decode(ds, dl, round(16 * math.log2(dk)), stride)
                p = self._parts.get(key)
            if p is None:
                p = self._parts[key] = self.parts(*key)
        return p

    def _ranked(self, key: tuple, ranks: DecodeRanks) -> StepCost:
        """The step with one micro-batch's attention time taken from the busiest rank shape."""
        ps, pl, pc, ds, dl, dk = key
        dp = self.plan.attention.dp
        p = dict(self._parts_of(key))  # memoised per rank shape, not per combination of them
        p["attn"] = max(self._parts_of((ps, pl, pc, s * dp, dl, q), dp)["attn"] for s, q in ranks.shapes())
        return self._combine(p, ps, pl, ds, dl)

    def _fill_decode(self, ds, dl, i0: int, stride: int = 1) -> None:
        """Memoise decode-only steps (and their ``parts``) for the block of ``BATCH_BLOCK`` batch sizes holding
        ``ds``, in steps of ``stride`` (batch sizes drift by a few sequences between steps; the rank shapes of
        attention DP are multiples of dp), at the ``DECODE_BLOCK`` quantised KV lengths of the block holding grid index
        ``i0``."""
        # blocks on a fixed grid (batch sizes 1-B, B+1-2B, ... times ``stride``; KV indices from a multiple of
        # DECODE_BLOCK), so no two fills overlap: a fill costs ~10 ms of op building whatever its size, and
        # blocks placed around each miss re-filled a few new shapes at a time
        bb = self.BATCH_BLOCK
        lo = stride * (1 + bb * ((max(ds // stride, 1) - 1) // bb))
        batches = range(lo, lo + bb * stride, stride)
        i0 -= i0 % self.DECODE_BLOCK
        dks = [2.0 ** (i / 16) for i in range(i0, i0 + self.DECODE_BLOCK)]  # the values ``_q`` yields
        todo = [(b, dk) for b in batches for dk in dks
                if (0, 0.0, 0.0, b, dl, dk) not in self._memo or (0, 0.0, 0.0, b, dl, dk) not in self._parts]
        mbs = [self._micro_batches(b) for b, _ in todo]
        shape = StepShape(prefill_seqs=0.0, prefill_len=0.0, prefill_ctx=0.0,
                          decode_seqs=np.array([b / mb for (b, _), mb in zip(todo, mbs)]), decode_len=dl,
                          decode_kv=np.array([dk for _, dk in todo]))
        pt = time_phase(self.model, self.plan, shape, "step", self.timing, **self.kw)
        cols = self._columns(pt, mbs)
        for j, (b, dk) in enumerate(todo):
            key = (0, 0.0, 0.0, b, dl, dk)
            col = self._parts[key] = cols[j]
            self._memo[key] = self._combine(col, 0, 0.0, b, dl)

    def _micro_batches(self, seqs: float) -> int:
        """Micro-batches a step of ``seqs`` sequences ping-pongs in: the plan's, but never less than a whole
        sequence each (a lone sequence is one micro-batch, and nothing overlaps)."""
        return max(1, min(self.plan.micro_batches, math.ceil(seqs)))

    def parts(self, ps, pl, pc, ds, dl, dk) -> dict:
        """Per-layer times of one micro-batch (attention, FFN, each link direction), the head, layers."""
        mb = self._micro_batches(ps + ds)
        shape = StepShape(prefill_seqs=ps / mb, prefill_len=pl, prefill_ctx=pc, decode_seqs=ds / mb,
                          decode_len=dl, decode_kv=dk)
        return self._columns(time_phase(self.model, self.plan, shape, "step", self.timing, **self.kw), [mb])[0]

    @staticmethod
    def _masks(pt) -> tuple:
        names = np.array(pt.ops.names)
        a_mask, f_mask = pt.ops.mask("step_attention"), pt.ops.mask("step_ffn")
        xa, xf = names == "attn_to_ffn", names == "ffn_to_attn"
        return a_mask & ~xa, f_mask & ~xf, xa, xf

    def _columns(self, pt, mbs: list[int]) -> list[dict]:
        """Every evaluated shape's per-layer parts (one vectorised sum per part over the op rows; a shape's
        sums are the ones a single-shape evaluation gives, summed over the same rows in the same order), with
        ``mbs`` the micro-batches of each shape. The ops are one pipeline stage's (``layers / pp`` layers); a
        micro-batch crosses every layer of every stage."""
        attn, ffn, xa, xf = self._masks(pt)
        w = pt.times.weighted(pt.times.time_s)
        layers = float(self.model.num_layers)
        per_stage = layers / self.plan.pp
        sums = [np.ascontiguousarray(w[m].T).sum(axis=1).tolist() for m in (attn, ffn, xa, xf)]
        return [{"attn": a / per_stage, "ffn": f / per_stage, "a2f": x / per_stage, "f2a": y / per_stage, "head": h,
                 "layers": layers, "mb": mb}
                for a, f, x, y, h, mb in zip(*sums, np.asarray(pt.head_s, dtype=float).reshape(-1).tolist(), mbs)]

    def _evaluate(self, ps, pl, pc, ds, dl, dk) -> StepCost:
        return self._combine(self.parts(ps, pl, pc, ds, dl, dk), ps, pl, ds, dl)

    @staticmethod
    def _combine(p: dict, ps, pl, ds, dl) -> StepCost:
        mb, L = p["mb"], p["layers"]
        cycle = max(mb * p["attn"], mb * p["ffn"], mb * max(p["a2f"], p["f2a"]),
                    p["attn"] + p["a2f"] + p["ffn"] + p["f2a"])
        total = L * cycle + mb * p["head"]
        tok_p, tok_d = ps * pl, ds * dl
        share_p = tok_p / (tok_p + tok_d) if tok_p + tok_d else 0.0
        attn_busy, ffn_busy = L * mb * p["attn"], L * mb * p["ffn"]
        return StepCost(total, share_p * attn_busy, share_p * ffn_busy, (1 - share_p) * attn_busy,
                        (1 - share_p) * ffn_busy)


def kv_link(prefill: Pool, decode: Pool):
    """The link P/D KV transfers between replicas of these pools cross, and its bandwidth for one request
    (``plan.kv_link``: the scale-up fabric inside one domain, else the NICs; one attention-DP rank's tp x pp
    devices a side, the slower side bounding it)."""
    return plan_kv_link(prefill.plan, decode.plan)


def kv_shipping(dep: Deployment, prefill: Pool, decode: Pool) -> tuple[float, float, int]:
    """How one request's KV cache (all layers, at the deployment's KV precision and scale granularity) travels
    from a ``prefill`` replica to a ``decode`` replica: (link seconds per prompt token, latency, layers it streams
    over: 0 when it ships after the prefill). The bandwidth is the deployment's ``kv_transfer.bandwidth`` where it
    gives one, else ``kv_link``'s; the latency the deployment's ``kv_transfer.latency``, else the link's (the slower
    side's ``scale_up`` or ``scale_out`` latency). The engine schedules the link with these
    (``engine.Simulation.hand_off``)."""
    level, link_bw = kv_link(prefill, decode)
    per_token_s = kv_bytes_per_token_model(dep.model, dep.kv_precision, dep.kv_scale_tokens) / (
        dep.transfer.bandwidth_bytes_per_s or link_bw)
    latency_s = dep.transfer.latency_s
    if latency_s is None:  # the link's own (the profiles' sourced figure)
        latency_s = kv_link_latency_s(prefill.plan, decode.plan, level)
    return per_token_s, latency_s, dep.model.num_layers if dep.transfer.overlap_with_prefill else 0


def exposed_transfer_s(ship_s: float, latency_s: float, layers: int, prefill_s: float) -> float:
    """Seconds a transfer adds after its prefill on an idle link: ``ship_s`` of link time, streamed layer by layer
    over ``layers`` layers (0: not streamed) while the ``prefill_s`` prefill runs. Layer l can leave once layer l is
    prefilled, so the shipping starts a layer's time into the prefill and at least the last layer's share is
    exposed."""
    if layers:
        ship_s = max(ship_s - prefill_s * (1 - 1 / layers), ship_s / layers)
    return latency_s + ship_s


def kv_transfer_time_s(dep: Deployment, prefill: Pool, decode: Pool, prompt_tokens: float,
                       prefill_time_s: float) -> float:
    """Exposed time to ship one request's KV cache on an idle link (see ``kv_shipping``)."""
    per_token_s, latency_s, layers = kv_shipping(dep, prefill, decode)
    return exposed_transfer_s(per_token_s * prompt_tokens, latency_s, layers, prefill_time_s)
