"""vLLM v1: one token budget per step (``max_num_batched_tokens``); every running decode gets its
token(s) first, then prompt chunks fill what is left, in admission order (chunked prefill is
always on in v1). KV grows a block at a time; when it runs out the newest request is preempted
and recomputed.

Source: vLLM docs, "Optimization and Tuning" (docs.vllm.ai/en/v0.9.1/configuration/optimization.html):
in V1 chunked prefill is enabled by default and the scheduler prioritises decode requests, batching
all pending decodes before scheduling any prefill; preempted requests are recomputed.
"""

from __future__ import annotations

from .base import BatchPolicy, greedy_chunks


class VLLMPolicy(BatchPolicy):
    name = "vllm"

    def plan(self, n_decoding, remaining, budget, q_len):
        if not remaining:  # every running decode, nothing else
            return True, []
        return True, greedy_chunks(remaining, budget - n_decoding * q_len)


__all__ = ["VLLMPolicy"]
