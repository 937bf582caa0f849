"""Regenerate the capacity-planning case studies in reports/case-studies/ with the planner.

    python reports/scripts/case_studies.py [--only doubao|llama405b|dbrx] [--workers N]

Every figure comes from `simulator.planning` (screen -> DES verify -> recommend) or from simulating
given deployments (`compare`); nothing is edited by hand. Prices: the H100 SXM rental price is the
sourced figure in hardware/h100-sxm.yaml; no sourced H20 rental price exists, so the H20 price is an
ASSUMPTION (H20_PRICE below) and every case shows how its answer moves with it. The sensitivity
re-prices the simulated candidates only (their simulated latencies do not depend on price).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from simulator.errors import InfeasibleError  # noqa: E402
from simulator.planning.plan import PlanRequest, compare_deployments, plan_capacity_for  # noqa: E402
from simulator.report.documents import write_plan_dir  # noqa: E402
from simulator.specs.catalog import load_hardware, resolve_workload  # noqa: E402
from simulator.specs.deployment import read_deployment  # noqa: E402
from simulator.specs.traffic import read_traffic  # noqa: E402

OUT = ROOT / "reports" / "case-studies"
H20_PRICE = 1.20  # USD per device-hour: ASSUMPTION (no sourced rental price), as in workloads/deployments/
H20_GRID = (0.60, 0.90, 1.20, 1.50, 1.80, 2.40)
# verify_max: the planner's default (16). Verification stops at the first batch with a passing candidate,
# so the budget only matters where the cheapest candidates all miss (as the A/F arrangements at TPOT 25 ms do).
COMMON = dict(requests=250, bisect_steps=2, top_k=2, verify_max=16)


def pool_devices(pool: dict) -> dict[str, int]:
    """Devices of each hardware kind in one pool of a plan.json candidate."""
    ffn = pool.get("ffn_pool")
    if not ffn:
        return {pool["hardware"]: pool["devices"]}
    f = ffn["devices_per_replica"] * pool["replicas"]
    out = {pool["hardware"]: pool["devices"] - f}
    out[ffn["hardware"]] = out.get(ffn["hardware"], 0) + f
    return out


def reprice(cand: dict, prices: dict[str, float]) -> float:
    total = 0.0
    for p in cand["pools"]:
        for hw, n in pool_devices(p).items():
            total += n * prices[hw]
    return total


def sensitivity(runs: dict[str, dict], base_prices: dict[str, float]) -> list[str]:
    """Markdown table: the cheapest simulated candidate meeting the SLOs per setting, as the H20 price moves.

    Only candidates the planner simulated are re-priced, so within a setting a fleet it never simulated
    (because a cheaper one already passed at the assumed price) cannot appear."""
    head = "| H20 $/h | " + " | ".join(runs) + " | cheapest |"
    lines = [head, "|" + "---|" * (len(runs) + 2)]
    for h20 in H20_GRID:
        prices = dict(base_prices, h20=h20)
        best = {}
        for name, doc in runs.items():
            ok = [c for c in doc["candidates"] if c.get("verified") and c["verified"]["slo_met"]]
            costs = [(reprice(c, prices), c["arrangement"]) for c in ok]
            best[name] = min(costs) if costs else None
        cells = [f"${b[0]:.2f}" if b else "none meets the SLOs" for b in best.values()]
        win = min((b[0], n) for n, b in best.items() if b) if any(best.values()) else None
        lines.append(f"| {h20:.2f}{' (assumed)' if h20 == H20_PRICE else ''} | " + " | ".join(cells)
                     + f" | {win[1] if win else '-'} |")
    return lines


def run_plan(name: str, title: str, workers, **kw):
    t0 = time.perf_counter()
    try:
        out = plan_capacity_for(PlanRequest(**COMMON, workers=workers, **kw))
    except InfeasibleError as exc:
        print(f"  {name}: {exc}")
        shutil.rmtree(OUT / name, ignore_errors=True)  # no stale report of an earlier run under this name
        return {"recommended": None, "candidates": [], "error": str(exc)}, time.perf_counter() - t0
    write_plan_dir(OUT / name, out, title)
    rec = out.doc["recommended"]
    print(f"  {name}: {rec['arrangement']} ${rec['cost_per_hour_usd']:.2f}/h ({time.perf_counter() - t0:.1f} s)")
    return out.doc, time.perf_counter() - t0


def prices_text(hw_ids) -> list[str]:
    lines = []
    for h in hw_ids:
        hw = load_hardware(h)
        if h == "h20":
            lines.append(f"- h20: **${H20_PRICE:.2f}/device-hour, an assumption** (no sourced rental price in "
                         "hardware/h20.yaml); the sensitivity table moves it.")
        else:
            lines.append(f"- {h}: ${hw.price_usd_per_hour:.2f}/device-hour, source {hw.price_note} "
                         f"({hw.sources.get(hw.price_note, '')}).")
    return lines


def rec_line(name: str, doc: dict) -> str:
    rec = doc["recommended"]
    if rec is None:  # (no report folder was written: drop the link)
        why = doc["error"].split(" To find one:")[0].rstrip(".")  # (its advice on what to relax: not a table cell's)
        return f"| {name.split(' ([report]')[0]} | none meets the SLOs: {why} | | | | | |"
    v = rec["verified"]
    return (f"| {name} | {rec['arrangement']} | {rec['devices']} | ${rec['cost_per_hour_usd']:.2f} | "
            f"${rec['usd_per_mtok_output']:.3f} | {v['ttft_p_s'] * 1e3:.0f} ms / {v['tpot_p_s'] * 1e3:.1f} ms | "
            f"{v['max_rate_per_s']:.3g}{'' if v.get('max_rate_bounded', True) else '+'} |")


REC_HEAD = ["| setting | recommended arrangement | devices | $/h | $/M output tok | DES p90 TTFT / TPOT | "
            "max rate (req/s; + = still met at 4x the target, the largest tried) |", "|---|---|---|---|---|---|---|"]


def doubao(workers) -> tuple[list[str], float]:
    traffic = read_traffic(resolve_workload("chat", "traffic", "traffic"))
    base = dict(model="doubao-class-moe", traffic=traffic, rate_per_s=30.0, precisions="fp8/w4a8",
                prices={"h20": H20_PRICE}, max_devices=64)
    md = ["## Doubao-class MoE: all-H100 vs H100 prefill + H20 decode vs attention/FFN disaggregation", "",
          "Model: workloads/models/doubao-class-moe.yaml (HYPOTHETICAL shape; see its notes). Recipe held equal in "
          "every setting: FP8 attention and KV cache, W4A8 routed experts (`--precisions fp8/w4a8`). Traffic: "
          "workloads/traffic/chat.yaml at 30 req/s, p90 TTFT <= 1 s.", "", "Prices:", *prices_text(["h100-sxm", "h20"]),
          ""]
    wall = 0.0
    for tpot in (0.050, 0.025):
        tag = f"{tpot * 1e3:.0f}ms"
        settings = {
            "all-H100": dict(hardware=["h100-sxm"], modes=("agg", "pd")),
            "H100 prefill + H20 decode": dict(hardware=["h100-sxm", "h20"], modes=("pd",),
                                              prefill_hardware=["h100-sxm"], decode_hardware=["h20"]),
            "A/F (H100 prefill; decode attention and FFN apart)": dict(
                hardware=["h100-sxm", "h20"], modes=("afd",), prefill_hardware=["h100-sxm"]),
        }
        runs = {}
        md += [f"### TPOT target {tpot * 1e3:.0f} ms (p90)", "", *REC_HEAD]
        for i, (label, s) in enumerate(settings.items()):
            prices = {"h20": H20_PRICE} if "h20" in s["hardware"] else {}
            doc, t = run_plan(f"doubao-{tag}-{i}", f"Doubao-class MoE, {label}, TPOT {tpot * 1e3:.0f} ms", workers,
                              **dict(base, prices=prices, tpot_slo_s=tpot, **s))
            wall += t
            runs[label] = doc
            md.append(rec_line(f"{label} ([report](case-studies/doubao-{tag}-{i}/report.md))", doc))
        md += ["", "Sensitivity to the H20 price (simulated candidates that met the SLOs on their verification run, "
               "re-priced; only each setting's recommendation also passed the confirmation run; H100 at its "
               "sourced price):", "",
               *sensitivity(runs, {"h100-sxm": load_hardware("h100-sxm").price_usd_per_hour}), ""]
    return md, wall


def llama405b(workers) -> tuple[list[str], float]:
    traffic = read_traffic(resolve_workload("chat", "traffic", "traffic"))
    md = ["## Llama-3.1-405B: FP8 on one node vs BF16 on two", "",
          "Traffic: workloads/traffic/chat.yaml at 2 req/s, p90 TTFT <= 1 s, TPOT <= 80 ms (a relaxed target for a "
          "405B dense model), fleets of up to 48 devices.", "", "Prices:",
          *prices_text(["h100-sxm", "h20"]), "", *REC_HEAD]
    wall = 0.0
    runs = {}
    for label, prec in (("FP8 (one 8-GPU node per replica)", "fp8"), ("BF16 (two nodes per replica)", "bf16")):
        doc, t = run_plan(f"llama405b-{prec}", f"Llama-3.1-405B, {label}", workers, model="llama-3.1-405b",
                          traffic=traffic, rate_per_s=2.0, hardware=["h100-sxm"], modes=("agg",), precisions=prec,
                          max_devices=48, tpot_slo_s=0.08)
        wall += t
        runs[label] = doc
        md.append(rec_line(f"{label} ([report](case-studies/llama405b-{prec}/report.md))", doc))
    doc, t = run_plan("llama405b-h20", "Llama-3.1-405B, FP8, H100 prefill + H20 decode", workers,
                      model="llama-3.1-405b", traffic=traffic, rate_per_s=2.0, hardware=["h100-sxm", "h20"],
                      modes=("pd",), prefill_hardware=["h100-sxm"], decode_hardware=["h20"], precisions="fp8",
                      prices={"h20": H20_PRICE}, max_devices=48, tpot_slo_s=0.08)
    wall += t
    runs["FP8, H100 prefill + H20 decode"] = doc
    md.append(rec_line("FP8, H100 prefill + H20 decode ([report](case-studies/llama405b-h20/report.md))", doc))
    md += ["", "Sensitivity to the H20 price:", "",
           *sensitivity(runs, {"h100-sxm": load_hardware("h100-sxm").price_usd_per_hour}), ""]
    return md, wall


def dbrx(workers) -> tuple[list[str], float]:
    traffic = read_traffic(resolve_workload("chat", "traffic", "traffic"))
    t0 = time.perf_counter()
    deps = [read_deployment(resolve_workload(d, "deployments", "deployment"))
            for d in ("dbrx-8xh100", "dbrx-h100-prefill-h20-decode")]
    cmp_out = compare_deployments(deps, traffic, 6.0, requests=400, bisect_steps=2, workers=workers)
    write_plan_dir(OUT / "dbrx-compare", cmp_out, "DBRX: 8 x H100 vs H100 prefill + H20 decode (given deployments)")
    wall = time.perf_counter() - t0
    md = ["## DBRX: H100 fleet vs H20-decode fleet", "",
          "Traffic: workloads/traffic/chat.yaml at 6 req/s, p90 TTFT <= 1 s, TPOT <= 60 ms.", "", "Prices:",
          *prices_text(["h100-sxm", "h20"]), "",
          "Given deployments, simulated side by side ([report](case-studies/dbrx-compare/report.md)):", "",
          "| deployment | devices | $/h | DES p90 TTFT / TPOT | SLO met | max rate (req/s) |",
          "|---|---|---|---|---|---|"]
    for c in cmp_out.doc["candidates"]:
        v = c["verified"]
        cost = f"${c['cost_per_hour_usd']:.2f}" if c["cost_per_hour_usd"] is not None else "n/a"
        md.append(f"| {c['arrangement']} | {c['devices']} | {cost} | {v['ttft_p_s'] * 1e3:.0f} ms / "
                  f"{v['tpot_p_s'] * 1e3:.1f} ms | {'yes' if v['slo_met'] else 'no'} | {v['max_rate_per_s']:.3g}"
                  f"{'' if v.get('max_rate_bounded', True) else '+'} |")
    runs = {}
    md += ["", "Planned by `quadrant plan` at the same traffic:", "", *REC_HEAD]
    for label, hw, kw in (("H100 only", ["h100-sxm"], {}),
                          ("H100 prefill + H20 decode", ["h100-sxm", "h20"],
                           dict(modes=("pd",), prefill_hardware=["h100-sxm"], decode_hardware=["h20"]))):
        doc, t = run_plan(f"dbrx-{'h100' if len(hw) == 1 else 'h20-decode'}", f"DBRX, {label}", workers,
                          model="dbrx", traffic=traffic, rate_per_s=6.0, hardware=hw, precisions="fp8",
                          prices={"h20": H20_PRICE} if "h20" in hw else {}, **{"modes": ("agg", "pd"), **kw})
        wall += t
        runs[label] = doc
        md.append(rec_line(label, doc))
    md += ["", "Sensitivity to the H20 price:", "",
           *sensitivity(runs, {"h100-sxm": load_hardware("h100-sxm").price_usd_per_hour}), ""]
    return md, wall


CASES = {"doubao": doubao, "llama405b": llama405b, "dbrx": dbrx}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(CASES), action="append")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None,
                    help="write the reports under this folder instead of reports/ (the speed benchmark's scratch)")
    args = ap.parse_args()
    global OUT
    reports = ROOT / "reports"
    if args.out is not None:
        reports, OUT = args.out, args.out / "case-studies"
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(CASES):
        print(f"{name} ...")
        md, wall = CASES[name](args.workers)
        md.append(f"_Regenerated by `python reports/scripts/case_studies.py --only {name}` "
                  f"(planner wall time {wall:.0f} s)._")
        (reports / f"case-study-{name}.md").write_text(
            "# Capacity-planning case study (generated; do not edit)\n\n" + "\n".join(md) + "\n")
        print(f"wrote reports/case-study-{name}.md ({wall:.1f} s)")


if __name__ == "__main__":
    main()
