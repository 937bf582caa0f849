"""Engine profiles: which batching policy an engine runs and the step-overhead constants it pays.

The constants live in ``engines.yaml`` next to this module, each with a ``source:`` line; this
module only reads them into frozen ``EngineProfile`` records. ``ENGINES`` lists the known names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from ..errors import SpecError

ENGINES = ("vllm", "sglang", "trtllm")
_FILE = Path(__file__).with_name("engines.yaml")
_CONSTANTS = ("step_cpu_s", "per_seq_s", "kernels_per_layer", "kernel_floor_s", "kernel_launch_s",
              "cuda_graph_max_bs", "moe_prefill_s", "prefill_graph_max_tokens", "frontend_latency_s")


@dataclass(frozen=True)
class EngineProfile:
    name: str
    policy: str  # one of policies.POLICIES
    preemption: str  # "recompute" | "swap" | "none" (no eviction: KV reserved for the whole request)
    step_cpu_s: float  # exposed CPU scheduling / input preparation per step
    per_seq_s: float  # per scheduled sequence per step (sampling, block tables, detokenisation)
    kernels_per_layer: int  # kernels per layer the timing model does not list (norms, RoPE, quant, residual)
    kernel_floor_s: float  # cost of one such kernel replayed from a CUDA graph
    kernel_launch_s: float  # host launch cost of one kernel outside a CUDA graph
    cuda_graph_max_bs: int  # largest decode batch captured in a CUDA graph
    moe_prefill_s: float  # fixed latency of a step that prefills through MoE layers
    prefill_graph_max_tokens: int  # largest prefill/mixed step (tokens) replayed from piecewise CUDA graphs; 0: eager
    frontend_latency_s: float  # a request's time in the frontend before the scheduler has it (off the GPU path)
    description: str = ""
    sources: dict = field(default_factory=dict, compare=False, repr=False)


@cache
def _table() -> dict:
    with open(_FILE) as fh:
        data = yaml.safe_load(fh)
    return data["engines"]


def engine_profile(name: str) -> EngineProfile:
    """The profile of engine ``name`` (``vllm``, ``sglang`` or ``trtllm``)."""
    table = _table()
    if name not in table:
        raise SpecError(str(_FILE), "engines", f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
    e = table[name]
    values = {k: e[k]["value"] for k in _CONSTANTS}
    values["kernels_per_layer"] = int(values["kernels_per_layer"])
    values["cuda_graph_max_bs"] = int(values["cuda_graph_max_bs"])
    values["prefill_graph_max_tokens"] = int(values["prefill_graph_max_tokens"])
    return EngineProfile(name, e["policy"], e["preemption"], description=e.get("description", ""),
                         sources={k: e[k]["source"] for k in _CONSTANTS}, **values)
