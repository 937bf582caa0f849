"""Matplotlib figures: rooflines, quadrant breakdowns, latency CDFs, time series, step timelines,
Pareto fronts and validation scatter plots. Every figure is written atomically."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_write  # noqa: E402
from ..ops.kinds import ATTN_DECODE, ATTN_PREFILL, DTYPES, GEMM, GROUPED_GEMM, is_collective  # noqa: E402
from ..units import format_si  # noqa: E402

QUADRANT_COLOURS = {"prefill_attention": "#1f77b4", "prefill_ffn": "#ff7f0e", "decode_attention": "#2ca02c",
                    "decode_ffn": "#d62728", "prefill_other": "#9edae5", "decode_other": "#98df8a"}


PLOT_FORMATS = ("png", "svg", "pdf")


def _save(fig, path: str | Path) -> Path:
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in PLOT_FORMATS:
        plt.close(fig)
        from ..errors import SimulatorError

        raise SimulatorError(f"{path}: unknown plot format {fmt!r}; use .png, .svg or .pdf")
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format=fmt))
    plt.close(fig)
    return out


ROOF_KINDS = (GEMM, GROUPED_GEMM, ATTN_PREFILL, ATTN_DECODE)  # the ops whose tensor-core rate draws a roof


def roofline(res, path: str | Path) -> Path:
    """The device roofline(s) with every op of the what-if placed by arithmetic intensity and
    achieved FLOP/s, coloured by quadrant; marker area ~ the op's share of its phase time."""
    phases = [res.prefill, res.decode]
    devices = {}
    for pt in phases:
        for part in (pt.plan.attention.hardware, pt.plan.ffn.hardware):
            devices[part.id] = part
    fig, axes = plt.subplots(1, len(devices), figsize=(7.5 * len(devices), 5.5), squeeze=False)
    for ax, (hw_id, hw) in zip(axes[0], devices.items()):
        x = np.logspace(-1, 4, 200)
        bw = hw.hbm_bytes_per_s
        labels = []  # (share, x, y, name): only the largest few are named, so labels do not pile up
        roofs: set[str] = set()
        for pt in phases:
            ops, t = pt.ops, pt.times
            total = float(t.total_s()[0]) or 1.0
            for i, name in enumerate(ops.names):
                # every compute op (GEMMs, MoE grouped GEMMs, attention, elementwise); collectives have no FLOP/s
                if is_collective(ops.kind[i]) or ops["count"][i, 0] == 0 or ops["flop"][i, 0] <= 0 \
                        or ops["bytes"][i, 0] <= 0 or t.time_s[i, 0] <= 0:
                    continue
                dev = pt.plan.attention.hardware if "attention" in ops.quadrant[i] or "other" in ops.quadrant[i] \
                    else pt.plan.ffn.hardware
                if dev.id != hw_id:
                    continue
                dtype = DTYPES[int(ops["dtype"][i, 0])]
                if ops.kind[i] in ROOF_KINDS and hw.peak(dtype):
                    roofs.add(dtype)
                ai = ops["flop"][i, 0] / ops["bytes"][i, 0]
                ach = ops["flop"][i, 0] / t.time_s[i, 0]
                share = ops["count"][i, 0] * t.time_s[i, 0] / total
                q = ops.quadrant[i]
                ax.scatter(ai, ach, s=20 + 400 * share, color=QUADRANT_COLOURS.get(q, "grey"), alpha=0.75,
                           edgecolor="k", lw=0.4)
                if share > 0.05:
                    labels.append((share, ai, ach, name))
        placed: list[list] = []  # ops within a tenth of a decade of a named one share its label
        # the roofs of the tensor-core rates this device's plotted GEMM and attention ops run at (an FP8 plan
        # keeps a bf16 roof where its attention or LM head runs in bf16), not every rate the datasheet lists
        if not roofs and hw.peak("bf16"):  # (no tensor-core op on this device: the bf16 roof for reference)
            roofs.add("bf16")
        # one bandwidth slope, up to the highest roof's ridge, and each compute roof flat from its own ridge
        top = max((hw.peak(d) for d in roofs), default=0.0)
        if top:
            ax.plot([x[0], top / bw], [x[0] * bw, top], "-", color="tab:blue", lw=1.6,
                    label=f"memory roof (HBM {format_si(bw, 'B/s')})")  # (coloured: the compute roofs are black)
        for dtype, style in zip(sorted(roofs, key=lambda d: hw.peak(d)), ("-", "--", ":", "-.")):
            ax.plot([hw.peak(dtype) / bw, x[-1]], [hw.peak(dtype)] * 2, style, color="k", lw=1.2,
                    label=f"{dtype} peak {hw.peak(dtype) / 1e12:,.0f} TFLOP/s")
            ax.axvline(hw.peak(dtype) / bw, color="grey", lw=0.5, ls=":")
        for _, ai, ach, name in sorted(labels, reverse=True)[:6]:
            near = next((p for p in placed if abs(np.log10(p[0] / ai)) < 0.1 and abs(np.log10(p[1] / ach)) < 0.1),
                        None)
            if near is None:
                placed.append([ai, ach, [name]])
            elif name not in near[2]:
                near[2].append(name)
        for ai, ach, names in placed:
            ax.annotate(", ".join(names), (ai, ach), fontsize=7, xytext=(4, 2), textcoords="offset points")
        for q, c in QUADRANT_COLOURS.items():
            ax.scatter([], [], color=c, label=q)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP / byte)")
        ax.set_ylabel("FLOP/s")
        precisions = "/".join(dict.fromkeys(p.name for p in res.prefill.plan.precisions()))
        ax.set_title(f"{hw.name}: {res.model_id}, batch {res.batch}, {precisions}", fontsize=10)
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def quadrant_breakdown(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Stacked bars: each quadrant's time split into compute, memory, communication, overhead."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    parts = ["compute_s", "memory_s", "communication_s", "overhead_s"]
    bottom = np.zeros(len(df))
    for p, c in zip(parts, ["#4c72b0", "#55a868", "#c44e52", "#8172b2"]):
        vals = df[p].to_numpy() * 1e3
        ax.bar(df["quadrant"], vals, bottom=bottom, label=p.removesuffix("_s"), color=c)
        bottom += vals
    # (a prefill quadrant times its whole prompt, a decode quadrant one step: each bar is one pass of its phase)
    ax.set_ylabel("time per pass of the phase (ms)")
    ax.set_xlabel("quadrant (prefill: one prompt; decode: one step)")
    ax.set_title(textwrap.fill(title or "Time per quadrant", 70))
    ax.legend()
    ax.tick_params(axis="x", rotation=20)
    return _save(fig, path)


def latency_cdfs(requests: pd.DataFrame, path: str | Path, slo=None) -> Path:
    done = requests[requests["status"] == "finished"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, col, label in zip(axes, ["ttft_s", "tpot_s", "e2e_s"], ["TTFT", "TPOT", "end-to-end"]):
        v = np.sort(done[col].dropna().to_numpy())
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v))
        lim = {"ttft_s": getattr(slo, "ttft_s", None), "tpot_s": getattr(slo, "tpot_s", None)}.get(col)
        if lim and np.isfinite(lim):
            ax.axvline(lim, color="r", ls="--", label=f"SLO {lim:g} s")
            ax.legend()
        ax.set_xlabel(f"{label} (s)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{label} CDF ({len(v)} finished requests)")
        ax.grid(alpha=0.3)
    fig.suptitle("Latency distributions")
    fig.tight_layout()  # (the figure title above the panels' own, not over them)
    return _save(fig, path)


