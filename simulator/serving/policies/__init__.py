"""Batching policies, one per engine (see ``base.BatchPolicy`` for the interface)."""

from __future__ import annotations

from .base import BatchPolicy
from .sglang import SGLangPolicy
from .trtllm import TRTLLMPolicy
from .vllm import VLLMPolicy

POLICIES = ("vllm", "sglang", "trtllm")


def make_policy(name: str, preemption: str = "recompute") -> BatchPolicy:
    """The policy ``name``; for trtllm, ``preemption="none"`` is GUARANTEED_NO_EVICT."""
    if name == "vllm":
        return VLLMPolicy()
    if name == "sglang":
        return SGLangPolicy()
    if name == "trtllm":
        return TRTLLMPolicy(no_evict=preemption == "none")
    raise ValueError(f"unknown batching policy {name!r}; expected one of {', '.join(POLICIES)}")


__all__ = ["BatchPolicy", "POLICIES", "SGLangPolicy", "TRTLLMPolicy", "VLLMPolicy", "make_policy"]
