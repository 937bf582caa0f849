"""`quadrant simulate`: run traffic through a deployment (the discrete-event simulator)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import PRECISION_HELP, app, emit_json, explicit_flags, guarded, metadata, timing_label
from ._params import (
    JSON_EXTS,
    KV_PRECISION_HELP,
    MAX_DRAFT_TOKENS,
    MAX_REQUESTS,
    _lower,
    count,
    duration,
    engine_version_option,
    in_file_or_id,
    kv_precision,
    out_dir,
    out_file,
    real,
    timing_option,
    tpot_slo_duration,
)
from ._params import rate as rate_flag

# the help's panels (each lays out its own columns, so one long flag does not squeeze every other's help)
QUICK = "Quick run: a deployment from flags (no YAML)"
TRAFFIC = "Traffic"
ENGINE = "Engine"
SPEC = "Speculative decoding / MTP (quick run)"
SLO = "SLOs"
COST = "Timing model and cost"
OUTPUT = "Output"


@app.command()
@guarded
def simulate(
    ctx: typer.Context,
    deployment: str = typer.Argument(None, parser=in_file_or_id(),
                                     help="Deployment YAML (or id in workloads/deployments/)."),
    # -- traffic
    traffic: str = typer.Option(None, "--traffic", parser=in_file_or_id(), rich_help_panel=TRAFFIC,
                                help="Traffic YAML (or id in workloads/traffic/)."),
    rate: float = typer.Option(None, "--rate", parser=rate_flag(), rich_help_panel=TRAFFIC,
                              help="Quick run: Poisson arrivals, e.g. 5/s, 300/min (a bare number is per second); "
                                   "with --traffic, overrides the file's arrival rate."),
    concurrency: int = typer.Option(None, "--concurrency", parser=count(1, 1_000_000), rich_help_panel=TRAFFIC,
                                    help="Closed loop: requests in flight (a quick run or a deployment; with "
                                         "--traffic the file sets it)."),
    isl: int = typer.Option(1024, "--isl", parser=count(1, 100_000_000), rich_help_panel=TRAFFIC,
                            help="Prompt tokens per request (not with --traffic: the file sets them)."),
    osl: int = typer.Option(256, "--osl", parser=count(1, 100_000_000), rich_help_panel=TRAFFIC,
                            help="Output tokens per request (not with --traffic: the file sets them)."),
    requests: int = typer.Option(None, "--requests", parser=count(1, MAX_REQUESTS), rich_help_panel=TRAFFIC,
                                 help="Number of requests (overrides the traffic file)."),
    seed: int = typer.Option(None, "--seed", parser=count(0, 2**63 - 1), rich_help_panel=TRAFFIC,
                             help="Random seed (overrides the traffic file)."),
    ramp_up: float = typer.Option(None, "--ramp-up", parser=duration(positive=False), rich_help_panel=TRAFFIC,
                                  help="Closed loop: start the clients evenly over this time (e.g. 2s; 0: all at "
                                       "once). Default: one estimated request lifetime."),
    horizon: float = typer.Option(None, "--horizon", parser=duration(), rich_help_panel=TRAFFIC,
                                 help="Stop at this simulated time (e.g. 600s, 10min): requests in service then "
                                 "end rejected (unfinished); those not yet arrived are counted apart and neither "
                                 "meet nor miss the SLOs."),
    # -- a quick run's deployment
    model: str = typer.Option(None, "--model", "-m", rich_help_panel=QUICK,
                              help="Quick run: model id (no YAML needed)."),
    hardware: str = typer.Option("h100-sxm", "--hardware", rich_help_panel=QUICK, help="Quick run: device profile."),
    devices: int = typer.Option(8, "--devices", parser=count(1), rich_help_panel=QUICK,
                                help="Quick run: devices per replica."),
    replicas: int = typer.Option(1, "--replicas", parser=count(1, 100_000), rich_help_panel=QUICK,
                                 help="Quick run: model replicas."),
    tp: int = typer.Option(None, "--tp", parser=count(1), rich_help_panel=QUICK,
                           help="Quick run: tensor-parallel size (default: devices / pp)."),
    pp: int = typer.Option(1, "--pp", parser=count(1), rich_help_panel=QUICK, help="Quick run: pipeline stages."),
    ep: int = typer.Option(1, "--ep", parser=count(1), rich_help_panel=QUICK,
                           help="Quick run: expert-parallel size (MoE)."),
    dp: int = typer.Option(None, "--dp", parser=count(1), rich_help_panel=QUICK,
                           help="Quick run: attention data-parallel ranks per replica (tp x dp = devices / pp)."),
    precision: str = typer.Option("bf16", "--precision", rich_help_panel=QUICK, help=f"{PRECISION_HELP}."),
    kv_precision: str = typer.Option("bf16", "--kv-precision", parser=kv_precision(), rich_help_panel=QUICK,
                                     help=f"Quick run: KV cache: {KV_PRECISION_HELP}."),
    max_batch_tokens: int = typer.Option(None, "--max-batch-tokens", parser=count(1), rich_help_panel=QUICK,
                                         help="Quick run: token budget per step. Default: the engine server's own "
                                              "for the device (vLLM 8192, 2048 on an A100 or a GPU under 70 GiB; "
                                              "SGLang 2048 / 4096 / 8192 / 16384 under 35 / 60 / 160 GiB / above; "
                                              "TensorRT-LLM 8192), times the DP ranks for vLLM."),
    max_seqs: int = typer.Option(None, "--max-seqs", parser=count(1), rich_help_panel=QUICK,
                                 help="Quick run: running sequences per replica. Default: the engine server's own "
                                      "(vLLM 1024, 256 on an A100 or a GPU under 70 GiB, per DP rank; SGLang and "
                                      "TensorRT-LLM 2048)."),
    # -- the engine (short metavars: the flags are long, and the panel's help column needs the width)
    engine: str = typer.Option(None, "--engine", callback=_lower, rich_help_panel=ENGINE, metavar="NAME",
                               help="Serving engine for every pool: vllm (chunked prefill mixed into decode), "
                                    "sglang (prefill first, decode paused) or trtllm (in-flight batching, KV reserved "
                                    "for the whole request). Default: each pool's `engine:` (vllm)."),
    preemption: str = typer.Option(None, "--preemption", rich_help_panel=ENGINE, metavar="MODE",
                                   help="recompute | swap | none (trtllm only: GUARANTEED_NO_EVICT). Default: the "
                                        "engine's. swap is vLLM V0's mode, a what-if: KV out to the host and back "
                                        "over each GPU's host link, 4 GiB of swap space a GPU, then recompute."),
    engine_version: str = engine_version_option("every vLLM pool serves, over each pool's `engine_version:`", ENGINE),
    # (up to 1000: SGLang counts a prefill step as 1000 toward it, PREFILL_RECV_WEIGHT in serving/engine.py)
    scheduler_recv_interval: int = typer.Option(
        1, "--scheduler-recv-interval", parser=count(1, 1000), rich_help_panel=ENGINE, metavar="N",
        help="Quick run, SGLang only: its --scheduler-recv-interval N, 1-1000 (a busy scheduler takes new requests "
             "every N decode steps; 1: every step, SGLang's default)."),
    batch_wait_timeout_iters: int = typer.Option(
        0, "--batch-wait-timeout-iters", parser=count(0, 10_000), rich_help_panel=ENGINE, metavar="N",
        help="Quick run, TensorRT-LLM only: its batch_wait_timeout_iters N, with --batch-wait-max-tokens-ratio (a "
             "prompt that would run beside decodes waits up to N steps for a step to fill; 0: off, the default)."),
    batch_wait_max_tokens_ratio: float = typer.Option(
        0.0, "--batch-wait-max-tokens-ratio", parser=real(0.0, 1.0), rich_help_panel=ENGINE, metavar="R",
        help="Quick run, TensorRT-LLM only: its batch_wait_max_tokens_ratio R (prompts wait while a step would "
             "schedule under R x --max-batch-tokens; 0: off, the default)."),
    frontend_latency: float = typer.Option(
        None, "--frontend-latency", parser=duration(positive=False), rich_help_panel=ENGINE, metavar="TIME",
        help="Quick run: time a request spends in the server's frontend before the scheduler has it (in TTFT, not "
             "TPOT), e.g. 0ms for a frontend other than the engine's own. Default: the engine profile's."),
    # -- speculative decoding
    spec_draft_tokens: int = typer.Option(0, "--spec-tokens", "--spec-draft", parser=count(0, MAX_DRAFT_TOKENS),
                                          rich_help_panel=SPEC, metavar="N",
                                          help="Quick run: speculative / MTP draft tokens per step (0: off)."),
    spec_acceptance: float = typer.Option(0.7, "--spec-acceptance", "--spec-accept", parser=real(0, 1),
                                          rich_help_panel=SPEC, metavar="P",
                                          help="Quick run: per-token draft acceptance rate, 0..1 (0.7 is an "
                                               "illustrative default: measure yours; DeepSeek-V3's MTP accepts "
                                               "0.85-0.9, its report's section 5.4.3)."),
    spec_draft_cost: float = typer.Option(0.05, "--spec-draft-cost", parser=real(0, 1), rich_help_panel=SPEC,
                                          metavar="F",
                                          help="Quick run: one draft pass as a fraction of a decode step (0.05: "
                                               "a small draft model, illustrative; an MTP module is one extra layer, "
                                               "about 1 / layers: 0.016 for DeepSeek-V3)."),
    # -- SLOs
    ttft_slo: float = typer.Option(None, "--ttft-slo", parser=duration(), rich_help_panel=SLO,
                                   help="TTFT SLO, e.g. 500ms (overrides the traffic file)."),
    tpot_slo: float = typer.Option(None, "--tpot-slo", parser=tpot_slo_duration(), rich_help_panel=SLO,
                                   help="TPOT SLO, e.g. 50ms (overrides the traffic file)."),
    slo_percentile: float = typer.Option(None, "--slo-percentile", rich_help_panel=SLO,
                                         parser=real(1, 100, what="a percentile (90 for p90)"),
                                         help="Percentile the SLO applies to, in [1, 100] (90 for p90). Default: "
                                              "the traffic file's `slo.percentile`, else 90."),
    check_slo: bool = typer.Option(False, "--check-slo", rich_help_panel=SLO,
                                   help="Exit 1 (one line on stderr) when the traffic's TTFT/TPOT SLO is not met at "
                                        "its percentile."),
    # -- the timing model and prices
    timing: str = timing_option(panel=COST),
    overheads: bool = typer.Option(True, "--overheads/--no-overheads", rich_help_panel=COST,
                                   help="Add the engine's step overheads (CPU time, unlisted kernels, per-sequence "
                                        "cost), its own small all-reduces and its frontend latency to the timing "
                                        "model (a pool's own frontend_latency stays). The engine's KV-cache sizing "
                                        "applies either way."),
    price: list[str] = typer.Option(None, "--price", rich_help_panel=COST,
                                    help="Device price for the cost line, USD per device-hour (> 0): ID=USD for one "
                                         "device of the run (repeatable, e.g. --price h20=1.20), or a bare USD for "
                                         "every device. Default: the profiles' sourced prices."),
    # -- output
    json_out: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT, help="Print the summary as JSON."),
    fmt: str = typer.Option("quadrant", "--format", callback=_lower, rich_help_panel=OUTPUT,
                            help="JSON layout with --json: quadrant (SI names, e.g. ttft_s.p90) | vllm (the fields "
                                 "of vLLM `bench serve --save-result`, ms keys)."),
    out: Path = typer.Option(None, "--out", parser=out_dir(), rich_help_panel=OUTPUT,
                             help="Folder for requests.csv, steps.csv and plots."),
    plots: bool = typer.Option(True, "--plots/--no-plots", rich_help_panel=OUTPUT,
                               help="With --out: write latency CDFs, time series, step timeline."),
    parquet: bool = typer.Option(False, "--parquet", rich_help_panel=OUTPUT,
                                 help="With --out: Parquet instead of CSV (needs pyarrow)."),
    trace: Path = typer.Option(None, "--trace", parser=out_file(JSON_EXTS), rich_help_panel=OUTPUT,
                               help="Write a Chrome/Perfetto trace of every batch step (open in ui.perfetto.dev)."),
):
    """Simulate traffic on a deployment (discrete events: arrivals, finishes and each engine's scheduling
    decisions; every batch step is recorded): TTFT, TPOT, ITL and
    end-to-end latency percentiles, throughput, goodput under the SLO, utilisation per pool and quadrant,
    queueing, preemptions, KV occupancy and cost per million output tokens.

    Each pool runs an engine profile (--engine): its batching policy plus its per-step overheads and its
    own kernels (one-shot all-reduce; vLLM's fused MoE), with the constants and their sources in
    simulator/serving/engines.yaml. A closed loop starts its clients
    staggered, skips a warm-up and reports the steady-state window it measured. Goodput needs an SLO.

    Examples:\n
      quadrant simulate workloads/deployments/dbrx-h100-prefill-h20-decode.yaml --traffic chat\n
      quadrant simulate --model llama-3.1-8b --hardware h100-sxm --devices 1 --tp 1 --rate 4 --isl 1024 --osl 256
      --requests 500 --json

      quadrant simulate --model llama-3.1-8b --devices 1 --tp 1 --concurrency 32 --engine sglang --ttft-slo 1s
      --tpot-slo 50ms
    """
    from ..commands import run_simulate

    if fmt not in ("quadrant", "vllm"):
        raise typer.BadParameter(f"expected quadrant or vllm, got {fmt!r}", param_hint="'--format'")
    if fmt != "quadrant" and not json_out:  # (a layout of the JSON document: without --json nothing would use it)
        raise typer.BadParameter("a JSON layout: give --json too", param_hint="'--format'")
    if parquet and not out:
        raise typer.BadParameter("writes the tables under --out DIR: give --out too", param_hint="'--parquet'")
    opts = {k: v for k, v in locals().items()
            if k not in ("ctx", "json_out", "out", "plots", "parquet", "run_simulate", "fmt", "trace", "check_slo")}
    opts["_explicit"] = explicit_flags(ctx)
    opts["_check_slo"] = check_slo  # (refused before the run when there is no SLO to check)
    if not spec_draft_tokens and not deployment:  # (they describe a draft: unused without one)
        for name, flag in (("spec_acceptance", "--spec-acceptance"), ("spec_draft_cost", "--spec-draft-cost")):
            if name in opts["_explicit"]:
                raise typer.BadParameter("describes the speculative draft: give --spec-tokens N (N >= 1) too",
                                         param_hint=f"'{flag}'")
    res = run_simulate(opts, progress=not json_out)
    if out:
        from ..commands import write_simulation

        for path in write_simulation(res, out, plots=plots, parquet=parquet, slo=opts.get("_slo")):
            if not json_out:
                typer.echo(f"wrote {path}")
    if trace:
        from ..io import atomic_write_text
        from ..report.traces import chrome_trace_json

        atomic_write_text(trace, chrome_trace_json(res.steps, res.events, res.requests))
        if not json_out:
            typer.echo(f"wrote {trace}")
    from ..report.formats import itl_stats

    sm = dict(res.summary)
    if "itl_s" not in sm:  # the engine's own ITL (per token gaps) when it reports one
        sm["itl_s"] = itl_stats(res.steps, res.requests)
    if json_out:
        meta = metadata(seed=opts.get("_seed"),
                        timing_model=timing_label(timing, None) + " step costs (discrete-event simulation)",
                        inputs={"deployment": deployment, "traffic": traffic} if deployment else
                        {"model": model, "hardware": hardware, "traffic": traffic})
        if fmt == "vllm":
            from ..report.formats import vllm_bench_result

            emit_json(vllm_bench_result(res, opts.get("_traffic"), opts.get("_deployment")), meta)
        else:
            emit_json(sm, meta)
    else:
        from ..report.render import simulation_text

        typer.echo(simulation_text(sm))
    if sm["requests_total"] and not sm["requests_completed"]:
        from ..report.render import refusals

        total, late = sm["requests_total"], sm["requests_not_arrived"]
        reasons = ", ".join(f"{n} x {why}" for why, n in refusals(sm).items()) or "none recorded"
        if late == total:
            why = f"none of the {total} arrived before the horizon"
        elif late:
            why = f"of {total}, {total - late} rejected ({reasons}) and {late} not arrived before the horizon"
        else:
            why = f"all {total} were rejected ({reasons})"
        typer.echo(f"error: no request finished: {why}", err=True)
        raise typer.Exit(1)
    if check_slo and not sm["goodput"]["slo_met"]:
        from ..units import format_ms

        g = sm["goodput"]["slo"]
        at = sm["goodput"].get("at_percentile") or {}
        asked = " and ".join(f"p{g['percentile']:g} {k.split('_')[0].upper()} <= {format_ms(g[k])}"
                             for k in ("ttft_s", "tpot_s") if g.get(k) is not None)
        got = " and ".join(f"{k.split('_')[0].upper()} {format_ms(at[k]) if at.get(k) is not None else 'unbounded'}"
                           for k in ("ttft_s", "tpot_s") if g.get(k) is not None)
        typer.echo(f"error: SLO not met: {asked} asked, p{g['percentile']:g} {got} simulated; "
                   f"{sm['goodput']['fraction_of_requests']:.1%} of requests met it", err=True)
        raise typer.Exit(1)