def time_series(steps: pd.DataFrame, requests: pd.DataFrame, path: str | Path, bucket_s: float | None = None) -> Path:
    """Throughput, queue length and KV-cache occupancy over time."""
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    end = float(steps["end_s"].max()) if len(steps) else 1.0
    bucket_s = bucket_s or max(end / 100, 1e-3)
    bins = np.arange(0, end + bucket_s, bucket_s)
    for pool, g in steps.groupby("pool", observed=True):
        tok, _ = np.histogram(g["end_s"], bins=bins, weights=g["output_tokens"])
        axes[0].plot(bins[:-1], tok / bucket_s, label=pool)
        # a pool of several replicas: each replica's last reading at every bucket end (0 before its first
        # step), then summed (queue) or averaged (KV occupancy) over the pool, so one line per pool
        queued, occ = np.zeros(len(bins)), np.zeros(len(bins))
        reps = g.groupby("replica_id", observed=True)
        for _, r in reps:
            t = r["end_s"].to_numpy(float)
            i = np.searchsorted(t, bins, side="right") - 1
            seen = i >= 0
            queued[seen] += r["queued"].to_numpy(float)[i[seen]]
            occ[seen] += r["kv_occupancy"].to_numpy(float)[i[seen]]
        axes[1].step(bins, queued, where="post", label=pool)
        axes[2].step(bins, occ / max(reps.ngroups, 1), where="post", label=pool)
    # two-line labels: one line each would be taller than its panel and run into the next panel's
    axes[0].set_ylabel("output tokens/s")
    axes[1].set_ylabel("queued requests\n(pool total)")
    axes[1].yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # (a count: no 0.5 requests)
    axes[2].set_ylabel("KV occupancy\n(pool mean, fraction)")
    axes[2].set_xlabel("time (s)")
    fig.align_ylabels(axes)
    axes[0].set_title(f"Throughput, queue and KV-cache occupancy over time ({bucket_s:.3g} s buckets)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def step_timeline(steps: pd.DataFrame, path: str | Path) -> Path:
    """Per-replica Gantt chart of every step, coloured by step kind (prefill, decode, mixed)."""
    lanes = {k: i for i, k in enumerate(sorted(steps["replica_id"].unique()))}
    fig, ax = plt.subplots(figsize=(12, 3 + 0.3 * len(lanes)))
    colours = {"prefill": "#1f77b4", "decode": "#d62728", "mixed": "#9467bd"}
    for kind, g in steps.groupby("kind"):
        for lane, gg in g.groupby("replica_id"):
            ax.broken_barh(list(zip(gg["start_s"], gg["end_s"] - gg["start_s"])), (lanes[lane] - 0.4, 0.8),
                           color=colours.get(kind, "grey"), label=kind)
    handles = {lab: h for h, lab in zip(*ax.get_legend_handles_labels())}
    ax.legend(handles.values(), handles.keys(), fontsize=8, loc="upper right")
    ax.set_yticks(list(lanes.values()), list(lanes.keys()))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("replica")
    ax.set_title(f"Batch steps per replica ({len(steps)} steps)")
    return _save(fig, path)


_AXIS_LABELS = {"tpot_s": "TPOT (ms)", "ttft_s": "TTFT (ms)",
                "tpot_served_s": "TPOT with the batch's prefills (ms)",
                "output_tokens_per_s_per_device": "output tokens/s per device",
                "output_tokens_per_s": "output tokens/s", "cost_usd_per_mtok": "USD per 1M output tokens"}
# latencies drawn in milliseconds, the unit a reader thinks in
_AXIS_SCALE = {"tpot_s": 1e3, "tpot_served_s": 1e3, "ttft_s": 1e3}


def pareto(df: pd.DataFrame, x: str, y: str, path: str | Path, label: str = "config", front: pd.DataFrame | None = None,
           slo: dict | None = None, title: str = "") -> Path:
    """Scatter of every configuration, the Pareto front, and vertical lines at the SLOs on the x axis."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    kx, ky = _AXIS_SCALE.get(x, 1.0), _AXIS_SCALE.get(y, 1.0)
    for key, g in df.groupby(label):
        ax.scatter(g[x] * kx, g[y] * ky, s=12, alpha=0.5, label=str(key))
    if front is not None and len(front):
        f = front.sort_values(x)
        ax.plot(f[x] * kx, f[y] * ky, "k-", lw=1.5, label="Pareto front")
    for name, lim in (slo or {}).items():
        if name == x and lim:  # (an SLO keyed by the column the x axis draws)
            unit = " ms" if kx == 1e3 else ""
            ax.axvline(lim * kx, color="r", ls="--",
                       label=f"SLO {_AXIS_LABELS.get(name, name).split(' (')[0]} = {lim * kx:g}{unit}")
    ax.set_xlabel(_AXIS_LABELS.get(x, x))
    ax.set_ylabel(_AXIS_LABELS.get(y, y))
    ax.set_title(title or f"{_AXIS_LABELS.get(y, y)} vs {_AXIS_LABELS.get(x, x)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def validation_scatter(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Predicted against measured time per measured row, coloured by op, with the diagonal and the ±25% band."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for op, g in df.groupby("op"):
        ax.scatter(g["latency_us"], g["predicted_us"], s=14, alpha=0.7, label=op)
    lo = max(min(df["latency_us"].min(), df["predicted_us"].min()) * 0.8, 1e-3)
    hi = max(df["latency_us"].max(), df["predicted_us"].max()) * 1.25
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1, label="predicted = measured")
    # the band the score's "within 25%" counts: an absolute error up to 25% of the measured time
    ax.plot(xs, xs * 1.25, "k:", lw=0.8, label="±25% of measured")
    ax.plot(xs, xs * 0.75, "k:", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured latency (µs)")
    ax.set_ylabel("predicted latency (µs)")
    ax.set_title(title or "Predicted vs measured kernel latency")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)
