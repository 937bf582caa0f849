"""TensorRT-LLM: in-flight batching. Every generation request runs each step; context (prefill)
requests join whole while they fit in what is left of ``max_num_tokens`` (context chunking is
off by default; a prompt longer than the whole budget is chunked, since it could never run
whole). The capacity scheduler's default, GUARANTEED_NO_EVICT, admits a request only if KV for
its prompt and its full output can be reserved, so a started request is never paused;
MAX_UTILIZATION (``preemption: recompute``) reserves as it goes and pauses the newest request.

Source: TensorRT-LLM docs, "Useful Runtime Options" (nvidia.github.io/TensorRT-LLM/performance/
performance-tuning-guide/useful-runtime-flags.html): GUARANTEED_NO_EVICT is the default capacity
scheduler policy; SchedulerConfig.context_chunking_policy defaults to None (llm-api reference).
"""

from __future__ import annotations

from .base import BatchPolicy


class TRTLLMPolicy(BatchPolicy):
    name = "trtllm"

    def __init__(self, no_evict: bool = True):
        self.no_evict = no_evict
        self.grows = not no_evict

    def admit_tokens(self, prompt_left, held, output_left):
        if self.no_evict:
            return prompt_left + held + output_left
        return super().admit_tokens(prompt_left, held, output_left)

    def reserved_tokens(self, target_prefill, generated, output, offset):
        if self.no_evict:
            return target_prefill + output - offset
        return super().reserved_tokens(target_prefill, generated, output, offset)

    def plan(self, n_decoding, remaining, budget, q_len):
        if not remaining:  # every generation request, nothing else
            return True, []
        left = budget - n_decoding * q_len
        chunks = [0] * len(remaining)
        for i, rem in enumerate(remaining):
            if rem <= left:
                chunks[i] = rem
                left -= rem
            else:
                if i == 0 and rem > budget and left > 0:  # could never run whole: chunk it
                    chunks[i] = left
                break
        return True, chunks
