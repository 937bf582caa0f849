"""The batching-policy interface: what an engine's scheduler decides, given the replica's state.

A policy is pure: it reads the requests' token counts and returns decisions; the replica
(``engine.Replica``) keeps the bookkeeping (queues, KV blocks, time). Every policy passes the
contract suite in ``tests/test_serving_policies.py``.

Decisions a policy owns:

- ``admit_tokens``: KV tokens a waiting request must reserve to be admitted (FCFS admission
  stops at the first request that does not fit, and at ``max_seqs``);
- ``reserved_tokens``: KV tokens an admitted request holds blocks for now (what eviction sees);
- ``grows``: whether that reservation grows by one token per decoded token (False when the whole
  request is reserved at admission, so no eviction can ever be needed);
- ``plan``: which decoding sequences run this step and which prompt chunks are prefilled, under
  the step's token budget (prefill/decode mixing and chunking).
"""

from __future__ import annotations

import numpy as np


class BatchPolicy:
    name = "base"
    grows = True

    def admit_tokens(self, prompt_left: int, held: int, output_left: int) -> int:
        """Tokens to reserve to admit a request with ``prompt_left`` prompt tokens to prefill (its
        whole prompt after a recompute), ``held`` tokens of KV already generated and kept (swap) and
        ``output_left`` tokens still to generate."""
        return prompt_left + held + 1

    def reserved_tokens(self, target_prefill: np.ndarray, generated: np.ndarray, output: np.ndarray,
                        offset: np.ndarray) -> np.ndarray:
        """KV tokens each admitted request holds blocks for (the whole prompt, reserved on admission,
        plus what it generated since)."""
        return target_prefill + generated - offset

    def plan(self, decoding: np.ndarray, prefilling: np.ndarray, remaining: np.ndarray, budget: int,
             q_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``decoding``: admitted requests whose prompt is cached (admission order); ``prefilling``:
        the others, with ``remaining`` prompt tokens each; ``budget``: tokens per step; ``q_len``:
        tokens a decoding sequence adds per step (1 + draft tokens). Returns the decoding requests to
        run, the requests to prefill and their chunk sizes (all > 0)."""
        raise NotImplementedError


def greedy_chunks(remaining: np.ndarray, budget: int) -> np.ndarray:
    """Chunk sizes filling ``budget`` in order: each request takes what is left of the budget."""
    if budget <= 0 or not len(remaining):
        return np.zeros(len(remaining), np.int64)
    before = np.concatenate(([0], np.cumsum(remaining)[:-1]))
    return np.minimum(np.maximum(budget - before, 0), remaining).astype(np.int64)
