"""The ``quadrant`` command line. It owns only I/O: parse options, call the library, render, exit.

Exit codes: 0 ok, 1 a plan that does not fit / an SLO that is not met where asked, 2 bad input.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path

import typer

from .errors import InfeasibleError, SimulatorError

app = typer.Typer(
    help=("quadrant-sim: score LLM inference on a fleet before you buy it.\n\n"
          "Every model step is split into four quadrants - prefill x decode crossed with attention x FFN - "
          "and costed with an analytic roofline (datasheet peaks x measured/cited efficiencies + fixed "
          "per-kernel overhead + alpha-beta collectives). `whatif` scores one plan; `simulate` runs a "
          "discrete-event simulation of real traffic; `sweep` searches plans; `bench`/`validate`/`calibrate` "
          "check the numbers against real kernels."),
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
hw_app = typer.Typer(help="Hardware profiles (hardware/<id>.yaml).", no_args_is_help=True)
model_app = typer.Typer(help="Model specs (workloads/models/<id>.yaml).", no_args_is_help=True)
bench_app = typer.Typer(help="The torch micro-benchmark harness (needs the `bench` extra).", no_args_is_help=True)
app.add_typer(hw_app, name="hw")
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")

_STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")):
    _STATE["debug"] = debug


def guarded(fn):
    """Turn library errors into one line on stderr and a non-zero exit (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SimulatorError as exc:
            if _STATE["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1 if isinstance(exc, InfeasibleError) else 2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


# ------------------------------------------------------------------------------------------------
# hw / model catalogues
# ------------------------------------------------------------------------------------------------

@hw_app.command("list")
@guarded
def hw_list(json_out: bool = typer.Option(False, "--json", help="Print a JSON list of objects with `id`.")):
    """List hardware profiles with their headline figures (dense peaks)."""
    from .commands import hardware_table

    _emit_frame(hardware_table(), json_out)


@hw_app.command("show")
@guarded
def hw_show(hw_id: str = typer.Argument(..., help="Profile id (see `quadrant hw list`) or a YAML path."),
            json_out: bool = typer.Option(False, "--json")):
    """Show one hardware profile: datasheet figures with sources, and its efficiency block."""
    from .commands import hardware_detail

    detail = hardware_detail(hw_id)
    emit_json(detail) if json_out else typer.echo(_yaml(detail))


@model_app.command("list")
@guarded
def model_list(json_out: bool = typer.Option(False, "--json", help="Print a JSON list of objects with `id`.")):
    """List model specs with derived total/active parameters and KV bytes per token."""
    from .commands import model_table

    _emit_frame(model_table(), json_out)


@model_app.command("show")
@guarded
def model_show(model_id: str = typer.Argument(..., help="Model id or a YAML path."),
               json_out: bool = typer.Option(False, "--json")):
    """Show a model spec and what follows from it (parameter counts, KV bytes per token)."""
    from .commands import model_detail

    detail = model_detail(model_id)
    emit_json(detail) if json_out else typer.echo(_yaml(detail))


@model_app.command("import")
@guarded
def model_import(config: Path = typer.Argument(..., help="A HuggingFace config.json."),
                 model_id: str = typer.Option(..., "--id", help="Id for the new spec (file name)."),
                 out: Path = typer.Option(None, "--out", help="Where to write the YAML (default: print it)."),
                 source: str = typer.Option("", "--source", help="Citation for the config (URL or repo@rev).")):
    """Read a HuggingFace config.json (Llama/Qwen dense, Mixtral, DBRX, Qwen3-MoE, DeepSeek-V3/Kimi-K2)
    into a model spec YAML."""
    from .commands import import_model

    text = import_model(config, model_id, source)
    if out:
        from .io import atomic_write_text

        atomic_write_text(out, text)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text, nl=False)


def _emit_frame(df, json_out: bool) -> None:
    """A catalogue listing: JSON records or an aligned table."""
    if json_out:
        emit_json(df.to_dict(orient="records"))
    else:
        from .report.render import table

        typer.echo(table(list(df.columns), df.astype(str).values.tolist()))


def _yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, width=110, allow_unicode=True).rstrip()


