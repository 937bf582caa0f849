"""Plain-text tables for the terminal (deterministic, no colour codes)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

from ..units import GB, format_si


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align))

    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths), *(fmt(r) for r in cells)])


def s(x: float) -> str:
    """Seconds, human scale."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if x == 0:
        return "0 s"
    if x >= 999.5:  # (whole seconds, not 1.62e+05 s; 999.5 would round to 1e+03 below)
        return f"{x:,.0f} s"
    if x >= 1:
        return f"{x:.3g} s"
    if x >= 1e-3:
        return f"{x * 1e3:.3g} ms"
    return f"{x * 1e6:.3g} µs"


def pct(x: float) -> str:
    return "n/a" if x is None or x != x else f"{x * 100:.1f}%"


def gb(x: float) -> str:
    return f"{x / GB:.1f} GB"


def si(x: float, unit: str) -> str:
    return "n/a" if x is None or x != x else format_si(x, unit)


def whatif_text(res) -> str:
    rows = [[r["quadrant"], s(r["time_s"]), si(r["flop"], "FLOP"), si(r["bytes"], "B"), s(r["comm_s"]),
             f"{r['arithmetic_intensity']:.1f}" if r["arithmetic_intensity"] == r["arithmetic_intensity"] else "n/a",
             r["bound"], si(r["achieved_flop_per_s"], "FLOP/s"), pct(r["flop_fraction_of_peak"]),
             pct(r["bandwidth_fraction_of_peak"])] for r in res.quadrant_rows]
    plan = res.plan

    def experts(p) -> str:  # a MoE's expert TP where it is not the attention's (attention DP, EP, an FFN pool)
        return f", expert tp {p.ffn.expert_tp}" if res.moe and p.ffn.expert_tp != p.attention.tp else ""

    lines = [
        f"{res.model_id}: {res.devices} device(s), batch {res.batch}, ISL {res.isl}, OSL {res.osl}, "
        f"prefill batch {res.prefill_batch}",
        f"prefill on {plan.prefill.attention.hardware.id} (tp {plan.prefill.attention.tp}"
        + (f", dp {plan.prefill.attention.dp}" if plan.prefill.attention.dp > 1 else "") + f", pp {plan.prefill.pp}, "
        f"ep {plan.prefill.ffn.ep}{experts(plan.prefill)}, {plan.prefill.attention.precision}/"
        f"{plan.prefill.ffn.precision}); decode on {plan.decode.attention.hardware.id}"
        + (f" + FFN on {plan.decode.ffn.hardware.id}" if plan.decode.af_disaggregated else "")
        + f" (tp {plan.decode.attention.tp}"
        + (f", dp {plan.decode.attention.dp}" if plan.decode.attention.dp > 1 else "") + f", ep {plan.decode.ffn.ep}"
        f"{experts(plan.decode)}, {plan.decode.attention.precision}/{plan.decode.ffn.precision}); "
        f"KV {plan.kv_precision}",
        "",
        "Per quadrant (per device; prefill = the whole prompt batch, decode = one step):",
        table(["quadrant", "time", "FLOP", "bytes", "comm", "FLOP/B", "bound", "achieved", "of peak FLOP/s",
               "of peak B/s"], rows, "lrrrrrlrrr"),
        "",
        f"TTFT                      {s(res.ttft_s)}",
        f"TPOT                      {s(res.tpot_s)}"
        + (f" a step; {s(res.tpot_served_s)} a request sees at this batch (its batch's other prefills in its gaps)"
           if res.tpot_served_s > res.tpot_s * (1 + 1e-9) else ""),
        f"output tokens/s           {res.output_tokens_per_s:,.0f} total, {res.output_tokens_per_s_per_device:,.1f} "
        f"per device",
        "cost per 1M output tokens "
        + (f" ${res.cost_usd_per_mtok:,.3f}" if math.isfinite(res.cost_usd_per_mtok) else " n/a (no price)"),
        "",
        "Memory per device:",
        table(["devices", "weights", "KV cache", "activations", "reserve", "capacity", "headroom", "fits"],
              [[f"{m.role} ({m.hardware})", gb(m.weights_bytes), gb(m.kv_cache_bytes), gb(m.activation_bytes),
                gb(m.reserve_bytes), gb(m.capacity_bytes), gb(m.headroom_bytes), "yes" if m.fits else "NO"]
               for m in res.memory]),
    ]
    if res.notes:
        lines += ["", *(f"note: {n}" for n in res.notes)]
    return "\n".join(lines)


