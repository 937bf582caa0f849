"""SGLang: prefill first. Whenever admitted requests still have prompt to prefill, the step is a
prefill-only batch (chunks up to ``chunked_prefill_size``, here the step token budget) and the
running decodes pause; decode batches run when no prefill is pending. Mixed batches are off by
default (``--enable-mixed-chunk``). Out of KV, the newest request is retracted and recomputed.

Source: SGLang scheduler (python/sglang/srt/managers/scheduler.py, ``get_next_batch_to_run``: a new
prefill batch is tried first and runs if one can be formed, otherwise the running decode batch);
SGLang server arguments (``--chunked-prefill-size``, ``--enable-mixed-chunk`` default off).
"""

from __future__ import annotations

from .base import BatchPolicy, greedy_chunks


class SGLangPolicy(BatchPolicy):
    name = "sglang"

    def plan(self, n_decoding, remaining, budget, q_len):
        if remaining:
            return False, greedy_chunks(remaining, budget)
        return True, []
