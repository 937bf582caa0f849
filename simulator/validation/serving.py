"""Check the serving simulator against measured serving benchmarks (``quadrant validate --serving FILE``).

Reads measured results in one of three layouts, re-simulates each one with ``serving.runner.simulate`` on
the same model, hardware, parallelism and load, and reports the error per group (model x hardware x
engine x parallelism) and per row.

Layouts:

- **vLLM** ``vllm bench serve --save-result`` JSON (one object, a list of them, or JSON lines): ``model_id``,
  ``request_rate`` (``inf`` = everything at once) or ``max_concurrency`` (which wins when both are set: the run
  is simulated as a closed loop of that many clients), ``input_lens``/``output_lens`` (or
  ``total_input_tokens``/``total_output_tokens`` over ``completed``), ``median_ttft_ms``/``median_tpot_ms``
  (mean when the median is absent). vLLM does not record the hardware or the parallelism: pass them as flags
  (``--hardware --devices --tp --pp --ep --precision``) or use ``--deployment``. The result of
  ``quadrant simulate --json --format vllm`` also carries them (``hardware``, ``tp``, ... and
  ``deployment_file``), so it round-trips with no flags.
- **SGLang** ``sglang.bench_serving --output-file`` JSON lines (the same metric keys, no ``model_id``: pass
  ``--model``): the server is the client's ``--backend`` (``sglang``, ``vllm``, ``trt``), and a random dataset's
  lengths are drawn as the client drew them, uniform in [max(1, r x L), L] for ``random_input_len`` /
  ``random_output_len`` L and ``random_range_ratio`` r.
- **GuideLLM** report JSON: ``benchmarks[*]`` with ``metrics.{time_to_first_token_ms,
  time_per_output_token_ms, prompt_token_count, output_token_count}.successful.{median,mean}`` and the load
  in ``args.strategy`` / ``config.strategy`` / ``strategy`` (``type_`` ``concurrent``/``synchronous`` with
  ``streams``, or ``constant``/``poisson`` with ``rate``). Hardware and parallelism as for vLLM.
- **genai-perf / AIPerf** export JSON (``profile_export_genai_perf.json``, ``profile_export_aiperf.json``):
  ``time_to_first_token`` and ``inter_token_latency`` (their per-request TPOT) with ``p50`` (or ``avg``) and
  ``unit``, ``input_sequence_length`` / ``output_sequence_length``, ``request_count``, and the load
  (``concurrency`` or ``request_rate``) and model under ``input_config``. Hardware and parallelism as for vLLM.
- **CSV**, one measured run per row. Required columns: ``model``, ``hardware``, ``isl``, ``osl``, one of
  ``rate_per_s`` / ``concurrency``, and ``ttft_s`` + ``tpot_s`` (or ``ttft_ms`` + ``tpot_ms``). Optional:
  ``devices``, ``tp``, ``pp``, ``ep``, ``precision``, ``kv_precision``, ``engine`` (vllm | sglang | trtllm; the
  server that was measured), ``requests`` (the run's prompt count; or ``num_prompts``, vLLM's name for it),
  ``statistic`` (``median``, the default, or ``mean``: which statistic the TTFT/TPOT cells are), the client's length
  spread as one of ``random_range_ratio`` (``sglang.bench_serving`` and vLLM's older ``benchmark_serving.py``:
  lengths uniform in [r x isl, isl]; 0 means [1, isl]) or ``vllm_random_range_ratio`` (``vllm bench serve``: uniform
  in [(1 - r) x isl, (1 + r) x isl], r < 1), ``max_batch_tokens``, ``max_seqs``, ``replicas``. Extra columns are
  ignored; a bad cell is named by line and column. ``scheduler_recv_interval``: SGLang's
  ``--scheduler-recv-interval`` where the run set it. ``frontend_latency_ms`` (or ``frontend_latency_s``): the
  server's frontend latency where the run was served through another frontend than the engine's own (e.g. NVIDIA NIM
  in front of TensorRT-LLM); empty: the engine profile's. ``memory_fraction``: the launch's KV memory flag (vLLM
  ``--gpu-memory-utilization``, SGLang ``--mem-fraction-static``, TensorRT-LLM ``free_gpu_memory_fraction``) where
  the run set it, in (0, 1]; empty: the engine's default. ``engine_version``: the engine release measured (``0.8.4``)
  where a constant depends on it (engines.yaml); empty: the release the profile models.
  ``batch_wait_timeout_iters`` and ``batch_wait_max_tokens_ratio``: TensorRT-LLM's batch waiting where the run set it
  (both; empty: off).

How a run is re-simulated, as the benchmark client ran it:

- **the engine that served it**: the CSV ``engine`` column, the ``engine`` key (what ``quadrant simulate
  --format vllm`` writes) or ``--engine``; a vLLM result's ``backend`` names the *client* backend, so only an
  engine-specific one (``sglang``, ``tensorrt-llm``) is taken as the server. Unknown: the deployment's engine.
- **the load**: a closed loop (``--max-concurrency C``) starts its C clients together at t = 0, as
  ``vllm bench serve``, ``sglang.bench_serving``, GuideLLM's concurrent strategy and genai-perf / AIPerf
  concurrency mode do (a result written by ``quadrant simulate`` carries its own client ramp, ``ramp_up_s``,
  and keeps it). The run has the measured number of prompts (capped by ``--requests``); a CSV row without
  ``requests`` is taken as 10 x C prompts for a closed loop (the usual ``--num-prompts``, e.g. SemiAnalysis
  InferenceX ``benchmarks/*.sh``: ``--num-prompts $((CONC * 10))``) and 200 for an open loop.
- **the lengths**: per-request lengths where the result lists them (vLLM ``input_lens``/``output_lens``), else
  the client's spread (``random_range_ratio``), else the mean lengths.
- **the statistic**: the measured one (median or mean) over every finished request, as the client reports it.
Errors: absolute percentage error ``|sim - measured| / measured`` and the ratio ``sim / measured`` (bias,
geometric mean per group; > 1 means the simulator is pessimistic).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import SimulatorError, SpecError


@dataclass(frozen=True)
class ServingCase:
    source: str  # "file[#index]" or "file line N"
    model: str | None
    hardware: str | None
    engine: str
    isl: int
    osl: int
    rate_per_s: float | None  # open loop (Poisson); None with concurrency
    concurrency: int | None
    requests: int
    ttft_s: float
    tpot_s: float
    statistic: str  # "median" or "mean"
    devices: int | None = None
    tp: int | None = None
    pp: int | None = None
    ep: int | None = None
    precision: str | None = None
    kv_precision: str | None = None
    deployment: str | None = None
    extra: dict = field(default_factory=dict)
    input_lens: tuple[int, ...] = ()  # per-request lengths when the result lists them (vLLM input_lens/output_lens)
    output_lens: tuple[int, ...] = ()
    length_low: float = 1.0  # the client's length spread: lengths uniform in [length_low x L, length_high x L]
    length_high: float = 1.0  # (1, 1: fixed lengths)
    ramp_up_s: float | None = None  # closed loop: the clients' start spread (None: together at t = 0, as clients do)

    @property
    def group(self) -> str:
        par = f"tp{self.tp or '-'} pp{self.pp or 1} ep{self.ep or 1}"
        return f"{self.model} on {self.devices or '?'}x {self.hardware or self.deployment} ({par}) {self.engine}"


# the names a result may give the serving engine (CSV ``engine``, JSON ``engine``), lower-cased
ENGINE_NAMES = {"vllm": "vllm", "sglang": "sglang", "trtllm": "trtllm", "tensorrt-llm": "trtllm", "trt-llm": "trtllm",
                "tensorrt_llm": "trtllm", "tensorrtllm": "trtllm", "tensorrt": "trtllm", "trt": "trtllm"}
# ``vllm bench serve --backend`` names the client protocol; only these say which server was measured
CLIENT_BACKEND_ENGINES = {"sglang": "sglang", "sglang-native": "sglang", "sglang-oai": "sglang",
                          "sglang-oai-chat": "sglang", "tensorrt-llm": "trtllm", "trt-llm": "trtllm", "trt": "trtllm"}


# ``sglang.bench_serving --backend`` selects the API of the server it drives
SGLANG_CLIENT_BACKENDS = {**CLIENT_BACKEND_ENGINES, "vllm": "vllm", "vllm-chat": "vllm"}


def _sglang_client(d: dict) -> bool:
    """Whether a result was written by ``sglang.bench_serving`` (its records carry the dataset arguments, e.g.
    ``random_input_len``, and no ``model_id``), not by ``vllm bench serve``."""
    return "model_id" not in d and any(k in d for k in ("random_input_len", "sharegpt_output_len"))


def engine_name(raw, where: str, key: str = "engine") -> str:
    """A measured run's serving engine as a profile id (``unknown`` when not given)."""
    name = str(raw or "").strip().lower()
    if not name or name == "unknown":
        return "unknown"
    if name not in ENGINE_NAMES:
        raise SpecError(where, key, f"unknown engine {raw!r}; expected vllm, sglang or trtllm (tensorrt-llm), "
                                    "or leave it empty for the deployment's")
    return ENGINE_NAMES[name]