def refusals(sm: dict) -> dict[str, int]:
    """A simulation summary's rejection reasons less the requests a horizon cut off before they arrived (listed
    apart: neither served nor refused)."""
    from ..serving.engine import NOT_ARRIVED

    return {why: n for why, n in sm["rejection_reasons"].items() if why != NOT_ARRIVED}


def request_counts(sm: dict) -> str:
    """``12 finished, 3 rejected, 85 not arrived before the horizon (of 100)``: the not-arrived ones (JSON
    ``requests_not_arrived``, among ``requests_rejected`` there) on their own, only where there are any."""
    late = sm.get("requests_not_arrived", 0)
    return (f"{sm['requests_completed']} finished, {sm['requests_rejected'] - late} rejected"
            + (f", {late} not arrived before the horizon" if late else "") + f" (of {sm['requests_total']})")


def _goodput_share(g: dict) -> str:
    """The goodput line's tail: the share of requests meeting the targets set (only those: a run with a TPOT target
    alone does not read "TTFT <= n/a"), of how many where a horizon cut requests short, and the percentile test."""
    targets = " and ".join(f"{name} <= {s(g['slo'][key])}" for name, key in (("TTFT", "ttft_s"), ("TPOT", "tpot_s"))
                           if g["slo"].get(key) is not None and math.isfinite(g["slo"][key]))
    judged = g.get("requests_judged")
    if judged == 0:
        share = f"n/a: no request finished or was sure to miss {targets} by the horizon"
    elif judged:
        share = (f"{pct(g['fraction_of_requests'])} of the {judged:,} requests finished or sure to miss by the "
                 f"horizon meet {targets}")
    else:
        share = f"{pct(g['fraction_of_requests'])} of requests meet {targets}"
    return share + f"; p{g['slo']['percentile']:g} SLO {'met' if g['slo_met'] else 'NOT met'}"


