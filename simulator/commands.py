"""Application layer behind the CLI: builds DataFrames and results from catalogues and options.
Functions here return data; the CLI renders it."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from .analysis.whatif import WhatIfResult, whatif
from .build import PlanOptions, plan_from_options
from .errors import SimulatorError
from .plan import ServingPlan
from .specs.catalog import hardware_ids, load_hardware, load_model, model_ids
from .units import GB


def hardware_table():
    import pandas as pd

    rows = []
    for hid in hardware_ids():
        hw = load_hardware(hid)
        rows.append({"id": hid, "name": hw.name, "bf16_tflops": hw.peak("bf16") / 1e12,
                     "fp8_tflops": hw.peak("fp8") / 1e12, "hbm_gb": hw.hbm_bytes / GB,
                     "hbm_tb_per_s": hw.hbm_bytes_per_s / 1e12,
                     "flop_per_byte_bf16": round(hw.peak("bf16") / hw.hbm_bytes_per_s, 1),
                     "scale_up_gb_per_s": hw.scale_up.bandwidth_bytes_per_s / GB,
                     "usd_per_hour": None if math.isnan(hw.price_usd_per_s) else round(hw.price_usd_per_hour, 3),
                     "confidence": hw.confidence, "hypothetical": hw.hypothetical})
    return pd.DataFrame(rows)


def hardware_detail(ref: str) -> dict:
    hw = load_hardware(ref)
    e = hw.efficiency
    return {
        "id": hw.id, "name": hw.name, "vendor": hw.vendor, "confidence": hw.confidence,
        "hypothetical": hw.hypothetical, "notes": hw.notes,
        "peak_flop_per_s": hw.peak_flop_per_s, "hbm_bytes": hw.hbm_bytes, "hbm_bytes_per_s": hw.hbm_bytes_per_s,
        "onchip_cache_bytes": hw.onchip_cache_bytes,
        "scale_up": vars(hw.scale_up), "scale_out": vars(hw.scale_out), "tdp_w": hw.tdp_w,
        "price_usd_per_hour": None if math.isnan(hw.price_usd_per_s) else hw.price_usd_per_hour,
        "efficiency": {"launch_overhead_s": e.launch_overhead_s, "memory_reserve_bytes": e.memory_reserve_bytes,
                       "collective_bandwidth_fraction": e.collective_bandwidth_fraction,
                       "per_op": {k: vars(v) for k, v in e.classes.items()}, "sources": e.sources},
        "sources": hw.sources, "file": hw.file,
    }


def model_table():
    import pandas as pd

    rows = []
    for mid in model_ids():
        m = load_model(mid)
        rows.append({"id": mid, "name": m.name, "kind": "moe" if m.is_moe else "dense",
                     "attention": m.attention.kind, "layers": m.num_layers,
                     "total_params_b": round(m.total_params / 1e9, 2),
                     "active_params_b": round(m.active_params / 1e9, 2),
                     "experts": f"{m.moe.top_k}/{m.moe.num_experts}" if m.moe else "",
                     "kv_kb_per_token_bf16": round(m.kv_bytes_per_token(2.0) / 1e3, 1),
                     "hypothetical": m.hypothetical})
    return pd.DataFrame(rows)


def model_detail(ref: str) -> dict:
    m = load_model(ref)
    moe = vars(m.moe) if m.moe else None
    return {"id": m.id, "name": m.name, "hypothetical": m.hypothetical, "notes": m.notes,
            "num_layers": m.num_layers, "hidden_size": m.hidden_size, "vocab_size": m.vocab_size,
            "tie_word_embeddings": m.tie_word_embeddings, "attention": vars(m.attention),
            "ffn_intermediate": m.ffn_intermediate, "moe": moe,
            "derived": {"total_params": m.total_params, "active_params": m.active_params,
                        "kv_bytes_per_token_bf16": m.kv_bytes_per_token(2.0),
                        "linear_flop_per_token": 2 * m.matmul_params_per_token},
            "published": {"total_params": m.published_total_params, "active_params": m.published_active_params},
            "sources": m.sources}


def import_model(config: Path, model_id: str, source: str) -> str:
    import yaml

    from .specs.model import model_from_hf_config, model_to_yaml_dict

    spec = model_from_hf_config(config, model_id)
    doc = model_to_yaml_dict(spec, source or f"HuggingFace config.json imported from {config}")
    header = (f"# Imported by `quadrant model import` from {config}: {spec.total_params / 1e9:.2f}B total, "
              f"{spec.active_params / 1e9:.2f}B active parameters (derived).\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=110)


def _calibrated(plan: ServingPlan, calibration: Path | None) -> ServingPlan:
    if not calibration:
        return plan
    from .timing.calibrated import apply_calibration, read_overlay

    hw_id, _, _ = read_overlay(calibration)

    def fix(ph):
        a, f = ph.attention, ph.ffn
        if a.hardware.id == hw_id:
            a = replace(a, hardware=apply_calibration(a.hardware, calibration))
        if f.hardware.id == hw_id:
            f = replace(f, hardware=apply_calibration(f.hardware, calibration))
        return replace(ph, attention=a, ffn=f)

    return replace(plan, prefill=fix(plan.prefill), decode=fix(plan.decode))


def run_whatif(opts: dict) -> WhatIfResult:
    if opts.get("deployment"):
        from .specs.catalog import resolve_workload
        from .specs.deployment import read_deployment

        plan = read_deployment(resolve_workload(str(opts["deployment"]), "deployments", "deployment")).serving_plan()
    else:
        if not opts.get("model"):
            raise SimulatorError("--model is required (or pass --deployment FILE)")
        fields = {k: opts[k] for k in PlanOptions.__dataclass_fields__ if k in opts and opts[k] is not None}
        fields.update(spec_draft_tokens=opts.get("spec_draft") or 0, spec_acceptance=opts.get("spec_accept", 0.7),
                      spec_draft_cost=opts.get("spec_draft_cost", 0.05), price_usd_per_hour=opts.get("price"))
        plan = plan_from_options(PlanOptions(**fields))
    plan = _calibrated(plan, opts.get("calibration"))
    for name in ("batch", "isl", "osl", "prefill_batch"):
        if opts[name] < 1:
            raise SimulatorError(f"--{name.replace('_', '-')} must be >= 1, got {opts[name]}")
    return whatif(plan, batch=opts["batch"], isl=opts["isl"], osl=opts["osl"], prefill_batch=opts["prefill_batch"])


def run_demo(out: Path):
    """The built-in example; yields lines to print."""
    from .report.plots import quadrant_breakdown, roofline
    from .report.render import whatif_text

    out = Path(out)
    base = dict(model="dbrx", hardware="h100-sxm", devices=8, batch=64, isl=2048, osl=512, prefill_batch=1)
    res = run_whatif(base)
    yield "== quadrant demo: DBRX (132B MoE, 16 experts top-4) on 8 x H100 SXM, bf16 =="
    yield whatif_text(res)
    roofline(res, out / "roofline.png")
    quadrant_breakdown(res.quadrants, out / "quadrants.png", "DBRX on 8 x H100: time per quadrant")
    yield f"wrote {out / 'roofline.png'} and {out / 'quadrants.png'}"
    yield ""
    h20 = run_whatif(dict(base, hardware="h20"))
    yield "== the same plan on 8 x H20 (148 dense BF16 TFLOP/s, 4.0 TB/s): decode is bandwidth-bound, " \
          "prefill compute-bound =="
    for q in ("prefill_ffn", "decode_attention", "decode_ffn"):
        a, b = res.quadrant(q), h20.quadrant(q)
        yield (f"  {q:17s} H100 {a['time_s'] * 1e3:8.2f} ms ({a['bound']})   "
               f"H20 {b['time_s'] * 1e3:8.2f} ms ({b['bound']})")
    yield f"  TTFT H100 {res.ttft_s * 1e3:.1f} ms vs H20 {h20.ttft_s * 1e3:.1f} ms; " \
          f"TPOT H100 {res.tpot_s * 1e3:.2f} ms vs H20 {h20.tpot_s * 1e3:.2f} ms"
    yield ""
    from .report.render import simulation_text

    sim = run_simulate({"deployment": "dbrx-8xh100", "traffic": "chat", "requests": 300})
    yield "== 300 chat requests (Poisson 6/s, lognormal lengths) through workloads/deployments/dbrx-8xh100.yaml =="
    yield simulation_text(sim.summary)
    for path in write_simulation(sim, out / "simulation", plots=True, parquet=False, slo=None):
        yield f"wrote {path}"
    yield ""
    yield "next: quadrant whatif --help | quadrant simulate --help | quadrant bench run --help"


def run_simulate(opts: dict, progress: bool = False):
    import sys
    from dataclasses import replace as dc_replace

    from .build import quick_deployment
    from .serving.runner import simulate
    from .specs.catalog import resolve_workload
    from .specs.deployment import read_deployment
    from .specs.traffic import read_traffic, simple_traffic

    if opts.get("deployment"):
        dep = read_deployment(resolve_workload(opts["deployment"], "deployments", "deployment"))
    elif opts.get("model"):
        fields = {k: opts[k] for k in PlanOptions.__dataclass_fields__ if k in opts and opts[k] is not None}
        dep = quick_deployment(PlanOptions(**fields), max_batch_tokens=opts["max_batch_tokens"],
                               max_seqs=opts["max_seqs"], replicas=opts["replicas"])
    else:
        raise SimulatorError("give a deployment YAML, or --model/--hardware/... for a quick run")
    if opts.get("traffic"):
        traffic = read_traffic(resolve_workload(opts["traffic"], "traffic", "traffic"))
    else:
        if bool(opts.get("rate")) == bool(opts.get("concurrency")):
            raise SimulatorError("give exactly one of --rate R or --concurrency C (or --traffic FILE)")
        traffic = simple_traffic(rate=opts.get("rate"), concurrency=opts.get("concurrency"), isl=opts["isl"],
                                 osl=opts["osl"], requests=opts.get("requests") or 1000, seed=opts.get("seed") or 0)
    if opts.get("traffic") and opts.get("rate") is not None:  # --rate overrides the traffic file's rate
        if opts["rate"] <= 0:
            raise SimulatorError(f"--rate must be > 0, got {opts['rate']:g}")
        if traffic.arrival not in ("poisson", "gamma"):
            raise SimulatorError(f"--rate applies to poisson or gamma arrivals; {traffic.id} is {traffic.arrival}")
        traffic = dc_replace(traffic, rate_per_s=float(opts["rate"]))
    if opts.get("requests"):
        traffic = dc_replace(traffic, requests=opts["requests"])
    if opts.get("seed") is not None:
        traffic = dc_replace(traffic, seed=opts["seed"])
    opts["_slo"] = traffic.slo
    bar = None
    if progress and sys.stderr.isatty() and traffic.requests >= 2000:
        import typer

        bar = typer.progressbar(length=traffic.requests, label="simulating", file=sys.stderr)
        bar.__enter__()
    try:
        step = max(traffic.requests // 100, 1)
        cb = (lambda n: bar.update(step) if n % step == 0 else None) if bar else None
        return simulate(dep, traffic, horizon_s=opts.get("horizon") or math.inf, progress=cb)
    finally:
        if bar:
            bar.__exit__(None, None, None)


def write_simulation(res, out: Path, *, plots: bool, parquet: bool, slo=None) -> list[Path]:
    from .io import atomic_write
    from .report import plots as P

    out = Path(out)
    paths = []
    if parquet:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SimulatorError("--parquet needs pyarrow (pip install pyarrow); CSV needs nothing extra") from None
    for name, df in (("requests", res.requests), ("steps", res.steps)):
        if parquet:
            p = atomic_write(out / f"{name}.parquet", lambda tmp, df=df: df.to_parquet(tmp, index=False))
        else:
            p = atomic_write(out / f"{name}.csv", lambda tmp, df=df: df.to_csv(tmp, index=False))
        paths.append(p)
    if plots and len(res.steps):
        paths.append(P.latency_cdfs(res.requests, out / "latency_cdf.png", slo))
        paths.append(P.time_series(res.steps, res.requests, out / "timeseries.png"))
        paths.append(P.step_timeline(res.steps, out / "timeline.png"))
    return paths


def run_validate(measurements: Path, hardware: str | None, calibrations: list[Path], heldout: bool):
    import pandas as pd

    from .timing.calibrated import apply_calibration, read_overlay
    from .validation.measurements import read_measurements
    from .validation.validate import load_specs, predict, score

    df = read_measurements(measurements)
    if hardware:
        df = df[df["hardware"] == hardware].reset_index(drop=True)
        if df.empty:
            raise SimulatorError(f"{measurements}: no rows for hardware {hardware!r}")
    overrides = {}
    for cal in calibrations:
        hw_id, prov, _ = read_overlay(cal)
        overrides[hw_id] = apply_calibration(load_hardware(hw_id), cal)
        if heldout:
            from .validation.calibrate import heldout_rows

            split = prov.get("split", {})
            rest = df[df["hardware"] != hw_id]
            df = pd.concat([rest, heldout_rows(df, hw_id, float(split.get("test_fraction", 0.5)),
                                               int(split.get("seed", 0)))], ignore_index=True)
    if heldout and not calibrations:
        raise SimulatorError("--heldout needs --calibration (the split is the calibration's)")
    pred = predict(df, load_specs(df, overrides=overrides))
    return pred, score(pred)


def run_calibrate(measurements: Path, hardware: str, out: Path, test_fraction: float, seed: int) -> dict:
    from .io import atomic_write_text
    from .validation.calibrate import calibrate, overlay_yaml
    from .validation.measurements import read_measurements

    if not 0.0 < test_fraction < 1.0:
        raise SimulatorError("--test-fraction must be between 0 and 1")
    df = read_measurements(measurements)
    base = load_hardware(hardware)
    cal, report = calibrate(df, base, test_fraction=test_fraction, seed=seed, measurements_file=str(measurements))
    atomic_write_text(out, overlay_yaml(cal, base, report, measurements))
    return report


def run_sweep(model, hardware, devices, isl, osl, precisions, kv_precision, batches, tpot_slo, ttft_slo, rate):
    from .planning.sweep import pareto_front, plan_capacity, sweep

    def split(text, cast=str):
        try:
            return [cast(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise SimulatorError(f"cannot read the list {text!r}") from None

    df = sweep(model, split(hardware), devices, isl=isl, osl=osl, batches=split(batches, int),
               precisions=split(precisions), kv_precision=kv_precision)
    ok = df[df.fits]
    if tpot_slo:
        ok = ok[ok.tpot_s <= tpot_slo]
    if ttft_slo:
        ok = ok[ok.ttft_s <= ttft_slo]
    if ok.empty:
        raise SimulatorError("no configuration fits and meets the SLOs")
    front = pareto_front(ok)
    if rate:
        front = plan_capacity(front, rate_per_s=rate, osl=osl, devices=devices)
    return df, front


def run_sweep_deployment(deployment: str, tpot_slo_s: float | None, isl: int, osl: int) -> dict:
    """`sweep --deployment FILE --tpot-slo S`: the largest batch under the TPOT target for that deployment."""
    from .planning.sweep import largest_batch_under_tpot
    from .specs.catalog import resolve_workload
    from .specs.deployment import read_deployment

    if tpot_slo_s is None:
        raise SimulatorError("--deployment needs --tpot-slo (the TPOT target the batch must meet)")
    dep = read_deployment(resolve_workload(deployment, "deployments", "deployment"))
    out = largest_batch_under_tpot(dep.serving_plan(), tpot_slo_s, isl=isl, osl=osl)
    return {"deployment": dep.file or dep.id, "model": dep.model.id, **out}
