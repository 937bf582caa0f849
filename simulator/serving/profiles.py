"""Engine profiles: which batching policy an engine runs, the step-overhead constants it pays, and the
server's own batch limits where a deployment does not set them.

The constants live in ``engines.yaml`` next to this module, each with a ``source:`` line; this
module only reads them into frozen ``EngineProfile`` records (and ``ServerDefaults`` for one device).
``ENGINES`` lists the known names.
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
              "cuda_graph_max_bs", "moe_prefill_s", "prefill_graph_max_tokens", "frontend_latency_s",
              "custom_allreduce_s", "custom_allreduce_max_bytes")


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
    custom_allreduce_s: float = 0.0  # fixed cost of the engine's own one-shot all-reduce (0: NCCL's figures)
    custom_allreduce_max_bytes: float = 0.0  # the largest message it takes (larger ones go through NCCL)
    description: str = ""
    sources: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ServerDefaults:
    """An engine server's batch limits on one device, as it sets them when launched without flags."""

    max_seqs: int  # running requests (vLLM max_num_seqs, SGLang max_running_requests, TRT-LLM max_batch_size)
    max_batch_tokens: int  # tokens per step (vLLM max_num_batched_tokens, SGLang chunked_prefill_size, max_num_tokens)
    cuda_graph_max_bs: int | None  # None: the profile's constant


_TIER_KEYS = {"min_memory_gib", "below_memory_gib", "name_excludes", "max_seqs", "max_batch_tokens",
              "cuda_graph_max_bs", "cuda_graph_max_bs_tp4"}


def server_defaults(name: str, memory_bytes: float, device_name: str, tp: int, dp: int = 1) -> ServerDefaults:
    """Engine ``name``'s default batch limits for one replica on devices of ``memory_bytes`` (as the device
    reports it) named ``device_name``, with attention TP ``tp`` and attention DP ``dp``: the first tier of
    ``server_defaults`` it matches. The CUDA-graph tier counts all ``tp x dp`` ranks (SGLang's ``tp_size``);
    an engine whose DP ranks each run their own scheduler (``per_dp_rank: true``) gets ``dp`` times the limits."""
    where = f"engines.{name}.server_defaults.tiers"
    block = (_table().get(name) or {}).get("server_defaults", {})
    tiers = block.get("tiers")
    if not isinstance(tiers, list) or not tiers:
        raise SpecError(str(_FILE), where, "expected a list of tiers")
    gib = memory_bytes / 2**30
    for i, t in enumerate(tiers):
        if not isinstance(t, dict) or set(t) - _TIER_KEYS or not {"max_seqs", "max_batch_tokens"} <= set(t):
            optional = ", ".join(sorted(_TIER_KEYS - {"max_seqs", "max_batch_tokens"}))
            raise SpecError(str(_FILE), f"{where}[{i}]", f"expected max_seqs, max_batch_tokens and optional {optional}")
        if gib < t.get("min_memory_gib", 0) or gib >= t.get("below_memory_gib", float("inf")):
            continue
        if t.get("name_excludes") and str(t["name_excludes"]).lower() in device_name.lower():
            continue
        graph = t.get("cuda_graph_max_bs_tp4" if tp * dp >= 4 and "cuda_graph_max_bs_tp4" in t
                      else "cuda_graph_max_bs")
        ranks = dp if block.get("per_dp_rank") else 1
        return ServerDefaults(int(t["max_seqs"]) * ranks, int(t["max_batch_tokens"]) * ranks,
                              None if graph is None else int(graph))
    raise SpecError(str(_FILE), where, f"no tier matches a device of {gib:.0f} GiB ({device_name})")


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
