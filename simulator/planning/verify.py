"""Check candidates with the discrete-event simulator and find the largest rate each sustains.

One task = one deployment: simulate it at the target rate, then bracket and bisect (geometrically)
the largest arrival rate at which the p-percentile TTFT and TPOT still meet the SLOs with no
request rejected. Tasks fan out over local processes (``concurrent.futures``) by default, or over
any executor with the same interface (e.g. a Dask ``Client.get_executor()``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import replace

import numpy as np

from ..errors import SimulatorError
from ..serving.runner import simulate
from ..specs.deployment import Deployment
from ..specs.traffic import SLO, Traffic


def _pct(values: np.ndarray, p: float) -> float | None:
    v = values[np.isfinite(values)]
    return float(np.percentile(v, p)) if len(v) else None


@functools.lru_cache(maxsize=8)
def timing_model(spec: str | None):
    """One timing model per spec and process: a measured table is read once, not once per probe."""
    from ..timing.calibrated import resolve_timing

    return resolve_timing(spec)


STEADY_MAX_REQUESTS = 20_000  # one verification run draws at most this many requests


def steady_window(req) -> tuple[np.ndarray, float]:
    """The open-loop requests a steady state describes, and the arrival span they cover: those arriving at
    least one median request lifetime (E2E) after the first arrival, while the batches fill, and one before the
    last, while they drain. Without enough of them (fewer than a quarter of the run, or 50) every request, over
    the whole arrival span."""
    arr = req.arrival_s.to_numpy(dtype=float)
    e2e = req.e2e_s.to_numpy(dtype=float)
    e2e = e2e[np.isfinite(e2e)]
    t0, t1 = float(np.nanmin(arr)), float(np.nanmax(arr))
    if len(e2e):
        life = float(np.median(e2e))
        lo, hi = t0 + life, t1 - life
        mask = (arr >= lo) & (arr <= hi)
        if hi > lo and mask.sum() >= max(50, len(arr) // 4):
            return mask, hi - lo
    return np.ones(len(arr), bool), max(t1 - t0, 1e-12)


def run_at(dep: Deployment, traffic: Traffic, slo: SLO, rate_per_s: float, *, keep_samples: bool = False,
           timing: str | None = None, steady_s: float = 0.0) -> dict:
    """One DES run at ``rate_per_s``: p-percentile TTFT/TPOT, goodput, utilisation, whether the SLOs hold.
    ``timing`` is a --timing spec (a string, so it travels to worker processes).

    An open-loop run draws at least ``rate_per_s x steady_s`` requests (``steady_s``: arrivals long enough to
    reach a steady state; at most STEADY_MAX_REQUESTS), and its latencies, goodput and throughput are those of
    the requests in ``steady_window``: a short run's requests see the batch still filling, or draining, and read
    faster than the fleet serves a steady stream. Any rejected request fails the SLOs."""
    t = replace(traffic, rate_per_s=rate_per_s, slo=slo)
    open_loop = traffic.arrival in ("poisson", "gamma")
    if open_loop and steady_s > 0:
        t = replace(t, requests=max(t.requests, min(STEADY_MAX_REQUESTS, math.ceil(rate_per_s * steady_s))))
    res = simulate(dep, t, timing=timing_model(timing))
    req = res.requests
    mask, span_s = steady_window(req) if open_loop else (np.ones(len(req), bool), 0.0)
    win = req[mask]
    done = win[win.status == "finished"]
    ttft = done.ttft_s.to_numpy(dtype=float)
    tpot = done.tpot_s.to_numpy(dtype=float)
    ttft_p, tpot_p = _pct(ttft, slo.percentile), _pct(tpot, slo.percentile)
    rejected = int((req.status == "rejected").sum())
    met = bool(len(done) and rejected == 0 and ttft_p is not None and ttft_p <= slo.ttft_s
               and (tpot_p is None or tpot_p <= slo.tpot_s))
    sm = res.summary
    if open_loop:  # the steady-state requests: good ones and tokens per second of their arrival span
        good = (ttft <= slo.ttft_s) & ~(np.nan_to_num(tpot, nan=0.0) > slo.tpot_s)
        goodput = {"fraction_of_requests": float(good.sum() / max(len(win), 1)),
                   "requests_per_s": float(good.sum() / span_s)}
        out_tps = float(done.output_tokens.sum() / span_s)
        in_tps = float(done.prompt_tokens.sum() / span_s)
    else:
        goodput = sm["goodput"]
        out_tps, in_tps = sm["output_tokens_per_s"], sm["input_tokens_per_s"]
    out = {"rate_per_s": rate_per_s, "ttft_p_s": ttft_p, "tpot_p_s": tpot_p, "slo_met": met,
           "token_share": token_share(done),
           "missed": [] if met else missed_because(req, slo, ttft_p, tpot_p),
           "rejected": rejected, "goodput_fraction": goodput["fraction_of_requests"],
           "goodput_requests_per_s": goodput["requests_per_s"], "requests_simulated": int(len(req)),
           "requests_measured": int(len(win)),
           "output_tokens_per_s": out_tps, "input_tokens_per_s": in_tps,
           "utilisation": {k: {q: float(v) for q, v in u.items()} for k, u in sm["utilisation"].items()}}
    if keep_samples:
        out["samples"] = {"ttft_s": [float(x) for x in ttft], "tpot_s": [float(x) for x in tpot if np.isfinite(x)]}
    return out


def token_share(done) -> dict[str, dict[str, float]]:
    """Each pool's share of the finished requests' tokens: ``input`` of the prompt tokens it prefilled, ``output``
    of the output tokens it decoded (a replica id is ``POOL/INDEX``). A pool serving a routed share of the
    requests (a long/short split) is charged for its share of the tokens, not for all of them."""
    out: dict[str, dict[str, float]] = {}
    for kind, col, tokens in (("input", "prefill_replica", "prompt_tokens"), ("output", "decode_replica",
                                                                              "output_tokens")):
        if col not in done.columns or not len(done):
            continue
        pool = done[col].astype(str).str.rsplit("/", n=1).str[0]
        per = done[tokens].astype(float).groupby(pool.to_numpy()).sum()
        total = float(per.sum())
        for name, v in per.items():
            out.setdefault(str(name), {})[kind] = float(v) / total if total > 0 else 0.0
    return out


def missed_because(req, slo: SLO, ttft_p: float | None, tpot_p: float | None) -> list[str]:
    """What broke the SLOs in one run, in words (the first rejection reason, the percentiles over their
    targets): what a planner reads next to "SLO missed"."""
    out = []
    rejected = req[req.status == "rejected"]
    if len(rejected):
        out.append(f"{len(rejected)} of {len(req)} requests rejected ({rejected.reason.iloc[0]})")
    if not (req.status == "finished").any():
        out.append("no request finished")
    for name, v, lim in (("TTFT", ttft_p, slo.ttft_s), ("TPOT", tpot_p, slo.tpot_s)):
        if v is not None and v > lim:
            out.append(latency_miss(name, v, lim, slo.percentile))
    return out


def latency_miss(name: str, value_s: float, target_s: float, percentile: float | None) -> str:
    """``p90 TPOT 48.7 ms vs 40.0 ms (+22%)``: one latency over its target, in words (one decimal below 10%, so a
    near miss does not read "+0%"); ``percentile`` None: a single analytic value (``TPOT 48.7 ms vs ...``)."""
    over = value_s / target_s - 1
    # (a miss of 10x or more reads as a factor: "+394616083893%" says less than "3.9e+09x the target")
    pct = f"+{over:.1%}" if over < 0.1 else f"+{over:.0%}" if over < 9 else f"{value_s / target_s:.3g}x the target"
    from ..units import format_ms

    which = f"p{percentile:g} " if percentile is not None else ""
    return f"{which}{name} {format_ms(value_s)} vs {format_ms(target_s)} ({pct})"


def verify_task(dep: Deployment, traffic: Traffic, slo: SLO, rate_per_s: float, bisect_steps: int = 3,
                expand_steps: int = 2, keep_samples: bool = True, timing: str | None = None,
                steady_s: float = 0.0) -> dict:
    """Target-rate run plus the maximum sustainable rate: bracket by doubling (or halving) up to
    ``expand_steps`` times - so the search covers 1/4x to 4x the target by default; beyond that the
    answer is reported as a bound (``max_rate_bounded`` false; or ``max_rate_per_s`` None when even the lowest
    rate tried, ``lowest_rate_tried_per_s``, missed) - then bisect geometrically."""
    try:
        first = run_at(dep, traffic, slo, rate_per_s, keep_samples=keep_samples, timing=timing, steady_s=steady_s)
    except SimulatorError as exc:  # e.g. does not fit: a failed candidate, not a failed plan
        return {"rate_per_s": rate_per_s, "ttft_p_s": None, "tpot_p_s": None, "slo_met": False, "rejected": 0,
                "missed": [str(exc)], "goodput_fraction": None, "goodput_requests_per_s": None,
                "output_tokens_per_s": None, "input_tokens_per_s": None, "utilisation": {}, "max_rate_per_s": None,
                "max_rate_bounded": True, "lowest_rate_tried_per_s": None, "load_trace": [], "error": str(exc)}
    trace = [{k: first[k] for k in ("rate_per_s", "ttft_p_s", "tpot_p_s", "slo_met")}]

    def probe(r):
        try:
            res = run_at(dep, traffic, slo, r, timing=timing, steady_s=steady_s)
        except SimulatorError as exc:  # a rate the simulator cannot run (its arrivals past the clock's span): a miss
            trace.append({"rate_per_s": r, "ttft_p_s": None, "tpot_p_s": None, "slo_met": False, "error": str(exc)})
            return False
        trace.append({k: res[k] for k in ("rate_per_s", "ttft_p_s", "tpot_p_s", "slo_met")})
        return res["slo_met"]

    lo, hi = (rate_per_s, None) if first["slo_met"] else (None, rate_per_s)
    for _ in range(expand_steps):
        if lo is not None and hi is not None:
            break
        if hi is None:
            r = lo * 2.0
            if probe(r):
                lo = r
            else:
                hi = r
        else:
            r = hi / 2.0
            if probe(r):
                lo = r
            else:
                hi = r
    if lo is not None and hi is not None:
        for _ in range(bisect_steps):
            mid = math.sqrt(lo * hi)
            if probe(mid):
                lo = mid
            else:
                hi = mid
    # None: every rate tried missed, so the maximum lies below the lowest of them (not searched further)
    first["max_rate_per_s"] = lo
    first["max_rate_bounded"] = hi is not None  # False: still met at the largest rate tried
    first["lowest_rate_tried_per_s"] = min(t["rate_per_s"] for t in trace)
    first["load_trace"] = sorted(trace, key=lambda d: d["rate_per_s"])
    return first


def verify_many(deps: Sequence[Deployment], traffic: Traffic, slo: SLO, rate_per_s: float, *,
                bisect_steps: int = 3, workers: int | None = None, executor: Executor | None = None,
                progress: Callable[[int, int], None] | None = None, timing: str | None = None,
                steady_s: float = 0.0, expand_steps: int = 2) -> list[dict]:
    """Verify every deployment; results in input order. Local processes unless ``executor`` is given.
    ``expand_steps``: the doublings (or halvings) that bracket each one's maximum rate (``verify_task``)."""
    if not deps:
        return []
    results: list[dict | None] = [None] * len(deps)
    # never more processes than simulations to run
    workers = min(workers if workers is not None else (os.cpu_count() or 1), len(deps))
    own = None
    if executor is None and workers > 1:
        own = executor = ProcessPoolExecutor(max_workers=workers)
    try:
        if executor is None:
            for i, d in enumerate(deps):
                results[i] = verify_task(d, traffic, slo, rate_per_s, bisect_steps, expand_steps, timing=timing,
                                         steady_s=steady_s)
                if progress:
                    progress(i + 1, len(deps))
        else:
            futs = {executor.submit(verify_task, d, traffic, slo, rate_per_s, bisect_steps, expand_steps,
                                   timing=timing, steady_s=steady_s): i
                    for i, d in enumerate(deps)}
            for n, f in enumerate(as_completed(futs), 1):
                results[futs[f]] = f.result()
                if progress:
                    progress(n, len(deps))
    finally:
        if own is not None:
            own.shutdown()
    return results  # type: ignore[return-value]


def cluster_executor(address: str) -> Executor:
    """A ``concurrent.futures`` executor on an existing Dask cluster (the ``cluster`` extra)."""
    try:
        from dask.distributed import Client
    except ImportError:
        from ..errors import SimulatorError

        raise SimulatorError("--cluster needs the `cluster` extra: pip install 'quadrant-sim[cluster]'") from None
    client = Client(address)
    ex = client.get_executor()
    ex.close_client = client.close  # callers close the connection when done (see ``close_executor``)
    return ex


def close_executor(ex) -> None:
    close = getattr(ex, "close_client", None)
    if close is not None:
        close()