def simulation_text(sm: dict) -> str:
    def row(name, d):
        return [name, *(s(d[k]) if d[k] is not None else "n/a" for k in ("mean", "p50", "p90", "p99"))]

    lines = [
        f"requests: {request_counts(sm)}; makespan "
        f"{s(sm['makespan_s']) if sm['requests_completed'] else 'n/a (nothing finished)'}; {sm['steps']} steps; "
        f"{sm['devices']} device{'s' if sm['devices'] != 1 else ''}",
    ]
    for reason, n in refusals(sm).items():
        lines.append(f"  rejected x{n}: {reason}")
    lines += ["", table(["latency", "mean", "p50", "p90", "p99"],
                        [row("TTFT", sm["ttft_s"]), row("TPOT", sm["tpot_s"])]
                        + ([row("ITL", sm["itl_s"])] if "itl_s" in sm else [])
                        + [row("end-to-end", sm["e2e_s"]), row("queueing", sm["queue_s"])]
                        + ([row("in the frontend", sm["frontend_s"])]
                           if (sm.get("frontend_s") or {}).get("mean") else [])), ""]
    if "window" in sm:
        w = sm["window"]
        span = f" in [{s(w['start_s'])}, {s(w['end_s'])}]" if sm["requests_completed"] else ""  # (none: no span)
        versions = sm.get("engine_versions") or {}  # (a pool's release, where one is named)
        engines = ", ".join(" ".join([p, e, *([versions[p]] if p in versions else [])])
                            for p, e in sm["engines"].items())
        lines.insert(1, f"engines: {engines}; measured "
                        f"{w['requests']} requests{span} ({w['rule']})")
    b = sm.get("backlog")
    if b and b["growing"]:
        lines += [textwrap.fill(
            f"note: overloaded: the requests in the system grew from {b['in_system_halfway']:,} halfway through "
            f"the arrivals to {b['in_system_at_last_arrival']:,} at the last one (arriving at "
            f"{b['arrivals_per_s']:,.2f} req/s, finishing at {b['finished_per_s']:,.2f} req/s), so these latencies "
            "grow with the run's length (--requests), not a steady state. Lower the rate, add replicas, or size a "
            "fleet with `quadrant plan`.", width=100, subsequent_indent="      "), ""]
    g = sm["goodput"]
    cost = sm["cost_usd_per_mtok"]
    lines += [
        f"throughput   input {sm['input_tokens_per_s']:,.0f} tok/s, output {sm['output_tokens_per_s']:,.0f} tok/s "
        f"({sm['output_tokens_per_s_per_device']:,.1f} per device)",
        ("goodput      n/a (no SLO given: --ttft-slo / --tpot-slo or slo: in the traffic file)"
         if g["requests_per_s"] is None else
         f"goodput      {g['requests_per_s']:,.2f} req/s; " + _goodput_share(g)),
        f"preemptions  {sm['preemptions']}",
        "cost         " + (f"${cost:,.3f} per 1M output tokens (${sm['cost_usd_per_hour']:,.2f}/h)" if cost is not None
                           else "n/a (a pool has no price; set price_per_device_hour or --price)"
                           if sm.get("cost_usd_per_hour") is None
                           else f"n/a (no output token finished; the fleet costs ${sm['cost_usd_per_hour']:,.2f}/h)"),
        *_sustained_lines(sm),
        "",
        table(["pool", "replicas", "busy", "prefill attn", "prefill FFN", "decode attn", "decode FFN", "other",
               "batch fill", "KV mean", "KV max"],
              [[p, u["replicas"], pct(u["busy"]), pct(u["prefill_attention"]), pct(u["prefill_ffn"]),
                pct(u["decode_attention"]), pct(u["decode_ffn"]), pct(u.get("other")), pct(u.get("batch_fill")),
                pct(sm["kv_occupancy"].get(p, {}).get("mean")),
                pct(sm["kv_occupancy"].get(p, {}).get("max"))] for p, u in sm["utilisation"].items()]),
    ]
    return "\n".join(lines)


def _sustained_lines(sm: dict) -> list[str]:
    """The open loop's figures at its offered rate (``metrics.sustained_figures``), beside the run's own averages."""
    st, b = sm.get("sustained"), sm.get("backlog")
    if not st:
        if b and b["growing"] is None:  # (an open loop too short or too bunched for a verdict: say why no line)
            from ..serving.metrics import BACKLOG_MIN_ARRIVALS  # (a simulation's summary: serving is loaded)
            return textwrap.wrap(
                "sustained    n/a: too few arrivals, or too short a run, to tell whether the fleet keeps up with this "
                f"offer (a verdict needs {2 * BACKLOG_MIN_ARRIVALS} or more arrivals: --requests); the figures above "
                "are this sample's own", width=100, subsequent_indent="             ")
        return []
    parts = [f"output {st['output_tokens_per_s']:,.0f} tok/s"]
    if st["goodput_requests_per_s"] is not None:
        parts.append(f"goodput {st['goodput_requests_per_s']:,.2f} req/s")
    if st["cost_usd_per_mtok"] is not None:
        parts.append(f"${st['cost_usd_per_mtok']:,.3f} per 1M output tokens")
    return textwrap.wrap(
        f"sustained    at the offered {st['rate_per_s']:,.4g} req/s: {', '.join(parts)} (the rate x what a request "
        "brought; the figures above average over this sample's own arrivals and its drain after the last one, as "
        "vllm bench serve does; a capacity plan at this rate compares with these)",
        width=100, subsequent_indent="             ")


def _err_row(name, d):
    return [name, d["n"], pct(d["median_ape"]), pct(d["p90_ape"]), pct(d["within_25pct"]), f"{d['bias']:.3f}"]


def validation_text(result: dict) -> str:
    head = ["group", "n", "median APE", "p90 APE", "within 25%", "bias (pred/meas)"]
    rows = [_err_row(f"{g['hardware']} {g['op']}", g) for g in result["groups"]]
    rows.append(_err_row("overall", result["overall"]))
    out = table(head, rows)
    if result.get("leave_one_device_out"):
        lodo = [_err_row(r["hardware"], r) for r in result["leave_one_device_out"]]
        out += "\n\nleave one device out (families fitted on the other devices):\n" + table(head, lodo)
    return out


