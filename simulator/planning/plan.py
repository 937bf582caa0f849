"""The capacity planner: screen -> verify -> recommend, and ``compare`` for given deployments.

``plan_capacity_for`` screens every arrangement analytically, then runs the cheapest plausible ones
through the discrete-event simulator at the target rate, in cost order, until one meets the SLOs;
every candidate cheaper than the recommendation has therefore been simulated and failed. Each
simulated candidate also gets its maximum sustainable rate (bisection). The result is a JSON-ready
document (``plan.json``) plus what the report needs (deployments, latency samples, breakdown).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..checks import real, whole
from ..errors import InfeasibleError, SimulatorError
from ..specs.catalog import catalog_root, load_hardware, load_model
from ..specs.deployment import ENGINES, Deployment
from ..specs.traffic import MAX_REQUESTS, SLO, Traffic
from ..units import format_slo_targets
from .candidates import (
    MODES,
    PREFILL_MAX_SEQS,
    PoolChoice,
    build_deployment,
    deployment_yaml,
    parse_precision_pairs,
    supports,
)
from .cost import PriceBook, price_date, prices_for, read_tco
from .limits import MAX_BISECT_STEPS, MAX_DEVICES, MAX_WORKERS
from .screen import Workload, screen
from .verify import latency_miss, run_at, timing_model, verify_many


@dataclass(frozen=True)
class PlanRequest:
    """What ``plan_capacity_for`` is asked: a model, traffic and target rate (None: the traffic's), SLOs and
    percentile (None: the traffic's), the hardware to choose from and how far to search. Checked on
    construction (``SimulatorError`` for nonsense)."""

    model: str
    traffic: Traffic
    hardware: list[str]
    rate_per_s: float | None = None
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    percentile: float | None = None
    modes: tuple[str, ...] = MODES
    max_devices: int = 64
    prices: dict[str, float] = field(default_factory=dict)
    tco_file: str | None = None
    precisions: str = "bf16/bf16,fp8/fp8,fp8/w4a8"
    top_k: int = 4  # candidates simulated per round
    verify_max: int = 16  # give up after simulating this many
    requests: int | None = None  # requests per DES run (None: the traffic's own, at least STEADY_LIFETIMES of arrivals)
    bisect_steps: int = 3
    tolerance: float = 0.25  # analytic screen keeps candidates within this factor of the SLOs
    workers: int | None = None
    executor: object = None
    prefill_hardware: list[str] | None = None  # restrict which of ``hardware`` may serve prefill
    decode_hardware: list[str] | None = None  # ... and decode (attention)
    timing: str | None = None  # --timing spec for screening and simulation (roofline by default)
    engine: str = "vllm"  # serving engine profile of every pool (batching policy, step overheads, frontend)
    frontend_latency_s: float | None = None  # every fleet's frontend latency (None: the engine's)
    engine_version: str | None = None  # the engine release every pool serves (None: the profile's default releases)

    def __post_init__(self):
        if not isinstance(self.traffic, Traffic):
            raise SimulatorError(f"PlanRequest.traffic: expected a Traffic, got {type(self.traffic).__name__}")
        for k in ("hardware", "prefill_hardware", "decode_hardware"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, str) or not isinstance(v, (list, tuple))
                                  or not all(isinstance(x, str) for x in v)):
                raise SimulatorError(f"PlanRequest.{k}: expected a list of hardware ids, got {v!r}")
        if not self.hardware:
            raise SimulatorError("PlanRequest.hardware: expected at least one hardware id")
        if not isinstance(self.precisions, str):  # the CLI's comma-separated ATTENTION/FFN pairs
            raise SimulatorError(f"PlanRequest.precisions: expected a string of comma-separated ATTENTION/FFN pairs "
                                 f"(e.g. 'bf16/bf16,fp8/fp8'), got {self.precisions!r}")
        if not isinstance(self.prices, dict):
            raise SimulatorError(f"PlanRequest.prices: expected a dict of hardware id -> USD per device-hour, got "
                                 f"{type(self.prices).__name__}")
        if self.rate_per_s is not None:
            real("PlanRequest.rate_per_s", self.rate_per_s, 0, above=True)
        for k in ("ttft_slo_s", "tpot_slo_s"):
            if getattr(self, k) is not None:
                real(f"PlanRequest.{k}", getattr(self, k), 0, above=True)
        if self.percentile is not None:
            real("PlanRequest.percentile", self.percentile, 1, 100)  # (as --slo-percentile: 0.9 is not p90)
        if isinstance(self.modes, str) or not isinstance(self.modes, (tuple, list)) or not self.modes \
                or not all(isinstance(m, str) and m in MODES for m in self.modes):
            raise SimulatorError(f"PlanRequest.modes: expected a non-empty tuple of {', '.join(MODES)} (e.g. "
                                 f"('agg', 'pd')), got {self.modes!r}")
        if not isinstance(self.model, str) or not self.model:
            raise SimulatorError(f"PlanRequest.model: expected a model id, name or YAML path, got {self.model!r}")
        whole("PlanRequest.max_devices", self.max_devices, 1, MAX_DEVICES)
        whole("PlanRequest.top_k", self.top_k, 1)
        whole("PlanRequest.verify_max", self.verify_max, 1)
        whole("PlanRequest.bisect_steps", self.bisect_steps, 0, MAX_BISECT_STEPS)
        real("PlanRequest.tolerance", self.tolerance, 0, 10)
        if self.requests is not None:
            whole("PlanRequest.requests", self.requests, 1)
        if self.workers is not None:
            whole("PlanRequest.workers", self.workers, 1, MAX_WORKERS)
        if self.frontend_latency_s is not None:
            from ..specs.deployment import MAX_FRONTEND_LATENCY_S

            real("PlanRequest.frontend_latency_s", self.frontend_latency_s, 0, MAX_FRONTEND_LATENCY_S)
        for hw, usd in dict(self.prices).items():
            real(f"PlanRequest.prices[{hw!r}]", usd, 0, above=True)


@dataclass
class PlanOutcome:
    doc: dict  # plan.json
    deployments: dict[str, Deployment]  # candidate id -> deployment (simulated ones)
    samples: dict[str, dict]  # candidate id -> {"ttft_s": [...], "tpot_s": [...]}
    recommended_yaml: dict | None
    breakdown: list[dict] | None  # per-quadrant rows of the recommendation (analytic, at its batch)
    prices: list[dict]
    slo: SLO
    rate_per_s: float
    error_band: dict | None

    @property
    def candidates(self):
        """One row per candidate (cheapest first) as a pandas DataFrame."""
        import pandas as pd

        rows = []
        for c in self.doc["candidates"]:
            a, v = c.get("analytic") or {}, c.get("verified") or {}
            rows.append({"id": c["id"], "mode": c["mode"], "arrangement": c["arrangement"], "devices": c["devices"],
                         "cost_per_hour_usd": c["cost_per_hour_usd"], "usd_per_mtok_output": c["usd_per_mtok_output"],
                         "analytic_ttft_p_s": a.get("ttft_p_s"), "analytic_tpot_p_s": a.get("tpot_p_s"),
                         "ttft_p_s": v.get("ttft_p_s"), "tpot_p_s": v.get("tpot_p_s"), "slo_met": v.get("slo_met"),
                         "max_rate_per_s": v.get("max_rate_per_s")})
        return pd.DataFrame(rows)


def effective_traffic(traffic: Traffic, rate: float | None, requests: int | None = None) -> tuple[Traffic, float]:
    if rate is not None and rate <= 0:
        raise SimulatorError(f"--rate must be > 0, got {rate:g}")
    if traffic.arrival not in ("poisson", "gamma"):
        raise SimulatorError(f"{traffic.file or traffic.id}: arrivals.process is {traffic.arrival!r}; planning "
                             "needs open-loop arrivals (poisson or gamma)")
    rate = rate or traffic.rate_per_s
    t = replace(traffic, rate_per_s=rate)
    if requests:
        t = replace(t, requests=requests)
    return t, rate


def workload_of(traffic: Traffic, rate: float, slo: SLO) -> Workload:
    s = replace(traffic, requests=max(traffic.requests, 2000)).sample()
    p = slo.percentile
    return Workload(rate, float(s.prompt_tokens.mean()), float(s.output_tokens.mean()),
                    float(np.percentile(s.prompt_tokens, p)), slo.ttft_s, slo.tpot_s, p,
                    request_max_tokens=float((s.prompt_tokens + s.output_tokens).max()))


STEADY_LIFETIMES = 4  # an open-loop verification run's arrivals span this many SLO-bound request lifetimes


def steady_seconds(w: Workload) -> float:
    """Arrival time a verification run needs to reach and measure a steady state: STEADY_LIFETIMES lifetimes of
    a mean request at the SLOs (its TTFT plus its mean output at the TPOT target); ``run_at`` drops the first and
    last lifetime (batches filling and draining). 0 without finite SLOs."""
    life = w.ttft_slo_s + w.osl_mean * w.tpot_slo_s
    return STEADY_LIFETIMES * life if math.isfinite(life) and life > 0 else 0.0


def require_slo(slo: SLO, traffic: Traffic) -> None:
    """Refuse traffic with no latency target at all (no ``slo:`` TTFT or TPOT in its file, no --ttft-slo or
    --tpot-slo): every fleet would "meet" it, and the maximum rate found would be the search's cap."""
    if not (math.isfinite(slo.ttft_s) or math.isfinite(slo.tpot_s)):
        raise SimulatorError(f"--ttft-slo/--tpot-slo: {traffic.file or traffic.id} sets no SLO (no slo: ttft or "
                             "tpot) and neither flag was given; a fleet is sized against a latency target, so give "
                             "at least one")


def check_context(model, w: Workload) -> None:
    """Refuse traffic whose longest request does not fit the model's context window: every server rejects it, so
    no fleet can serve the traffic as drawn."""
    if model.exceeds_context(w.request_max_tokens):
        raise InfeasibleError(f"the traffic's longest request ({w.request_max_tokens:,.0f} prompt + output tokens) "
                              f"exceeds {model.id}'s context window of {model.context_tokens:,} tokens, so a server "
                              "rejects it; cap "
                              "the traffic's lengths (prompt_tokens / output_tokens max:) at the context window")


def error_band() -> dict | None:
    """Kernel-level error of the shipped timing model against the published kernel figures (median and
    p90 APE), as written by reports/scripts/validation_report.py into the package."""
    import json
    from importlib import resources

    try:
        o = json.loads((resources.files("simulator.validation") / "published_error.json").read_text())
    except (OSError, ValueError):
        return None
    return {"median_ape": o["median_ape"], "p90_ape": o["p90_ape"], "bias": o["bias"], "n": o["n"],
            "source": o["source"]}


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _pools_of(row, lay: list[dict]) -> list[PoolChoice]:
    a = lay[int(row.layout_a)]
    if row["mode"] == "agg":
        return [PoolChoice("colocated", a, int(row.replicas_a), int(row.max_seqs))]
    b = lay[int(row.layout_b)]
    return [PoolChoice("prefill", a, int(row.replicas_a), PREFILL_MAX_SEQS),
            PoolChoice("decode", b, int(row.replicas_b), int(row.max_seqs))]


def _pool_costs(pools: list[PoolChoice], prices: PriceBook, w: Workload, util: dict | None) -> list[dict]:
    out = []
    names = {"colocated": "fleet", "prefill": "prefill", "decode": "decode"}
    for pc in pools:
        u = (util or {}).get(names[pc.role], {}).get("busy", 1.0)
        lay = pc.layout
        per_rep = prices.usd_per_hour(lay["hw"], u) * (lay.get("attn_devices") or lay["devices"])
        if lay.get("ffn_hw"):
            per_rep += prices.usd_per_hour(lay["ffn_hw"], u) * lay["ffn_devices"]
        usd_h = per_rep * pc.replicas
        d = pc.to_dict()
        d["cost_per_hour_usd"] = usd_h
        d["usd_per_mtok_input"] = usd_h / 3600 / (w.rate_per_s * w.isl_mean) * 1e6 if pc.role != "decode" else None
        d["usd_per_mtok_output"] = usd_h / 3600 / (w.rate_per_s * w.osl_mean) * 1e6 if pc.role != "prefill" \
            else None
        out.append(d)
    return out


def _candidate_doc(cid: str, row, lay, prices, w, verified: dict | None) -> dict:
    pools = _pools_of(row, lay)
    util = verified.get("utilisation") if verified else None
    pool_docs = _pool_costs(pools, prices, w, util)
    usd_h = sum(p["cost_per_hour_usd"] for p in pool_docs)
    ver = None
    if verified is not None:
        ver = {k: verified.get(k) for k in VERIFIED_KEYS}
        if verified.get("error"):
            ver["error"] = verified["error"]
    dev_p = sum(p["devices"] for p in pool_docs if p["role"] == "prefill")
    dev_d = sum(p["devices"] for p in pool_docs if p["role"] == "decode")
    return {
        "id": cid, "arrangement": row["arrangement"], "mode": row["mode"], "devices": int(row.devices),
        "pd_device_ratio": (f"{dev_p}:{dev_d}" if dev_d else None),
        "pools": pool_docs, "cost_per_hour_usd": usd_h,
        "usd_per_mtok_input": usd_h / 3600 / (w.rate_per_s * w.isl_mean) * 1e6,
        "usd_per_mtok_output": usd_h / 3600 / (w.rate_per_s * w.osl_mean) * 1e6,
        "analytic": {"ttft_p_s": _finite(row.ttft_p_s), "tpot_p_s": _finite(row.tpot_p_s),
                     "decode_batch_per_replica": _finite(row.decode_batch),
                     "prefill_utilisation": _finite(row.prefill_utilisation),
                     "cost_per_hour_usd": float(row.cost_per_hour_usd)},
        "verified": ver,
    }


# what plan.json keeps of a verification run (``verify.run_at`` plus the bisection's maximum rate and trace)
VERIFIED_KEYS = ("ttft_p_s", "tpot_p_s", "slo_met", "max_rate_per_s", "max_rate_bounded", "lowest_rate_tried_per_s",
                 "goodput_fraction", "goodput_requests_per_s", "output_tokens_per_s", "token_share", "rejected",
                 "missed", "utilisation", "load_trace", "requests_simulated", "requests_measured", "confirmation",
                 "first_run")


CONFIRM_LENGTH = 2  # a confirmation run's arrivals span this many times the verification's steady span


def _confirmed(ver: dict, dep: Deployment, traffic: Traffic, slo: SLO, rate: float, w: Workload,
               req: PlanRequest) -> bool:
    """Run a candidate that met the SLOs once more at the target rate: the next seed, CONFIRM_LENGTH times the
    arrival span (up to ``verify.STEADY_MAX_REQUESTS`` requests), in this process. Records the run under
    ``confirmation``; a miss makes the second run's verdict and latencies the candidate's (the first run's, and its
    maximum rate, under ``first_run``; the candidate's maximum rate becomes None: below the target) and returns
    False."""
    seed = traffic.seed + 1
    try:
        conf = run_at(dep, replace(traffic, seed=seed, requests=min(traffic.requests * CONFIRM_LENGTH, MAX_REQUESTS)),
                      slo, rate, timing=req.timing, steady_s=CONFIRM_LENGTH * steady_seconds(w))
    except SimulatorError as exc:  # (as a verification run that cannot run: a miss, with why)
        ver.update(slo_met=False, missed=[f"on a confirmation run (seed {seed}): {exc}"])
        return False
    ver["confirmation"] = {"seed": seed, "requests_simulated": conf["requests_simulated"],
                           "requests_measured": conf["requests_measured"], "ttft_p_s": conf["ttft_p_s"],
                           "tpot_p_s": conf["tpot_p_s"], "slo_met": conf["slo_met"]}
    if conf["slo_met"]:
        return True
    # the second run decides: its verdict and latencies are the candidate's (the first run's stay under first_run).
    # The first run's maximum rate (at or above the target) is no longer the candidate's: it missed at the target
    # itself, so its maximum is below it, by how much not searched (None)
    ver["first_run"] = {k: ver.get(k) for k in ("ttft_p_s", "tpot_p_s", "rejected", "max_rate_per_s",
                                                 "max_rate_bounded")}
    ver.update(slo_met=False, ttft_p_s=conf["ttft_p_s"], tpot_p_s=conf["tpot_p_s"], rejected=conf["rejected"],
               max_rate_per_s=None, max_rate_bounded=True,
               missed=[f"on a confirmation run (seed {seed}, {conf['requests_simulated']:,} requests): {m}"
                       for m in conf["missed"]])
    return False


def _miss(ver: dict, slo: SLO) -> tuple[float, str]:
    """How far a simulated candidate misses the SLOs (ratio - 1 of the worse latency; a rejection counts as
    +100%) and in words (``verify.missed_because``)."""
    if ver.get("error"):
        return math.inf, ver["error"]
    worst = max((ver[k] / lim - 1 for k, lim in (("ttft_p_s", slo.ttft_s), ("tpot_p_s", slo.tpot_s))
                 if ver.get(k) is not None and math.isfinite(lim)), default=-math.inf)
    if ver.get("rejected"):
        worst = max(worst, 1.0)
    return worst, "; ".join(ver.get("missed") or []) or "misses the SLOs"


def _check_search_space(model, specs: dict, modes, pairs) -> None:
    """Refuse, naming the flag, a search that cannot hold a single arrangement whatever the rate and memory: A/F
    disaggregation alone for a dense model, or no precision pair the model and devices can run (the screen would
    otherwise report it as a fleet that does not fit)."""
    if not model.moe and set(modes) <= {"afd"}:
        raise SimulatorError(f"--modes {','.join(modes)}: attention/FFN disaggregation splits off the expert FFN of a "
                             f"mixture-of-experts model; {model.id} is dense (use agg or pd)")
    why = []
    for a, f in pairs:
        if a != f and not model.moe:
            why.append(f"{a}/{f}: a separate FFN precision is the expert recipe of a mixture-of-experts model "
                       f"({model.id} is dense)")
            continue
        attn = [h for h, sp in specs.items() if supports(sp, a)]
        ffn = [h for h, sp in specs.items() if supports(sp, f)]
        if attn and ffn and ("afd" in modes and model.moe or set(attn) & set(ffn)):
            return  # at least this pair can be laid out
        missing = a if not attn else f
        why.append(f"{a}/{f}: none of {', '.join(specs)} computes {missing}" if not (attn and ffn)
                   else f"{a}/{f}: no one device computes both")
    raise SimulatorError(f"--precisions {','.join(f'{a}/{f}' for a, f in pairs)}: no precision pair can run "
                         f"{model.id} here (" + "; ".join(why) + ")")


def plan_capacity_for(req: PlanRequest, progress: Callable[[str, int, int], None] | None = None) -> PlanOutcome:
    """Screen every arrangement analytically, simulate the cheapest plausible fleets at the target rate, and
    return a ``PlanOutcome``: ``doc`` (plan.json: inputs, SLOs, prices, candidates with analytic and simulated
    figures, the recommendation and its headroom, the error band), the candidates' deployments and the
    recommended deployment's YAML. Raises ``InfeasibleError`` when no simulated fleet meets the SLOs.
    ``progress(stage, done, total)`` reports the screening and simulation rounds."""
    for m in req.modes:
        if m not in MODES:
            raise SimulatorError(f"--modes: unknown mode {m!r}; choose from {', '.join(MODES)}")
    if req.engine not in ENGINES:
        raise SimulatorError(f"--engine: unknown engine {req.engine!r}; expected one of {', '.join(ENGINES)}")
    if req.engine_version is not None:
        from ..serving.profiles import release_problem

        if problem := release_problem(req.engine_version, req.engine, "the plan's engine is"):
            raise SimulatorError(f"--engine-version {req.engine_version}: {problem}")
    if req.max_devices < 1:
        raise SimulatorError(f"--max-devices must be >= 1, got {req.max_devices}")
    model = load_model(req.model)
    # keyed by profile id: --hardware may name a profile by id, by a name it goes by (H100) or by path, and two
    # names of one profile are one device
    specs = {}
    for h in req.hardware:
        try:
            sp = load_hardware(h)
        except SimulatorError as exc:
            raise SimulatorError(f"--hardware {h}: {exc}") from None
        specs.setdefault(sp.id, sp)
    if not specs:
        raise SimulatorError("--hardware: give at least one device profile id")
    tco = read_tco(req.tco_file) if req.tco_file else None
    # --price keys may be any name a profile goes by (matched by profile id)
    prices = PriceBook(specs, prices_for(dict(req.prices), list(specs)), tco)
    priced = prices.priced_specs()
    traffic, rate = effective_traffic(req.traffic, req.rate_per_s, req.requests)
    base = req.traffic.slo
    slo = SLO(req.ttft_slo_s if req.ttft_slo_s is not None else base.ttft_s,
              req.tpot_slo_s if req.tpot_slo_s is not None else base.tpot_s,
              req.percentile if req.percentile is not None else base.percentile)
    require_slo(slo, req.traffic)
    if not 0 < slo.percentile < 100:  # screening reads a p-percentile wait as mean x -ln(1 - p): none at p100
        where = ("--slo-percentile" if req.percentile is not None
                 else f"{req.traffic.file or 'the traffic'}: slo.percentile")
        raise SimulatorError(f"{where}: the planner needs a percentile in [1, 100) (its queueing estimate of the "
                             f"tail has no p100), got {slo.percentile:g}")
    w = workload_of(traffic, rate, slo)
    check_context(model, w)
    pairs = parse_precision_pairs(req.precisions)
    _check_search_space(model, specs, req.modes, pairs)
    from ..serving.profiles import engine_profile

    frontend_s = (req.frontend_latency_s if req.frontend_latency_s is not None
                  else engine_profile(req.engine).frontend_for(model))
    if slo.ttft_s <= frontend_s:  # no fleet removes it: every request spends it before its prefill starts
        raise InfeasibleError(f"the TTFT target {slo.ttft_s * 1e3:g} ms is not above the {req.engine} frontend "
                              f"latency ({frontend_s * 1e3:g} ms, spent by every request before its prefill); "
                              "raise --ttft-slo or set --frontend-latency")

    if progress:
        progress("screening", 0, 1)
    place = {}
    for key, flag, names in (("prefill_hw", "--prefill-hardware", req.prefill_hardware),
                             ("decode_hw", "--decode-hardware", req.decode_hardware)):
        ids = set()
        for h in names or []:
            try:
                hw_id = h if h in specs else load_hardware(h).id  # (any name the profile goes by)
            except SimulatorError:
                hw_id = h
            if hw_id not in specs:
                raise SimulatorError(f"{flag} {h}: not among --hardware ({', '.join(specs)})")
            ids.add(hw_id)
        place[key] = ids or None
    from ..timing.calibrated import check_overlays_apply, resolve_timing

    timing = resolve_timing(req.timing)  # (once: a measured table is read and fitted when resolved)
    check_overlays_apply(timing, {sp.id for sp in specs.values()}, "--timing")
    scr = screen(model, priced, prices, w, modes=req.modes, pairs=pairs, max_devices=req.max_devices,
                 tolerance=req.tolerance, timing=timing, engine=req.engine,
                 frontend_latency_s=frontend_s, engine_version=req.engine_version, **place)
    if progress:
        progress("screening", 1, 1)
    cands = scr.candidates
    if cands.empty:
        def any_fleet(workload: Workload, keep: int):  # the screen without its SLO tolerance: any fleet that runs
            return screen(model, priced, prices, workload, modes=req.modes, pairs=pairs, max_devices=req.max_devices,
                          tolerance=1e6, keep=keep, timing=timing, engine=req.engine,
                          frontend_latency_s=frontend_s, engine_version=req.engine_version, **place).candidates

        loose = any_fleet(w, 50)
        if loose.empty:
            short = ""
            # would any fleet do, were the longest request shorter?
            if w.request_max_tokens > 0 and not any_fleet(replace(w, request_max_tokens=0.0), 1).empty:
                short = (": no replica's KV cache holds the traffic's longest request "
                             f"({w.request_max_tokens:,.0f} prompt + output tokens; a server rejects it); allow more "
                             "devices (--max-devices), more memory per device or a lower precision")
            raise InfeasibleError(f"no arrangement of {model.id} on {', '.join(specs)} within {req.max_devices} "
                                  f"devices fits in memory and sustains {rate:g} req/s{short}")
        best = loose.sort_values("slo_ratio").iloc[0]
        misses = [latency_miss(n, v, lim, slo.percentile)
                  for n, v, lim in (("TTFT", best.ttft_p_s, slo.ttft_s), ("TPOT", best.tpot_p_s, slo.tpot_s))
                  if v > lim]
        raise InfeasibleError(f"no arrangement meets the SLOs even analytically; closest: {best['arrangement']} "
                              f"(${best.cost_per_hour_usd:.2f}/h) misses by {'; '.join(misses)}. "
                              + _relax_hint(req, simulated=False))

    # ---- verify in cost order until one passes --------------------------------------------------
    verified: dict[int, dict] = {}
    deployments: dict[str, Deployment] = {}
    start = 0
    winner = None
    total = min(req.verify_max, len(cands))
    while start < total and winner is None:
        idx = list(range(start, min(start + req.top_k, total)))
        deps = []
        for i in idx:
            row = cands.iloc[i]
            dep = build_deployment(f"candidate-{i}", row["mode"], _pools_of(row, scr.layouts), model, priced,
                                   engine=req.engine, frontend_latency_s=req.frontend_latency_s,
                                   engine_version=req.engine_version)
            deployments[f"c{i}"] = dep
            deps.append(dep)
        done0 = len(verified)
        res = verify_many(deps, traffic, slo, rate, bisect_steps=req.bisect_steps, workers=req.workers,
                          executor=req.executor, timing=req.timing, steady_s=steady_seconds(w),
                          progress=(lambda n, _t, d0=done0: progress("verifying", d0 + n, total)) if progress
                          else None)
        for i, r in zip(idx, res):
            verified[i] = r
        passing = [i for i in idx if verified[i]["slo_met"]]
        # the cheapest passing candidate must pass again on a longer run with another seed before it is
        # recommended: a fleet near its knee can pass one short run and miss a longer one
        passing.sort(key=lambda i: (_candidate_doc(f"c{i}", cands.iloc[i], scr.layouts, prices, w,
                                                   verified[i])["cost_per_hour_usd"], i))
        for i in passing:
            if _confirmed(verified[i], deployments[f"c{i}"], traffic, slo, rate, w, req):
                winner = i
                break
        start = idx[-1] + 1

    if progress:
        progress("verifying", len(verified), len(verified))  # closes the bar when verification stops early
    docs = []
    last = max(verified) if verified else -1
    extra = 8  # unverified candidates listed after the last simulated one (all more expensive)
    for i in range(min(len(cands), last + 1 + extra)):
        docs.append(_candidate_doc(f"c{i}", cands.iloc[i], scr.layouts, prices, w, verified.get(i)))
    passing_docs = [d for d in docs if d["verified"] and d["verified"]["slo_met"]]
    if not passing_docs:
        sim = [d for d in docs if d["verified"]]
        best = min(sim, key=lambda d: _miss(d["verified"], slo)[0])
        raise InfeasibleError(f"no candidate meets the SLOs in the simulation at {rate:g} req/s ({len(sim)} "
                              f"simulated, cheapest first); closest: {best['id']} {best['arrangement']} "
                              f"(${best['cost_per_hour_usd']:.2f}/h): {_miss(best['verified'], slo)[1]}. "
                              + _relax_hint(req, simulated=True, candidates_left=len(cands) > len(sim)))
    # the cheapest; among equals, the one confirmed on a second run (see ``_confirmed``)
    rec = min(passing_docs, key=lambda d: (d["cost_per_hour_usd"], "confirmation" not in d["verified"],
                                           int(d["id"][1:])))
    rec = dict(rec, headroom=(rec["verified"]["max_rate_per_s"] / rate - 1.0))
    dep = deployments[rec["id"]]
    notes = {h: prices.note(h) for h in specs}
    rec_yaml = deployment_yaml(replace(dep, id="recommended"),
                               f"Recommended by quadrant plan: {rec['arrangement']} for {model.id} at {rate:g} req/s "
                               f"under {format_slo_targets(slo.percentile, slo.ttft_s, slo.tpot_s)}.", notes)
    samples = {d["id"]: verified[int(d["id"][1:])].get("samples", {}) for d in docs if d["verified"]}
    doc = {
        "inputs": {"model": model.id, "traffic": _rel(req.traffic.file) or req.traffic.id,
                   "traffic_ref": _traffic_ref(req.traffic), "rate_per_s": rate,
                   "timing": req.timing or "roofline", "engine": req.engine, "engine_version": req.engine_version,
                   "frontend_latency_s": frontend_s,
                   "hardware": list(specs), "modes": list(req.modes), "max_devices": req.max_devices,
                   "precisions": req.precisions, "tolerance": req.tolerance, "seed": traffic.seed,
                   "slo_from": slo_sources(req.ttft_slo_s, req.tpot_slo_s, req.percentile),
                   "requests_per_simulation": traffic.requests,
                   "isl_mean": w.isl_mean, "osl_mean": w.osl_mean, f"isl_p{slo.percentile:g}": w.isl_pct,
                   "request_max_tokens": w.request_max_tokens,
                   "cost_basis": "tco" if tco else "rental", "tco_file": req.tco_file},
        "slo": {"ttft_s": _finite(slo.ttft_s), "tpot_s": _finite(slo.tpot_s), "percentile": slo.percentile},
        "prices": prices.table(),
        "screening": {"fleets_scored": scr.evaluated, "layouts": scr.layout_count,
                      "arrangements_within_tolerance": int(len(cands)), "tolerance": req.tolerance,
                      "simulated": len(verified)},
        "candidates": docs,
        "recommended": rec,
        "error_band": error_band(),
    }
    return PlanOutcome(doc, deployments, samples, rec_yaml, _breakdown(dep, rec, w, timing), prices.table(), slo,
                       rate, doc["error_band"])


def _breakdown(dep: Deployment, rec: dict, w: Workload, timing=None) -> list[dict] | None:
    """The recommendation's per-quadrant time of one prefill and one decode step (``whatif``), under the run's
    timing model (``timing``: a resolved model; None: the roofline)."""
    from ..analysis.whatif import whatif

    batch = max(int(round(rec["analytic"]["decode_batch_per_replica"] or 1)), 1)
    try:
        res = whatif(dep.serving_plan(), batch=batch, isl=max(int(w.isl_mean), 1), osl=max(int(w.osl_mean), 1),
                     timing=timing)
    except SimulatorError:
        return None
    # each row carries the shape it was timed at, for the figure's title and the report's text
    return [{**{k: _finite(v) if isinstance(v, float) else v for k, v in r.items()}, "decode_batch": batch,
             "prompt_tokens": max(int(w.isl_mean), 1)} for r in res.quadrant_rows]


def _relax_hint(req: PlanRequest, *, simulated: bool, candidates_left: bool = False) -> str:
    """What a planner can change when no fleet meets the SLOs: the target it misses, the fleet's size limit, the
    devices searched, and (after simulation, where plausible candidates were left unsimulated) how many are."""
    more = (f"simulate more candidates (--verify-max, {req.verify_max} now), " if simulated and candidates_left
            else "")
    return ("To find one: loosen the target it misses (--ttft-slo, --tpot-slo, --slo-percentile or a lower --rate), "
            f"allow larger fleets (--max-devices, {req.max_devices} now), {more}or add faster or larger devices "
            "(--hardware)")


# ``compare`` brackets each deployment's maximum rate over 1/32x to 32x the target (``plan`` over 1/4x to 4x, for
# the many candidates it verifies): a handful of given deployments, compared on how much load each carries, would
# otherwise all read "4x+" where several have that much headroom
COMPARE_EXPAND_STEPS = 5


def compare_deployments(deps: list[Deployment], traffic: Traffic, rate: float | None, *, requests: int | None = None,
                        bisect_steps: int = 3, workers: int | None = None, executor=None,
                        progress: Callable[[str, int, int], None] | None = None,
                        timing: str | None = None) -> PlanOutcome:
    """Simulate given deployments side by side at the same traffic; same document as ``plan``."""
    if isinstance(deps, Deployment) or not isinstance(deps, (list, tuple)) or not deps \
            or not all(isinstance(d, Deployment) for d in deps):
        raise SimulatorError("compare: expected a non-empty list of Deployments (read_deployment(...) each), got "
                             f"{type(deps).__name__}")
    if not isinstance(traffic, Traffic):
        raise SimulatorError(f"compare: traffic: expected a Traffic (read_traffic(...)), got {type(traffic).__name__}")
    if rate is not None:
        real("compare: rate", rate, 0, above=True)
    if requests is not None:
        whole("compare: requests", requests, 1)
    whole("compare: bisect_steps", bisect_steps, 0, MAX_BISECT_STEPS)
    if workers is not None:
        whole("compare: workers", workers, 1, MAX_WORKERS)
    traffic, rate = effective_traffic(traffic, rate, requests)
    slo = traffic.slo
    require_slo(slo, traffic)
    w = workload_of(traffic, rate, slo)
    for d in deps:
        check_context(d.model, w)
    from ..timing.calibrated import check_overlays_apply

    # (the verification's own per-process timing model: resolved once here, reused by in-process runs)
    check_overlays_apply(timing_model(timing), {i for d in deps for i in d.device_ids}, "--timing")
    res = verify_many(deps, traffic, slo, rate, bisect_steps=bisect_steps, workers=workers, executor=executor,
                      progress=(lambda n, t: progress("simulating", n, t)) if progress else None, timing=timing,
                      steady_s=steady_seconds(w), expand_steps=COMPARE_EXPAND_STEPS)
    for dep, r in zip(deps, res):  # a deployment the user gave that cannot run is their input's error
        if r.get("error"):
            raise SimulatorError(f"{_rel(dep.file) or dep.id}: {r['error']}")
    from ..serving.profiles import engine_profile
    from ..serving.runner import batch_limits

    docs, deployments, samples = [], {}, {}
    for i, (dep, r) in enumerate(zip(deps, res)):
        cid = f"d{i}"
        deployments[cid] = dep
        samples[cid] = r.get("samples", {})
        pools = []
        share = r.get("token_share") or {}
        for p in dep.pools:
            role = p.role
            usd_h = _finite(p.price_usd_per_s * 3600)
            # a pool's cost over the tokens it served: its share of the prompt (prefill) or output (decode) tokens,
            # as the simulation routed them (None where it served none)
            tok_in, tok_out = (rate * m * share.get(p.name, {}).get(k, 0.0)
                               for m, k in ((w.isl_mean, "input"), (w.osl_mean, "output")))
            a, f = p.plan.attention, p.plan.ffn
            pools.append({"name": p.name, "role": role, "hardware": a.hardware.id, "devices": p.devices,
                          "replicas": p.replicas, "parallelism": {"tp": a.tp, "dp": a.dp, "pp": p.plan.pp, "ep": f.ep,
                                                                  "expert_tp": f.expert_tp},
                          "precision": {"attention": a.precision, "ffn": f.precision, "kv_cache": dep.kv_precision},
                          "engine": {"name": p.engine, **dict(zip(("max_seqs", "max_batch_tokens"),
                                                                  batch_limits(p, engine_profile(p.engine))[:2]))},
                          **({"ffn_pool": {"hardware": f.hardware.id, "devices_per_replica": f.devices,
                                           "micro_batches": p.plan.micro_batches}} if p.plan.af_disaggregated else {}),
                          "cost_per_hour_usd": usd_h,
                          "usd_per_mtok_input": usd_h / 3600 / tok_in * 1e6
                          if usd_h is not None and role != "decode" and tok_in > 0 else None,
                          "usd_per_mtok_output": usd_h / 3600 / tok_out * 1e6
                          if usd_h is not None and role != "prefill" and tok_out > 0 else None})
        costs = [p["cost_per_hour_usd"] for p in pools]
        usd_h = sum(costs) if all(c is not None for c in costs) else None
        mode = "agg" if not dep.disaggregated else ("afd" if any(p.plan.af_disaggregated for p in dep.pools)
                                                    else "pd")
        ver = {k: r.get(k) for k in VERIFIED_KEYS}
        docs.append({"id": cid, "arrangement": f"{mode}: {dep.id} ({_rel(dep.file) or 'built'})", "mode": mode,
                     "devices": dep.devices, "pools": pools, "cost_per_hour_usd": usd_h,
                     "usd_per_mtok_input": usd_h / 3600 / (rate * w.isl_mean) * 1e6 if usd_h is not None else None,
                     "usd_per_mtok_output": usd_h / 3600 / (rate * w.osl_mean) * 1e6 if usd_h is not None else None,
                     "analytic": None, "verified": ver})
    ok = [d for d in docs if d["verified"]["slo_met"]]
    # the cheapest; among equals, the first given (d2 before d10)
    rec = min(ok, key=lambda d: (d["cost_per_hour_usd"] if d["cost_per_hour_usd"] is not None else math.inf,
                                 int(d["id"][1:]))) if ok else None
    if rec:
        rec = dict(rec, headroom=rec["verified"]["max_rate_per_s"] / rate - 1.0)
    # one row per device and price: two deployments may price one device differently (their own files, a
    # profile's sourced price); each row names the deployments (candidate ids) that pay it
    rows: dict[tuple, dict] = {}
    for cid, dep in zip((d["id"] for d in docs), deps):
        for p in dep.pools:
            for hw in (p.plan.attention.hardware, p.plan.ffn.hardware):
                key = (hw.id, _finite(hw.price_usd_per_hour), hw.price_note)
                if key not in rows:
                    src = hw.sources.get(hw.price_note, "")
                    rows[key] = {"hardware": hw.id, "usd_per_device_hour": key[1],
                                 "source": f"{hw.price_note}: {src}" if src else hw.price_note,
                                 "date": price_date(hw) if src else "", "tdp_w": hw.tdp_w, "used_by": []}
                if cid not in rows[key]["used_by"]:
                    rows[key]["used_by"].append(cid)
    prices = list(rows.values())
    doc = {"inputs": {"deployments": [_rel(d.file) or d.id for d in deps], "traffic": _rel(traffic.file) or traffic.id,
                      "rate_per_s": rate, "timing": timing or "roofline",
                      # the pools' engines, each once (every deployment file names its own)
                      "engine": ", ".join(dict.fromkeys(p.engine for d in deps for p in d.pools)),
                      "requests_per_simulation": traffic.requests, "seed": traffic.seed,
                      "isl_mean": w.isl_mean,
                      "osl_mean": w.osl_mean, "cost_basis": "rental"},
           "slo": {"ttft_s": _finite(slo.ttft_s), "tpot_s": _finite(slo.tpot_s), "percentile": slo.percentile},
           "prices": prices, "candidates": docs, "recommended": rec, "error_band": error_band()}
    breakdown = None
    if rec:
        d = deployments[rec["id"]]
        dec_pool = d.pools_serving("decode")[0]
        breakdown = _breakdown(d, {"analytic": {"decode_batch_per_replica": min(dec_pool.max_seqs or 64, 64)}}, w,
                               timing_model(timing))
    return PlanOutcome(doc, deployments, samples, None, breakdown, prices, slo, rate, doc["error_band"])


def slo_sources(ttft, tpot, percentile) -> dict[str, str]:
    """Where each SLO figure came from, for the report: its flag where one was given (not None), else the traffic
    file."""
    return {k: flag if v is not None else "traffic file" for k, flag, v in (
        ("ttft", "--ttft-slo", ttft), ("tpot", "--tpot-slo", tpot), ("percentile", "--slo-percentile", percentile))}


def _traffic_ref(traffic: Traffic) -> str:
    """How a command names this traffic from any folder: its catalogue id when it is the catalogue's file, else
    its file's absolute path (its id when it has no file)."""
    if not traffic.file:
        return traffic.id
    path = Path(traffic.file).resolve()
    if path == (catalog_root() / "workloads" / "traffic" / f"{path.stem}.yaml").resolve():
        return path.stem
    return str(path)


def _rel(path: str) -> str:
    """A catalogue file relative to the repository root (stable across checkouts); others as given."""
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(catalog_root().resolve()))
    except ValueError:
        return str(path)


def write_yaml(obj: dict, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(obj, sort_keys=False, width=110))
