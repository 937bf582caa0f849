"""Fit the profiles' ``scale_out.latency`` from published cross-node small-message collectives.

The timing model (simulator/timing/collectives.py) gives a collective whose group spans ``nodes`` scale-up
domains the fixed cost ``latency + latency_per_rank * (d - 1) + scale_out.latency * ceil(log2(nodes))``,
with ``d`` the members inside one domain and the first two terms from ``efficiency.collectives.*`` of the
profile. For every cross-node row of reports/validation/published/kernels.csv (sources.py section 7 and the
A3 Mega rows of section 4) this script predicts the row with ``scale_out.latency = 0`` (everything else as
the profile has it, bandwidth terms included) and reads off the scale-out latency per tree level the row
implies::

    implied = (measured - predicted_without_scale_out_latency) / ceil(log2(nodes))

Rows up to ``FIT_MAX_BYTES`` are in the latency regime and enter the fit; the larger rows are printed as a
check of the bandwidth side only. Fabrics differ by up to 10x at the same size, so the figure is given per
fabric class and never pooled: the InfiniBand class is the one the DGX-style profiles represent.

    python reports/scripts/scale_out_latency.py          # from the repository root; prints markdown tables
    python reports/scripts/scale_out_latency.py --value-us 10  # predicts every row with that value instead
                                                               # of the shipped profiles' values
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from simulator.timing.roofline import RooflineModel  # noqa: E402
from simulator.validation.measurements import read_measurements  # noqa: E402
from simulator.validation.validate import load_specs, predict  # noqa: E402

PUBLISHED = ROOT / "reports/validation/published/kernels.csv"
FIT_MAX_BYTES = 64 * 1024  # the latency regime: the bandwidth terms are < 3 us of these rows on every profile

# (fabric class, id pattern, enters the DGX-class InfiniBand figure)
CLASSES = (
    ("InfiniBand NDR, bare-metal HGX H100, 2 nodes", r"^NCCLT309-h100-ib-2x8-", True),
    ("InfiniBand NDR, HGX H100 VMs (passthrough), 4 nodes", r"^NCCLT309-h100-ib-4x8-", True),
    ("fabric not stated, 16 H100 nodes", r"^NCCL1469-", False),
    ("RoCE 400G, GCP A3 Ultra H200 (all-gather)", r"^A3U-", False),
    ("RoCE v2, OCI A100 (BM.GPU4.8)", r"^OKE-A100-", False),
    ("AWS EFA (SRD), p5 H100 / p6 B200", r"^EFA-", False),
    ("GCP GPUDirect-TCPXO, A3 Mega H100", r"^A3MEGA-", False),
)


def cross_node_rows() -> pd.DataFrame:
    df = read_measurements(PUBLISHED)
    pats = "|".join(p for _, p, _ in CLASSES)
    return df[df["id"].astype(str).str.contains(pats)].reset_index(drop=True)


def with_scale_out_latency(specs: dict, latency_s: float | None) -> dict:
    """The specs with scale_out.latency replaced (None: as shipped)."""
    if latency_s is None:
        return specs
    return {k: replace(s, scale_out=replace(s.scale_out, latency_s=latency_s)) for k, s in specs.items()}


def implied_latency(df: pd.DataFrame, specs: dict) -> pd.DataFrame:
    """Per row: nodes, tree levels, the prediction without scale-out latency and the implied latency (us)."""
    pred0 = predict(df, with_scale_out_latency(specs, 0.0), RooflineModel())
    dom = np.array([float(specs[h].scale_up.domain_size) for h in df["hardware"]])
    world = df["world"].to_numpy(dtype=float)
    out = df[["id", "hardware", "op", "bytes", "world", "latency_us", "trust"]].copy()
    out["nodes"] = np.ceil(world / np.minimum(world, dom)).astype(int)
    out["levels"] = np.ceil(np.log2(out["nodes"])).astype(int)
    out["pred0_us"] = pred0["predicted_us"].to_numpy()
    out["implied_us"] = (out["latency_us"] - out["pred0_us"]) / out["levels"]
    out["class"] = ""
    for name, pat, _ in CLASSES:
        out.loc[out["id"].astype(str).str.contains(pat), "class"] = name
    return out


def fit_table(rows: pd.DataFrame) -> pd.DataFrame:
    fit = rows[rows["bytes"] <= FIT_MAX_BYTES]
    recs = []
    for name, _, ib in CLASSES:
        g = fit[fit["class"] == name]
        if len(g):
            v = g["implied_us"].to_numpy()
            recs.append({"class": name, "hardware": ",".join(sorted(set(g["hardware"]))), "n": len(g),
                         "nodes": ",".join(str(n) for n in sorted(set(g["nodes"]))), "median_us": np.median(v),
                         "min_us": v.min(), "max_us": v.max(), "dgx_ib": ib})
    return pd.DataFrame(recs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--value-us", type=float, default=None,
                    help="predict every row with this scale-out latency (default: the shipped profiles' values)")
    args = ap.parse_args()
    df = cross_node_rows()
    specs = load_specs(df)
    rows = implied_latency(df, specs)
    fit = fit_table(rows)
    ib = rows[rows["class"].isin(fit.loc[fit["dgx_ib"], "class"]) & (rows["bytes"] <= FIT_MAX_BYTES)]
    v = ib["implied_us"].to_numpy()
    print(f"## Implied scale-out latency per tree level (rows <= {FIT_MAX_BYTES // 1024} KiB)\n")
    print("| fabric class | hardware | rows | nodes | median (us) | min-max (us) |\n|---|---|---|---|---|---|")
    for r in fit.itertuples():
        print(f"| {r._1} | {r.hardware} | {r.n} | {r.nodes} | {r.median_us:.1f} | {r.min_us:.1f}-{r.max_us:.1f} |")
    print(f"\nDGX-class InfiniBand figure (all {len(v)} InfiniBand rows): median {np.median(v):.1f} us, "
          f"interquartile {np.percentile(v, 25):.1f}-{np.percentile(v, 75):.1f} us, "
          f"range {v.min():.1f}-{v.max():.1f} us\n")
    cols = ["id", "op", "bytes", "world", "nodes", "latency_us", "pred0_us", "implied_us", "pred_us", "ratio"]
    value = None if args.value_us is None else args.value_us * 1e-6
    p = predict(df, with_scale_out_latency(specs, value), RooflineModel())
    rows["pred_us"] = p["predicted_us"].to_numpy()
    rows["ratio"] = rows["pred_us"] / rows["latency_us"]
    shipped = ", ".join(f"{h} {s.scale_out.latency_s * 1e6:g} us" for h, s in sorted(specs.items()))
    print("## Rows\n")
    print("pred0 = predicted with scale_out.latency = 0; pred = predicted with "
          + (f"scale_out.latency = {args.value_us:g} us" if value is not None else f"the shipped values ({shipped})")
          + "; ratio = pred / measured.\n")
    hdr = cols
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for r in rows.sort_values(["class", "bytes"]).itertuples():
        vals = [r.id, r.op, f"{r.bytes:.0f}", f"{r.world:.0f}", str(r.nodes), f"{r.latency_us:.1f}",
                f"{r.pred0_us:.1f}", f"{r.implied_us:.1f}" + ("" if r.bytes <= FIT_MAX_BYTES else " (check)"),
                f"{r.pred_us:.1f}", f"{r.ratio:.2f}"]
        print("| " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main()