def calibration_text(report: dict) -> str:
    lines = [f"calibrated {report['hardware']}: {report['train_rows']} training rows, "
             f"{report['test_rows']} held-out rows (seed {report['seed']}); fitted classes: "
             f"{', '.join(report['fitted_classes'])}"]
    rows = []
    if report["heldout_before"]:
        rows.append(_err_row("held-out, profile as shipped", report["heldout_before"]))
        rows.append(_err_row("held-out, calibrated", report["heldout_after"]))
    rows.append(_err_row("training rows, calibrated", report["train_after"]))
    lines.append(table(["rows", "n", "median APE", "p90 APE", "within 25%", "bias (pred/meas)"], rows))
    for cls, notes in report["notes"].items():
        for n in notes:
            lines.append(f"note: {cls}: {n}")
    return "\n".join(lines)


def sweep_text(df, front) -> str:
    cols = ["hardware", "precision", "tp", "ep", "batch", "ttft_s", "tpot_s", "tpot_served_s",
            "output_tokens_per_s_per_device", "cost_usd_per_mtok"]
    dp = "dp" in front.columns  # attention data parallelism (a replica is tp x dp devices)
    extra = [c for c in ("replicas", "fleet_usd_per_hour") if c in front.columns]

    def cells(d: dict) -> list:
        row = [d["hardware"], d["precision"], d["tp"]] + ([d["dp"]] if dp else []) + [
            d["ep"], d["batch"], s(d["ttft_s"]), s(d["tpot_s"]), s(d["tpot_served_s"]),
            f"{d['output_tokens_per_s_per_device']:,.1f}",
            f"${d['cost_usd_per_mtok']:.3f}" if d["cost_usd_per_mtok"] == d["cost_usd_per_mtok"] else "n/a"]
        if extra:
            row += [d["replicas"], f"${d['fleet_usd_per_hour']:,.2f}" if d["fleet_usd_per_hour"] ==
                    d["fleet_usd_per_hour"] else "n/a"]
        return row

    rows = [cells(r._asdict()) for r in front[cols + (["dp"] if dp else []) + extra].itertuples(index=False)]
    head = ["hardware", "precision", "tp"] + (["dp"] if dp else []) + [
        "ep", "batch", "TTFT", "TPOT step", "TPOT", "tok/s/device", "$/1M out tok" + (" (fleet)" if extra else "")]
    head += ["replicas", "fleet $/h"][: len(extra)]
    meet = df.attrs.get("meet_slos")
    lines = [f"{len(df)} configurations scored, {int(df.fits.sum())} fit"
             + (f", {meet} fit and meet the SLOs" if meet is not None and meet != int(df.fits.sum()) else "")
             + "; Pareto front (throughput per device vs TPOT):", table(head, rows),
             *textwrap.wrap("TPOT step: one decode step; TPOT: what a request sees, its batch's prefills in between "
                            "(the throughput's own cycle; --tpot-slo holds it). $/1M out tok: "
                            + ("the fleet's at --rate." if extra else "one replica running full."), width=100)]
    cheap, unpriced = df.attrs.get("cheapest"), df.attrs.get("unpriced", 0)
    if "cheapest" in df.attrs and cheap is None:
        lines += textwrap.wrap("cheapest fleet at --rate: n/a (no configuration that meets the SLOs has a price; "
                               "pass --price DEVICE=USD/h)", width=100)
    if cheap is not None:
        on_front = any(all(cheap[k] == r[k] for k in ("hardware", "precision", "tp", "ep", "batch"))
                       for r in front.to_dict(orient="records"))
        lines += textwrap.wrap(("cheapest fleet at --rate (on the front): " if on_front else
                      "cheapest fleet at --rate (off the front, which ranks throughput per device): ")
                     + f"{cheap['hardware']} {cheap['precision']}, tp {cheap['tp']}"
                       + (f", dp {cheap['dp']}" if cheap.get("dp", 1) != 1 else "")
                       + f", ep {cheap['ep']}, batch "
                       f"{cheap['batch']}: {cheap['replicas']} replica{'s' if cheap['replicas'] != 1 else ''}, "
                       f"${cheap['fleet_usd_per_hour']:,.2f}/h, ${cheap['cost_usd_per_mtok']:.3f} per 1M output "
                       f"tokens, TPOT {s(cheap['tpot_served_s'])}"
                       + (f" ({unpriced} configuration{'s' if unpriced != 1 else ''} on an unpriced device left out)"
                          if unpriced else ""), width=100)
    return "\n".join(lines)


