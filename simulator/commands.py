"""Application layer behind the CLI: builds DataFrames and results from catalogues and options.
Functions here return data; the CLI renders it."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from .analysis.whatif import WhatIfResult, whatif
from .build import PlanOptions, plan_from_options
from .errors import SimulatorError, SpecError
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


def _sourced_figures(node, path: str = "") -> list[dict]:
    """Every ``{value: ..., source: ID}`` figure of a profile's YAML, in file order: its key path, the value as
    written (with its unit) and the source id (``note`` and ``uncertain`` where given)."""
    out = []
    if isinstance(node, dict):
        if "value" in node and "source" in node:
            fig = {"key": path, "value": node["value"], "source": node["source"]}
            fig.update({k: node[k] for k in ("note", "uncertain") if k in node})
            return [fig]
        for k, v in node.items():
            if k not in ("sources", "efficiency"):  # (efficiency is shown resolved, with its own sources)
                out += _sourced_figures(v, f"{path}.{k}" if path else str(k))
    return out


def _tidy(x):
    """A float without binary noise (1.4999999999999999e-05 -> 1.5e-05); other values as they are."""
    if isinstance(x, float) and math.isfinite(x):
        return float(f"{x:.12g}")
    if isinstance(x, dict):
        return {k: _tidy(v) for k, v in x.items()}
    return x


def hardware_detail(ref: str) -> dict:
    from .specs._reader import load_yaml

    hw = load_hardware(ref)
    e = hw.efficiency
    return _tidy({
        "id": hw.id, "name": hw.name, "vendor": hw.vendor, "confidence": hw.confidence,
        "hypothetical": hw.hypothetical, "notes": hw.notes,
        # the datasheet as the file states it: each figure with its unit and the source that backs it
        "figures": _sourced_figures(load_yaml(hw.file)) if hw.file else [],
        # the same figures in SI units, as the timing model reads them (null: not stated in the profile)
        "peak_flop_per_s": hw.peak_flop_per_s, "hbm_bytes": hw.hbm_bytes, "hbm_bytes_per_s": hw.hbm_bytes_per_s,
        "onchip_cache_bytes": hw.onchip_cache_bytes or None,
        "scale_up": vars(hw.scale_up), "scale_out": vars(hw.scale_out), "tdp_w": hw.tdp_w,
        "price_usd_per_hour": None if math.isnan(hw.price_usd_per_s) else hw.price_usd_per_hour,
        "device": {"compute_units": hw.compute_units or None, "boost_clock_hz": hw.boost_clock_hz or None,
                   "attach": hw.attach, "host_link_bytes_per_s": hw.host_link_bytes_per_s or None},
        "efficiency": {"memory_reserve_bytes": e.memory_reserve_bytes,
                       "sustained_clock_fraction": e.sustained_clock_fraction,
                       "served_compute_fraction": e.served_compute_fraction,
                       "kernels": {k: vars(v) for k, v in e.kernels.items()},
                       "collectives": {k: vars(v) for k, v in e.collectives.items()}, "sources": e.sources},
        "sources": hw.sources, "file": hw.file,
    })


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
            "tie_word_embeddings": m.tie_word_embeddings,
            "context_tokens": m.context_tokens or None,  # (null: the spec states no context window)
            "attention": vars(m.attention),
            "ffn_intermediate": m.ffn_intermediate, "moe": moe,
            "native_precision": m.native_precision,  # (null: not stated)
            "fp8_block_scaled": m.fp8_block_scaled,  # its FP8 release scales weights per 128x128 block
            "derived": {"total_params": m.total_params, "active_params": m.active_params,
                        "kv_bytes_per_token_bf16": m.kv_bytes_per_token(2.0),
                        "linear_flop_per_token": 2 * m.matmul_params_per_token},
            "published": {"total_params": m.published_total_params, "active_params": m.published_active_params},
            "sources": m.sources}


def _hf_model_type(config: Path) -> str | None:
    """``model_type`` of a config.json (its ``text_config``'s for a multimodal wrapper), lower-case; "" if none
    (the file was read and checked by ``model_from_hf_config`` already; read the same way here)."""
    from .specs._reader import read_text_file

    try:
        cfg = json.loads(read_text_file(config))
    except (ValueError, SimulatorError):  # (a pipe reads once: the import itself succeeded, so no note)
        return None
    inner = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    return str(inner.get("model_type", cfg.get("model_type", "")) or "").lower()


def _starts_with(path: Path, head: bytes) -> bool:
    """Whether the file begins with ``head`` (its first bytes only: a large file at the path is not read)."""
    with open(path, "rb") as f:
        return f.read(len(head)) == head


def import_model(config: Path, model_id: str, source: str, out: Path | None = None) -> str:
    """The YAML text of a model spec imported from a HF config.json, checked to load back as it will be
    read (``workloads/models/<id>.yaml``: the file name must be the id)."""
    import tempfile

    import yaml

    from .specs.model import HF_KNOWN_TYPES, MODEL_ID, model_from_hf_config, model_to_yaml_dict, read_model

    if not MODEL_ID.match(model_id):
        raise SimulatorError(f"--id {model_id!r}: expected lower-case letters, digits, '.', '_' or '-' "
                             "(it becomes the file name and the id you pass to --model)")
    if out is not None and Path(out).stem != model_id:
        raise SimulatorError(f"--out {out}: the file name must be the id ({model_id}.yaml), or the spec will not load")
    header = b"# Imported by `quadrant model import`"
    if out is not None and Path(out).is_file() and not _starts_with(Path(out), header):  # (an earlier import may be
        # replaced; a catalogue or hand-written spec not)
        raise SimulatorError(f"--out {out}: exists and was not written by `quadrant model import` (a catalogue or "
                             "hand-written spec); choose another --id or path")
    spec = model_from_hf_config(config, model_id)
    notes = []
    mtype = _hf_model_type(config)
    if mtype is not None and mtype not in HF_KNOWN_TYPES:
        notes.append(f"model_type {mtype or '(none)'!r} is not a family this importer was written for: read as a "
                     "standard decoder (GQA or MLA attention, gated FFN or MoE); check the sizes against the model "
                     "card.")
    a = spec.attention
    if a.sliding_window:
        notes.append(f"Sliding-window attention ({a.sliding_window} tokens) on {a.sliding_window_layers} of "
                     f"{spec.num_layers} layers: recorded; the op builders cost every layer as full attention "
                     "(an upper bound on KV bytes and attention time).")
    if spec.native_precision and spec.native_precision not in ("bf16", "fp16", "fp32"):
        notes.append(f"Released weights are {spec.native_precision}: pass --precision {spec.native_precision}.")
    spec = replace(spec, notes=" ".join(notes))
    doc = model_to_yaml_dict(spec, source or f"HuggingFace config.json imported from {config}")
    header = (f"# Imported by `quadrant model import` from {config}: {spec.total_params / 1e9:.2f}B total, "
              f"{spec.active_params / 1e9:.2f}B active parameters (derived).\n")
    text = header + yaml.safe_dump(doc, sort_keys=False, width=110)
    with tempfile.TemporaryDirectory() as tmp:  # the file must load back exactly as written
        probe = Path(tmp) / f"{model_id}.yaml"
        probe.write_text(text, encoding="utf-8")
        try:
            read_model(probe)
        except SpecError as exc:  # named by the config.json, not the temporary file (its key is the spec's)
            where = exc.key_path or "its top level"
            raise SpecError(str(config), "", f"the spec converted from it fails its check at {where}: "
                                             f"{exc.message}") from None
    return text


def _override_plan(plan, opts: dict):
    """``whatif --deployment`` with --chunk / --precision / --attn-precision / --ffn-precision: the flags win."""
    from .plan import validate_phase
    from .precision import PRECISIONS, canonical_precision

    for key in ("precision", "attn_precision", "ffn_precision"):
        got = canonical_precision(opts.get(key))
        if got is not None and got not in PRECISIONS:
            raise SimulatorError(f"--{key.replace('_', '-')}: unknown precision {opts[key]!r} (choose from "
                                 f"{', '.join(PRECISIONS)})")

    def phase(ph, is_prefill):
        att, ffn = ph.attention, ph.ffn
        # the engines' spellings (FP8, nvfp4, awq) as the quick-run flags take them
        a_prec = canonical_precision(opts.get("attn_precision") or opts.get("precision"))
        f_prec = canonical_precision(opts.get("ffn_precision") or opts.get("precision"))
        if a_prec:
            att = replace(att, precision=a_prec)
        if f_prec:
            ffn = replace(ffn, precision=f_prec)
        ph = replace(ph, attention=att, ffn=ffn)
        if is_prefill and opts.get("chunk"):
            ph = replace(ph, chunk_tokens=int(opts["chunk"]))
        validate_phase(ph, plan.model, plan.kv_precision)
        return ph

    pre = phase(plan.prefill, True)
    dec = pre if plan.colocated else phase(plan.decode, False)
    return replace(plan, prefill=pre, decode=dec)


# flags a deployment file settles; given together with --deployment they are refused, not silently ignored
_WHATIF_DEPLOYMENT_FIXED = ("model", "hardware", "devices", "tp", "pp", "ep", "dp", "expert_tp", "kv_precision",
                            "kv_scale_tokens", "overlap_comm", "prefill_hardware", "prefill_devices", "prefill_tp",
                            "prefill_pp", "decode_hardware", "decode_devices", "decode_tp", "decode_ep", "spec_draft",
                            "spec_accept", "spec_draft_cost")
_SIMULATE_DEPLOYMENT_FIXED = ("model", "hardware", "devices", "replicas", "tp", "pp", "ep", "dp", "precision",
                              "kv_precision", "max_batch_tokens", "max_seqs", "spec_draft_tokens", "spec_acceptance",
                              "spec_draft_cost", "scheduler_recv_interval", "frontend_latency",
                              "batch_wait_timeout_iters", "batch_wait_max_tokens_ratio")
# flags a traffic file settles (the arrivals and the request lengths); --rate, --requests and --seed override it
_SIMULATE_TRAFFIC_FIXED = ("concurrency", "isl", "osl")


def frontend_latency_flag(seconds: float | None) -> float | None:
    """``--frontend-latency`` (simulate and plan): at most ``specs.deployment.MAX_FRONTEND_LATENCY_S``, refused by
    the flag's own name (the pool it builds would name its field)."""
    from .specs.deployment import MAX_FRONTEND_LATENCY_S

    if seconds is not None and seconds > MAX_FRONTEND_LATENCY_S:
        raise SimulatorError(f"--frontend-latency: expected at most {MAX_FRONTEND_LATENCY_S:g} s (an hour), got "
                             f"{seconds:g} s")
    return seconds


_FLAG_OF = {"spec_draft_tokens": "--spec-tokens"}  # options whose flag is not their name spelt with dashes


def _refuse_with_deployment(opts: dict, fixed: tuple[str, ...], positional: bool = False) -> None:
    """Refuse quick-run ``fixed`` flags beside a deployment; first, a deployment that names none is refused as such
    (``positional``: it came as the positional argument, where a stray word lands)."""
    given = sorted(opts.get("_explicit", set()) & set(fixed))
    if given:
        flags = ", ".join(_FLAG_OF.get(g, "--" + g.replace("_", "-")) for g in given)
        from .specs.catalog import resolve_workload

        try:
            resolve_workload(str(opts["deployment"]), "deployments", "deployment")
        except SimulatorError as exc:
            if not positional:
                raise
            # a positional word that names no deployment beside quick-run flags is most likely a stray one
            raise SimulatorError(f"{exc}; it was read as the DEPLOYMENT argument, beside the quick-run flags {flags} "
                                 "(a stray word? a unit after a space is one: write a duration without it, e.g. "
                                 "--ttft-slo 500ms)") from None
        raise SimulatorError(f"{flags} cannot be combined with a deployment file: set it in the file "
                             "(or run without the deployment)")


def _timing_flag(opts: dict) -> str:
    return "--calibration" if opts.get("calibration") else "--timing"


def price_overrides(values: list[str], device_ids: list[str]) -> dict[str, float]:
    """``--price`` values (ID=USD_PER_HOUR, or one bare price for every device) against the run's devices."""
    from .planning.cost import parse_price_flags, prices_for

    return prices_for(parse_price_flags(list(values), bare=True), device_ids)


def _repriced_plan(plan, values: list[str]):
    from .plan import repriced

    per = price_overrides(values, plan.device_ids)
    pre = repriced(plan.prefill, per)
    return replace(plan, prefill=pre, decode=pre if plan.colocated else repriced(plan.decode, per))


def run_whatif(opts: dict) -> WhatIfResult:
    if opts.get("deployment"):
        _refuse_with_deployment(opts, _WHATIF_DEPLOYMENT_FIXED)
        from .specs.catalog import resolve_workload
        from .specs.deployment import read_deployment

        plan = read_deployment(resolve_workload(str(opts["deployment"]), "deployments", "deployment")).serving_plan()
        plan = _override_plan(plan, opts)
        if opts.get("price"):
            plan = _repriced_plan(plan, opts["price"])
    else:
        if not opts.get("model"):
            raise SimulatorError("--model is required (or pass --deployment FILE)")
        fields = {k: opts[k] for k in PlanOptions.__dataclass_fields__ if k in opts and opts[k] is not None}
        fields.update(spec_draft_tokens=opts.get("spec_draft") or 0, spec_acceptance=opts.get("spec_accept", 0.7),
                      spec_draft_cost=opts.get("spec_draft_cost", 0.05))
        plan = plan_from_options(PlanOptions(**fields))
        if opts.get("price"):
            plan = _repriced_plan(plan, opts["price"])
    for name in ("batch", "isl", "osl", "prefill_batch"):
        if opts[name] < 1:
            raise SimulatorError(f"--{name.replace('_', '-')} must be >= 1, got {opts[name]}")
    from .timing.calibrated import check_overlays_apply, resolve_timing

    timing = resolve_timing(opts.get("timing"), opts.get("calibration"))
    check_overlays_apply(timing, set(plan.device_ids), _timing_flag(opts))
    res = whatif(plan, batch=opts["batch"], isl=opts["isl"], osl=opts["osl"], prefill_batch=opts["prefill_batch"],
                 timing=timing)
    note = getattr(timing, "coverage_note", lambda: "")()
    if note:
        res.notes.append(note)
    return res


def demo_files() -> tuple[str, ...]:
    """The files ``quadrant demo --out DIR`` writes (paths inside DIR)."""
    return ("roofline.png", "quadrants.png", *(f"simulation/{f}" for f in SIMULATION_FILES))


def run_demo(out: Path):
    """The built-in example; yields lines to print. ``out`` is checked before any work (a folder holding other
    files is refused, as simulate, plan and compare refuse one) and written whole at the end."""
    from .io import atomic_dir, check_out_dir
    from .report.plots import quadrant_breakdown, roofline
    from .report.render import simulation_text, whatif_text

    out = Path(out)
    try:
        check_out_dir(out, demo_files())
    except SimulatorError as exc:
        raise SimulatorError(f"--out {exc}") from None
    base = dict(model="dbrx", hardware="h100-sxm", devices=8, batch=64, isl=2048, osl=512, prefill_batch=1)
    with atomic_dir(out, demo_files()) as tmp:
        res = run_whatif(base)
        yield "== quadrant demo: DBRX (132B MoE, 16 experts top-4) on 8 x H100 SXM, bf16 =="
        yield whatif_text(res)
        roofline(res, tmp / "roofline.png")
        quadrant_breakdown(res.quadrants, tmp / "quadrants.png", "DBRX on 8 x H100: time per quadrant")
        yield ""
        h20 = run_whatif(dict(base, hardware="h20"))
        yield "== the same plan on 8 x H20 (148 dense BF16 TFLOP/s, 4.0 TB/s): decode is held by memory and " \
              "communication, not compute; prefill is compute-bound =="
        for q in ("prefill_ffn", "decode_attention", "decode_ffn"):
            a, b = res.quadrant(q), h20.quadrant(q)
            yield (f"  {q:17s} H100 {a['time_s'] * 1e3:8.2f} ms ({a['bound']})   "
                   f"H20 {b['time_s'] * 1e3:8.2f} ms ({b['bound']})")
        yield f"  TTFT H100 {res.ttft_s * 1e3:.1f} ms vs H20 {h20.ttft_s * 1e3:.1f} ms; " \
              f"TPOT H100 {res.tpot_s * 1e3:.2f} ms vs H20 {h20.tpot_s * 1e3:.2f} ms"
        yield ""
        sim_opts = {"deployment": "dbrx-8xh100", "traffic": "chat", "requests": 300}
        sim = run_simulate(sim_opts)
        yield "== 300 chat requests (Poisson 6/s, lognormal lengths) through workloads/deployments/dbrx-8xh100.yaml =="
        yield simulation_text(sim.summary)
        written = [p.relative_to(tmp) for p in write_simulation(sim, tmp / "simulation", plots=True, parquet=False,
                                                                 slo=sim_opts.get("_slo"))]
    yield ""
    yield f"wrote {out / 'roofline.png'} and {out / 'quadrants.png'}"
    for rel in written:
        yield f"wrote {out / rel}"
    yield ""
    yield "next: quadrant whatif --help | quadrant simulate --help | quadrant bench run --help"


def run_simulate(opts: dict, progress: bool = False):
    import sys
    from dataclasses import replace as dc_replace

    from .build import quick_deployment
    from .serving.runner import simulate
    from .specs.catalog import resolve_workload
    from .specs.deployment import ENGINES, batch_wait_unpaired, read_deployment
    from .specs.traffic import read_traffic, simple_traffic

    if opts.get("engine") is not None and opts["engine"] not in ENGINES:
        raise SimulatorError(f"--engine: expected one of {', '.join(ENGINES)}, got {opts['engine']!r}")
    if opts.get("deployment"):
        _refuse_with_deployment(opts, _SIMULATE_DEPLOYMENT_FIXED, positional=True)
        dep = read_deployment(resolve_workload(opts["deployment"], "deployments", "deployment"))
    elif opts.get("model"):
        frontend_latency_flag(opts.get("frontend_latency"))
        if (opts.get("scheduler_recv_interval") or 1) > 1 and (opts.get("engine") or "vllm") != "sglang":
            raise SimulatorError(f"--scheduler-recv-interval: an SGLang server flag; the quick run serves "
                                 f"{opts.get('engine') or 'vllm'} (give --engine sglang)")
        wait = (opts.get("batch_wait_timeout_iters") or 0, opts.get("batch_wait_max_tokens_ratio") or 0.0)
        if any(wait) and (opts.get("engine") or "vllm") != "trtllm":
            raise SimulatorError(f"--batch-wait-timeout-iters / --batch-wait-max-tokens-ratio: TensorRT-LLM's batch "
                                 f"waiting; the quick run serves {opts.get('engine') or 'vllm'} (give --engine trtllm)")
        if batch_wait_unpaired(*wait):
            raise SimulatorError("--batch-wait-timeout-iters and --batch-wait-max-tokens-ratio work together "
                                 "(TensorRT-LLM holds prompts back while both allow it): give both")
        fields = {k: opts[k] for k in PlanOptions.__dataclass_fields__ if k in opts and opts[k] is not None}
        dep = quick_deployment(PlanOptions(**fields), max_batch_tokens=opts["max_batch_tokens"],
                               max_seqs=opts["max_seqs"], replicas=opts["replicas"],
                               scheduler_recv_interval=opts.get("scheduler_recv_interval") or 1,
                               frontend_latency_s=opts.get("frontend_latency"), batch_wait=wait)
    else:
        raise SimulatorError("give a deployment YAML, or --model/--hardware/... for a quick run")
    if opts.get("price"):
        dep = dep.repriced(price_overrides(opts["price"], dep.device_ids))
    if opts.get("traffic"):
        given = sorted(opts.get("_explicit", set()) & set(_SIMULATE_TRAFFIC_FIXED))
        if given:
            flags = ", ".join("--" + g for g in given)
            raise SimulatorError(f"{flags} cannot be combined with --traffic: the traffic file sets the arrivals and "
                                 "the request lengths (edit the file, or run without --traffic)")
        traffic = read_traffic(resolve_workload(opts["traffic"], "traffic", "traffic"))
    else:
        if bool(opts.get("rate")) == bool(opts.get("concurrency")):
            raise SimulatorError("give exactly one of --rate R or --concurrency C (or --traffic FILE)")
        conc = opts.get("concurrency") or 0
        traffic = simple_traffic(rate=opts.get("rate"), concurrency=opts.get("concurrency"), isl=opts["isl"],
                                 osl=opts["osl"], requests=opts.get("requests") or max(1000, 10 * conc),
                                 seed=opts.get("seed") or 0)
    if opts.get("traffic") and opts.get("rate") is not None:  # --rate overrides the traffic file's rate
        if opts["rate"] <= 0:
            raise SimulatorError(f"--rate must be > 0, got {opts['rate']:g}")
        if traffic.arrival not in ("poisson", "gamma"):
            raise SimulatorError(f"--rate applies to poisson or gamma arrivals; {traffic.id} is {traffic.arrival}")
        traffic = dc_replace(traffic, rate_per_s=float(opts["rate"]))
    if opts.get("requests"):
        if traffic.trace is not None and opts["requests"] > len(traffic.trace):
            raise SimulatorError(f"--requests {opts['requests']}: the trace {traffic.id} has {len(traffic.trace)} "
                                 "rows, and a run replays at most that many")
        traffic = dc_replace(traffic, requests=opts["requests"])
    if opts.get("seed") is not None:
        traffic = dc_replace(traffic, seed=opts["seed"])
    traffic = _simulate_overrides(traffic, opts)
    if opts.get("_check_slo") and math.isinf(traffic.slo.ttft_s) and math.isinf(traffic.slo.tpot_s):
        raise SimulatorError("--check-slo needs an SLO: give --ttft-slo/--tpot-slo or a traffic file with `slo:`")
    opts["_slo"] = traffic.slo
    opts["_seed"] = traffic.seed
    opts["_traffic"] = traffic
    opts["_deployment"] = dep
    bar = None
    if progress and sys.stderr.isatty() and traffic.requests >= 2000:
        import typer

        bar = typer.progressbar(length=traffic.requests, label="simulating", file=sys.stderr)
        bar.__enter__()
    try:
        step = max(traffic.requests // 100, 1)
        cb = (lambda n: bar.update(step) if n % step == 0 else None) if bar else None
        from .timing.calibrated import check_overlays_apply, resolve_timing

        timing = resolve_timing(opts.get("timing"), opts.get("calibration"))
        check_overlays_apply(timing, set(dep.device_ids), _timing_flag(opts))
        return simulate(dep, traffic, horizon_s=opts.get("horizon") or math.inf, progress=cb, timing=timing,
                        engine=opts.get("engine"), preemption=opts.get("preemption"),
                        overheads=opts.get("overheads", True), engine_version=opts.get("engine_version"))
    finally:
        if bar:
            bar.__exit__(None, None, None)


def _simulate_overrides(traffic, opts: dict):
    """SLO and ramp-up flags of ``quadrant simulate`` applied over the traffic file's values."""
    from dataclasses import replace as dc_replace

    from .units import UnitError, parse_duration_s

    def dur(flag: str, key: str):
        if opts.get(key) is None:
            return None
        try:
            return parse_duration_s(opts[key])
        except UnitError as exc:
            raise SimulatorError(f"{flag}: {exc}") from None

    slo = traffic.slo
    ttft, tpot = dur("--ttft-slo", "ttft_slo"), dur("--tpot-slo", "tpot_slo")
    pct = opts.get("slo_percentile")
    if pct is not None and not 1 <= pct <= 100:
        raise SimulatorError(f"--slo-percentile: expected a percentile in [1, 100] (90 for p90), got {pct}")
    slo = dc_replace(slo, ttft_s=slo.ttft_s if ttft is None else ttft, tpot_s=slo.tpot_s if tpot is None else tpot,
                     percentile=slo.percentile if pct is None else pct)
    if pct is not None and math.isinf(slo.ttft_s) and math.isinf(slo.tpot_s):  # (it qualifies a target: unused)
        raise SimulatorError("--slo-percentile: qualifies an SLO, and none is set: give --ttft-slo and/or "
                             "--tpot-slo too, or a traffic file with slo:")
    if slo.percentile_given and math.isinf(slo.ttft_s) and math.isinf(slo.tpot_s):
        raise SimulatorError(f"{traffic.file or traffic.id}: slo.percentile: qualifies an SLO, and none is set: give "
                             "slo.ttft and/or slo.tpot in the file, or --ttft-slo and/or --tpot-slo")
    ramp = dur("--ramp-up", "ramp_up")
    if ramp is not None and traffic.arrival != "closed":
        what = f"this run's arrivals (--rate) are {traffic.arrival}" if traffic.id == "cli" else \
            f"{traffic.file or traffic.id} has process: {traffic.arrival}"
        raise SimulatorError(f"--ramp-up applies to a closed loop (--concurrency, or process: closed); {what}")
    if opts.get("preemption") not in (None, "recompute", "swap", "none"):
        raise SimulatorError(f"--preemption: expected recompute, swap or none, got {opts['preemption']!r}")
    return dc_replace(traffic, slo=slo, ramp_up_s=traffic.ramp_up_s if ramp is None else ramp)


SIMULATION_FILES = ("requests.csv", "steps.csv", "requests.parquet", "steps.parquet", "latency_cdf.png",
                    "timeseries.png", "timeline.png")


def write_simulation(res, out: Path, *, plots: bool, parquet: bool, slo=None) -> list[Path]:
    """Per-request and per-step records and the plots, into ``out`` as a whole (temp folder, then rename)."""
    from .io import atomic_dir
    from .report import plots as P

    out = Path(out)
    if parquet:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SimulatorError("--parquet needs pyarrow (pip install pyarrow); CSV needs nothing extra") from None
    names = []
    with atomic_dir(out, SIMULATION_FILES) as tmp:
        for name, df in (("requests", res.requests), ("steps", res.steps)):
            if parquet:
                df.to_parquet(tmp / f"{name}.parquet", index=False)
                names.append(f"{name}.parquet")
            else:
                df.to_csv(tmp / f"{name}.csv", index=False)
                names.append(f"{name}.csv")
        if plots and len(res.steps):
            P.latency_cdfs(res.requests, tmp / "latency_cdf.png", slo)
            P.time_series(res.steps, res.requests, tmp / "timeseries.png")
            P.step_timeline(res.steps, tmp / "timeline.png")
            names += ["latency_cdf.png", "timeseries.png", "timeline.png"]
    return [out / n for n in names]


def run_validate(measurements: Path, hardware: str | None, calibrations: list[Path], heldout: bool,
                 timing: str | None = None, lodo: bool = True, latency: str = "latency_us"):
    """Predict every measured row; score per device x op kind; with several devices, also leave one
    device out (fit the kernel families on the others, predict it)."""
    import pandas as pd

    from .timing.calibrated import apply_calibration, read_overlay, resolve_timing
    from .validation.measurements import read_measurements
    from .validation.validate import load_specs, predict, score

    df = read_measurements(measurements, latency)
    if hardware:
        df = df[_rows_naming(df, hardware, "--hardware")].reset_index(drop=True)
        if df.empty:
            raise SimulatorError(f"{measurements}: no rows for hardware {hardware!r}")
    tables = [c for c in calibrations if str(c).lower().endswith(".csv")]
    overlays = [c for c in calibrations if c not in tables]
    if tables and (overlays or (timing and timing.strip() != "roofline") or len(tables) > 1):
        # a measured table corrects the profile it is read against: an overlay under it would be applied twice
        raise SimulatorError(f"--calibration {tables[0]}: a measured table goes alone; combine it with an overlay "
                             "or another timing model as one --timing spec (e.g. --timing "
                             "calibrated:OVERLAY.yaml+measured:TABLE.csv)")
    if tables:
        timing = f"measured:{tables[0]}"
    overrides = {}
    for cal in overlays:
        hw_id, prov, _ = read_overlay(cal)
        if hw_id in overrides:
            raise SimulatorError(f"--calibration {cal}: a second overlay for {hw_id} (give one per device)")
        try:
            spec = load_hardware(hw_id)
        except SimulatorError as exc:
            raise SimulatorError(f"{cal}: hardware: {exc}") from None
        if not (df["hardware"] == spec.id).any():
            raise SimulatorError(f"--calibration {cal}: fitted for {spec.id}, and no row of {measurements} measures "
                                 f"it ({', '.join(sorted(set(df['hardware'])))}): it would change nothing")
        overrides[spec.id] = apply_calibration(spec, cal)
        if heldout:
            from .validation.calibrate import heldout_rows

            split = prov.get("split", {})
            if not isinstance(split, dict):
                raise SimulatorError(f"{cal}: provenance.split: expected a mapping, got {split!r}")
            fraction, seed = split.get("test_fraction", 0.5), split.get("seed", 0)
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
                raise SimulatorError(f"{cal}: provenance.split.test_fraction: expected a number in (0, 1), "
                                     f"got {fraction!r}")
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise SimulatorError(f"{cal}: provenance.split.seed: expected an integer >= 0, got {seed!r}")
            rest = df[df["hardware"] != spec.id]
            df = pd.concat([rest, heldout_rows(df, spec.id, float(fraction), seed)], ignore_index=True)
    if heldout and not overrides:
        raise SimulatorError("--heldout needs --calibration OVERLAY.yaml (the split is the calibration's)")
    model = resolve_timing(timing)
    specs = load_specs(df, overrides=overrides)
    pred = predict(df, specs, model)
    result = score(pred)
    result["timing_model"] = model.name
    if lodo and len(specs) > 1 and not overrides:
        from .validation.calibrate import leave_one_device_out

        result["leave_one_device_out"] = leave_one_device_out(df, specs)
    return pred, result


def _profile_id(name: str, flag: str) -> str:
    """A device named on the command line, as its profile id (an alias or path allowed); unknown: an error naming
    the flag."""
    try:
        return load_hardware(name).id
    except SimulatorError as exc:
        raise SimulatorError(f"{flag} {name}: {exc}") from None


def _rows_naming(df, name: str, flag: str):
    """The measurement rows of the device ``name`` (a flag's value): rows naming it as given, by its profile id, or
    by the same profile file."""
    import os

    hw_id = _profile_id(name, flag)
    mask = (df["hardware"] == name) | (df["hardware"] == hw_id)
    if os.path.isfile(name):
        for other in set(df["hardware"][~mask]):
            if os.path.isfile(other) and os.path.samefile(other, name):
                mask |= df["hardware"] == other
    return mask.to_numpy()


def _refuse_hardware_typos(others, file: str, fitted: str) -> None:
    """The rows ``calibrate`` sets aside (other devices') may name devices of their own, but a name spelt like a
    catalogue id or the device being fitted ("h200-smx") is a typo that would quietly drop rows from the fit:
    refused with its line."""
    import difflib

    known = set(hardware_ids())
    for name in sorted(set(others["hardware"]) - known):
        close = difflib.get_close_matches(str(name), sorted(known | {fitted}), 1, 0.75)
        if close:
            label = others.index[(others["hardware"] == name).to_numpy()][0]  # (the reader's row number: line - 2)
            raise SimulatorError(f"{file}: line {int(label) + 2}, column 'hardware': {name!r} names no hardware "
                                 f"profile; a typo for {close[0]!r}? (rows of other devices are set aside; a "
                                 "misspelt one would drop from the fit)")


def run_calibrate(measurements: Path, hardware: str, out: Path, test_fraction: float, seed: int,
                  latency: str = "latency_us") -> dict:
    from .io import atomic_write_text
    from .validation.calibrate import calibrate, overlay_yaml
    from .validation.measurements import read_measurements

    if not 0.0 < test_fraction < 1.0:
        raise SimulatorError("--test-fraction must be between 0 and 1")
    if Path(out).is_file():  # an earlier overlay may be replaced; a hardware profile (or any other file) is not
        import yaml

        try:
            kind = (yaml.safe_load(Path(out).read_text(encoding="utf-8")) or {}).get("kind")
        except (yaml.YAMLError, OSError, UnicodeDecodeError, AttributeError):
            kind = None
        if kind != "calibration":
            raise SimulatorError(f"--out {out}: exists and is not a calibration overlay (a hardware profile?); "
                                 "write the overlay to a new file")
    df = read_measurements(measurements, latency)
    try:
        base = load_hardware(hardware)  # (an alias, an id or a profile file)
    except SimulatorError as exc:
        raise SimulatorError(f"--hardware {hardware}: {exc}") from None
    mine = _rows_naming(df, hardware, "--hardware")  # its rows, as calibrate finds them: by the profile's id
    _refuse_hardware_typos(df[~mine], str(measurements), base.id)  # (other devices' rows are set aside)
    df = df.assign(hardware=df["hardware"].where(~mine, base.id))
    cal, report = calibrate(df, base, test_fraction=test_fraction, seed=seed, measurements_file=str(measurements))
    atomic_write_text(out, overlay_yaml(cal, base, report, measurements))
    return report


def comma_list(text: str, flag: str) -> list[str]:
    """A flag's comma-separated entries, stripped; an empty entry ("a,,b") is refused, naming the flag."""
    parts = [x.strip() for x in text.split(",")]
    if not all(parts):
        raise SimulatorError(f"{flag} {text!r}: an empty entry in the comma-separated list")
    return parts


def run_sweep(model, hardware, devices, isl, osl, precisions, kv_precision, batches, tpot_slo, ttft_slo, rate,
              timing=None, prices=None):
    from .planning.sweep import pareto_front, plan_capacity, sweep
    from .precision import canonical_precision  # (the engines' spellings, FP8 or fp8_e4m3, as whatif takes them)
    from .timing.calibrated import check_overlays_apply, resolve_timing

    def split(text, flag: str, cast=str):
        try:
            return list(dict.fromkeys(cast(x) for x in comma_list(text, flag)))  # (each once)
        except ValueError:
            raise SimulatorError(f"{flag}: cannot read the list {text!r}") from None

    model_t = resolve_timing(timing)
    import os

    names = {}  # profile file -> the first name it was given by (two names of one profile file: one device)
    ids = []
    for h in split(hardware, "--hardware"):
        spec = load_hardware(h)
        names.setdefault(os.path.realpath(spec.file) if spec.file else spec.id, h)
        ids.append(spec.id)
    check_overlays_apply(model_t, set(ids), "--timing")
    df = sweep(model, list(names.values()), devices, isl=isl, osl=osl,
               batches=split(batches, "--batches", int),
               precisions=split(precisions, "--precision", canonical_precision),
               kv_precision=kv_precision, timing=model_t,
               prices_usd_per_hour=price_overrides(prices or [], ids))
    ok = df[df.fits]
    if tpot_slo:  # the TPOT a request sees, its batch's other prefills included (the throughput's own cycle)
        ok = ok[ok.tpot_served_s <= tpot_slo]
    if ttft_slo:
        ok = ok[ok.ttft_s <= ttft_slo]
    if ok.empty:
        from .errors import InfeasibleError
        from .planning.sweep import infeasible_reason

        raise InfeasibleError(infeasible_reason(df, model, devices, isl=isl, osl=osl, kv_precision=kv_precision,
                                                tpot_slo_s=tpot_slo, ttft_slo_s=ttft_slo))
    front = pareto_front(ok)
    if rate:  # every row (the CSV) and the front carry the fleet at that rate, and the one-replica figure beside it
        front = plan_capacity(front, rate_per_s=rate, osl=osl, devices=devices)
        df = plan_capacity(df, rate_per_s=rate, osl=osl, devices=devices)
        # the cheapest fleet at that rate among the configurations that fit and meet the SLOs (the front ranks by
        # throughput per device, which a dearer device can lead): fewer devices, then the lower TPOT, on a tie.
        # A device without a price has no fleet cost to rank: left out, and counted (None: none is priced)
        fleets = df.loc[ok.index]
        priced = fleets[fleets.fleet_usd_per_hour.astype(float).map(math.isfinite)]
        df.attrs["cheapest"] = (priced.sort_values(["fleet_usd_per_hour", "devices_total", "tpot_served_s"],
                                                   kind="stable").iloc[0].to_dict() if len(priced) else None)
        df.attrs["unpriced"] = len(fleets) - len(priced)
    df.attrs["meet_slos"] = len(ok)
    return df, front


def run_sweep_deployment(deployment: str, tpot_slo_s: float | None, isl: int, osl: int,
                         timing: str | None = None) -> dict:
    """`sweep --deployment FILE --tpot-slo S`: the largest batch under the TPOT target for that deployment
    (timed by ``timing``, a --timing spec)."""
    from .planning.sweep import largest_batch_under_tpot
    from .specs.catalog import resolve_workload
    from .specs.deployment import read_deployment
    from .timing.calibrated import check_overlays_apply, resolve_timing

    if tpot_slo_s is None:
        raise SimulatorError("--deployment needs --tpot-slo (the TPOT target the batch must meet)")
    dep = read_deployment(resolve_workload(deployment, "deployments", "deployment"))
    model = resolve_timing(timing)
    check_overlays_apply(model, set(dep.device_ids), "--timing")
    from .serving.profiles import engine_profile
    from .serving.runner import batch_limits

    pool = dep.pools_serving("decode")[0]
    max_seqs = batch_limits(pool, engine_profile(pool.engine))[0]  # the pool's, else its engine server's default
    out = largest_batch_under_tpot(dep.serving_plan(), tpot_slo_s, isl=isl, osl=osl, timing=model, max_batch=max_seqs)
    out["limit_note"] = {  # (limited_by stays a token a script can test; this says it in words)
        "tpot": "the TPOT target (one more sequence misses it)", "memory": "memory (one more sequence does not fit)",
        "max_batch": (f"the decode pool's max_seqs ({max_seqs})" if pool.max_seqs is not None else
                      f"the {pool.engine} server's default max_seqs ({max_seqs})")}[out["limited_by"]]
    return {"deployment": dep.file or dep.id, "model": dep.model.id, **out}
