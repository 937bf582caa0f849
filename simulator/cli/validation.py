"""`quadrant validate`, `calibrate` and `bench run`: check the timing model against measured kernels."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import app, bench_app, emit_json, guarded, metadata, timing_files, timing_label
from ._params import (
    CSV_EXTS,
    KV_PRECISION_HELP,
    PLOT_EXTS,
    YAML_EXTS,
    _lower,
    count,
    in_file,
    kv_precision,
    out_file,
    real,
    timing_option,
)


@app.command()
@guarded
def validate(
    measurements: Path = typer.Option(None, "--measurements", parser=in_file(),
                                      help="Measurement CSV (the contract in the README)."),
    hardware: str = typer.Option(None, "--hardware", help="Only rows of this profile id."),
    calibration: list[Path] = typer.Option(None, "--calibration", parser=in_file(),
                                           help="Calibration overlay(s) to apply."),
    heldout: bool = typer.Option(False, "--heldout", help="Only the rows the calibration held out (same split)."),
    timing: str = timing_option(),
    lodo: bool = typer.Option(True, "--lodo/--no-lodo", help="With rows of several devices, also fit the kernel "
                              "families on all devices but one and score that one (leave-one-device-out)."),
    json_out: bool = typer.Option(False, "--json", help="Print {overall, groups, leave_one_device_out} as JSON."),
    out: Path = typer.Option(None, "--out", parser=out_file(CSV_EXTS),
                             help="Write every row with its prediction to this CSV."),
    plot: Path = typer.Option(None, "--plot", parser=out_file(PLOT_EXTS),
                              help="Write a predicted-vs-measured scatter plot."),
    serving: Path = typer.Option(None, "--serving", parser=in_file(),
                                 help="Measured serving results to re-simulate: vLLM `bench serve --save-result` "
                                      "JSON, sglang.bench_serving JSON lines, a GuideLLM report, a genai-perf / "
                                      "AIPerf export JSON, or a CSV (see the README)."),
    deployment: str = typer.Option(None, "--deployment", help="With --serving: deployment YAML or id to simulate."),
    model: str = typer.Option(None, "--model", help="With --serving: model id where the results do not name one."),
    devices: int = typer.Option(None, "--devices", parser=count(1), help="With --serving: devices per replica."),
    tp: int = typer.Option(None, "--tp", parser=count(1), help="With --serving: tensor parallel size."),
    pp: int = typer.Option(None, "--pp", parser=count(1), help="With --serving: pipeline stages."),
    ep: int = typer.Option(None, "--ep", parser=count(1), help="With --serving: expert parallel size."),
    precision: str = typer.Option(None, "--precision", help="With --serving: weight/activation precision."),
    kv_precision: str = typer.Option(None, "--kv-precision", parser=kv_precision(),
                                     help=f"With --serving: KV-cache precision ({KV_PRECISION_HELP})."),
    engine: str = typer.Option(None, "--engine", callback=_lower,
                               help="With --serving: the engine that served the runs (vllm | sglang | trtllm) "
                                    "where a run does not name it (CSV `engine` column)."),
    requests: int = typer.Option(None, "--requests", parser=count(1, 100_000),
                                 help="With --serving: at most this many requests simulated per measured run "
                                      "(a run is simulated with its own prompt count up to this; default 1000)."),
    kernel_times: bool = typer.Option(False, "--kernel-times", help="Read each row's time from kernel_us (the "
                                      "kernel-only time `bench run` writes on a GPU) instead of latency_us."),
):
    """Predict every measured kernel with the simulator's own op records and timing model and report,
    per hardware x op and overall: n, median and p90 absolute percentage error, fraction within 25%,
    and bias (geometric mean of predicted/measured; > 1 means the model is pessimistic). With rows of
    several devices it also reports leave-one-device-out: each device predicted by kernel-family
    parameters fitted on the others.

    With --serving FILE: re-simulate measured serving runs (vLLM bench serve JSON, sglang.bench_serving
    JSON lines, GuideLLM report, genai-perf / AIPerf export, or CSV) as their benchmark client ran them (the
    engine that served them, the measured prompt count, a closed loop's clients starting together, the client's
    length spread) and report the TTFT and TPOT errors per group (model x hardware x parallelism x engine).

    Examples:\n
      quadrant validate --measurements reports/validation/published/kernels.csv --hardware h100-sxm\n
      quadrant validate --serving run.json --hardware h100-sxm --devices 8 --tp 8 --precision fp8
    """
    if engine is not None:
        from ..serving.profiles import ENGINES

        if engine not in ENGINES:
            raise typer.BadParameter(f"{engine!r}: expected one of {', '.join(ENGINES)}", param_hint="'--engine'")
        if serving is None:
            raise typer.BadParameter("--engine goes with --serving", param_hint="'--engine'")
    if serving is not None:
        # the kernel checks' own flags would go unused: refused rather than ignored
        kernel_only = {"--measurements": measurements, "--heldout": heldout or None, "--plot": plot,
                       "--kernel-times": kernel_times or None, "--no-lodo": None if lodo else True}
        unused = [flag for flag, v in kernel_only.items() if v is not None]
        if unused:
            raise typer.BadParameter("applies to a kernel check (--measurements), not to --serving (re-simulated "
                                     "serving runs)", param_hint=f"'{unused[0]}'")
        if calibration and len(calibration) > 1:
            raise typer.BadParameter("with --serving, one overlay or table (or a --timing spec joining them)",
                                     param_hint="'--calibration'")
        layout = {"--model": model, "--hardware": hardware, "--devices": devices, "--tp": tp, "--pp": pp, "--ep": ep,
                  "--precision": precision, "--kv-precision": kv_precision}
        given = [flag for flag, v in layout.items() if v is not None]
        if deployment and given:  # (the deployment file settles the model and layout: these would go unused)
            raise typer.BadParameter(f"cannot be combined with --deployment ({', '.join(given)}): the deployment "
                                     "file settles the model and layout", param_hint=f"'{given[0]}'")
        from ..timing.calibrated import timing_spec_of

        _validate_serving(serving, json_out, out, dict(
            deployment=deployment, model=model, hardware=hardware, devices=devices, tp=tp, pp=pp, ep=ep,
            precision=precision, kv_precision=kv_precision, engine=engine), requests or 1000,
            timing_spec_of(timing, calibration[0] if calibration else None))
        return
    serving_only = {"--deployment": deployment, "--model": model, "--devices": devices, "--tp": tp, "--pp": pp,
                    "--ep": ep, "--precision": precision, "--kv-precision": kv_precision, "--requests": requests}
    unused = [flag for flag, v in serving_only.items() if v is not None]
    if unused:
        raise typer.BadParameter("applies to --serving (re-simulated serving runs), not to a kernel check",
                                 param_hint=f"'{unused[0]}'")
    if measurements is None:
        raise typer.BadParameter("give --measurements CSV (kernels) or --serving FILE (serving runs)",
                                 param_hint="'--measurements'")
    from ..commands import run_validate

    pred, result = run_validate(measurements, hardware, calibration or [], heldout, timing, lodo,
                                "kernel_us" if kernel_times else "latency_us")
    if out:
        from ..io import atomic_write

        atomic_write(out, lambda tmp: pred.to_csv(tmp, index=False))
    if plot:
        from ..report.plots import validation_scatter

        label = timing_label(timing, calibration[0] if calibration else None)
        validation_scatter(pred, plot, f"{measurements.name}: predicted vs measured\n(timing model: {label})")
    if json_out:
        emit_json(result, metadata(timing_model=timing_label(timing, calibration[0] if calibration else None),
                                   inputs={"measurements": measurements, "calibration": calibration or [],
                                           "timing": timing_files(timing)}))
    else:
        from ..report.render import validation_text

        typer.echo(validation_text(result))
        for p in (out, plot):
            if p:
                typer.echo(f"wrote {p}")


def _validate_serving(path: Path, json_out: bool, out: Path | None, defaults: dict, max_requests: int,
                      timing: str = "roofline") -> None:
    import sys

    from ..report.render import serving_validation_text
    from ..timing.calibrated import resolve_timing
    from ..validation.serving import read_serving_results, validate_serving

    model = resolve_timing(timing)
    # each measured run is a full simulation (seconds apiece for long runs): a bar on a terminal, not in --json
    cases = read_serving_results(path)
    if not json_out and sys.stderr.isatty():
        with typer.progressbar(length=len(cases), label="re-simulating runs", file=sys.stderr) as bar:
            result = validate_serving(path, defaults, max_requests, progress=bar.update, cases=cases, timing=model)
    else:
        result = validate_serving(path, defaults, max_requests, cases=cases, timing=model)
    if out:
        import pandas as pd

        from ..io import atomic_write

        atomic_write(out, lambda tmp: pd.DataFrame(result["rows"]).to_csv(tmp, index=False))
    if json_out:
        emit_json(result, metadata(timing_model=timing_label(timing, None) + " step costs (discrete-event simulation)",
                                   inputs={"serving": path, "deployment": defaults.get("deployment"),
                                           "timing": timing_files(timing)}))
    else:
        typer.echo(serving_validation_text(result))
        if out:
            typer.echo(f"wrote {out}")


@app.command()
@guarded
def calibrate(
    measurements: Path = typer.Option(..., "--measurements", parser=in_file(), help="Measurement CSV."),
    hardware: str = typer.Option(..., "--hardware", help="Profile id to fit (rows of other hardware are ignored)."),
    out: Path = typer.Option(..., "--out", parser=out_file(YAML_EXTS),
                             help="Where to write the calibration overlay YAML."),
    test_fraction: float = typer.Option(0.5, "--test-fraction", parser=real(0, 1, lo_open=True, hi_open=True),
                                        help="Share of the rows held out to report the error on, in (0, 1)."),
    seed: int = typer.Option(0, "--seed", parser=count(0, 2**32 - 1), help="Seed of the train/test split."),
    json_out: bool = typer.Option(False, "--json", help="Print the fit and its held-out errors as JSON."),
    kernel_times: bool = typer.Option(False, "--kernel-times", help="Read each row's time from kernel_us (the "
                                      "kernel-only time `bench run` writes on a GPU) instead of latency_us."),
):
    """Fit the profile's efficiency and overhead parameters (fixed launch latency; achievable FLOP/s and
    bandwidth fractions and ramps per op class) on a training split of the measurements, report the
    error on the held-out rows before and after, and write an overlay (datasheet values untouched).
    Use it anywhere with --calibration PATH.

    Example:\n
      quadrant calibrate --measurements reports/validation/published/kernels.csv --hardware h100-sxm --out h100.cal.yaml
    """
    from ..commands import run_calibrate

    report = run_calibrate(measurements, hardware, out, test_fraction, seed,
                           "kernel_us" if kernel_times else "latency_us")
    if json_out:
        emit_json({k: v for k, v in report.items() if k != "fits"},
                  metadata(seed=seed, inputs={"measurements": measurements, "hardware": hardware}))
    else:
        from ..report.render import calibration_text

        typer.echo(calibration_text(report))
        typer.echo(f"wrote {out}")


@bench_app.command("run")
@guarded
def bench_run(
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    suite: str = typer.Option("quick", "--suite", help="tiny | quick (CPU, < 1 min) | full (GPU) | a shape CSV."),
    out: Path = typer.Option(..., "--out", parser=out_file(CSV_EXTS), help="Measurement CSV to write."),
    hardware: str = typer.Option(None, "--hardware", help="Profile id for the `hardware` column "
                                                          "(default: cpu-host on CPU; on CUDA the profile of the "
                                                          "device torch reports, an error if it maps to none)."),
    reps: int = typer.Option(10, "--reps", parser=count(1, 100_000),
                             help="Timed repetitions per shape (median reported)."),
    warmup: int = typer.Option(3, "--warmup", parser=count(0, 100_000), help="Untimed warm-up runs per shape."),
    kernel_times: bool = typer.Option(None, "--kernel-times/--no-kernel-times",
                                      help="Also write kernel_us, the CUDA profiler's kernel-only median (no "
                                           "launch gaps), as published kernel benchmarks time. Default: on CUDA."),
):
    """Measure kernels with torch and write rows in the measurement CSV contract, with provenance
    (device, driver/runtime, torch version, date, clocks). Collectives run when launched with
    `torchrun --nproc-per-node N`."""
    import sys

    from ..io import atomic_write
    from ..specs.catalog import load_hardware
    from ..validation.bench import require_torch
    from ..validation.bench.run import run_suite, select_device
    from ..validation.bench.suites import load_suite

    select_device(require_torch(), device)  # torch installed, a device string torch can use
    hw = hardware or _profile_of(device)
    spec = load_hardware(hw)  # an unknown profile id fails here, before anything is measured
    if device == "cpu" and spec.id != "cpu-host":  # CPU times under a GPU's name would validate that GPU's profile
        raise typer.BadParameter(f"{hw} is not this CPU: rows measured on --device cpu are labelled cpu-host "
                                 "(give --device cuda to measure a GPU)", param_hint="'--hardware'")
    n = len(load_suite(suite))
    if kernel_times is None:
        kernel_times = device.startswith("cuda")
    elif kernel_times and not device.startswith("cuda"):
        raise typer.BadParameter("kernel-only times come from the CUDA profiler: they need --device cuda",
                                 param_hint="'--kernel-times'")
    steps = n * (2 if kernel_times else 1)  # the kernel-time pass goes over the shapes again
    with typer.progressbar(length=steps, label=f"bench {suite} on {device}", file=sys.stderr) as bar:
        df, skipped = run_suite(suite, device, hw, reps=reps, warmup=warmup, kernel_times=kernel_times,
                                 progress=lambda i: bar.update(max(i - bar.pos, 0)))
    if len(df):
        atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
        typer.echo(f"measured {len(df)} kernels, skipped {len(skipped)}; wrote {out}")
    else:
        typer.echo(f"no rows to write (skipped {len(skipped)}; under torchrun only rank 0 writes)")
    reasons: dict[str, int] = {}
    for _, why in skipped:
        reasons[why] = reasons.get(why, 0) + 1
    for why, n_why in reasons.items():
        typer.echo(f"  skipped x{n_why}: {why}")


@bench_app.command("overheads")
@guarded
def bench_overheads(
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    out: Path = typer.Option(..., "--out", parser=out_file(CSV_EXTS), help="CSV to write."),
    n: int = typer.Option(1000, "--kernels", parser=count(10, 1_000_000),
                          help="Kernels launched back to back per timed run."),
    ops_out: Path = typer.Option(None, "--ops-out", parser=out_file(CSV_EXTS),
                                 help="Also time a decode step's small ops (norm, RoPE, KV write, quantisation, "
                                      "sampler) in CUDA-graph replay and write them here (CUDA only)."),
):
    """Measure what each small kernel costs a step beyond its work: its GPU duration alone (CUDA
    profiler), launched eagerly back to back from Python (host-bound: the engines' `kernel_launch_s`),
    and replayed from one CUDA graph (the engines' `kernel_floor_s`), on elementwise kernels of
    decode-step sizes. On a CPU only the eager figure is taken."""
    from ..io import atomic_write
    from ..validation.bench.overheads import launch_overheads

    if ops_out is not None and not device.startswith("cuda"):
        raise typer.BadParameter("the decode-step ops are replayed from CUDA graphs: they need --device cuda",
                                 param_hint="'--ops-out'")
    df = launch_overheads(device, n=n)
    atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
    for r in df.itertuples():
        typer.echo(f"{r.mechanism:>6}  {r.tokens:>4} x {r.hidden:<5} {r.dtype}: {r.per_kernel_us:7.2f} us per kernel")
    typer.echo(f"wrote {out}")
    if ops_out is not None:
        from ..validation.bench.overheads import step_ops

        ops = step_ops(device)
        atomic_write(ops_out, lambda tmp: ops.to_csv(tmp, index=False))
        for r in ops.itertuples():
            typer.echo(f"{r.op:>20}  batch {r.tokens:>3}: {r.per_call_us:7.2f} us per call in a graph, "
                       f"{r.kernels_per_call} kernel(s), {r.per_kernel_us:6.2f} us per kernel")
        typer.echo(f"wrote {ops_out}")


@bench_app.command("sustained")
@guarded
def bench_sustained(
    device: str = typer.Option("cuda", "--device", help="cuda or cuda:N."),
    out: Path = typer.Option(..., "--out", parser=out_file(CSV_EXTS), help="CSV to write (one row per window)."),
    seconds: float = typer.Option(20.0, "--seconds", parser=real(1, 600), help="Seconds of load per dtype."),
):
    """Keep the GPU busy with large BF16 then FP8 GEMMs, as a long prefill does, and record the achieved
    TFLOP/s per window beside the SM clock, power and temperature nvidia-smi reads meanwhile: the
    clock the card holds under load is what the profile's `sustained_clock_fraction` describes."""
    from ..io import atomic_write
    from ..validation.bench.overheads import sustained_load

    df = sustained_load(device, seconds=seconds)
    atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
    for name, g in df.groupby("dtype", sort=False):
        first, last = g.head(max(len(g) // 10, 1)), g.tail(max(len(g) // 2, 1))
        clock = f", SM clock {last.sm_clock_mhz.median():.0f} MHz" if "sm_clock_mhz" in g else ""
        typer.echo(f"{name}: {first.tflops.median():.0f} TFLOP/s at the start, {last.tflops.median():.0f} over the "
                   f"second half{clock}")
    typer.echo(f"wrote {out}")


def _profile_of(device: str) -> str:
    """The hardware profile of the (checked, see ``select_device``) device to be measured (cpu-host on CPU)."""
    if device == "cpu":
        return "cpu-host"
    from ..errors import SimulatorError
    from ..validation.bench.devices import cuda_device_name, profile_for_device_name

    try:
        name = cuda_device_name(device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise SimulatorError(f"--device {device}: {' '.join(str(exc).split())}") from None
    hw = profile_for_device_name(name)
    if hw is None:
        raise SimulatorError(f"the CUDA device {name!r} matches no hardware profile; pass --hardware ID "
                             "(quadrant hw list)")
    typer.echo(f"measuring {name} as profile {hw}", err=True)
    return hw
