"""Pipeline-parallel prefill in the DES: a prompt chunk flows through the stages as a micro-batch.

The wrapped step cost model spreads a step's sequences over ``pp`` micro-batches and times the step as
the first stage's occupancy (``pp`` micro-batches back to back: when the pipeline takes the next
step). A prefill-only step with fewer prompts than stages would leave those micro-batches fractions of
a prompt. Engines run chunked pipeline-parallel prefill instead: the step's chunk is one micro-batch,
it enters stage 1 while the previous chunk moves on to stage 2, and it leaves the last stage
``pp - 1`` stage times after the next step could start. ``PipelinedPrefill`` costs such a step as
``pp`` copies of the chunk (one per micro-batch: the chunk's full forward pass ``F``) and charges
``F / pp``, the chunk's stage time, with the other ``(pp - 1) / pp`` as the step's ``drain_s``; the
prompts it completes are prefilled (and have their first token) only then. A prompt of ``n`` chunks
thus has its first token after ``(n + pp - 1)`` stage times, as ``whatif`` composes TTFT: it falls
with PP depth when the prompt is chunked (a pool's ``chunk_tokens``), and a whole prompt in one chunk
gains nothing. A step that also decodes keeps the wrapped model's spread (every stage busy) and
carries the same drain for the prompts it completes.
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
        kw = {} if ranks is None else {"ranks": ranks}  # decode ranks pass through
        pp = self.pp
        if pp <= 1 or not prefill_seqs:
            return self.inner.cost(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len,
                                   decode_kv_tokens, **kw)
        if not decode_seqs and prefill_seqs < pp:  # the chunk is one micro-batch: pp copies time its full pass
            c = self.inner.cost(prefill_seqs * pp, prefill_tokens * pp, prefill_ctx_tokens * pp, 0, decode_len, 0)
            stage = c.time_s / pp
            return c._replace(time_s=stage, prefill_attention_s=c.prefill_attention_s / pp,
                              prefill_ffn_s=c.prefill_ffn_s / pp, decode_attention_s=c.decode_attention_s / pp,
                              decode_ffn_s=c.decode_ffn_s / pp, drain_s=c.time_s - stage)
        c = self.inner.cost(prefill_seqs, prefill_tokens, prefill_ctx_tokens, decode_seqs, decode_len,
                            decode_kv_tokens, **kw)
        return c._replace(drain_s=c.time_s * (pp - 1) / pp)  # the last micro-batch's way through the other stages

    @property
    def decode_stretch(self):
        return getattr(self.inner, "decode_stretch", None)

    @property
    def decode_ends(self):
        """The wrapped model's ``decode_ends`` (a pure-decode step is not split), where it has one."""
        return getattr(self.inner, "decode_ends", None)
