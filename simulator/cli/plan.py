"""`quadrant plan` and `quadrant compare`: size and price a fleet for real traffic under SLOs."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import typer

from ..errors import SimulatorError
from ..planning.limits import MAX_BISECT_STEPS, MAX_DEVICES, MAX_WORKERS
from ._common import app, guarded, metadata
from ._params import _lower, count, engine_version_option, out_dir, real, timing_option


def _duration(flag: str, text: str | None, positive: bool = True) -> float | None:
    """A duration flag, read by the one duration parser of the CLI (``_params.duration``)."""
    if text is None:
        return None
    from ._params import duration, tpot_slo_duration

    try:
        return (tpot_slo_duration() if flag == "--tpot-slo" else duration(positive))(text)
    except typer.BadParameter as exc:
        raise SimulatorError(f"{flag}: {exc.message}") from None


def _frontend(text: str | None) -> float | None:
    """``--frontend-latency``: a duration, at most an hour (``commands.frontend_latency_flag``)."""
    from ..commands import frontend_latency_flag

    return frontend_latency_flag(_duration("--frontend-latency", text, positive=False))


def _rate(text: str | None) -> float | None:
    if text is None:
        return None
    from ..units import UnitError, parse_rate_per_s

    try:
        return parse_rate_per_s(text)
    except UnitError as exc:
        raise SimulatorError(f"--rate: {exc}") from None


def _progress(enabled: bool):
    """A one-line progress bar on stderr: ``label [#####.....] n/total``."""
    if not enabled or not sys.stderr.isatty():
        return None

    def show(label: str, n: int, total: int) -> None:
        width = 30
        filled = int(width * n / max(total, 1))
        sys.stderr.write(f"\r{label:10s} [{'#' * filled}{'.' * (width - filled)}] {n}/{total}")
        if n >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _ids(text: str | None, flag: str) -> list[str] | None:
    """A comma-separated list of names (None when not given; see ``commands.comma_list``)."""
    from ..commands import comma_list

    return comma_list(text, flag) if text else None


def _executor(cluster: str | None):
    if not cluster:
        return None
    from ..planning.verify import cluster_executor

    return cluster_executor(cluster)


def _close(ex) -> None:
    if ex is not None:
        from ..planning.verify import close_executor

        close_executor(ex)


def _traffic(ref: str):
    from ..specs.catalog import resolve_workload
    from ..specs.traffic import read_traffic

    return read_traffic(resolve_workload(ref, "traffic", "traffic"))


def _slo_option(flag: str, what: str):
    """A latency target flag plan and compare share (a duration with its unit; default: the traffic file's)."""
    return typer.Option(None, flag, metavar="<duration>", help=f"{what}; default: the traffic file's.")


def _percentile_option(top: bool = False):
    """``--slo-percentile``: in [1, 100) for plan (its screen's queueing tail has no p100), [1, 100] with ``top``
    (a fraction such as 0.9 is refused, not read as p0.9)."""
    return typer.Option(None, "--slo-percentile", parser=real(1, 100, hi_open=not top,
                                                              what="a percentile (90 for p90)"),
                        help=f"Percentile the SLOs apply to, in [1, 100{']' if top else ')'} (default: the traffic "
                             "file's, else 90).")


def _workers_option(what: str):
    return typer.Option(None, "--workers", parser=count(1, MAX_WORKERS),
                        help=f"{what}, at most {MAX_WORKERS} (default: CPUs).")


def _bisect_option():
    return typer.Option(3, "--bisect-steps", parser=count(0, MAX_BISECT_STEPS),
                        help=f"Bisection steps for each maximum rate (0 to {MAX_BISECT_STEPS}; each is one more "
                             "simulation per candidate).")


def _check_requests(requests: int | None) -> None:
    """--requests within the simulator's cap (named by the flag, not by the traffic's field)."""
    from ..specs.traffic import MAX_REQUESTS

    if requests is not None and requests > MAX_REQUESTS:
        raise SimulatorError(f"--requests: at most {MAX_REQUESTS:,} requests per simulation, got {requests:,}")


def _check_common(out: Path | None, recommends: bool = True,
                  inputs: list[tuple[str, Path]] = ()) -> None:
    """Refusals plan and compare share, made before any work: an --out folder the report could not be written to
    (an existing file, a folder holding other files, no parent folder) or that holds one of the run's ``inputs``
    ((what, path) pairs), which writing the report would delete. ``recommends``: the run writes a
    recommended.yaml (a plan), so an earlier one may be replaced; a comparison writes none and refuses a folder
    holding one. (--bisect-steps is range-checked by its parser.)"""
    if out is not None:
        import os

        from ..io import check_out_dir
        from ..report.documents import PLAN_FILES, REPORT_FILES

        for what, path in inputs:
            inside = (Path(os.path.abspath(path)).is_relative_to(os.path.abspath(out))
                      or Path(path).resolve().is_relative_to(Path(out).resolve()))
            if inside:
                raise SimulatorError(f"--out {out}: holds the {what} {path}, which writing the report there would "
                                     "delete; choose another folder")
        try:
            check_out_dir(out, PLAN_FILES if recommends else REPORT_FILES)
        except SimulatorError as exc:
            raise SimulatorError(f"--out {exc}") from None


def _finish(outcome, out: Path | None, json_out: bool, title: str) -> None:
    from ..report.documents import dumps, recommendation_text

    if out:
        from ..report.documents import write_plan_dir

        paths = write_plan_dir(out, outcome, title)
    if json_out:
        typer.echo(dumps(outcome.doc))
        return
    from ..report.documents import candidate_rows, rows_note
    from ..report.render import table

    head, rows = candidate_rows(outcome.doc)
    typer.echo(recommendation_text(outcome.doc).replace("**", ""))
    typer.echo("")
    typer.echo(table(head, rows, "ll" + "r" * (len(head) - 2)))
    if rows_note(outcome.doc, rows):
        typer.echo(rows_note(outcome.doc, rows))
    if out:
        typer.echo(f"\nwrote {len(paths)} files to {out}/ (plan.json, report.md, report.html"
                   + (", recommended.yaml" if (Path(out) / "recommended.yaml").exists() else "") + ")")


@app.command("plan")
@guarded
def plan_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model id (see `quadrant model list`) or YAML path."),
    traffic: str = typer.Option(..., "--traffic", help="Traffic YAML or id (arrival process, lengths, SLO)."),
    hardware: str = typer.Option(..., "--hardware", help="Comma-separated device profiles to choose from, e.g. "
                                                         "h100-sxm,h20."),
    out: Path = typer.Option(..., "--out", parser=out_dir(),
                             help="Folder for plan.json, recommended.yaml, report.md, report.html and figures/ "
                                  "(new, or an earlier plan's: a folder holding other files is refused)."),
    rate: str = typer.Option(None, "--rate", metavar="<rate>",
                             help="Target arrival rate (5, 5/s, 300/min; a bare number is per second); default: "
                                  "the traffic file's."),
    ttft_slo: str = _slo_option("--ttft-slo", "TTFT target (e.g. 1s, 800ms; bare = seconds)"),
    tpot_slo: str = _slo_option("--tpot-slo", "TPOT target (e.g. 50ms)"),
    slo_percentile: float = _percentile_option(),
    modes: str = typer.Option("agg,pd,afd", "--modes", help="Arrangements: agg (colocated), pd (prefill/decode "
                                                            "pools), afd (attention/FFN-disaggregated decode)."),
    max_devices: int = typer.Option(64, "--max-devices", parser=count(1, MAX_DEVICES),
                                    help=f"Largest fleet to consider (devices, at most {MAX_DEVICES}: the screen's "
                                         "cost grows with it)."),
    prefill_hardware: str = typer.Option(None, "--prefill-hardware", help="Only these (of --hardware) may serve "
                                                                          "prefill, e.g. h100-sxm."),
    decode_hardware: str = typer.Option(None, "--decode-hardware", help="Only these (of --hardware) may serve decode "
                                                                        "attention, e.g. h20."),
    price: list[str] = typer.Option(None, "--price", help="ID=USD_PER_HOUR, repeatable; overrides or supplies a "
                                                          "device's rental price (a bare USD_PER_HOUR: every "
                                                          "device's)."),
    tco: Path = typer.Option(None, "--tco", help="Price by total cost of ownership from this YAML instead of "
                                                 "rental."),
    precisions: str = typer.Option("bf16/bf16,fp8/fp8,fp8/w4a8", "--precisions",
                                   help="Comma-separated ATTENTION/FFN precision pairs to try."),
    tolerance: float = typer.Option(0.25, "--tolerance", help="Screening keeps fleets whose analytic latencies are "
                                                              "within this fraction above the SLOs (the DES decides); "
                                                              "0 to 10."),
    top_k: int = typer.Option(4, "--top-k", help="Candidates simulated per round (cheapest first)."),
    verify_max: int = typer.Option(16, "--verify-max", help="Stop after simulating this many candidates."),
    requests: int = typer.Option(None, "--requests", help="Requests per simulation run (at least). Default: the "
                                 "traffic file's, raised so an open loop's arrivals span 4 request lifetimes at the "
                                 "SLOs; the first and last lifetime (batches filling and draining) are not measured."),
    bisect_steps: int = _bisect_option(),
    workers: int = _workers_option("Local processes for the simulations"),
    cluster: str = typer.Option(None, "--cluster", help="Dask scheduler address to fan the simulations out to "
                                                        "(needs the `cluster` extra)."),
    engine: str = typer.Option("vllm", "--engine", callback=_lower,
                               help="Serving engine of every pool: vllm, sglang or trtllm. The simulation runs "
                                    "its whole profile (batching policy, step overheads, frontend latency); the "
                                    "screen takes its own kernels (one-shot all-reduce, fused MoE) and its frontend "
                                    "latency."),
    engine_version: str = engine_version_option("every pool serves (the screen, the simulations and "
                                                "recommended.yaml take it)"),
    frontend_latency: str = typer.Option(None, "--frontend-latency", metavar="<duration>",
                                         help="Frontend latency of every fleet (e.g. 0ms for TensorRT-LLM behind "
                                              "NVIDIA NIM): time in TTFT before the scheduler has a request. Default: "
                                              "the engine's."),
    timing: str = timing_option("Timing model for screening and simulation"),
    json_out: bool = typer.Option(False, "--json", help="Also print plan.json to stdout (no progress bars); "
                                                         "the report is still written to --out."),
):
    """Size and price a fleet for this traffic under these SLOs.

    Screens every arrangement analytically (aggregated TP/PP/EP/attention-DP; prefill/decode pools of any
    of the given hardware with their sizes and ratio; attention/FFN-disaggregated decode with its pools and
    micro-batches; precision per quadrant), then simulates the cheapest plausible ones at the target rate,
    cheapest first, until one meets the SLOs. The recommendation is the cheapest fleet per hour that the
    simulation shows meeting the SLOs; every simulated candidate also gets its maximum sustainable rate.
    Exit 1 when no candidate meets the SLOs (the message names the closest).

    Example:\n
      quadrant plan --model doubao-class-moe --traffic chat --rate 20 --hardware h100-sxm,h20 --tpot-slo 50ms
      --price h20=1.20 --out plan-doubao/
    """
    from ..planning.cost import parse_price_flags
    from ..planning.plan import MODES, PlanRequest, plan_capacity_for

    for flag, v in (("--top-k", top_k), ("--verify-max", verify_max), ("--requests", requests), ("--workers", workers),
                    ("--max-devices", max_devices)):
        if v is not None and v < 1:
            raise SimulatorError(f"{flag} must be >= 1, got {v}")
    _check_requests(requests)
    _check_common(out)
    if not 0 <= tolerance <= 10:
        raise SimulatorError(f"--tolerance must be within [0, 10], got {tolerance:g}")
    mode_list = tuple(m.lower() for m in _ids(modes, "--modes") or ())
    unknown = [m for m in mode_list if m not in MODES]
    if unknown or not mode_list:
        raise SimulatorError(f"--modes: expected a comma-separated list of {', '.join(MODES)}, got {modes!r}")
    req = PlanRequest(
        model=model, traffic=_traffic(traffic), hardware=_ids(hardware, "--hardware") or [],
        rate_per_s=_rate(rate), ttft_slo_s=_duration("--ttft-slo", ttft_slo),
        tpot_slo_s=_duration("--tpot-slo", tpot_slo), percentile=slo_percentile,
        modes=mode_list, max_devices=max_devices,
        prices=parse_price_flags(price, bare=True), tco_file=str(tco) if tco else None, precisions=precisions,
        top_k=top_k,
        verify_max=verify_max, requests=requests, bisect_steps=bisect_steps, workers=workers, tolerance=tolerance,
        executor=_executor(cluster), prefill_hardware=_ids(prefill_hardware, "--prefill-hardware"),
        decode_hardware=_ids(decode_hardware, "--decode-hardware"),
        timing=timing, engine=engine, frontend_latency_s=_frontend(frontend_latency),
        engine_version=engine_version)
    try:
        outcome = plan_capacity_for(req, progress=_progress(not json_out))
    finally:
        _close(req.executor)
    outcome.doc["metadata"] = metadata(seed=outcome.doc["inputs"].get("seed"),
                                       timing_model=outcome.doc["inputs"].get("timing"),
                                       inputs={"model": model, "traffic": traffic, "tco": str(tco) if tco else None})
    _finish(outcome, out, json_out, f"Capacity plan: {outcome.doc['inputs']['model']} at {outcome.rate_per_s:g} req/s")


