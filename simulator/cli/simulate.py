"""`quadrant simulate`: run traffic through a deployment (the discrete-event simulator)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import PRECISION_HELP, app, emit_json, guarded


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
    rate: float = typer.Option(None, "--rate", help="Quick run: Poisson arrivals per second; with --traffic, "
                                                    "overrides the file's arrival rate."),
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
    from ..commands import run_simulate

    opts = {k: v for k, v in locals().items() if k not in ("json_out", "out", "plots", "parquet", "run_simulate")}
    res = run_simulate(opts, progress=not json_out)
    if out:
        from ..commands import write_simulation

        for path in write_simulation(res, out, plots=plots, parquet=parquet, slo=opts.get("_slo")):
            if not json_out:
                typer.echo(f"wrote {path}")
    if json_out:
        emit_json(res.summary)
    else:
        from ..report.render import simulation_text

        typer.echo(simulation_text(res.summary))
