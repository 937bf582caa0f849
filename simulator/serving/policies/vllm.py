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

    def plan(self, decoding, prefilling, remaining, budget, q_len):
        if not len(prefilling):  # every running decode, nothing else
            return decoding, prefilling, remaining
        left = budget - len(decoding) * q_len
        chunks = greedy_chunks(remaining, left)
        take = chunks > 0
        return decoding, prefilling[take], chunks[take]


__all__ = ["VLLMPolicy"]
