"""Conventional result layouts: inter-token latency from the step records, and the fields of vLLM's
``vllm bench serve --save-result`` JSON so a simulated run can stand in wherever a benchmark result is read.

vLLM's layout (benchmarks/serve in the vLLM repository): counts (``completed``, ``failed``,
``total_input_tokens``, ``total_output_tokens``), throughputs per second (``request_throughput``,
``request_goodput``, ``output_throughput``, ``total_token_throughput``), ``duration`` in seconds, and for each of
ttft, tpot, itl and e2el the keys ``mean_<m>_ms``, ``median_<m>_ms``, ``std_<m>_ms`` and ``p<P>_<m>_ms``
in milliseconds; per-request lists ``input_lens``, ``output_lens``, ``ttfts`` (seconds).
"""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 99)


def itl_samples(steps, requests=None) -> tuple[np.ndarray, np.ndarray]:
    """Inter-token latencies (s) and their weights over the whole run: ``serving.metrics.inter_token_samples``
    (the rule the summary's ``itl_s`` uses over its measurement window; with ``requests``, each request's first
    gap from its own first token)."""
    from ..serving.metrics import inter_token_samples

    if steps is None or not len(steps):
        return np.zeros(0), np.zeros(0)
    return inter_token_samples(steps, requests=requests)


def itl_stats(steps, requests=None) -> dict:
    """{mean, p50, p90, p99} of the inter-token latency in seconds (None when no token followed another)."""
    from ..serving.metrics import weighted_stats

    return weighted_stats(*itl_samples(steps, requests))