# -- readers -------------------------------------------------------------------------------------------

def read_serving_results(path: str | Path) -> list[ServingCase]:
    """Measured serving runs from a vLLM / SGLang / GuideLLM / genai-perf / AIPerf JSON or a CSV (see the
    module docstring)."""
    from ..specs._reader import MAX_TABLE_BYTES, read_text_file

    path = Path(path)
    text = read_text_file(path, "serving result (vLLM or GuideLLM JSON, or CSV)", MAX_TABLE_BYTES)
    if path.suffix.lower() == ".csv" or not text.lstrip().startswith(("{", "[")):
        return _read_csv(path, text)
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError as exc:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:  # JSON lines
            docs = [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:
            raise SpecError(str(path), f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    cases: list[ServingCase] = []
    items = []
    for d in docs:
        items.extend(d if isinstance(d, list) else [d])
    for i, d in enumerate(items):
        where = f"{path}#{i}" if len(items) > 1 else str(path)
        if not isinstance(d, dict):
            raise SpecError(str(path), f"[{i}]", "expected a JSON object")
        if isinstance(d.get("benchmarks"), list):
            cases.extend(_guidellm(d, where))
        elif isinstance(d.get("time_to_first_token"), dict):
            cases.append(_aiperf(d, where))
        elif any(k in d for k in ("median_ttft_ms", "mean_ttft_ms")):
            cases.append(_vllm(d, where))
        else:
            raise SpecError(str(path), f"[{i}]" if len(items) > 1 else "",
                            "not a vLLM / SGLang bench result (no mean_ttft_ms), a GuideLLM report (no benchmarks) "
                            "nor a genai-perf / AIPerf export (no time_to_first_token)")
    if not cases:
        raise SpecError(str(path), "", "no measured runs found")
    return cases


def _num(d: dict, key: str, where: str, *, positive: bool = True, default=...):
    v = d.get(key, None)
    if v is None:
        if default is ...:
            raise SpecError(where, key, "required key is missing")
        return default
    if isinstance(v, str) and v.strip().lower() in ("inf", "infinity"):
        v = math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(where, key, f"expected a number, got {v!r}")
    v = float(v)
    if math.isnan(v) or (positive and v <= 0) or v < 0:
        raise SpecError(where, key, f"expected a number {'> 0' if positive else '>= 0'}, got {v}")
    return v


def _measured(d: dict, key: str, where: str) -> float:
    """A measured latency (or token count): a finite number > 0 (a zero or infinite one is no measurement)."""
    v = _num(d, key, where)
    if not math.isfinite(v):
        raise SpecError(where, key, f"expected a finite number > 0, got {v}")
    return v


def _count(d: dict, key: str, where: str, default=...) -> int:
    """A count (clients, prompts, devices, tokens per request): a whole number >= 1."""
    v = _num(d, key, where, default=default)
    if v is None:  # (absent, with None as its default)
        return None
    if not math.isfinite(v) or v != int(v):
        raise SpecError(where, key, f"expected a whole number >= 1, got {v:g}")
    return int(v)


def _stat(d: dict, metric: str, where: str) -> tuple[float, str]:
    for stat in ("median", "mean"):
        key = f"{stat}_{metric}_ms"
        if d.get(key) is not None:
            return _measured(d, key, where) / 1e3, stat
    raise SpecError(where, f"median_{metric}_ms", "required key is missing (or mean_..._ms)")


def _lengths(d: dict, lens_key: str, total_key: str, where: str) -> int:
    lens = d.get(lens_key)
    if isinstance(lens, list) and lens:
        arr = np.asarray([x for x in lens if isinstance(x, (int, float)) and not isinstance(x, bool)], dtype=float)
        if len(arr) and np.all(np.isfinite(arr)) and arr.mean() >= 1:
            return int(round(float(arr.mean())))
    completed = _count(d, "completed", where)
    return max(int(round(_measured(d, total_key, where) / completed)), 1)


def _load(d: dict, where: str) -> tuple[float | None, int | None]:
    conc = d.get("max_concurrency")
    rate = d.get("request_rate")
    rate = math.inf if rate is None else _num(d, "request_rate", where)
    if conc is not None:
        return None, _count(d, "max_concurrency", where)
    if math.isinf(rate):  # everything at once: a closed loop as wide as the run
        return None, _count(d, "num_prompts", where, default=_count(d, "completed", where))
    return rate, None


def _vllm(d: dict, where: str) -> ServingCase:
    ttft, stat = _stat(d, "ttft", where)
    tpot, _ = _stat(d, "tpot", where)
    rate, conc = _load(d, where)
    ints = {k: _count(d, k, where) if d.get(k) is not None else None for k in ("devices", "tp", "pp", "ep")}
    if d.get("num_prompts") is not None:  # the prompts sent: read for a burst's clients only, checked always
        _count(d, "num_prompts", where)
    dep = d.get("deployment_file")
    sglang_client = _sglang_client(d)
    backend = str(d.get("backend") or "").strip().lower()
    if d.get("engine") is not None:  # quadrant simulate --format vllm: the engine it simulated
        engine = engine_name(d["engine"], where)
    elif sglang_client:  # sglang.bench_serving's --backend picks the server's own API (sglang, vllm, trt, ...)
        engine = SGLANG_CLIENT_BACKENDS.get(backend, "unknown")
    else:  # vLLM's backend names the client protocol; an engine-specific one names the server too
        engine = CLIENT_BACKEND_ENGINES.get(backend, "unknown")
    ramp = _num(d, "ramp_up_s", where, positive=False) if d.get("ramp_up_s") is not None else None
    if ramp is not None and not math.isfinite(ramp):
        raise SpecError(where, "ramp_up_s", f"expected a finite time >= 0 (s), got {ramp}")
    override = engine_name(d["engine_override"], where, "engine_override") if d.get("engine_override") else None
    isl = _lengths(d, "input_lens", "total_input_tokens", where)
    osl = _lengths(d, "output_lens", "total_output_tokens", where)
    spread = {}
    if sglang_client and str(d.get("dataset_name") or "").startswith("random") and not _lens(d.get("input_lens")):
        # sglang.bench_serving's random dataset: lengths uniform in [max(1, r x L), L] for the set L and
        # --random-range-ratio r (sample_random_requests in python/sglang/bench_serving.py)
        ratio = _num(d, "random_range_ratio", where, positive=False, default=0.0)
        if ratio > 1:
            raise SpecError(where, "random_range_ratio", f"expected a fraction in [0, 1], got {ratio:g}")
        isl, osl = (_count(d, k, where) for k in ("random_input_len", "random_output_len"))
        spread = dict(length_low=ratio, length_high=1.0)
    return ServingCase(
        source=where, model=d.get("model_id") or d.get("model"), hardware=d.get("hardware"), engine=engine,
        ramp_up_s=ramp, isl=isl, osl=osl, **spread,
        rate_per_s=rate, concurrency=conc, requests=_count(d, "completed", where), ttft_s=ttft, tpot_s=tpot,
        statistic=stat, precision=d.get("precision"), kv_precision=d.get("kv_precision"),
        deployment=str(dep) if dep else None,
        extra={**{k: _whole(d, k, where) for k in ("max_batch_tokens", "max_seqs", "replicas", "pools",
                                                     "scheduler_recv_interval") if d.get(k) is not None},
               **_batch_wait(d.get("batch_wait_timeout_iters"), d.get("batch_wait_max_tokens_ratio"), where,
                             "batch_wait_timeout_iters", "batch_wait_max_tokens_ratio"),
               **({"frontend_latency_s": _finite_num(d, "frontend_latency_s", where)}
                  if d.get("frontend_latency_s") is not None else {}),
               **({"overheads": False} if d.get("overheads") is False else {}),
               **({"engine_override": override} if override else {}),
               **({k: _release(d, k, where) for k in ("engine_version", "engine_version_override")
                   if d.get(k) is not None})},
        input_lens=_lens(d.get("input_lens")), output_lens=_lens(d.get("output_lens")), **ints)


def _release(d: dict, key: str, where: str) -> str:
    """``engine_version`` / ``engine_version_override``: the engine release the run served (as `simulate` records
    it: the clients' pool's, and the flag's over a deployment file), a release number."""
    from ..serving.profiles import release_problem

    if problem := release_problem(d[key]):
        raise SpecError(where, key, problem)
    return d[key]


def _finite_num(d: dict, key: str, where: str) -> float:
    """``d[key]`` as a finite number >= 0."""
    v = _num(d, key, where, positive=False)
    if not math.isfinite(v):
        raise SpecError(where, key, f"expected a finite number >= 0, got {v}")
    return v


def _batch_wait(iters, ratio, where: str, iters_at: str, ratio_at: str) -> dict:
    """A run's TensorRT-LLM batch waiting (``batch_wait_timeout_iters``, ``batch_wait_max_tokens_ratio``; None:
    not recorded) as ``extra`` keys: a whole number of steps >= 0 and a fraction in [0, 1], both set or neither (0
    is off, TensorRT-LLM's default)."""
    out = {}
    if iters is not None:
        if isinstance(iters, bool) or not isinstance(iters, (int, float)) or not math.isfinite(iters) or iters < 0 \
                or iters != int(iters):
            raise SpecError(where, iters_at, f"expected a whole number of steps >= 0, got {iters!r}")
        out["batch_wait_timeout_iters"] = int(iters)
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise SpecError(where, ratio_at, f"expected a fraction in [0, 1], got {ratio!r}")
        out["batch_wait_max_tokens_ratio"] = float(ratio)
    from ..specs.deployment import BATCH_WAIT_UNPAIRED, batch_wait_unpaired

    if batch_wait_unpaired(out.get("batch_wait_timeout_iters", 0), out.get("batch_wait_max_tokens_ratio", 0.0)):
        raise SpecError(where, iters_at if out.get("batch_wait_timeout_iters") else ratio_at, BATCH_WAIT_UNPAIRED)
    return out


def _whole(d: dict, key: str, where: str) -> int:
    """``d[key]`` as a whole number >= 1 (a recorded batch limit, replica count or interval)."""
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 1 or v != int(v):
        raise SpecError(where, key, f"expected a whole number >= 1, got {v!r}")
    return int(v)


def _lens(values) -> tuple[int, ...]:
    """Per-request token counts when every one is a whole number >= 1 (else none: the mean is used)."""
    if not isinstance(values, list) or not values:
        return ()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 1 for v in values):
        return tuple(int(round(v)) for v in values)
    return ()


def _gl_metric(metrics: dict, name: str, where: str) -> tuple[float, str]:
    node = metrics.get(name)
    if isinstance(node, dict) and isinstance(node.get("successful"), dict):
        node = node["successful"]
    if not isinstance(node, dict):
        raise SpecError(where, f"metrics.{name}", "required metric is missing")
    for stat in ("median", "mean"):
        if node.get(stat) is not None:
            return _measured(node, stat, f"{where}: metrics.{name}"), stat
    raise SpecError(where, f"metrics.{name}", "expected a median or mean")


def _guidellm(doc: dict, where: str) -> list[ServingCase]:
    out = []
    for i, b in enumerate(doc["benchmarks"]):
        w = f"{where}: benchmarks[{i}]"
        if not isinstance(b, dict) or not isinstance(b.get("metrics"), dict):
            raise SpecError(w, "metrics", "expected a mapping of metrics")
        m = b["metrics"]
        ttft, stat = _gl_metric(m, "time_to_first_token_ms", w)
        tpot, _ = _gl_metric(m, "time_per_output_token_ms", w)
        isl, _ = _gl_metric(m, "prompt_token_count", w)
        osl, _ = _gl_metric(m, "output_token_count", w)
        strategy = {}
        for holder in (b.get("args"), b.get("config"), b):
            if isinstance(holder, dict) and isinstance(holder.get("strategy"), dict):
                strategy = holder["strategy"]
                break
        kind = str(strategy.get("type_") or strategy.get("type") or "")
        rate = conc = None
        if kind in ("concurrent", "synchronous"):
            conc = _count(strategy, "streams", f"{w}: strategy", default=1)
        elif strategy.get("rate") is not None:
            rate = _num(strategy, "rate", w)
        else:
            raise SpecError(w, "strategy", "expected a concurrent/synchronous strategy with streams, or a rate")
        totals = m.get("request_totals") if isinstance(m.get("request_totals"), dict) else {}
        reqs = _count(totals, "successful", f"{w}: metrics.request_totals", default=None)
        args = b.get("args") if isinstance(b.get("args"), dict) else {}
        model = doc.get("model") or args.get("model")
        out.append(ServingCase(w, model, None, "unknown", max(int(round(isl)), 1), max(int(round(osl)), 1), rate,
                               conc, int(reqs or 200), ttft / 1e3, tpot / 1e3, stat))
    return out


_TIME_UNITS_S = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _find(node, keys: tuple[str, ...]):
    """The first value under any of ``keys`` in a nested mapping (depth first; None if absent)."""
    if isinstance(node, dict):
        for k in keys:
            if node.get(k) is not None:
                return node[k]
        for v in node.values():
            hit = _find(v, keys)
            if hit is not None:
                return hit
    return None


def _aiperf(d: dict, where: str) -> ServingCase:
    """A genai-perf (``profile_export_genai_perf.json``) or AIPerf (``profile_export_aiperf.json``) export:
    each metric a mapping of statistics (``avg``, ``p50``, ...) with its ``unit``; the run's arguments under
    ``input_config``. Their ``inter_token_latency`` is per request (E2E - TTFT) / (output tokens - 1), the
    TPOT of the other clients."""
    stat = "median" if all(isinstance(d.get(m), dict) and d[m].get("p50") is not None
                           for m in ("time_to_first_token", "inter_token_latency")) else "mean"

    def metric(name: str, key: str, *, time: bool) -> float:
        node = d.get(name)
        if not isinstance(node, dict):
            raise SpecError(where, name, "required metric is missing")
        v = _measured(node, key, f"{where}: {name}")
        if not time:
            return v
        unit = str(node.get("unit") or "ms").strip().lower()
        if unit not in _TIME_UNITS_S:
            raise SpecError(where, f"{name}.unit", f"expected one of {', '.join(_TIME_UNITS_S)}, got {unit!r}")
        return v * _TIME_UNITS_S[unit]

    key = "p50" if stat == "median" else "avg"
    ttft, tpot = (metric(m, key, time=True) for m in ("time_to_first_token", "inter_token_latency"))
    # lengths: their means (a fixed-length run has every statistic equal)
    isl, osl = (max(int(round(metric(m, "avg", time=False))), 1)
                for m in ("input_sequence_length", "output_sequence_length"))
    cfg = d.get("input_config")
    count = d.get("request_count")
    count = count.get("avg") if isinstance(count, dict) else count
    conc = _find(cfg, ("concurrency",))
    load = {"concurrency": conc if conc is not None else d.get("concurrency"),
            "request_rate": _find(cfg, ("request_rate",))}
    if load["concurrency"] is not None:
        rate_v, conc_v = None, _count(load, "concurrency", where)
    elif load["request_rate"] is not None:
        rate_v, conc_v = _num(load, "request_rate", where), None
        if math.isinf(rate_v):  # everything at once: a closed loop as wide as the run (as for vLLM's JSON)
            rate_v, conc_v = None, _count({"request_count": count}, "request_count", where)
    else:
        raise SpecError(where, "input_config.concurrency", "the run's load is not recorded (no concurrency nor "
                                                           "request_rate)")
    model = _find(cfg, ("model_names", "model"))
    model = model[0] if isinstance(model, list) and model else model
    return ServingCase(source=where, model=str(model) if model else d.get("model"), hardware=d.get("hardware"),
                       engine="unknown", isl=isl, osl=osl, rate_per_s=rate_v, concurrency=conc_v,
                       requests=int(count) if isinstance(count, (int, float)) and count >= 1 else 200,
                       ttft_s=ttft, tpot_s=tpot, statistic=stat)


_CSV_REQUIRED = ("model", "hardware", "isl", "osl")


# the clients' length-spread conventions: column -> (closed or open upper bound, (low, high) fractions of L)
_SPREADS = {"random_range_ratio": ("]", lambda r: (r, 1.0)),  # sglang.bench_serving: [r L, L]
            "vllm_random_range_ratio": (")", lambda r: (1.0 - r, 1.0 + r))}  # vllm bench serve: [(1-r) L, (1+r) L]


def _read_csv(path: Path, text: str) -> list[ServingCase]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    names = [str(c).strip() for c in reader.fieldnames or []]
    dup = next((c for c in names if names.count(c) > 1), None)
    if dup is not None:  # (DictReader would keep the last one silently)
        raise SpecError(str(path), "line 1", f"column {dup!r} appears more than once")
    if not rows:
        raise SpecError(str(path), "", "no rows (expected a header line and one measured run per line)")
    cols = set(rows[0])
    missing = [c for c in _CSV_REQUIRED if c not in cols]
    if not ({"ttft_s", "tpot_s"} <= cols or {"ttft_ms", "tpot_ms"} <= cols):
        missing.append("ttft_s,tpot_s (or ttft_ms,tpot_ms)")
    if not ({"rate_per_s", "concurrency"} & cols):
        missing.append("rate_per_s or concurrency")
    if missing:
        raise SpecError(str(path), "", f"missing column(s): {'; '.join(missing)}")
    if {"frontend_latency_s", "frontend_latency_ms"} <= cols:
        raise SpecError(str(path), "", "give one of frontend_latency_s and frontend_latency_ms, not both")
    if {"random_range_ratio", "vllm_random_range_ratio"} <= cols:
        raise SpecError(str(path), "", "give one of random_range_ratio (sglang.bench_serving) and "
                                       "vllm_random_range_ratio (vllm bench serve), not both")
    if {"requests", "num_prompts"} <= cols:
        raise SpecError(str(path), "", "give one of requests and num_prompts (the run's prompt count), not both")
    prompts_col = next((c for c in ("requests", "num_prompts") if c in cols), None)
    cases = []
    for i, row in enumerate(rows):
        line = i + 2
        if None in row.values() or None in row:  # csv: a short row leaves cells None, a long one adds a None key
            n = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
            raise SpecError(str(path), f"line {line}", f"expected {len(cols - {None})} comma-separated fields "
                                                       f"(the header's), got {n}")

        def cell(name, kind=float, lo=0.0, required=True, r=row, line=line):
            raw = (r.get(name) or "").strip()
            if not raw:
                if required:
                    raise SpecError(str(path), f"line {line}, column {name}", "empty cell")
                return None
            try:
                v = float(raw)
            except ValueError:
                raise SpecError(str(path), f"line {line}, column {name}", f"expected a number, got {raw!r}") from None
            if not math.isfinite(v) or v <= lo or (kind is int and v != round(v)):
                want = "a whole number >= 1" if kind is int else f"a finite number > {lo:g}"
                raise SpecError(str(path), f"line {line}, column {name}", f"expected {want}, got {raw!r}")
            return int(v) if kind is int else v

        scale = 1.0 if "ttft_s" in cols else 1e-3
        rate = cell("rate_per_s", required=False) if "rate_per_s" in cols else None
        conc = cell("concurrency", int, required=False) if "concurrency" in cols else None
        if (rate is None) == (conc is None):
            raise SpecError(str(path), f"line {line}", "give exactly one of rate_per_s and concurrency")
        for name in ("model", "hardware"):
            if not (row.get(name) or "").strip():
                raise SpecError(str(path), f"line {line}, column {name}", "empty cell")
        stat = (row.get("statistic") or "median").strip().lower()
        if stat not in ("median", "mean"):
            raise SpecError(str(path), f"line {line}, column statistic", f"expected median or mean, got {stat!r}")
        spread = (1.0, 1.0)
        for col, (top, span) in _SPREADS.items():
            ratio = cell(col, lo=-math.inf, required=False) if col in cols else None
            if ratio is None:
                continue
            if not (0 <= ratio <= 1 if top == "]" else 0 <= ratio < 1):
                raise SpecError(str(path), f"line {line}, column {col}", f"expected a fraction in [0, 1{top}, "
                                                                         f"got {ratio:g}")
            spread = span(ratio)
        # the run's prompt count: ``requests``, or ``num_prompts`` as vLLM's client calls it
        n_req = cell(prompts_col, int, required=False) if prompts_col else None
        extra = {k: cell(k, int, required=False) for k in ("max_batch_tokens", "max_seqs", "replicas",
                                                            "scheduler_recv_interval") if k in cols}
        for col, unit_s in (("frontend_latency_s", 1.0), ("frontend_latency_ms", 1e-3)):
            if col in cols:  # the server's frontend, where it is not the engine's own (empty: the engine's)
                raw = (row.get(col) or "").strip()
                if not raw:
                    continue
                try:
                    v = float(raw)
                except ValueError:
                    v = math.nan
                if not (math.isfinite(v) and v >= 0):
                    raise SpecError(str(path), f"line {line}, column {col}", f"expected a finite number >= 0, "
                                                                             f"got {raw!r}")
                extra["frontend_latency_s"] = v * unit_s
        waits = {}
        for col in ("batch_wait_timeout_iters", "batch_wait_max_tokens_ratio"):
            raw = (row.get(col) or "").strip() if col in cols else ""
            if raw:
                try:
                    waits[col] = float(raw)
                except ValueError:
                    raise SpecError(str(path), f"line {line}, column {col}", f"expected a number, got {raw!r}") \
                        from None
        extra.update(_batch_wait(waits.get("batch_wait_timeout_iters"), waits.get("batch_wait_max_tokens_ratio"),
                                 str(path), f"line {line}, column batch_wait_timeout_iters",
                                 f"line {line}, column batch_wait_max_tokens_ratio"))
        if "memory_fraction" in cols and (row.get("memory_fraction") or "").strip():
            mf = cell("memory_fraction", lo=-math.inf)
            if not 0.01 <= mf <= 1.0:
                raise SpecError(str(path), f"line {line}, column memory_fraction",
                                f"expected the engine's KV memory fraction in [0.01, 1], got {mf:g}")
            extra["memory_fraction"] = mf
        if "engine_version" in cols and (row.get("engine_version") or "").strip():  # the engine release measured
            from ..serving.profiles import release_problem

            if problem := release_problem(row["engine_version"].strip()):
                raise SpecError(str(path), f"line {line}, column engine_version", problem)
            extra["engine_version"] = row["engine_version"].strip()
        cases.append(ServingCase(
            source=f"{path} line {line}", model=row["model"].strip(), hardware=row["hardware"].strip(),
            engine=engine_name(row.get("engine"), str(path), f"line {line}, column engine"),
            isl=cell("isl", int), osl=cell("osl", int), rate_per_s=rate, concurrency=conc,
            # the usual client setting where the row does not say: --num-prompts 10 x C (closed loop)
            requests=n_req or (10 * conc if conc else 200),
            ttft_s=cell("ttft_s" if scale == 1.0 else "ttft_ms") * scale,
            tpot_s=cell("tpot_s" if scale == 1.0 else "tpot_ms") * scale, statistic=stat,
            length_low=spread[0], length_high=spread[1],
            extra={k: v for k, v in extra.items() if v is not None},
            devices=cell("devices", int, required=False) if "devices" in cols else None,
            tp=cell("tp", int, required=False) if "tp" in cols else None,
            pp=cell("pp", int, required=False) if "pp" in cols else None,
            ep=cell("ep", int, required=False) if "ep" in cols else None,
            precision=_given(row.get("precision")), kv_precision=_given(row.get("kv_precision"))))
    return cases


def _given(cell: str | None) -> str | None:
    """A precision cell; empty or the engines' ``auto`` (the checkpoint's own dtype) leave it to the defaults."""
    v = (cell or "").strip()
    return None if not v or v.lower() == "auto" else v


# -- re-simulation ---------------------------------------------------------------------------------------

_LAYOUT = ("devices", "tp", "pp", "ep", "precision", "kv_precision")  # a run's fields the flags may supply


def resimulate(case: ServingCase, defaults: dict | None = None, max_requests: int = 1000, timing=None) -> dict:
    """Simulate one measured run (``timing``: the timing model, the roofline by default); returns the row of the
    report (measured, simulated, errors)."""
    from ..build import PlanOptions, quick_deployment
    from ..serving.runner import simulate
    from ..specs.catalog import resolve_workload
    from ..specs.deployment import read_deployment
    from ..specs.traffic import simple_traffic

    d = {k: v for k, v in (defaults or {}).items() if v is not None}
    dep_ref = d.get("deployment") or (case.deployment if case.deployment and Path(case.deployment).is_file()
                                      else None)
    # the engine that served the run: the one the run names (with a deployment file, only an engine that
    # overrode the file's pools, as `simulate --engine` records it), else --engine, else the deployment's own
    named = case.extra.get("engine_override") if dep_ref else (None if case.engine == "unknown" else case.engine)
    engine = named or d.get("engine")
    # what is simulated: the run's own fields, else the flags; a flag the run contradicts is reported, not used
    ignored = [f"--{k.replace('_', '-')} {d[k]} (the run records {getattr(case, k)})"
               for k in ("model", "hardware", *_LAYOUT)
               if k in d and getattr(case, k) is not None and not _same(k, getattr(case, k), d[k])]
    if named and d.get("engine") and d["engine"] != named:
        ignored.append(f"--engine {d['engine']} (the run records {named})")
    run = replace(case, model=case.model or d.get("model"), hardware=case.hardware or d.get("hardware"),
                  deployment=case.deployment or d.get("deployment"),
                  # a run that does not name its engine is grouped under the one simulated (the flag's, or vLLM's)
                  engine=case.engine if case.engine != "unknown" or dep_ref else f"{engine or 'vllm'} (not recorded)",
                  **{k: getattr(case, k) if getattr(case, k) is not None else d.get(k) for k in _LAYOUT})
    if dep_ref:
        dep = read_deployment(resolve_workload(str(dep_ref), "deployments", "deployment"))
        if case.extra.get("frontend_latency_s") is not None:  # the run's frontend, on the pools clients send to
            dep = replace(dep, pools=tuple(replace(p, frontend_latency_s=case.extra["frontend_latency_s"])
                                           if p.role != "decode" else p for p in dep.pools))
        if "batch_wait_timeout_iters" in case.extra:  # the run's batch waiting, on the pools that run prompts
            dep = replace(dep, pools=tuple(
                replace(p, batch_wait_timeout_iters=case.extra["batch_wait_timeout_iters"],
                        batch_wait_max_tokens_ratio=case.extra.get("batch_wait_max_tokens_ratio", 0.0))
                if p.role != "decode" else p for p in dep.pools))
    else:
        if int(case.extra.get("pools", 1)) > 1:
            raise SpecError(case.source, "deployment_file", "the run used a deployment of several pools whose file "
                                                            "is not found: pass --deployment FILE")
        if not run.model or not run.hardware:
            raise SpecError(case.source, "model" if not run.model else "hardware",
                            "not recorded in the result: pass --model/--hardware (or --deployment)")
        if run.devices is None:
            run = replace(run, devices=(run.tp or 1) * (run.pp or 1))
        fields = {k: getattr(run, k) for k in ("model", "hardware", *_LAYOUT) if getattr(run, k) is not None}
        # batch limits the run does not record: the engine server's defaults for the device
        limit = lambda k: int(case.extra[k]) if case.extra.get(k) is not None else None  # noqa: E731
        dep = quick_deployment(PlanOptions(**fields), max_batch_tokens=limit("max_batch_tokens"),
                               max_seqs=limit("max_seqs"), replicas=int(case.extra.get("replicas", 1)),
                               scheduler_recv_interval=limit("scheduler_recv_interval") or 1,
                               frontend_latency_s=case.extra.get("frontend_latency_s"), engine=engine or "vllm",
                               memory_fraction=case.extra.get("memory_fraction"),
                               batch_wait=(int(case.extra.get("batch_wait_timeout_iters") or 0),
                                           float(case.extra.get("batch_wait_max_tokens_ratio") or 0.0)))
    n = max(1, min(case.requests, max_requests))
    # a closed loop as the benchmark clients run it: the C clients start together (unless the result says otherwise)
    ramp = (case.ramp_up_s if case.ramp_up_s is not None else 0.0) if case.concurrency else None
    traffic = simple_traffic(rate=case.rate_per_s, concurrency=case.concurrency, isl=case.isl, osl=case.osl,
                             requests=n, seed=0, ramp_up_s=ramp)
    from ..specs.traffic import LengthDist

    if case.input_lens and case.output_lens:  # the measured length distribution, not just its mean
        traffic = replace(traffic, prompt=LengthDist("empirical", values=tuple(map(float, case.input_lens))),
                          output=LengthDist("empirical", values=tuple(map(float, case.output_lens))))
    elif (case.length_low, case.length_high) != (1.0, 1.0):  # the client's --random-range-ratio spread
        span = lambda n_: dict(low=max(1, int(n_ * case.length_low)), high=max(1, int(n_ * case.length_high)))  # noqa: E731
        traffic = replace(traffic, prompt=LengthDist("uniform", **span(case.isl)),
                          output=LengthDist("uniform", **span(case.osl)))
    # the release measured, where the engine simulated has constants that depend on it (else it changes nothing)
    from ..serving.profiles import versioned_engines

    release = case.extra.get("engine_version_override") if dep_ref else case.extra.get("engine_version")
    if not any((engine or p.engine) in versioned_engines() for p in dep.pools):
        release = None
    res = simulate(dep, replace(traffic, requests=n), engine=engine, overheads=case.extra.get("overheads", True),
                   timing=timing, engine_version=release)
    done = res.requests[res.requests["status"] == "finished"]
    agg = np.median if case.statistic == "median" else np.mean
    sim_ttft = float(agg(done["ttft_s"])) if len(done) else math.nan
    tp = done["tpot_s"].dropna()
    sim_tpot = float(agg(tp)) if len(tp) else math.nan
    simulated = res.summary["engines"]
    return {"source": case.source, "group": run.group, "model": dep.model.id, "engine": case.engine,
            "engine_simulated": ",".join(dict.fromkeys(simulated.values())),
            "isl": case.isl, "osl": case.osl, "rate_per_s": case.rate_per_s, "concurrency": case.concurrency,
            "statistic": case.statistic, "requests_simulated": n, "requests_finished": int(len(done)),
            "ttft_s_measured": case.ttft_s, "ttft_s_simulated": sim_ttft,
            # of which in the server's frontend (the engine's, or the run's own where it names one)
            "frontend_s_simulated": float(done["frontend_s"].mean()) if len(done) else math.nan,
            "tpot_s_measured": case.tpot_s, "tpot_s_simulated": sim_tpot,
            "ttft_ape": _ape(sim_ttft, case.ttft_s), "tpot_ape": _ape(sim_tpot, case.tpot_s),
            "flags_ignored": "; ".join(ignored), "hardware_simulated": ",".join(dep.device_ids)}


def _same(field: str, recorded, flag) -> bool:
    """Whether a flag agrees with what a run records (models and devices compared by catalogue id, so a
    Hugging Face name and its id agree; precisions by their canonical name)."""
    if str(recorded) == str(flag):
        return True
    if field in ("precision", "kv_precision"):  # the engines' spellings (FP8, fp8_e4m3, bfloat16) as one name
        from ..precision import canonical_precision

        return canonical_precision(str(recorded)) == canonical_precision(str(flag))
    if field in ("model", "hardware"):
        from ..specs.catalog import load_hardware, load_model

        load = load_model if field == "model" else load_hardware
        try:
            return load(str(recorded)).id == load(str(flag)).id
        except SimulatorError:  # (one is not in the catalogue: the run's own is simulated and fails there)
            return False
    return False


def _ape(sim: float, meas: float) -> float:
    return abs(sim - meas) / meas if meas > 0 and math.isfinite(sim) else math.nan


def _summary(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for m in ("ttft", "tpot"):
        ape = np.array([r[f"{m}_ape"] for r in rows], dtype=float)
        ratio = np.array([r[f"{m}_s_simulated"] / r[f"{m}_s_measured"] if r[f"{m}_s_measured"] > 0 else math.nan
                          for r in rows], dtype=float)
        ok = np.isfinite(ape)
        out[f"{m}_median_ape"] = float(np.median(ape[ok])) if ok.any() else None
        out[f"{m}_max_ape"] = float(np.max(ape[ok])) if ok.any() else None
        good = np.isfinite(ratio) & (ratio > 0)
        out[f"{m}_bias"] = float(np.exp(np.mean(np.log(ratio[good])))) if good.any() else None
    return out


def validate_serving(path: str | Path, defaults: dict | None = None, max_requests: int = 1000,
                     progress=None, cases: list[ServingCase] | None = None, timing=None) -> dict:
    """Re-simulate every measured run of ``path`` (or ``cases``, read from it already) with ``timing`` (the
    roofline by default; a calibrated or measured model must apply to a device some run used); {rows, groups,
    overall}."""
    cases = read_serving_results(path) if cases is None else cases
    rows = []
    for case in cases:
        try:
            rows.append(resimulate(case, defaults, max_requests, timing))
        except SimulatorError as exc:  # a run the simulator cannot build (a bad model, layout, ...): say which run
            raise SpecError(case.source, "", str(exc)) from None
        if progress:
            progress(1)
    if timing is not None and rows:
        from ..timing.calibrated import check_overlays_apply

        check_overlays_apply(timing, {h for r in rows for h in r["hardware_simulated"].split(",")}, "--timing")
    groups = []
    for g in dict.fromkeys(r["group"] for r in rows):
        groups.append({"group": g, **_summary([r for r in rows if r["group"] == g])})
    return {"rows": rows, "groups": groups, "overall": _summary(rows)}
