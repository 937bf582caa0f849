"""`quadrant sweep`: score many plans in one vectorised pass."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import SimulatorError
from ._common import app, guarded


@app.command()
@guarded
def sweep(
    model: str = typer.Option(None, "--model", "-m", help="Model id (not needed with --deployment)."),
    deployment: str = typer.Option(None, "--deployment", help="With --tpot-slo: the largest batch under the TPOT "
                                                              "target for this deployment (A/F included)."),
    hardware: str = typer.Option("h100-sxm", "--hardware", help="Comma-separated profile ids."),
    devices: int = typer.Option(8, "--devices", help="Devices per replica."),
    isl: int = typer.Option(2048, "--isl"),
    osl: int = typer.Option(512, "--osl"),
    precisions: str = typer.Option("bf16,fp8", "--precision", help="Comma-separated precisions to try."),
    kv_precision: str = typer.Option("bf16", "--kv-precision"),
    batches: str = typer.Option("1,2,4,8,16,32,64,128,256", "--batches", help="Comma-separated decode batches."),
    tpot_slo: str = typer.Option(None, "--tpot-slo", help="Keep configurations with TPOT <= this (50ms, 0.05; bare "
                                                          "= seconds)."),
    ttft_slo: str = typer.Option(None, "--ttft-slo", help="Keep configurations with TTFT <= this (1s, 800ms)."),
    rate: str = typer.Option(None, "--rate", help="Capacity planning: requests per second to serve (5, 5/s); "
                                                  "$/Mtok is then the fleet's cost at this rate."),
    out: Path = typer.Option(None, "--out", help="Write every configuration to this CSV."),
    plot: Path = typer.Option(None, "--plot", help="Write the Pareto plot (throughput/device vs TPOT)."),
    json_out: bool = typer.Option(False, "--json", help="Print the Pareto front as JSON."),
):
    """Score every (hardware, precision, TP, EP, batch) plan in one vectorised pass; print the Pareto
    front of output tokens/s per device against TPOT among plans that fit (and meet the SLOs), with
    replicas and $/hour for --rate."""
    from ..commands import run_sweep
    from ..report.jsonsafe import dumps
    from .plan import _duration, _rate

    tpot_slo, ttft_slo, rate = _duration("--tpot-slo", tpot_slo), _duration("--ttft-slo", ttft_slo), _rate(rate)
    if deployment:
        from ..commands import run_sweep_deployment

        res = run_sweep_deployment(deployment, tpot_slo, isl, osl)
        if json_out:
            typer.echo(dumps(res))
        else:
            typer.echo(f"{res['deployment']}: largest decode batch with TPOT <= {tpot_slo * 1e3:.3g} ms is "
                       f"{res['batch']} (TPOT {res['tpot_s'] * 1e3:.2f} ms, limited by {res['limited_by']}); "
                       f"{res['decode_tokens_per_s_per_device']:,.1f} decode tokens/s per decode device "
                       f"(ISL {isl}, OSL {osl})")
        return
    if not model:
        raise SimulatorError("--model is required (or pass --deployment FILE --tpot-slo S)")
    df, front = run_sweep(model, hardware, devices, isl, osl, precisions, kv_precision, batches, tpot_slo, ttft_slo,
                          rate)
    if out:
        from ..io import atomic_write

        atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
    if plot:
        from ..report.plots import pareto

        ok = df[df.fits]
        pareto(ok.assign(config=ok.hardware + " " + ok.precision), "tpot_s", "output_tokens_per_s_per_device", plot,
               front=front)
    if json_out:
        typer.echo(dumps(front.to_dict(orient="records")))
        return
    from ..report.render import sweep_text

    typer.echo(sweep_text(df, front))
    for p in (out, plot):
        if p:
            typer.echo(f"wrote {p}")