@app.command("compare")
@guarded
def compare_cmd(
    deployments: list[str] = typer.Argument(..., help="Deployment YAMLs (or ids in workloads/deployments/)."),
    traffic: str = typer.Option(..., "--traffic", help="Traffic YAML or id."),
    rate: str = typer.Option(None, "--rate", metavar="<rate>",
                             help="Arrival rate (5, 5/s, 300/min; a bare number is per second); overrides the "
                                  "traffic file's."),
    ttft_slo: str = _slo_option("--ttft-slo", "TTFT target (e.g. 1s, 800ms; bare = seconds)"),
    tpot_slo: str = _slo_option("--tpot-slo", "TPOT target (e.g. 50ms)"),
    slo_percentile: float = _percentile_option(top=True),
    out: Path = typer.Option(None, "--out", parser=out_dir(),
                             help="Folder for plan.json, report.md, report.html and figures/ (new, or an earlier "
                                  "comparison's: a folder holding other files, a plan's recommended.yaml or an "
                                  "input of this run is refused)."),
    requests: int = typer.Option(None, "--requests", help="Requests per simulation run (at least). Default: the "
                                 "traffic file's, raised so an open loop's arrivals span 4 request lifetimes at the "
                                 "SLOs; the first and last lifetime (batches filling and draining) are not measured."),
    bisect_steps: int = _bisect_option(),
    workers: int = _workers_option("Local processes"),
    cluster: str = typer.Option(None, "--cluster", help="Dask scheduler address (needs the `cluster` extra)."),
    timing: str = timing_option("Timing model for the simulations"),
    price: list[str] = typer.Option(None, "--price", help="ID=USD_PER_HOUR, repeatable: a device's price over the "
                                                          "deployment files' and profiles' (a bare USD_PER_HOUR: "
                                                          "every device's)."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
):
    """Simulate deployments side by side on the same traffic: p-percentile TTFT/TPOT, goodput, cost per hour
    and per million tokens (per pool), maximum sustainable rate; the same report as `plan`.

    Example:\n
      quadrant compare doubao-class-all-h100 doubao-class-h100-prefill-h20-decode doubao-class-afd --traffic chat
    """
    from ..planning.plan import compare_deployments, slo_sources
    from ..specs.catalog import resolve_workload
    from ..specs.deployment import read_deployment

    for flag, v in (("--requests", requests), ("--workers", workers)):
        if v is not None and v < 1:
            raise SimulatorError(f"{flag} must be >= 1, got {v}")
    _check_requests(requests)
    dep_files = [resolve_workload(d, "deployments", "deployment") for d in deployments]
    seen: dict[str, str] = {}
    for given, f in zip(deployments, dep_files):  # one file twice (by id and by path, say): a typo, not a comparison
        key = os.path.realpath(f)
        if key in seen:
            raise SimulatorError(f"deployment {given!r} is {seen[key]!r} again; compare different deployments")
        seen[key] = given
    traffic_file = resolve_workload(traffic, "traffic", "traffic")
    _check_common(out, recommends=False,
                  inputs=[*(("deployment", f) for f in dep_files), ("--traffic file", traffic_file)])
    deps = [read_deployment(f) for f in dep_files]
    traffic_spec = _traffic(str(traffic_file))
    slo = traffic_spec.slo
    ttft_s, tpot_s = _duration("--ttft-slo", ttft_slo), _duration("--tpot-slo", tpot_slo)
    traffic_spec = replace(traffic_spec, slo=replace(
        slo, ttft_s=slo.ttft_s if ttft_s is None else ttft_s, tpot_s=slo.tpot_s if tpot_s is None else tpot_s,
        percentile=slo.percentile if slo_percentile is None else slo_percentile))
    if price:
        from ..commands import price_overrides

        per = price_overrides(price, list(dict.fromkeys(i for d in deps for i in d.device_ids)))
        deps = [d.repriced(per) for d in deps]
    ex = _executor(cluster)
    try:
        outcome = compare_deployments(deps, traffic_spec, _rate(rate), requests=requests,
                                      bisect_steps=bisect_steps, workers=workers, executor=ex,
                                      progress=_progress(not json_out), timing=timing)
    finally:
        _close(ex)
    outcome.doc["inputs"]["slo_from"] = slo_sources(ttft_slo, tpot_slo, slo_percentile)
    outcome.doc["metadata"] = metadata(seed=outcome.doc["inputs"].get("seed"),
                                       timing_model=outcome.doc["inputs"].get("timing"),
                                       inputs={"deployment": list(deployments), "traffic": traffic})
    models = ", ".join(dict.fromkeys(d.model.id for d in deps))
    _finish(outcome, out, json_out, f"Comparison: {models} at {outcome.rate_per_s:g} req/s")