def serving_validation_text(result: dict) -> str:
    """Measured vs simulated serving runs: per row, then per group and overall."""
    rows = [[r["source"], r["statistic"], s(r["ttft_s_measured"]), s(r["ttft_s_simulated"]), pct(r["ttft_ape"]),
             s(r["tpot_s_measured"]), s(r["tpot_s_simulated"]), pct(r["tpot_ape"])] for r in result["rows"]]

    def grow(name, g):
        return [name, g["n"], pct(g["ttft_median_ape"]), _f3(g["ttft_bias"]), pct(g["tpot_median_ape"]),
                _f3(g["tpot_bias"])]

    groups = [grow(g["group"], g) for g in result["groups"]] + [grow("overall", result["overall"])]
    ignored = [f"{r['source']}: not used: {r['flags_ignored']}" for r in result["rows"] if r.get("flags_ignored")]
    return "\n".join([
        table(["run", "stat", "TTFT meas", "TTFT sim", "TTFT err", "TPOT meas", "TPOT sim", "TPOT err"], rows),
        "",
        table(["group", "n", "TTFT median APE", "TTFT bias", "TPOT median APE", "TPOT bias"], groups),
        "bias = geometric mean of simulated / measured (> 1: the simulator is pessimistic)",
        *(["", "flags a run contradicts (its own record is simulated):", *ignored] if ignored else []),
    ])


def _f3(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _num(x, fmt: str = "{:,.0f}") -> str:
    """A number for a listing: unknown (None/NaN) shows as an em dash."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return fmt.format(x)


def hardware_list_text(df) -> str:
    """``quadrant hw list``: fits 100 columns; dense peaks; unknown prices as "—"."""
    rows = [[r["id"], _num(r["bf16_tflops"], "{:,.1f}"), _num(r["fp8_tflops"] or None, "{:,.1f}"),
             _num(r["hbm_gb"]), _num(r["hbm_tb_per_s"], "{:.2f}"), _num(r["flop_per_byte_bf16"]),
             _num(r["scale_up_gb_per_s"]), _num(r["usd_per_hour"], "{:.2f}"),
             "hypothetical" if r["hypothetical"] else r["confidence"]] for r in df.to_dict(orient="records")]
    return "\n".join([
        table(["id", "bf16 TF/s", "fp8 TF/s", "HBM GB", "TB/s", "FLOP/B", "link GB/s", "$/h", "confidence"], rows,
              "lrrrrrrrl"),
        "TF/s: dense tensor-core TFLOP/s; TB/s: HBM bandwidth; link: scale-up per device and direction",
        "$/h: sourced price per device-hour; — : none sourced (pass --price). Details: quadrant hw show ID",
    ])


def model_list_text(df) -> str:
    """``quadrant model list``: derived parameter counts and KV bytes per token, within 100 columns."""
    rows = [[r["id"], r["kind"], r["attention"], r["layers"], _num(r["total_params_b"], "{:,.1f}"),
             _num(r["active_params_b"], "{:,.1f}"), r["experts"] or "—", _num(r["kv_kb_per_token_bf16"], "{:,.1f}"),
             "yes" if r["hypothetical"] else ""] for r in df.to_dict(orient="records")]
    return "\n".join([
        table(["id", "kind", "attention", "layers", "total B", "active B", "experts", "KV kB/tok", "hypothetical"],
              rows, "lllrrrrrl"),
        "B: parameters in 1e9 (derived from the architecture); experts: top-k / routed; KV: bf16, all layers",
    ])
