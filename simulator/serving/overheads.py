"""Step overheads an engine adds on top of the timing model's GEMMs, attention and collectives.

``OverheadStepCost`` wraps any ``StepCostModel`` and adds, per step:

- the engine's exposed CPU time (scheduling, input preparation);
- a per-sequence cost (sampling, block tables, detokenisation) for every scheduled sequence;
- the kernels the timing model does not list (norms, RoPE, quantisation, residuals): kernels per
  layer x layers, each at its graph-replay cost when the step replays a CUDA graph and at the host
  launch cost otherwise. A pure-decode step replays a full graph when its batch is within the
  engine's captured sizes; a prefill or mixed step replays piecewise graphs (attention eager, the
  unlisted kernels captured) when its tokens are within the engine's ``prefill_graph_max_tokens``
  (vLLM's default FULL_AND_PIECEWISE mode), and runs eagerly otherwise;
- a fixed latency for a step that prefills through MoE layers (routing and all-to-all set-up);
- with speculative decoding (MTP or a draft model), the draft passes: ``draft_tokens x
  draft_cost_fraction`` of a plain decode step, as ``whatif`` counts them.

The extra time is added to ``time_s`` only; the quadrant fields keep the timing model's split, so
``time_s`` minus their sum is the engine's own overhead.
"""

from __future__ import annotations

from .profiles import EngineProfile
from .stepcost import DecodeRanks, StepCost, StepCostModel, decode_stretch_costs


class OverheadStepCost:
    def __init__(self, inner: StepCostModel, profile: EngineProfile, num_layers: int, moe: bool,
                 draft_cost_fraction: float = 0.0):
        self.inner, self.profile = inner, profile
        self.num_layers, self.moe = int(num_layers), bool(moe)
        self.draft_cost_fraction = float(draft_cost_fraction)
        self._decode_extra: dict[int, float] = {}  # overhead of a pure-decode step by batch size
        self._extra: dict[tuple, float] = {}  # overhead of any other step by (sequences, CUDA graph, prefill)
        self._prefill: dict[tuple, StepCost] = {}  # prefill-only steps by (sequences, tokens, cached tokens)
        self.wants_ranks = bool(getattr(inner, "wants_ranks", False))  # the inner model times attention-DP ranks
        self.attention_dp = int(getattr(inner, "attention_dp", 1))

    def overhead_s(self, prefill_seqs: int, prefill_tokens: int, decode_seqs: int,
                   decode_tokens: int | None = None) -> float:
        p = self.profile
        if prefill_tokens == 0:  # uniform decode batch: full CUDA graph up to the captured batch size
            if p.cuda_graph_padding:
                graph = decode_seqs <= p.cuda_graph_max_bs
            else:  # only the captured sizes themselves (1-32 and the powers of two), and with attention DP only when
                # every rank holds the same captured batch (TensorRT-LLM's all_batch_size_equal check)
                per, uneven = divmod(decode_seqs, self.attention_dp)
                graph = not uneven and per <= p.cuda_graph_max_bs and (per <= 32 or per & (per - 1) == 0)
        else:  # prefill / mixed step: piecewise graphs (attention eager) up to the captured token count
            tokens = prefill_tokens + (decode_seqs if decode_tokens is None else decode_tokens)
            graph = tokens <= p.prefill_graph_max_tokens
        key = (prefill_seqs + decode_seqs, graph, prefill_tokens > 0)  # (everything the overhead depends on)
        t = self._extra.get(key)
        if t is None:
            t = self._extra[key] = self._overhead_s(p, *key)
        return t

    def _overhead_s(self, p: EngineProfile, seqs: int, graph: bool, prefill: bool) -> float:
        per_kernel = p.kernel_floor_s if graph else max(p.kernel_floor_s, p.kernel_launch_s)
        t = p.step_cpu_s + p.per_seq_s * seqs
        t += p.kernels_per_layer * self.num_layers * per_kernel
        if self.moe and prefill:
            t += p.moe_prefill_s
        return t

    PREFILL_MEMO = 100_000  # prefill-only step costs kept (cleared when full)

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens,
             ranks: DecodeRanks | None = None):
        if not decode_seqs:  # a prefill-only step (a P/D prefill replica's every step): by its prompt shape
            key = (prefill_seqs, prefill_tokens, prefill_ctx_tokens)
            hit = self._prefill.get(key)
            if hit is None:
                if len(self._prefill) >= self.PREFILL_MEMO:
                    self._prefill.clear()
                hit = self._prefill[key] = self._cost(prefill_seqs, prefill_tokens, prefill_ctx_tokens, 0,
                                                      decode_len, 0)
            return hit
        return self._cost(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens,
                          ranks)

    def _cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens,
              ranks: DecodeRanks | None = None):
        if ranks is None:
            c = self.inner.cost(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len,
                                decode_kv_tokens)
        else:
            c = self.inner.cost(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len,
                                decode_kv_tokens, ranks=ranks)
        if not prefill_seqs and not prefill_tokens and decode_seqs:  # a pure-decode step: by batch size
            extra = self._decode_extra.get(decode_seqs)
            if extra is None:
                extra = self._decode_extra[decode_seqs] = self.overhead_s(0, 0, decode_seqs)
        else:
            extra = self.overhead_s(prefill_seqs, prefill_tokens, decode_seqs, decode_seqs * max(int(decode_len), 1))
        if decode_seqs and decode_len > 1 and self.draft_cost_fraction:
            kw = {} if ranks is None else {"ranks": ranks}
            base = self.inner.cost(0, 0, 0, decode_seqs, 1, decode_kv_tokens, **kw).time_s
            extra += (decode_len - 1) * self.draft_cost_fraction * base
        return StepCost(c.time_s + extra, c.prefill_attention_s, c.prefill_ffn_s, c.decode_attention_s,
                        c.decode_ffn_s, c.drain_s)

    def decode_stretch(self, n: int, kv0: int, k: int, ranks: DecodeRanks | None = None
                       ) -> tuple[list, list, list]:
        """``k`` pure-decode steps (see ``TabulatedStepCost.decode_stretch``) with this engine's overheads;
        ``ranks``: the attention-DP spread at the first step (None: even)."""
        times, attn, ffn = decode_stretch_costs(self.inner, n, kv0, k, ranks)
        extra = self._decode_extra.get(n)
        if extra is None:
            extra = self._decode_extra[n] = self.overhead_s(0, 0, n)
        return [t + extra for t in times], attn, ffn

    @property
    def decode_ends(self):
        """``decode_ends(n, kv0, k, start)``: ``decode_stretch`` (even ranks) folded into the step ends (see
        ``TabulatedStepCost.decode_ends``), where the wrapped model has it (None otherwise)."""
        inner = getattr(self.inner, "decode_ends", None)
        if inner is None or isinstance(self.inner, OverheadStepCost):
            return None
        extras = self._decode_extra

        def ends(n: int, kv0: int, k: int, start: float) -> tuple[list, list, list]:
            extra = extras.get(n)
            if extra is None:
                extra = extras[n] = self.overhead_s(0, 0, n)
            return inner(n, kv0, k, start, extra)  # each step: (the wrapped model's time + extra)

        return ends


__all__ = ["OverheadStepCost", "StepCost"]
