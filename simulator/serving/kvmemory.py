"""KV-cache capacity of one replica, sized the way its serving engine sizes it at startup.

One function, ``replica_kv_capacity``, serves the simulation (``runner.kv_capacity_tokens``) and the planner's
screen. It takes the per-device pieces of ``timing.memory.memory_fit`` (weights, activations at the step's token
budget, KV bytes per token: the one place those are computed) and applies the engine's rule
(``EngineMemory``, constants with their sources in ``engines.yaml``):

* vLLM: ``gpu_memory_utilization x (M - driver reserve) - (weights + max(forward activations, profile sampler)
  + non-torch)``;
* SGLang: ``mem_fraction_static x (M - context - distributed init) - weights``;
* TensorRT-LLM: ``free_gpu_memory_fraction x (M - context - distributed init - weights - activations)``,

with ``M`` the device's memory. Without an engine rule (``memory=None``) the engine-agnostic fit applies:
``M - weights - activations - memory_reserve`` (the hardware profile's reserve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..plan import PhasePlan
from ..specs.model import ModelSpec
from ..timing.memory import MemoryFit, memory_fit
from .profiles import EngineMemory

# paged KV-cache block size: vLLM's default ``block_size`` (16, CacheConfig in vllm/config). SGLang allocates by token
# (page size 1) and TensorRT-LLM by ``tokens_per_block`` blocks; a request's reservation in the simulation rounds up to
# 16 tokens for every engine, at most 15 tokens a request away from theirs
BLOCK_TOKENS = 16


@dataclass(frozen=True)
class KVCapacity:
    tokens: float  # KV tokens one replica holds (all its attention-DP ranks together); 0 when nothing is left
    kv_bytes_per_device: float  # the KV budget of one attention device (negative: the weights do not fit)
    fits: tuple[MemoryFit, ...]  # the memory fit the budget rests on (per device role)
    problem: str = ""  # why the replica holds no KV cache ("" when it does)


def engine_kv_bytes(m: MemoryFit, memory: EngineMemory, *, model: ModelSpec, plan: PhasePlan, max_seqs: float,
                    max_batch_tokens: float, fraction: float | None = None, speculative: bool = False) -> float:
    """KV bytes the engine's rule leaves on the KV-holding device ``m`` (may be negative). ``fraction`` overrides
    the engine's default (vLLM gpu_memory_utilization, SGLang mem_fraction_static, TRT-LLM
    free_gpu_memory_fraction); ``max_seqs`` / ``max_batch_tokens`` are the replica's limits."""
    a = plan.attention
    total = m.capacity_bytes
    frac = _fraction(memory, m, plan, fraction, speculative)
    if memory.rule == "vllm":
        # communicator buffers come with a TP group or an expert group over DP ranks, not with PP (engines.yaml)
        non_torch = memory.non_torch_bytes + (memory.distributed_init_bytes if a.tp * a.dp > 1 else 0.0)
        return frac * (total - memory.driver_reserved_bytes) - m.weights_bytes \
            - _profile_peak(memory, m, model, plan, max_seqs, max_batch_tokens) - non_torch
    start = total - memory.context_bytes - (memory.distributed_init_bytes if _ranks(plan) > 1 else 0.0)
    if memory.rule == "sglang":
        return frac * start - m.weights_bytes
    return frac * (start - m.weights_bytes - m.activation_bytes)


_FLAGS = {"vllm": "gpu_memory_utilization", "sglang": "mem_fraction_static", "trtllm": "free_gpu_memory_fraction"}


def _profile_peak(memory: EngineMemory, m: MemoryFit, model: ModelSpec, plan: PhasePlan, max_seqs: float,
                  max_batch_tokens: float) -> float:
    """The activation peak the engine's rule subtracts: vLLM's profile run (the forward at the step budget, or
    its sampler over ``min(max_seqs, max_batch_tokens)`` rows of vocabulary logits per DP rank, the larger),
    else the forward's activations."""
    if memory.rule != "vllm":
        return m.activation_bytes
    rows = min(max_seqs, max_batch_tokens) / plan.attention.dp  # the profile run's dummy requests on one DP rank
    return max(m.activation_bytes, rows * model.vocab_size * memory.sampler_bytes_per_logit)


def _ranks(plan: PhasePlan) -> int:
    """The replica's ranks (SGLang's tp_size counts the DP-attention ranks too)."""
    return plan.attention.tp * plan.attention.dp * plan.pp


def _fraction(memory: EngineMemory, m: MemoryFit, plan: PhasePlan, fraction: float | None, speculative: bool) -> float:
    """The memory fraction the engine's rule uses: the launch flag, else the engine's default (SGLang's by GPU
    memory, ranks, DP attention and a draft model)."""
    if fraction is not None:
        return fraction
    if memory.rule == "sglang":
        return memory.mem_fraction_static(m.capacity_bytes, _ranks(plan), plan.attention.dp > 1, speculative)
    return memory.fraction


def replica_kv_capacity(model: ModelSpec, plan: PhasePlan, memory: EngineMemory | None, *, max_seqs: float,
                        max_batch_tokens: float, kv_precision: str = "bf16", kv_scale_tokens: int = 128,
                        fraction: float | None = None, speculative: bool = False) -> KVCapacity:
    """KV tokens one replica of ``plan`` holds under the engine rule ``memory`` (None: the engine-agnostic fit),
    with the replica's batch limits (activations and vLLM's profile sampler scale with them)."""
    fits = tuple(memory_fit(model, plan, kv_tokens_per_replica=0, step_tokens=max_batch_tokens,
                            kv_precision=kv_precision, kv_scale_tokens=kv_scale_tokens))
    for m in fits:
        if m.kv_bytes_per_token == 0 and not m.fits:  # a device without KV (AF-disaggregated FFN) must still fit
            return KVCapacity(0.0, -math.inf, fits, m.explain())
    holders = [m for m in fits if m.kv_bytes_per_token > 0]
    if not holders:
        return KVCapacity(math.inf, math.inf, fits)
    if memory is None:
        m = min(holders, key=lambda f: f.kv_token_capacity)
        kv_bytes = m.capacity_bytes - m.weights_bytes - m.activation_bytes - m.reserve_bytes
        problem = "" if m.fits and kv_bytes > 0 else m.explain()
    else:
        m = holders[0]  # (one attention device role)
        kv_bytes = engine_kv_bytes(m, memory, model=model, plan=plan, max_seqs=max_seqs,
                                   max_batch_tokens=max_batch_tokens, fraction=fraction, speculative=speculative)
        problem = "" if kv_bytes > 0 else (
            f"the {memory.rule} server's KV budget on each {m.hardware} device is {kv_bytes / 1e9:.1f} GB: its rule "
            f"({_FLAGS[memory.rule]} {_fraction(memory, m, plan, fraction, speculative):.3g}) leaves nothing beside "
            f"weights of {m.weights_bytes / 1e9:.1f} GB and a profiling peak of "
            f"{_profile_peak(memory, m, model, plan, max_seqs, max_batch_tokens) / 1e9:.1f} GB on "
            f"{m.capacity_bytes / 1e9:.1f} GB; a larger memory_fraction, more devices per replica or a smaller "
            "precision would leave room")
    tokens = max(kv_bytes, 0.0) / m.kv_bytes_per_token * plan.attention.dp
    return KVCapacity(tokens if not problem else 0.0, kv_bytes, fits, problem)
