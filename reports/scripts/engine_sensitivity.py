"""How one engine constant moves the published serving check: re-simulate the published rows of one engine
(bench reading, as ``serving_published_compare.py`` does) with the constant at each given value and print the
TTFT / TPOT error per row and the mean absolute error and median ratio per row set and overall.

A tool for reading the evidence, not for tuning: every constant in ``simulator/serving/engines.yaml`` keeps its
cited source, and a value fitted to published rows says so there (with the rows it was fitted to and an
out-of-sample check on the others).

Run from the repository root, e.g.:

    python reports/scripts/engine_sensitivity.py --engine sglang --set kernels_per_layer=7,14
    python reports/scripts/engine_sensitivity.py --engine vllm --set step_cpu_s=0.0002,0.0005 --rows vllm.csv
    python reports/scripts/engine_sensitivity.py --engine trtllm --set frontend_latency_s=0.155 --match ix3317
    python reports/scripts/engine_sensitivity.py --engine vllm --set memory.sampler_bytes_per_logit=15.4,39 --rows vllm

A profile's frontend latency has two fields: ``frontend_latency_s`` (every model, or MoE models only where the
profile also gives one for dense models) and ``frontend_latency_dense_s`` (dense models; ``EngineProfile.
frontend_for``). Set the one the rows' models meet: trtllm's MoE rows move with the first, its dense rows with the
second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving_published_compare as spc  # noqa: E402

from simulator.serving import profiles  # noqa: E402


def bench_reading(r: pd.Series) -> tuple[float, float]:
    """(TTFT, TPOT) in ms of one published row as its benchmark client reads them (the statistic it printed); NaN
    where the simulation rejects requests."""
    q, rejected = spc.bench_run(r)
    if rejected:  # a run the simulator cannot serve as published: say so, do not score it
        print(f"    {r.id}: {rejected}; not scored")
        return np.nan, np.nan
    return tuple(float(q[f"{m}_s"].median() if spc.published_statistic(r, m) == "median" else q[f"{m}_s"].mean())
                 * 1e3 for m in ("ttft", "tpot"))


def published(r: pd.Series, m: str) -> float:
    stat = spc.published_statistic(r, m)
    return float(r[f"{m}_{stat}_ms"]) if stat else np.nan


def err(sim: float, pub: float) -> str:
    """simulated / published - 1 as a signed percentage; "-" where either is missing."""
    return f"{sim / pub - 1:+7.0%}" if sim == sim and pub == pub else f"{'-':>7}"


def summary(df: pd.DataFrame, label: str) -> str:
    parts = []
    for m in ("ttft", "tpot"):
        ratio = (df[f"sim_{m}"] / df[f"pub_{m}"]).dropna()
        if len(ratio):
            parts.append(f"{m.upper()} MAE {np.mean(np.abs(ratio - 1)) * 100:4.0f}% (median ratio "
                         f"{np.median(ratio):.2f}, n={len(ratio)})")
    return f"  {label:<24} " + "   ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", required=True, choices=profiles.ENGINES)
    ap.add_argument("--set", dest="setting", required=True,
                    help="CONSTANT=V1,V2,... (an engines.yaml constant, SI units), e.g. kernels_per_layer=7,14")
    ap.add_argument("--rows", help="only rows from this CSV of reports/validation/serving-published/ (e.g. vllm.csv)")
    ap.add_argument("--match", help="only rows whose id contains this text")
    args = ap.parse_args()
    name, _, values = args.setting.partition("=")
    table = profiles._table()[args.engine]
    *path, leaf = name.split(".")  # a dotted name reaches into a block: memory.sampler_bytes_per_logit
    for key in path:
        table = table.get(key) if isinstance(table, dict) else None
    if not isinstance(table, dict) or not isinstance(table.get(leaf), dict) or "value" not in table[leaf]:
        raise SystemExit(f"--set: {name!r} is not a constant of the {args.engine} profile (engines.yaml)")
    try:
        vals = [float(v) for v in values.split(",") if v]
    except ValueError:
        raise SystemExit(f"--set: expected CONSTANT=V1,V2,... with numbers, got {args.setting!r}") from None
    if not vals or not all(np.isfinite(vals)) or min(vals) < 0:
        raise SystemExit(f"--set: expected finite values >= 0, got {args.setting!r}")
    rows = spc.load_rows()
    rows = rows[rows.engine == args.engine]
    if args.rows:
        rows = rows[rows.row_set == Path(args.rows).stem]
    if args.match:
        rows = rows[rows.id.str.contains(args.match, regex=False)]
    if rows.empty:
        raise SystemExit("no published rows match")
    keep = table[leaf]["value"]
    try:
        for v in vals:
            table[leaf]["value"] = v
            out = []
            for _, r in rows.iterrows():
                tt, tp = bench_reading(r)
                out.append({"id": r.id, "row_set": r.row_set, "c": int(r.concurrency), "sim_ttft": tt, "sim_tpot": tp,
                            "pub_ttft": published(r, "ttft"), "pub_tpot": published(r, "tpot")})
            df = pd.DataFrame(out)
            print(f"{args.engine} {name} = {v:g}" + (" (engines.yaml)" if v == keep else ""))
            for _, x in df.iterrows():
                print(f"    {x.id:<42} C={x.c:<4} TTFT {x.sim_ttft:8.0f} ms {err(x.sim_ttft, x.pub_ttft)}   "
                      f"TPOT {x.sim_tpot:7.2f} ms {err(x.sim_tpot, x.pub_tpot)}")
            for rs, g in df.groupby("row_set", sort=False):
                print(summary(g, rs))
            print(summary(df, "all"), flush=True)
    finally:
        table[leaf]["value"] = keep


if __name__ == "__main__":
    main()
