"""Pipeline-parallel prefill in the DES: a prompt chunk flows through the stages as micro-batches.

The step cost model spreads a step's sequences over ``pp`` micro-batches, so a step with fewer
prefill sequences than stages would leave stages idle and cost a whole chunk per stage in turn.
Engines pipeline chunked prefill instead: the chunk's pieces enter stage 1 one after another and
flow down the pipeline. ``PipelinedPrefill`` splits each prefilling sequence's chunk into enough
pieces to fill the stages (each piece attends to the pieces before it, so the cached context grows
piece by piece) before asking the wrapped model, so a single long prompt's TTFT falls with PP
depth as ``whatif`` predicts. Decode tokens cannot be split: a lone decode still crosses every stage.
"""

from __future__ import annotations

from .stepcost import DecodeRanks, StepCostModel


class PipelinedPrefill:
    def __init__(self, inner: StepCostModel, pp: int):
        self.inner, self.pp = inner, int(pp)
        self.wants_ranks = bool(getattr(inner, "wants_ranks", False))
        self.attention_dp = int(getattr(inner, "attention_dp", 1))

    def cost(self, prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len, decode_kv_tokens,
             ranks: DecodeRanks | None = None):
        kw = {} if ranks is None else {"ranks": ranks}  # decode ranks pass through; only prefill is split
        if 0 < prefill_seqs < self.pp and prefill_tokens >= self.pp * prefill_seqs:
            m = self.pp // prefill_seqs  # pieces per sequence
            # piece j of a chunk of c tokens sees the original context plus j * c / m tokens before it
            ctx = prefill_ctx_tokens * m + prefill_tokens * (m - 1) / 2
            return self.inner.cost(prefill_seqs * m, prefill_tokens, int(round(ctx)), decode_seqs, decode_len,
                                   decode_kv_tokens, **kw)
        return self.inner.cost(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len,
                               decode_kv_tokens, **kw)

    @property
    def decode_stretch(self):
        return getattr(self.inner, "decode_stretch", None)

    @property
    def decode_ends(self):
        """The wrapped model's ``decode_ends`` (a pure-decode step is not split), where it has one."""
        return getattr(self.inner, "decode_ends", None)
