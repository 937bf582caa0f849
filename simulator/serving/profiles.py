"""Engine profiles: which batching policy an engine runs, the step-overhead constants it pays, the
server's own batch limits where a deployment does not set them, and the rule it sizes its KV cache by.

The constants live in ``engines.yaml`` next to this module, each with a ``source:`` line; this
module only reads them into frozen ``EngineProfile`` records (and ``ServerDefaults`` for one device).
``ENGINES`` lists the known names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from ..errors import SimulatorError, SpecError
from ..specs._reader import load_yaml

ENGINES = ("vllm", "sglang", "trtllm")
# an engine release as the engines number them: 0.8.4, v0.11.0, 0.4.5.post1, 1.2.0rc1. The suffix is not compared:
# a pre-release (0.11.0rc1, 0.11.0.dev5) counts as its release, which is what a constant's "from" usually means
_RELEASE = re.compile(r"v?([0-9]{1,4})\.([0-9]{1,4})(?:\.([0-9]{1,4}))?(?:[.+-]?[A-Za-z][0-9A-Za-z.+-]*)?")
_FILE = Path(__file__).with_name("engines.yaml")
_CONSTANTS = ("step_cpu_s", "per_seq_s", "kernels_per_layer", "kernel_floor_s", "kernel_launch_s",
              "cuda_graph_max_bs", "cuda_graph_padding", "moe_prefill_s", "prefill_graph_max_tokens",
              "frontend_latency_s", "custom_allreduce_s", "custom_allreduce_max_bytes")


MEMORY_RULES = ("vllm", "sglang", "trtllm")


@dataclass(frozen=True)
class EngineMemory:
    """An engine server's rule for the KV-cache bytes of one device (``engines.yaml`` ``memory:``; the formulas
    live in ``kvmemory.py``). Bytes are per device."""

    rule: str  # one of MEMORY_RULES
    fraction: float | None  # vLLM gpu_memory_utilization / TRT-LLM free_gpu_memory_fraction; None: SGLang's tiers
    sampler_bytes_per_logit: float = 0.0  # vLLM: profile-run sampler bytes per (request x vocabulary entry)
    non_torch_bytes: float = 0.0  # vLLM: non-torch memory that grows during the profile run
    context_bytes: float = 0.0  # SGLang / TRT-LLM: CUDA context and driver reservation before the engine starts
    distributed_init_bytes: float = 0.0  # communicator buffers when tp > 1
    driver_reserved_bytes: float = 0.0  # vLLM: device memory CUDA does not report (nvidia-smi total - CUDA total)
    reserve_tiers: tuple[tuple[float, float, float], ...] = ()  # SGLang: (below bytes, reserved bytes, per rank)
    dp_attention_extra_bytes: float = 0.0  # SGLang: extra reserve with DP attention
    speculative_extra_bytes: float = 0.0  # SGLang: extra reserve with a speculative algorithm
    # vLLM: (first release, bytes) where a later release's sampler peak differs from sampler_bytes_per_logit
    sampler_bytes_from: tuple[tuple[tuple[int, int, int], float], ...] = ()

    def for_release(self, engine_version: str | None) -> EngineMemory:
        """The rule as release ``engine_version`` applies it (None: the releases the profile models by default)."""
        if engine_version is None or not self.sampler_bytes_from:
            return self
        release = engine_release(engine_version, "engine_version")
        later = [b for since, b in sorted(self.sampler_bytes_from) if release >= since]
        return replace(self, sampler_bytes_per_logit=later[-1]) if later else self

    def mem_fraction_static(self, memory_bytes: float, ranks: int, dp_attention: bool = False,
                            speculative: bool = False) -> float:
        """SGLang's default ``mem_fraction_static`` on a device of ``memory_bytes`` with ``ranks`` = its
        ``tp_size x pp_size`` (with DP attention SGLang's tp_size counts every attention rank)."""
        tier = next(t for t in self.reserve_tiers if memory_bytes < t[0])  # (the last tier is unbounded)
        res = tier[1] + tier[2] * ranks + (self.dp_attention_extra_bytes if dp_attention else 0.0) \
            + (self.speculative_extra_bytes if speculative else 0.0)
        return round((memory_bytes - res) / memory_bytes, 3)


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
    # whether a decode batch between two captured sizes is padded up to the next one and replayed (True), or run
    # eagerly (False: only 1-32 and the powers of two up to cuda_graph_max_bs are captured)
    cuda_graph_padding: bool
    moe_prefill_s: float  # fixed latency of a step that prefills through MoE layers
    prefill_graph_max_tokens: int  # largest prefill/mixed step (tokens) replayed from piecewise CUDA graphs; 0: eager
    frontend_latency_s: float  # a request's time in the frontend before the scheduler has it (off the GPU path)
    custom_allreduce_s: float = 0.0  # fixed cost of the engine's own one-shot all-reduce (0: NCCL's figures)
    custom_allreduce_max_bytes: float = 0.0  # the largest message it takes (larger ones go through NCCL)
    memory: EngineMemory | None = None  # how the server sizes its KV cache (None: the engine-agnostic memory fit)
    # the fraction of a device's bandwidth the engine's own fused-MoE kernels reach on a memory-bound routed-expert
    # GEMM, per expert-weight dtype ((dtype, fraction) pairs; a dtype not listed keeps the device profile's kernels):
    # ``timing.engine_moe.EngineMoEKernels``
    moe_memory_fraction: tuple[tuple[str, float], ...] = ()
    # how much longer than the device profile's compute time the engine's own block-scaled FP8 GEMMs take on a
    # dense GEMM of a block-scaled FP8 model (``timing.engine_gemm.EngineBlockFp8Gemms``; 1: the device profile's),
    # in releases before ``block_fp8_before`` (a pool that names its ``engine_version``) and on ``block_fp8_hardware``
    block_fp8_gemm_factor: float = 1.0
    block_fp8_before: tuple[int, int, int] | None = None
    block_fp8_hardware: tuple[str, ...] = ()
    # the frontend latency of a dense model where the engine's published runs show another than its MoE ones (None:
    # ``frontend_latency_s`` for every model)
    frontend_latency_dense_s: float | None = None
    description: str = ""
    sources: dict = field(default_factory=dict, compare=False, repr=False)

    def frontend_for(self, model) -> float:
        """The frontend latency a request to ``model`` (a ModelSpec) meets: ``frontend_latency_dense_s`` for a dense
        model where the profile gives one, else ``frontend_latency_s``."""
        if self.frontend_latency_dense_s is not None and not model.is_moe:
            return self.frontend_latency_dense_s
        return self.frontend_latency_s


@dataclass(frozen=True)
class ServerDefaults:
    """An engine server's batch limits on one device, as it sets them when launched without flags."""

    max_seqs: int  # running requests (vLLM max_num_seqs, SGLang max_running_requests, TRT-LLM max_batch_size)
    max_batch_tokens: int  # tokens per step (vLLM max_num_batched_tokens, SGLang chunked_prefill_size, max_num_tokens)
    cuda_graph_max_bs: int | None  # None: the profile's constant
    speculative_max_seqs: int | None = None  # the running requests it takes with speculative decoding (None: max_seqs)


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
        spec = block.get("speculative_max_seqs")
        if spec is not None and (isinstance(spec, bool) or not isinstance(spec, int) or spec < 1):
            raise SpecError(str(_FILE), f"engines.{name}.server_defaults.speculative_max_seqs",
                            f"expected a whole number >= 1, got {spec!r}")
        return ServerDefaults(int(t["max_seqs"]) * ranks, int(t["max_batch_tokens"]) * ranks,
                              None if graph is None else int(graph), None if spec is None else spec * ranks)
    raise SpecError(str(_FILE), where, f"no tier matches a device of {gib:.0f} GiB ({device_name})")


@cache
def _table() -> dict:
    data = load_yaml(_FILE)  # libyaml's parser where available: the pure-Python one costs a first simulate ~25 ms
    if not isinstance(data.get("engines"), dict):
        raise SpecError(str(_FILE), "engines", "expected a mapping of engine names to profiles")
    return data["engines"]


_GIB = 2**30
_MEMORY_KEYS = {"vllm": ("gpu_memory_utilization", "sampler_bytes_per_logit", "non_torch_bytes",
                         "distributed_init_bytes", "driver_reserved_bytes"),
                "sglang": ("context_bytes", "distributed_init_bytes", "mem_fraction_static"),
                "trtllm": ("free_gpu_memory_fraction", "context_bytes", "distributed_init_bytes")}


def _memory(name: str, block) -> EngineMemory:
    """``engines.<name>.memory`` read and checked."""
    where = f"engines.{name}.memory"
    if not isinstance(block, dict) or block.get("rule") not in MEMORY_RULES:
        raise SpecError(str(_FILE), f"{where}.rule", f"expected one of {', '.join(MEMORY_RULES)}")
    rule = block["rule"]
    keys = _MEMORY_KEYS[rule]
    if set(block) != {"rule", "source", *keys}:
        raise SpecError(str(_FILE), where, f"expected rule, source and {', '.join(keys)} for rule {rule}")

    def value(key: str, lo: float = 0.0, hi: float = float("inf")) -> float:
        entry = block[key]
        v = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not entry.get("source") or isinstance(v, bool) \
                or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise SpecError(str(_FILE), f"{where}.{key}", f"expected {{value: a number in [{lo}, {hi}], source: ...}}")
        return float(v)

    if rule == "vllm":
        return EngineMemory(rule, value("gpu_memory_utilization", 0.0, 1.0), value("sampler_bytes_per_logit"),
                            value("non_torch_bytes"), distributed_init_bytes=value("distributed_init_bytes"),
                            driver_reserved_bytes=value("driver_reserved_bytes"),
                            sampler_bytes_from=_from_version(block["sampler_bytes_per_logit"],
                                                             f"{where}.sampler_bytes_per_logit"))
    if rule == "trtllm":
        return EngineMemory(rule, value("free_gpu_memory_fraction", 0.0, 1.0), context_bytes=value("context_bytes"),
                            distributed_init_bytes=value("distributed_init_bytes"))
    mfs = block["mem_fraction_static"]
    tiers = mfs.get("tiers") if isinstance(mfs, dict) else None
    ok = isinstance(tiers, list) and tiers and mfs.get("source") and all(
        isinstance(t, dict) and set(t) - {"below_memory_gib"} == {"reserved_gib", "reserved_gib_per_rank"}
        for t in tiers) and "below_memory_gib" not in tiers[-1]
    extras = {k: mfs.get(k) if isinstance(mfs, dict) else None
              for k in ("dp_attention_extra_gib", "speculative_extra_gib")}
    if not ok or not all(isinstance(v, (int, float)) and v >= 0 for v in extras.values()):
        raise SpecError(str(_FILE), f"{where}.mem_fraction_static", "expected source, dp_attention_extra_gib, "
                        "speculative_extra_gib and tiers of {below_memory_gib, reserved_gib, reserved_gib_per_rank} "
                        "(the last without below_memory_gib)")
    reserve = tuple((t.get("below_memory_gib", float("inf")) * _GIB, t["reserved_gib"] * _GIB,
                     t["reserved_gib_per_rank"] * _GIB) for t in tiers)
    return EngineMemory(rule, None, context_bytes=value("context_bytes"),
                        distributed_init_bytes=value("distributed_init_bytes"), reserve_tiers=reserve,
                        dp_attention_extra_bytes=extras["dp_attention_extra_gib"] * _GIB,
                        speculative_extra_bytes=extras["speculative_extra_gib"] * _GIB)


def engine_profile(name: str) -> EngineProfile:
    """The profile of engine ``name`` (``vllm``, ``sglang`` or ``trtllm``)."""
    table = _table()
    if name not in table:
        raise SpecError(str(_FILE), "engines", f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
    e = table[name]
    where = f"engines.{name}"
    if not isinstance(e, dict):
        raise SpecError(str(_FILE), where, "expected a mapping of the engine's policy and constants")
    unknown = sorted(set(e) - _ENGINE_KEYS)
    if unknown:
        raise SpecError(str(_FILE), f"{where}.{unknown[0]}", f"unknown key; expected {', '.join(sorted(_ENGINE_KEYS))}")
    for key in ("policy", "preemption", *_CONSTANTS):
        if key not in e:
            raise SpecError(str(_FILE), f"{where}.{key}", "required key is missing")
    from ..specs.deployment import PREEMPTIONS
    from .policies import POLICIES

    for key, allowed in (("policy", POLICIES), ("preemption", PREEMPTIONS)):
        if e[key] not in allowed:
            raise SpecError(str(_FILE), f"{where}.{key}", f"expected one of {', '.join(allowed)}, got {e[key]!r}")
    values = {k: _constant(name, e, k) for k in _CONSTANTS}
    memory = _memory(name, e["memory"]) if "memory" in e else None
    sources = {k: e[k]["source"] for k in _CONSTANTS}
    moe = ()
    if "moe_memory_fraction" in e:
        moe = _moe_fractions(name, e["moe_memory_fraction"])
        sources["moe_memory_fraction"] = e["moe_memory_fraction"]["source"]
    dense = {}
    if "frontend_latency_dense_s" in e:
        dense = {"frontend_latency_dense_s": _constant(name, e, "frontend_latency_dense_s")}
        sources["frontend_latency_dense_s"] = e["frontend_latency_dense_s"]["source"]
    block_fp8 = {}
    if "block_fp8_gemm_factor" in e:
        block_fp8 = _block_fp8(name, e["block_fp8_gemm_factor"])
        sources["block_fp8_gemm_factor"] = e["block_fp8_gemm_factor"]["source"]
    return EngineProfile(name, e["policy"], e["preemption"], description=e.get("description", ""), memory=memory,
                         moe_memory_fraction=moe, sources=sources, **block_fp8, **dense, **values)


def _from_version(entry: dict, where: str) -> tuple[tuple[tuple[int, int, int], float], ...]:
    """An entry's optional ``from_version: {'0.17.0': value}``: the value from that release on."""
    table = entry.get("from_version", {})
    if not isinstance(table, dict):
        raise SpecError(str(_FILE), f"{where}.from_version", "expected {'release': value, ...}")
    out = []
    for release, v in table.items():
        if problem := release_problem(release):
            raise SpecError(str(_FILE), f"{where}.from_version", problem)
        since = engine_release(release, f"{where}.from_version")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise SpecError(str(_FILE), f"{where}.from_version.{release}", f"expected a number >= 0, got {v!r}")
        out.append((since, float(v)))
    return tuple(sorted(out))


def versioned_engines() -> tuple[str, ...]:
    """The engines with a constant that depends on the release served (``engine_version`` applies to them only)."""
    out = []
    for name in ENGINES:
        p = engine_profile(name)
        if p.block_fp8_before is not None or (p.memory is not None and p.memory.sampler_bytes_from):
            out.append(name)
    return tuple(out)


def pool_release(pool, engine: str | None, engine_version: str | None) -> str | None:
    """The release one pool serves in a run: ``engine_version`` (the run's flag) where its engine takes one, else the
    pool's own unless ``engine`` (the run's ``--engine``) switched it to another engine."""
    served = engine or pool.engine
    if engine_version is not None:
        return engine_version if served in versioned_engines() else None
    return pool.engine_version if served == pool.engine else None


def release_problem(text, engine: str | None = None, runs: str = "this pool runs") -> str | None:
    """What is wrong with naming release ``text`` (of ``engine``, where given: an engine without release-dependent
    constants takes none), as the rest of an error line after its key or flag; None: nothing."""
    if not (isinstance(text, str) and _RELEASE.fullmatch(text)):
        hint = " (YAML reads 0.10 as the number 0.1: quote it)" if isinstance(text, (int, float)) else ""
        return f"expected a release number such as '0.8.4' or '1.2.0rc1', got {text!r}{hint}"
    if engine is not None and engine not in versioned_engines():
        return (f"a release matters for {', '.join(versioned_engines())} only (the engines with release-dependent "
                f"constants); {runs} {engine}")
    return None


def engine_release(text, where: str) -> tuple[int, int, int]:
    """An engine release number (``0.8.4``, ``v0.11.0``, ``0.4.5.post1``, ``1.2.0rc1``) as (major, minor, patch), its
    suffix dropped; ``where`` names the key or flag in the error."""
    problem = release_problem(text)
    if problem:
        raise SimulatorError(f"{where}: {problem}")
    m = _RELEASE.fullmatch(text)
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _block_fp8(name: str, entry) -> dict:
    """``engines.<name>.block_fp8_gemm_factor``: {value: a factor >= 1, before_version: a release, hardware: [device
    profile ids], source: ...}, as ``EngineProfile`` keyword arguments."""
    where = f"engines.{name}.block_fp8_gemm_factor"
    keys = {"value", "before_version", "hardware", "source"}
    if not isinstance(entry, dict) or set(entry) != keys or not entry["source"]:
        raise SpecError(str(_FILE), where, "expected {value: ..., before_version: ..., hardware: [...], source: ...}")
    v = entry["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1.0 <= v < float("inf"):
        # (a kernel faster than the device profile's best published ones is not an engine's)
        raise SpecError(str(_FILE), f"{where}.value", f"expected a factor >= 1 (1: the device profile's kernels), "
                                                      f"got {v!r}")
    if problem := release_problem(entry["before_version"]):
        raise SpecError(str(_FILE), f"{where}.before_version", problem)
    before = engine_release(entry["before_version"], f"{where}.before_version")
    hw = entry["hardware"]
    if not isinstance(hw, list) or not hw or not all(isinstance(h, str) and h for h in hw):
        raise SpecError(str(_FILE), f"{where}.hardware", "expected a list of device profile ids the factor was "
                                                         "measured on")
    return {"block_fp8_gemm_factor": float(v), "block_fp8_before": before, "block_fp8_hardware": tuple(hw)}


_ENGINE_KEYS = {"description", "policy", "preemption", "memory", "server_defaults", "moe_memory_fraction",
                "block_fp8_gemm_factor", "frontend_latency_dense_s", *_CONSTANTS}
_WHOLE = ("kernels_per_layer", "cuda_graph_max_bs", "prefill_graph_max_tokens")  # counts, not amounts


def _constant(name: str, e: dict, key: str):
    """``engines.<name>.<key>``: ``{value: ..., source: ...}`` with a finite value >= 0 (a whole number for a count,
    true or false for ``cuda_graph_padding``): a negative overhead would make steps faster than their kernels."""
    entry, where = e[key], f"engines.{name}.{key}"
    if not isinstance(entry, dict) or set(entry) != {"value", "source"} or not entry["source"]:
        raise SpecError(str(_FILE), where, "expected {value: ..., source: ...}")
    v = entry["value"]
    if key == "cuda_graph_padding":
        if not isinstance(v, bool):
            raise SpecError(str(_FILE), f"{where}.value", f"expected true or false, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
        raise SpecError(str(_FILE), f"{where}.value", f"expected a finite number >= 0, got {v!r}")
    if key in _WHOLE:
        if v != int(v):
            raise SpecError(str(_FILE), f"{where}.value", f"expected a whole number >= 0, got {v!r}")
        return int(v)
    return float(v)


def engine_timing(timing, profile: EngineProfile, model, engine_version: str | None = None):
    """``timing`` under ``profile``'s own kernels, where the engine gives them: its one-shot all-reduce for small
    messages (``CustomAllReduce``), for an MoE ``model`` its fused-MoE kernels' bandwidth (``EngineMoEKernels``),
    and for a model whose FP8 release is block-scaled, served by a release (``engine_version``) from before the
    engine's block-FP8 kernels were replaced, those kernels (``EngineBlockFp8Gemms``); ``timing`` itself (None
    included) where it gives none. The simulation's step costs and the planner's screen both time steps through
    this (the screen with no version: the engine's current kernels)."""
    from ..timing.custom_allreduce import CustomAllReduce
    from ..timing.engine_gemm import EngineBlockFp8Gemms
    from ..timing.engine_moe import EngineMoEKernels
    from ..timing.roofline import RooflineModel

    if profile.custom_allreduce_s > 0:
        timing = CustomAllReduce(timing or RooflineModel(), profile.custom_allreduce_s,
                                 profile.custom_allreduce_max_bytes)
    if profile.moe_memory_fraction and model.is_moe:
        timing = EngineMoEKernels(timing or RooflineModel(), dict(profile.moe_memory_fraction))
    if (profile.block_fp8_gemm_factor > 1.0 and model.fp8_block_scaled and engine_version is not None
            and engine_release(engine_version, "engine_version") < profile.block_fp8_before):
        timing = EngineBlockFp8Gemms(timing or RooflineModel(), profile.block_fp8_gemm_factor,
                                     profile.block_fp8_hardware)
    return timing


def _moe_fractions(name: str, entry) -> tuple[tuple[str, float], ...]:
    """``engines.<name>.moe_memory_fraction`` read and checked: {value: {dtype: fraction in (0, 1]}, source: ...}."""
    from ..ops.kinds import DTYPES
    from ..precision import PRECISIONS

    formats = [d for d in DTYPES if d in PRECISIONS]  # a compute dtype that is also a weight format
    v = entry.get("value") if isinstance(entry, dict) else None
    ok = isinstance(v, dict) and v and entry.get("source") and all(
        d in formats and not isinstance(f, bool) and isinstance(f, (int, float)) and 0.0 < f <= 1.0
        for d, f in v.items())
    if not ok:
        raise SpecError(str(_FILE), f"engines.{name}.moe_memory_fraction",
                        f"expected {{value: {{format: a fraction in (0, 1]}}, source: ...}} with formats among "
                        f"{', '.join(formats)}")
    return tuple(sorted((d, float(f)) for d, f in v.items()))
