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
- ``plan``: whether the decoding sequences run this step and which prompt chunks are prefilled,
  under the step's token budget (prefill/decode mixing and chunking).

Decodes run all together or not at all (every engine here batches all running decodes, or pauses
them all for a prefill batch), and with nothing to prefill they run (the engine does not ask). The
interface is on Python scalars and lists because it runs once per scheduled step in the simulator's
inner loop, where numpy's per-call cost on a handful of requests would dominate.
"""

from __future__ import annotations


class BatchPolicy:
    name = "base"
    grows = True

    def admit_tokens(self, prompt_left: int, held: int, output_left: int) -> int:
        """Tokens to reserve to admit a request with ``prompt_left`` prompt tokens to prefill (its
        whole prompt after a recompute), ``held`` tokens of KV already generated and kept (swap) and
        ``output_left`` tokens still to generate."""
        return prompt_left + held + 1

    def reserved_tokens(self, target_prefill, generated, output, offset):
        """KV tokens each admitted request holds blocks for (the whole prompt, reserved on admission,
        plus what it generated since); scalars or arrays alike."""
        return target_prefill + generated - offset

    def plan(self, n_decoding: int, remaining: list[int], budget: int, q_len: int) -> tuple[bool, list[int]]:
        """``n_decoding``: admitted requests whose prompt is cached; ``remaining``: prompt tokens
        still to prefill for each of the others (admission order); ``budget``: tokens per step;
        ``q_len``: tokens a decoding sequence adds per step (1 + draft tokens). Returns whether the
        decodes run and a chunk size for each prefilling request (0: not in this step)."""
        raise NotImplementedError


def greedy_chunks(remaining: list[int], budget: int) -> list[int]:
    """Chunk sizes filling ``budget`` in order: each request takes what is left of the budget."""
    out = []
    for rem in remaining:
        c = rem if rem < budget else max(budget, 0)
        out.append(c)
        budget -= c
    return out