def _ms_block(name: str, values_s: np.ndarray, weights: np.ndarray | None = None) -> dict:
    v = np.asarray(values_s, dtype=float)
    keep = np.isfinite(v)
    v = v[keep]
    w = None if weights is None else np.asarray(weights, dtype=float)[keep]
    keys = [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms", *(f"p{p}_{name}_ms" for p in PERCENTILES)]
    if not len(v):
        return dict.fromkeys(keys)
    if w is None:  # as vLLM computes them: numpy mean, std, median and (interpolated) percentiles
        pct = lambda p: float(np.percentile(v, p))  # noqa: E731
        mean, std = float(np.mean(v)), float(np.std(v))
    else:
        from ..serving.metrics import weighted_percentiles

        pct = lambda p: weighted_percentiles(v, w, [p])[0]  # noqa: E731
        mean = float(np.average(v, weights=w))
        std = float(np.sqrt(np.average((v - mean) ** 2, weights=w)))
    out = {keys[0]: mean * 1e3, keys[1]: pct(50) * 1e3, keys[2]: std * 1e3}
    out.update({f"p{p}_{name}_ms": pct(p) * 1e3 for p in PERCENTILES})
    return out


def vllm_bench_result(res, traffic=None, deployment=None) -> dict:
    """A SimulationResult in the layout of ``vllm bench serve --save-result`` (ms keys, per-second rates)."""
    req, sm = res.requests, res.summary
    done = req[req["status"] == "finished"]
    # a horizon can stop the clock before some requests were sent: the client never sent them, so they are neither
    # completed nor failed (``not_arrived``, an extra key: completed + failed + not_arrived = num_prompts)
    not_arrived = int(sm.get("requests_not_arrived") or 0)
    dur = float(sm["makespan_s"])
    in_tok, out_tok = int(done["prompt_tokens"].sum()), int(done["output_tokens"].sum())
    slo = getattr(traffic, "slo", None)
    has_slo = slo is not None and (np.isfinite(slo.ttft_s) or np.isfinite(slo.tpot_s))
    rate = getattr(traffic, "rate_per_s", None)
    closed = getattr(traffic, "arrival", "") == "closed"
    out = {
        "backend": "quadrant-sim",
        "model_id": getattr(getattr(deployment, "model", None), "id", None),
        "deployment": getattr(deployment, "id", None),
        "num_prompts": int(len(req)),
        "request_rate": None if closed or not rate else float(rate),
        "burstiness": float(1.0 / traffic.cv ** 2) if traffic is not None and traffic.arrival == "gamma" else 1.0,
        "max_concurrency": int(traffic.concurrency) if closed else None,
        "duration": dur,
        "completed": int(len(done)),
        "failed": int(len(req) - len(done) - not_arrived),
        "total_input_tokens": in_tok,
        "total_output_tokens": out_tok,
        "request_throughput": len(done) / dur if dur > 0 else None,
        # as vLLM counts it: the completed requests that met every SLO, over the same duration
        "request_goodput": _good(done, slo) / dur if has_slo and dur > 0 else None,
        "output_throughput": out_tok / dur if dur > 0 else None,
        "total_token_throughput": (in_tok + out_tok) / dur if dur > 0 else None,
    }
    if not_arrived:
        out["not_arrived"] = not_arrived
    out.update(_ms_block("ttft", done["ttft_s"].to_numpy(dtype=float)))
    out.update(_ms_block("tpot", done["tpot_s"].to_numpy(dtype=float)))
    x, w = itl_samples(res.steps, res.requests)
    out.update(_ms_block("itl", x, w))
    out.update(_ms_block("e2el", done["e2e_s"].to_numpy(dtype=float)))
    out["input_lens"] = done["prompt_tokens"].astype(int).tolist()
    out["output_lens"] = done["output_tokens"].astype(int).tolist()
    out["ttfts"] = done["ttft_s"].astype(float).tolist()
    out.update(_self_description(deployment))
    pool_name = _decode_pool(deployment).name if deployment is not None else None
    limits = (sm.get("batch_limits") or {}).get(pool_name)
    if limits:  # the limits the run used (a deployment may leave them to the engine's server defaults)
        out.update(limits)
    # what was simulated, so `validate --serving` re-runs it the same way (vLLM's own result has neither)
    engines = sm.get("engines") or {}
    out["engine"] = engines.get(pool_name, next(iter(engines.values()), None))
    if deployment is not None and any(engines.get(p.name, p.engine) != p.engine for p in deployment.pools):
        out["engine_override"] = out["engine"]  # `simulate --engine` replaced the deployment's pool engines
    release = (sm.get("engine_versions") or {}).get(pool_name)
    if release:  # the release the clients' pool served (`--engine-version`, a pool's `engine_version:`)
        out["engine_version"] = release
    if sm.get("engine_version_override"):  # `simulate --engine-version` over the deployment's pool releases
        out["engine_version_override"] = sm["engine_version_override"]
    if sm.get("overheads") is False:  # `simulate --no-overheads`: the bare timing model
        out["overheads"] = False
    if closed:
        out["ramp_up_s"] = float((sm.get("window") or {}).get("ramp_up_s") or 0.0)
    if traffic is not None and len(traffic.__dataclass_fields__):
        out["isl"] = int(round(traffic.prompt.mean)) if traffic.trace is None else None
        out["osl"] = int(round(traffic.output.mean)) if traffic.trace is None else None
    return out


def _good(done, slo) -> int:
    """Completed requests within the TTFT and TPOT targets (``serving.metrics.meets_slo``)."""
    from ..serving.metrics import meets_slo

    ttft_ok, tpot_ok = meets_slo(done["ttft_s"].to_numpy(dtype=float), done["tpot_s"].to_numpy(dtype=float), slo)
    return int((ttft_ok & tpot_ok).sum())


def _decode_pool(dep):
    """The pool whose numbers a one-pool reader takes: the one serving decode (else the first)."""
    return next((p for p in dep.pools if "decode" in p.serves), dep.pools[0])


def _self_description(dep) -> dict:
    """Extra keys (not in vLLM's layout; consumers ignore them) that let ``quadrant validate --serving``
    re-simulate the same deployment: the file when there is one, else the quick-run plan of the decode pool."""
    if dep is None:
        return {}
    from pathlib import Path

    pool = _decode_pool(dep)
    plan = pool.plan
    return {"deployment_file": str(Path(dep.file).resolve()) if dep.file and Path(dep.file).is_file() else None,
            "hardware": plan.attention.hardware.id, "devices": plan.devices, "tp": plan.attention.tp,
            "pp": plan.pp, "ep": plan.ffn.ep, "precision": plan.attention.precision,
            "kv_precision": dep.kv_precision, "replicas": pool.replicas, "max_batch_tokens": pool.max_batch_tokens,
            "max_seqs": pool.max_seqs, "pools": len(dep.pools),
            **({"scheduler_recv_interval": pool.scheduler_recv_interval} if pool.scheduler_recv_interval > 1 else {}),
            **({"batch_wait_timeout_iters": pool.batch_wait_timeout_iters,
                "batch_wait_max_tokens_ratio": pool.batch_wait_max_tokens_ratio}
               if pool.batch_wait_timeout_iters else {}),
            **({"frontend_latency_s": pool.frontend_latency_s} if pool.frontend_latency_s is not None else {})}