# ------------------------------------------------------------------------------------------------
# what-if
# ------------------------------------------------------------------------------------------------

PRECISION_HELP = "bf16 | fp16 | fp32 | fp8 | int8 | w4a8 | w4a16 | fp4"


@app.command()
@guarded
def whatif(
    model: str = typer.Option(None, "--model", "-m", help="Model id (quadrant model list) or YAML path."),
    hardware: str = typer.Option("h100-sxm", "--hardware", help="Device profile for every quadrant."),
    devices: int = typer.Option(8, "--devices", help="Devices of one model replica."),
    tp: int = typer.Option(None, "--tp", help="Tensor parallel size (default: devices / (pp x dp))."),
    pp: int = typer.Option(1, "--pp", help="Pipeline stages."),
    ep: int = typer.Option(1, "--ep", help="Expert parallel size for MoE FFN."),
    dp: int = typer.Option(None, "--dp", help="Attention data-parallel size."),
    expert_tp: int = typer.Option(None, "--expert-tp", help="TP inside each expert group (default devices/ep)."),
    precision: str = typer.Option("bf16", "--precision", help=f"Weights/activations, all quadrants: {PRECISION_HELP}."),
    attn_precision: str = typer.Option(None, "--attn-precision", help="Override for the attention quadrants."),
    ffn_precision: str = typer.Option(None, "--ffn-precision", help="Override for the FFN quadrants (e.g. w4a8)."),
    kv_precision: str = typer.Option("bf16", "--kv-precision", help="KV cache: bf16 | fp8 | int8."),
    kv_scale_tokens: int = typer.Option(128, "--kv-scale-tokens", help="Tokens per KV quantisation scale."),
    batch: int = typer.Option(64, "--batch", help="Concurrent decode sequences."),
    isl: int = typer.Option(2048, "--isl", help="Input (prompt) tokens per request."),
    osl: int = typer.Option(512, "--osl", help="Output tokens per request."),
    prefill_batch: int = typer.Option(1, "--prefill-batch", help="Prompts prefilled together (TTFT batch)."),
    chunk: int = typer.Option(0, "--chunk", help="Prefill chunk tokens (0 = whole prompt); with --pp: chunked PP."),
    overlap_comm: bool = typer.Option(False, "--overlap-comm", help="Hide collectives behind compute."),
    prefill_hardware: str = typer.Option(None, "--prefill-hardware", help="Separate prefill pool device (PD disagg)."),
    prefill_devices: int = typer.Option(None, "--prefill-devices", help="Devices of the prefill pool."),
    prefill_tp: int = typer.Option(None, "--prefill-tp"),
    prefill_pp: int = typer.Option(None, "--prefill-pp"),
    decode_hardware: str = typer.Option(None, "--decode-hardware", help="Separate decode pool device (PD disagg)."),
    decode_devices: int = typer.Option(None, "--decode-devices"),
    decode_tp: int = typer.Option(None, "--decode-tp"),
    decode_ep: int = typer.Option(None, "--decode-ep"),
    spec_draft: int = typer.Option(0, "--spec-draft", help="Speculative decoding: draft tokens per step."),
    spec_accept: float = typer.Option(0.7, "--spec-accept", help="Per-token acceptance rate."),
    spec_draft_cost: float = typer.Option(0.05, "--spec-draft-cost", help="Draft step time / target step time."),
    price: float = typer.Option(None, "--price", help="Override the device price, USD per device-hour."),
    deployment: Path = typer.Option(None, "--deployment", help="Deployment YAML (pools, per-quadrant plans)."),
    calibration: Path = typer.Option(None, "--calibration", help="Calibration overlay from `quadrant calibrate`."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    plot: Path = typer.Option(None, "--plot", help="Write the roofline plot (PNG/SVG/PDF)."),
    breakdown_plot: Path = typer.Option(None, "--breakdown-plot", help="Write the quadrant breakdown bars."),
):
    """Score one plan: per-quadrant time, FLOP, bytes, communication, intensity and bound; TTFT, TPOT,
    throughput, memory fit per device and cost per million output tokens.

    Example: quadrant whatif --model dbrx --hardware h100-sxm --devices 8 --batch 64 --isl 2048 --osl 512
    """
    from .commands import run_whatif

    opts = {k: v for k, v in locals().items() if k not in ("json_out", "plot", "breakdown_plot", "run_whatif")}
    res = run_whatif(opts)
    _report_whatif(res, json_out, plot, breakdown_plot)


def _report_whatif(res, json_out: bool, plot: Path | None, breakdown_plot: Path | None) -> None:
    from .report.render import whatif_text

    if plot:
        from .report.plots import roofline

        roofline(res, plot)
    if breakdown_plot:
        from .report.plots import quadrant_breakdown

        quadrant_breakdown(res.quadrants, breakdown_plot, f"{res.model_id} per-quadrant time")
    if json_out:
        emit_json(res.to_dict())
    else:
        typer.echo(whatif_text(res))
        for p in (plot, breakdown_plot):
            if p:
                typer.echo(f"wrote {p}")
    if not res.fits:
        bad = next(m for m in res.memory if not m.fits)
        typer.echo(f"error: {res.model_id} does not fit: {bad.explain()}", err=True)
        raise typer.Exit(1)


@app.command()
@guarded
def simulate(
    deployment: str = typer.Argument(None, help="Deployment YAML (or id in workloads/deployments/)."),
    traffic: str = typer.Option(None, "--traffic", help="Traffic YAML (or id in workloads/traffic/)."),
    model: str = typer.Option(None, "--model", "-m", help="Quick run: model id (no YAML needed)."),
    hardware: str = typer.Option("h100-sxm", "--hardware", help="Quick run: device profile."),
    devices: int = typer.Option(8, "--devices", help="Quick run: devices per replica."),
    replicas: int = typer.Option(1, "--replicas", help="Quick run: model replicas."),
    tp: int = typer.Option(None, "--tp"),
    pp: int = typer.Option(1, "--pp"),
    ep: int = typer.Option(1, "--ep"),
    precision: str = typer.Option("bf16", "--precision", help=f"{PRECISION_HELP}."),
    kv_precision: str = typer.Option("bf16", "--kv-precision"),
    rate: float = typer.Option(None, "--rate", help="Quick run: Poisson arrivals per second."),
    concurrency: int = typer.Option(None, "--concurrency", help="Quick run: closed loop, requests in flight."),
    isl: int = typer.Option(1024, "--isl", help="Quick run: prompt tokens."),
    osl: int = typer.Option(256, "--osl", help="Quick run: output tokens."),
    requests: int = typer.Option(None, "--requests", help="Number of requests (overrides the traffic file)."),
    max_batch_tokens: int = typer.Option(8192, "--max-batch-tokens", help="Quick run: token budget per step."),
    max_seqs: int = typer.Option(256, "--max-seqs", help="Quick run: running sequences per replica."),
    seed: int = typer.Option(None, "--seed", help="Random seed (overrides the traffic file)."),
    horizon: float = typer.Option(None, "--horizon", help="Stop at this simulated time (s); the rest is rejected."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    out: Path = typer.Option(None, "--out", help="Folder for requests.csv, steps.csv and plots."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="With --out: write latency CDFs, time series, "
                                                                  "step timeline."),
    parquet: bool = typer.Option(False, "--parquet", help="With --out: Parquet instead of CSV (needs pyarrow)."),
):
    """Simulate traffic on a deployment (discrete events, one per batch step per replica): TTFT, TPOT and
    end-to-end latency percentiles, throughput, goodput under the SLO, utilisation per pool and quadrant,
    queueing, preemptions, KV occupancy and cost per million output tokens.

    Examples:\n
      quadrant simulate workloads/deployments/dbrx-h100-prefill-h20-decode.yaml --traffic chat\n
      quadrant simulate --model llama-3.1-8b --hardware h100-sxm --devices 1 --tp 1 --rate 4 --isl 1024 --osl 256
      --requests 500 --json
    """
    from .commands import run_simulate

    opts = {k: v for k, v in locals().items() if k not in ("json_out", "out", "plots", "parquet", "run_simulate")}
    res = run_simulate(opts, progress=not json_out)
    if out:
        from .commands import write_simulation

        for path in write_simulation(res, out, plots=plots, parquet=parquet, slo=opts.get("_slo")):
            if not json_out:
                typer.echo(f"wrote {path}")
    if json_out:
        emit_json(res.summary)
    else:
        from .report.render import simulation_text

        typer.echo(simulation_text(res.summary))


@app.command()
@guarded
def validate(
    measurements: Path = typer.Option(..., "--measurements", help="Measurement CSV (the contract in the README)."),
    hardware: str = typer.Option(None, "--hardware", help="Only rows of this profile id."),
    calibration: list[Path] = typer.Option(None, "--calibration", help="Calibration overlay(s) to apply."),
    heldout: bool = typer.Option(False, "--heldout", help="Only the rows the calibration held out (same split)."),
    json_out: bool = typer.Option(False, "--json", help="Print {overall, groups} as JSON."),
    out: Path = typer.Option(None, "--out", help="Write every row with its prediction to this CSV."),
    plot: Path = typer.Option(None, "--plot", help="Write a predicted-vs-measured scatter plot."),
):
    """Predict every measured kernel with its hardware profile and report, per hardware x op and
    overall: n, median and p90 absolute percentage error, fraction within 25%, and bias (geometric
    mean of predicted/measured; > 1 means the model is pessimistic)."""
    from .commands import run_validate

    pred, result = run_validate(measurements, hardware, calibration or [], heldout)
    if out:
        from .io import atomic_write

        atomic_write(out, lambda tmp: pred.to_csv(tmp, index=False))
    if plot:
        from .report.plots import validation_scatter

        validation_scatter(pred, plot, f"{measurements.name}: predicted vs measured")
    if json_out:
        emit_json(result)
    else:
        from .report.render import validation_text

        typer.echo(validation_text(result))
        for p in (out, plot):
            if p:
                typer.echo(f"wrote {p}")


@app.command()
@guarded
def calibrate(
    measurements: Path = typer.Option(..., "--measurements", help="Measurement CSV."),
    hardware: str = typer.Option(..., "--hardware", help="Profile id to fit (rows of other hardware are ignored)."),
    out: Path = typer.Option(..., "--out", help="Where to write the calibration overlay YAML."),
    test_fraction: float = typer.Option(0.5, "--test-fraction", help="Rows held out to report the error on."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/test split."),
    json_out: bool = typer.Option(False, "--json"),
):
    """Fit the profile's efficiency and overhead parameters (fixed launch latency; achievable FLOP/s and
    bandwidth fractions and ramps per op class) on a training split of the measurements, report the
    error on the held-out rows before and after, and write an overlay (datasheet values untouched).
    Use it anywhere with --calibration PATH."""
    from .commands import run_calibrate

    report = run_calibrate(measurements, hardware, out, test_fraction, seed)
    if json_out:
        emit_json({k: v for k, v in report.items() if k != "fits"})
    else:
        from .report.render import calibration_text

        typer.echo(calibration_text(report))
        typer.echo(f"wrote {out}")


@app.command()
@guarded
def sweep(
    model: str = typer.Option(..., "--model", "-m", help="Model id."),
    hardware: str = typer.Option("h100-sxm", "--hardware", help="Comma-separated profile ids."),
    devices: int = typer.Option(8, "--devices", help="Devices per replica."),
    isl: int = typer.Option(2048, "--isl"),
    osl: int = typer.Option(512, "--osl"),
    precisions: str = typer.Option("bf16,fp8", "--precision", help="Comma-separated precisions to try."),
    kv_precision: str = typer.Option("bf16", "--kv-precision"),
    batches: str = typer.Option("1,2,4,8,16,32,64,128,256", "--batches", help="Comma-separated decode batches."),
    tpot_slo: float = typer.Option(None, "--tpot-slo", help="Keep configurations with TPOT <= this (s)."),
    ttft_slo: float = typer.Option(None, "--ttft-slo", help="Keep configurations with TTFT <= this (s)."),
    rate: float = typer.Option(None, "--rate", help="Capacity planning: requests per second to serve."),
    out: Path = typer.Option(None, "--out", help="Write every configuration to this CSV."),
    plot: Path = typer.Option(None, "--plot", help="Write the Pareto plot (throughput/device vs TPOT)."),
    json_out: bool = typer.Option(False, "--json", help="Print the Pareto front as JSON."),
):
    """Score every (hardware, precision, TP, EP, batch) plan in one vectorised pass; print the Pareto
    front of output tokens/s per device against TPOT among plans that fit (and meet the SLOs), with
    replicas and $/hour for --rate."""
    from .commands import run_sweep

    df, front = run_sweep(model, hardware, devices, isl, osl, precisions, kv_precision, batches, tpot_slo, ttft_slo,
                          rate)
    if out:
        from .io import atomic_write

        atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
    if plot:
        from .report.plots import pareto

        ok = df[df.fits]
        pareto(ok.assign(config=ok.hardware + " " + ok.precision), "tpot_s", "output_tokens_per_s_per_device", plot,
               front=front)
    if json_out:
        emit_json(front.to_dict(orient="records"))
        return
    from .report.render import sweep_text

    typer.echo(sweep_text(df, front))
    for p in (out, plot):
        if p:
            typer.echo(f"wrote {p}")


@app.command()
@guarded
def demo(out: Path = typer.Option(Path("quadrant-demo"), "--out", help="Folder for the demo's plots.")):
    """Run the built-in example: DBRX on 8 x H100 (what-if table + roofline plot), then the same
    decode on H20 for contrast, then a short simulated chat workload."""
    from .commands import run_demo

    for line in run_demo(out):
        typer.echo(line)


@bench_app.command("run")
@guarded
def bench_run(
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    suite: str = typer.Option("quick", "--suite", help="tiny | quick (CPU, < 1 min) | full (GPU) | a shape CSV."),
    out: Path = typer.Option(..., "--out", help="Measurement CSV to write."),
    hardware: str = typer.Option(None, "--hardware", help="Profile id for the `hardware` column "
                                                          "(default: cpu-host on CPU, h100-sxm on CUDA)."),
    reps: int = typer.Option(10, "--reps", help="Timed repetitions per shape (median reported)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up runs per shape."),
):
    """Measure kernels with torch and write rows in the measurement CSV contract, with provenance
    (device, driver/runtime, torch version, date, clocks). Collectives run when launched with
    `torchrun --nproc-per-node N`."""
    import sys

    from .bench.run import run_suite
    from .bench.suites import load_suite
    from .io import atomic_write

    hw = hardware or ("cpu-host" if device == "cpu" else "h100-sxm")
    n = len(load_suite(suite))
    with typer.progressbar(length=n, label=f"bench {suite} on {device}", file=sys.stderr) as bar:
        df, skipped = run_suite(suite, device, hw, reps=reps, warmup=warmup, progress=lambda i: bar.update(1))
    if len(df):
        atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
        typer.echo(f"measured {len(df)} kernels, skipped {len(skipped)}; wrote {out}")
    else:
        typer.echo(f"no rows to write (skipped {len(skipped)}; under torchrun only rank 0 writes)")
    reasons: dict[str, int] = {}
    for _, why in skipped:
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in reasons.items():
        typer.echo(f"  skipped x{count}: {why}")


def main() -> None:  # console-script entry point
    try:
        app()
    except SimulatorError as exc:  # pragma: no cover - commands are guarded
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
