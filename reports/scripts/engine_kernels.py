"""Kernel-level checks of the serving engines' own kernels: writes reports/validation/engine-kernels.md.

**Fused MoE.** The serving engines run routed experts through their own Triton fused-MoE kernels. Their pull
requests publish those kernels' times per batch (vLLM ``benchmarks/kernels/benchmark_moe.py``, SGLang
``tuning_fused_moe_triton.py``: the whole MoE call, routing to the top-k reduction, in a CUDA graph) in
``reports/validation/published/engine-moe/fused-moe-kernels.csv`` (sources in the README beside it). Each row is
timed here as the measurement contract's ``moe`` op (``simulator.validation.validate``) twice: with the device
profile alone (the roofline, whose grouped GEMMs carry DeepGEMM's efficiency), and under vLLM's engine profile
(``EngineMoEKernels`` with ``moe_memory_fraction`` from ``serving/engines.yaml``), and the report gives the median
ratio simulated / published per table and batch band.

**Block-scaled FP8 GEMMs.** A block-scaled FP8 checkpoint's dense GEMMs run in the engine's block-FP8 kernels.
``reports/validation/published/engine-gemm/block-fp8-gemms.csv`` holds vLLM's kernels timed at prefill sizes
(M >= 1024) in vLLM's and SGLang's pull requests, with DeepGEMM at the same shapes; each is timed here as the
contract's ``gemm`` op on the H100 profile (the Hopper parts share their tensor-core peak), and the median of
published / simulated over vLLM's rows is the vLLM profile's ``block_fp8_gemm_factor`` (``serving/engines.yaml``).
Run from the repository root::

    python reports/scripts/engine_kernels.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from simulator.serving.profiles import engine_profile  # noqa: E402
from simulator.specs.catalog import load_hardware  # noqa: E402
from simulator.timing.engine_moe import EngineMoEKernels  # noqa: E402
from simulator.timing.roofline import RooflineModel  # noqa: E402
from simulator.validation.validate import ops_from_measurements  # noqa: E402

DATA = ROOT / "reports/validation/published/engine-moe/fused-moe-kernels.csv"
GEMMS = ROOT / "reports/validation/published/engine-gemm/block-fp8-gemms.csv"
OUT = ROOT / "reports/validation/engine-kernels.md"
PROFILES = ("h100-sxm", "h200-sxm", "b200-sxm", "a100-sxm", "h20", "l40s")  # GPUs with a hardware profile here
BANDS = [(1, 8), (9, 64), (65, 512), (513, 8192)]


def contract_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """The published rows this check can time: a GPU with a profile, the whole MoE call (not a lone GEMM), and a
    known shape; as measurement-contract ``moe`` rows."""
    keep = (raw["gpu_profile"].isin(PROFILES) & ~raw["what_is_timed"].str.contains("first GEMM", case=False)
            & raw[["E", "N", "K", "top_k"]].notna().all(axis=1))
    d = raw[keep].reset_index(drop=True)
    return pd.DataFrame({"op": "moe", "hardware": d["gpu_profile"],
                         "dtype": np.where(d["dtype"].str.startswith("fp8"), "fp8", "bf16"), "kv_dtype": "",
                         "tokens": d["m"].astype(float), "hidden": d["K"].astype(float),
                         "intermediate": d["N"].astype(float), "num_experts": d["E"].astype(float),
                         "top_k": d["top_k"].astype(float), "latency_us": d["kernel_us"].astype(float),
                         **{c: np.nan for c in ("m", "n", "k", "batch", "q_len", "kv_len", "num_heads",
                                                "num_kv_heads", "head_dim", "bytes", "world")}}), d


def times_us(df: pd.DataFrame, timing, part: str = "time_s") -> np.ndarray:
    """Each row's simulated time in microseconds: its ops' ``part`` (``time_s``, or ``compute_s`` /
    ``overhead_s`` of the op breakdown) summed."""
    specs = {h: load_hardware(h) for h in sorted(set(df["hardware"]))}
    ops = ops_from_measurements(df, specs)
    t = timing.evaluate(ops)
    per_row = np.zeros(len(df))
    np.add.at(per_row, ops.arrays["row"][:, 0].astype(int), t.weighted(getattr(t, part))[:, 0])
    return per_row * 1e6


def gemm_rows(raw: pd.DataFrame, quant: int = 0) -> pd.DataFrame:
    """The block-FP8 GEMM rows as contract ``gemm`` rows on the H100 profile (``quant`` 0: the GEMM alone, 1: with
    the activation quantisation kernel in front)."""
    return pd.DataFrame({"op": "gemm", "hardware": "h100-sxm", "dtype": "fp8", "kv_dtype": "",
                         "m": raw["m"].astype(float), "n": raw["n"].astype(float), "k": raw["k"].astype(float),
                         "latency_us": raw["latency_us"].astype(float), "quant": quant,
                         **{c: np.nan for c in ("batch", "q_len", "kv_len", "num_heads", "num_kv_heads", "head_dim",
                                                "tokens", "hidden", "intermediate", "num_experts", "top_k", "bytes",
                                                "world")}})


def block_fp8_factor(raw: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """Published / device-profile time of every block-FP8 GEMM row (``ratio``), and the factor as the simulation
    applies it: the median over vLLM's kernels of (published - the profile's fixed floor) / the profile's compute
    time. A row whose benchmark includes the activation quantisation has the device profile's time for that kernel
    taken off first: the simulation books it as its own op."""
    d = raw.copy()
    roof = RooflineModel()
    gemm = times_us(gemm_rows(raw), roof)
    quant = times_us(gemm_rows(raw, 1), roof) - gemm
    d["gemm_us"] = d["latency_us"] - np.where(d["includes_activation_quant"] == 1, quant, 0.0)
    d["model_us"] = gemm
    d["ratio"] = d["gemm_us"] / gemm
    d["compute_ratio"] = (d["gemm_us"] - times_us(gemm_rows(raw), roof, "overhead_s")) / times_us(
        gemm_rows(raw), roof, "compute_s")
    vllm = d["kernel"].str.startswith("vLLM")
    return float(d.loc[vllm, "compute_ratio"].median()), d


def main() -> None:
    raw = pd.read_csv(DATA)
    df, d = contract_rows(raw)
    vllm = dict(engine_profile("vllm").moe_memory_fraction)
    d["device"] = times_us(df, RooflineModel()) / df["latency_us"]
    d["engine"] = times_us(df, EngineMoEKernels(RooflineModel(), vllm)) / df["latency_us"]
    d["kind"] = np.where(d["dtype"].str.startswith("fp8"), "fp8", "bf16")
    d["band"] = pd.cut(d["m"], [lo - 0.5 for lo, _ in BANDS] + [BANDS[-1][1] + 0.5],
                       labels=[f"{lo}-{hi}" for lo, hi in BANDS])

    def cell(g: pd.DataFrame, col: str) -> str:
        return f"{g[col].median():.2f} (n={len(g)})" if len(g) else "-"

    lines = [
        "# The serving engines' own kernels against their published benchmarks",
        "",
        "Generated by `python reports/scripts/engine_kernels.py`.",
        "",
        "## Fused MoE",
        "",
        "From `reports/validation/published/engine-moe/fused-moe-kernels.csv` (the README beside it lists every "
        "source, its command and caveats). Each row is a published Triton fused-MoE kernel time per batch (M tokens; "
        "the whole MoE call: routing, both expert GEMMs, activation and reduce) from a vLLM or SGLang pull request, "
        "timed here as the measurement contract's `moe` op. Cells are the median ratio simulated / published "
        "(1.00 = exact; above 1 the simulation is slower) and the rows behind it.",
        "",
        "* **device profile**: the hardware profile's grouped GEMMs (DeepGEMM-grade efficiency), what `whatif` and "
        "the kernel checks use;",
        f"* **vLLM profile**: the same under `serving/engines.yaml`'s vLLM `moe_memory_fraction` "
        f"({', '.join(f'{k} {v:g}' for k, v in vllm.items())} of the bandwidth for expert GEMMs of that format), "
        f"what `simulate` and `plan` use for vLLM.",
        "",
        f"{len(d)} rows of {d.groupby(['pr', 'gpu_profile', 'dtype', 'config']).ngroups} tables are timed "
        f"(rows on GPUs without a profile here, a lone first GEMM, or an unstated shape are left out: "
        f"{len(raw) - len(d)}).",
        "",
        "### By format and batch",
        "",
        "| format | model | " + " | ".join(f"M {lo}-{hi}" for lo, hi in BANDS) + " |",
        "|---|---|" + "---|" * len(BANDS),
    ]
    # FP8 split by weight scaling too: the fraction was fitted on a block-scaled model (Qwen3-235B-A22B-FP8)
    d["scaling"] = np.where(d["kind"] == "bf16", "", np.where(d["block_shape"] == "128x128", " block-scaled",
                                                              np.where(d["block_shape"] == "none", " per-tensor",
                                                                       " scaling not stated")))
    for kind in ("bf16", "fp8", "fp8 block-scaled", "fp8 per-tensor", "fp8 scaling not stated"):
        g = d[(d["kind"] == kind) | (d["kind"] + d["scaling"] == kind)]
        if not len(g):
            continue
        for col, name in (("device", "device profile"), ("engine", "vLLM profile")):
            lines.append(f"| {kind} | {name} | " + " | ".join(cell(g[g["band"] == b], col)
                                                           for b in g["band"].cat.categories) + " |")
    lines += ["", "### By table", "",
              "| source | GPU | model | E / N / K / top-k | dtype | config | M | device profile | vLLM profile |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (pr, gpu, dt, cfg), g in d.groupby(["pr", "gpu_profile", "dtype", "config"], sort=True):
        r = g.iloc[0]
        lines.append(f"| [{r['repo'].split('/')[1]} #{pr}]({r['url']}) | {gpu} | {r['model']} | "
                     f"{r['E']:g} / {r['N']:g} / {r['K']:g} / {r['top_k']:g} | {dt} | {cfg} | "
                     f"{g['m'].min():g}-{g['m'].max():g} | {cell(g, 'device')} | {cell(g, 'engine')} |")
    fp8_dev = d[(d["kind"] == "fp8") & (d["m"] <= 512)]["device"].median()
    fp8_eng = d[(d["kind"] == "fp8") & (d["m"] <= 512)]["engine"].median()
    blk = d[(d["kind"] == "fp8") & (d["m"] <= 512) & (d["block_shape"] == "128x128")]
    lines += [
        "",
        "### What it says",
        "",
        f"* At decode sizes (M <= 512) the device profile times the engines' FP8 fused-MoE kernels at a median "
        f"{fp8_dev:.2f} of the published time; vLLM's `moe_memory_fraction` puts them at {fp8_eng:.2f} (the "
        f"block-scaled tables alone, as the model the fraction was fitted on: {blk['device'].median():.2f} and "
        f"{blk['engine'].median():.2f}, n={len(blk)}). So the "
        "fraction is not these kernels' bandwidth: the kernels stream expert weights about as fast as the "
        "device profile's DeepGEMM-grade grouped GEMMs. The fraction was fitted on served decode steps (ML.ENERGY, "
        "vLLM 0.11.1, Qwen3-235B-A22B-FP8 on H100, engines.yaml), where the FP8 MoE steps read about a third "
        "slower than the simulation without it; it stands for that step time, whose mechanism these kernel "
        "benchmarks do not show (not the block-FP8 GEMMs below either: 0.11.1 runs them in DeepGEMM). It stays as "
        "the serving-level figure it is.",
        "* At prefill sizes (M > 512) the device profile is within about 20% of the published kernels (BF16 faster "
        "than published, FP8 on either side), so nothing here supports a compute-side slowdown of the engines' "
        "fused-MoE kernels in prefill.",
        "* Tables published without a tuned configuration (vLLM's default configs) are slower than tuned ones by "
        "0-11% on H100/H200/A100 and by up to about 1.9x on H20 (vLLM #45142, SGLang #38913).",
    ]
    factor, g = block_fp8_factor(pd.read_csv(GEMMS))
    lines += [
        "",
        "## Block-scaled FP8 dense GEMMs",
        "",
        "From `reports/validation/published/engine-gemm/block-fp8-gemms.csv`: a checkpoint released in FP8 with "
        "128x128 weight blocks (DeepSeek-V3/R1, the Qwen3 FP8 releases: `fp8_block_scaled` in the model spec) runs "
        "its dense GEMMs in the engine's block-FP8 kernels. Each row is timed as a `gemm` op on the H100 profile "
        "(the Hopper parts share their FP8 peak; the SGLang tables do not name their GPU) and the ratio is "
        "published / simulated.",
        "",
        "| row | kernel | M x N x K | published (us) | GEMM alone (us) | device profile (us) | published / simulated "
        "| on compute |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in g.iterrows():
        lines.append(f"| [{r['id']}]({r['url']}) | {r['kernel']} | {r['m']:g} x {r['n']:g} x {r['k']:g} | "
                     f"{r['latency_us']:.1f} | {r['gemm_us']:.1f} | {r['model_us']:.1f} | {r['ratio']:.2f} | "
                     f"{r['compute_ratio']:.2f} |")
    dg = g[g["kernel"].str.startswith("DeepGEMM")]["ratio"]
    p = engine_profile("vllm")
    before = ".".join(map(str, p.block_fp8_before)) if p.block_fp8_before else "-"
    lines += [
        "",
        "*GEMM alone*: the published time less the device profile's activation-quantisation kernel where the benchmark "
        "includes one (the simulation books it as its own op). *on compute*: (GEMM alone - the profile's fixed floor) "
        "/ the profile's compute time, the way the factor is applied. Rows below M = 1024 are left out: in vLLM "
        "PR #23280's table M = 1-256 all take about 34 us, a launch-bound benchmark (no CUDA graph) rather than the "
        "kernel.",
        "",
        f"* DeepGEMM at the same shapes: median {dg.median():.2f} of the device profile (the profile is built on "
        "DeepGEMM's published rows).",
        f"* vLLM's block-FP8 kernels: median **{factor:.2f}** x the device profile's compute time over "
        f"{int(g['kernel'].str.startswith('vLLM').sum())} rows at M >= 1024 (vLLM's own benchmark reads higher than "
        f"SGLang's of the bare kernel). `serving/engines.yaml` gives vLLM `block_fp8_gemm_factor` "
        f"{p.block_fp8_gemm_factor:g} on {', '.join(p.block_fp8_hardware)}, for releases before {before}: a pool "
        "that names such an `engine_version` (`--engine-version`) has a dense FP8 GEMM of a block-scaled model take "
        "that factor x its compute time where compute binds (prefill); a decode-sized GEMM is memory- or floor-bound "
        "and keeps its time. From that release on vLLM runs these GEMMs in DeepGEMM by default (vLLM PR #24462, "
        "merged 2025-09-08), at the device profile's rate.",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(d)} rows)")


if __name__ == "__main__":
    main()
