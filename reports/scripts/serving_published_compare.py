"""Simulate published fixed-concurrency serving runs and compare TTFT / TPOT / throughput.

Reads reports/validation/serving-published/*.csv (one row per published run, with its source URL,
the quoted figures and a trust tag), runs ``simulate`` for each row as a closed loop at the
published concurrency with fixed ISL/OSL and the published engine, and writes
reports/serving-published.md: per-row errors, then per-group mean absolute error and median ratio
(simulated / published), as the issue-9 held-out check computes them.

Run from the repository root:  python reports/scripts/serving_published_compare.py
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import simulator.ops.build as ops_build  # noqa: E402
import simulator.serving.stepcost as stepcost_mod  # noqa: E402
from simulator.build import PlanOptions, quick_deployment  # noqa: E402
from simulator.serving.profiles import release_problem  # noqa: E402
from simulator.serving.runner import simulate  # noqa: E402
from simulator.specs.catalog import load_hardware  # noqa: E402
from simulator.specs.traffic import simple_traffic  # noqa: E402

DATA = ROOT / "reports/validation/serving-published"
OUT = ROOT / "reports/serving-published.md"
NOTES = ROOT / "reports/scripts/serving-published-notes.md"

# The space issue 9's held-out check covers (its "Coverage of those runs"): H100, H200 and B200; Llama-3.1 8B/70B,
# Qwen3-32B, Qwen3-235B-A22B and DeepSeek-V3/R1; FP8, FP4 and BF16 (FP16 counted with BF16: the same 16-bit
# kernels). "One node": at most 8 GPUs. The rows of this page inside it are the closest stand-in for that check.
HELD_OUT_HARDWARE = ("h100-sxm", "h200-sxm", "b200-sxm")
HELD_OUT_MODELS = ("llama-3.1-8b", "llama-3.1-70b", "qwen3-32b", "qwen3-235b-a22b", "deepseek-v3")
HELD_OUT_PRECISIONS = ("bf16", "fp16", "fp8", "fp4")
LOAD_SHAPES = {"closed loop": "C clients, the held-out runs' kind", "open loop": "Poisson arrivals",
               "burst": "every prompt at t = 0"}


def load_rows() -> pd.DataFrame:
    # ``row_set``: the file a row came from (rows.csv first: the MoE runs; dense.csv: the dense-model runs;
    # more.csv: MoE runs added later, tenstorrent #356 and the SGLang cookbook)
    files = sorted(DATA.glob("*.csv"), key=lambda p: (p.stem != "rows", p.name))
    frames = [pd.read_csv(p).assign(row_set=p.stem) for p in files]
    return pd.concat(frames, ignore_index=True)


def requests_for(c: int) -> int:
    # enough for the steady-state window (warm-up = C finished requests, then >= C measured)
    return max(12, 4 * c)


def deployment_for(r: pd.Series, ep: int | None = None):
    ep = int(r.ep) if ep is None else ep
    opts = PlanOptions(model=r.model_id, hardware=r.hardware, devices=int(r.devices), tp=int(r.tp),
                       ep=ep, dp=int(r.dp) if int(r.dp) > 1 else None, precision=r.precision,
                       kv_precision=r.kv_precision)
    recv = r.get("scheduler_recv_interval")
    mf = r.get("memory_fraction")  # the launch's KV memory flag (gpu_memory_utilization, mem_fraction_static, ...)
    wait = r.get("batch_wait_timeout_iters")  # TensorRT-LLM's batch waiting, where the run's config sets it
    return quick_deployment(opts, max_batch_tokens=int(r.max_batch_tokens), max_seqs=max_seqs_of(r),
                            scheduler_recv_interval=int(recv) if recv == recv and recv is not None else 1,
                            frontend_latency_s=frontend_s(r), engine=r.engine,
                            memory_fraction=float(mf) if mf is not None and mf == mf else None,
                            engine_version=release_of(r),
                            batch_wait=(int(wait), float(r.batch_wait_max_tokens_ratio))
                            if wait is not None and wait == wait else (0, 0.0))


def release_of(r: pd.Series) -> str | None:
    """The row's engine release where it is a release number (``0.8.4``, ``1.2.0rc1``) of an engine whose constants
    depend on it; a date or ``main`` is not one, and the row runs as the release the profile models now."""
    v = r.get("engine_version")
    return None if release_problem(v, r.engine) else v


def max_seqs_of(r: pd.Series) -> int | None:
    """The server's running-request limit where the row gives one (``max_seqs``: the launch's --max-num-seqs /
    --max-running-requests / --max_batch_size), else None: the engine's own default for the device, as the server
    ran it (vLLM sizes its KV cache with it, so it is not a free choice)."""
    v = r.get("max_seqs")
    return None if v is None or v != v else int(v)


def frontend_s(r: pd.Series) -> float | None:
    """The row's own frontend latency (a run served through another frontend than the engine's), else None."""
    ms = r.get("frontend_latency_ms")
    return None if ms is None or ms != ms else float(ms) * 1e-3


def bench_traffic(r: pd.Series):
    """The run as the engines' benchmark clients drive it (``vllm bench serve`` / ``sglang.bench_serving``
    with ``--max-concurrency C --request-rate inf``): all C clients send at t = 0, lengths uniform in
    [low x L, L] (the client's ``--random-range-ratio``; 1 = fixed), the published number of prompts. A row
    with a finite ``request_rate`` is an open loop instead: Poisson arrivals at that rate (the clients'
    ``--request-rate R`` with the default burstiness 1) and no client cap (such rows carry ``concurrency`` =
    their prompt count; a capped open loop is not modelled, and the data tests check none is present)."""
    c = int(r.concurrency)
    n = int(r.num_prompts) if not pd.isna(r.num_prompts) else max(10 * c, 8)
    rate = r.get("request_rate")
    if rate is not None and rate == rate and np.isfinite(rate):  # an open loop: Poisson arrivals at the client's rate
        t = simple_traffic(rate=float(rate), concurrency=None, isl=int(r.isl), osl=int(r.osl), requests=n, seed=0)
    else:
        t = simple_traffic(rate=None, concurrency=c, isl=int(r.isl), osl=int(r.osl), requests=n, seed=0,
                           ramp_up_s=0.0)
    lo = float(r.length_low_fraction)
    if lo < 1.0:
        t = replace(t, prompt=replace(t.prompt, kind="uniform", low=int(r.isl * lo), high=int(r.isl)),
                    output=replace(t.output, kind="uniform", low=int(r.osl * lo), high=int(r.osl)))
    return t


# The MoE exchange the model used before commit d65cc04: dispatch + combine all-to-all (and an all-gather
# over TP) for every EP > 1, attention DP or not. The model now sums the experts with one all-reduce over
# the EP group when there is no attention DP; these two lines of simulator/ops/build.py select that.
EXCHANGE_NOW = ("a2a = (ep > 1) & (dp > 1)", "ep_ar = (ep > 1) & (dp <= 1)")
EXCHANGE_OLD = ("a2a = ep > 1", "ep_ar = ep < 0")


@contextlib.contextmanager
def old_all_to_all_exchange():
    """Serving step costs built with the old EP exchange, for the sensitivity section only: a copy of
    simulator/ops/build.py with the two selector lines swapped is compiled and put in place of the
    ``build_ops`` that the step-cost models call (directly and through ``time_phase``), then restored.
    Fails loudly if those lines change."""
    src = Path(ops_build.__file__).read_text()
    for now, old in zip(EXCHANGE_NOW, EXCHANGE_OLD):
        if src.count(now) != 1:
            raise SystemExit(f"{ops_build.__file__}: expected the line '{now}' once; update the EP sensitivity")
        src = src.replace(now, old)
    ns = {"__name__": ops_build.__name__, "__package__": ops_build.__package__, "__file__": ops_build.__file__}
    exec(compile(src, ops_build.__file__, "exec"), ns)
    # (the package ``simulator.analysis`` exports a function named ``whatif``: reach the module itself)
    users = (stepcost_mod, importlib.import_module("simulator.analysis.whatif"))
    saved = [m.build_ops for m in users]
    for m in users:
        m.build_ops = ns["build_ops"]
    try:
        yield
    finally:
        for m, f in zip(users, saved):
            m.build_ops = f


@contextlib.contextmanager
def sglang_fixed_cost_on_path():
    """SGLang's fitted TTFT excess (``frontend_latency_s`` of the ``sglang`` profile, a delay before the scheduler
    has the request) moved onto the engine's path instead, for the sensitivity section only: the profile's
    frontend latency is set to 0 and every SGLang step that prefills pays the same seconds as fixed step time
    (the scheduler and GPU are held for it, so decodes wait). Restored on exit."""
    import simulator.serving.overheads as overheads_mod
    import simulator.serving.runner as runner_mod

    fixed_s = runner_mod.engine_profile("sglang").frontend_latency_s
    profile_of, overhead_of = runner_mod.engine_profile, overheads_mod.OverheadStepCost.overhead_s

    def profile(name: str):
        p = profile_of(name)
        return replace(p, frontend_latency_s=0.0) if name == "sglang" else p

    def overhead_s(self, prefill_seqs, prefill_tokens, decode_seqs, decode_tokens=None):
        t = overhead_of(self, prefill_seqs, prefill_tokens, decode_seqs, decode_tokens)
        return t + fixed_s if prefill_tokens and self.profile.name == "sglang" else t

    runner_mod.engine_profile, overheads_mod.OverheadStepCost.overhead_s = profile, overhead_s
    try:
        yield fixed_s
    finally:
        runner_mod.engine_profile, overheads_mod.OverheadStepCost.overhead_s = profile_of, overhead_of


# Published per-level cross-node latencies of cloud fabrics (reports/validation/scale-out-latency.md: medians of the
# nccl-tests rows fitted there), against the profile's InfiniBand figure: for the two-node rows' sensitivity only.
FABRICS = {"AWS EFA": 34.3e-6, "GCP TCPXO": 125.1e-6}


@contextlib.contextmanager
def scale_out_latency(hw_id: str, latency_s: float):
    """Quick deployments built on ``hw_id`` with its scale-out latency (per log2(nodes) level) set to
    ``latency_s``, for the fabric sensitivity section only; restored on exit."""
    import simulator.build as build_mod

    load = build_mod.load_hardware

    def patched(ref):
        hw = load(ref)
        return replace(hw, scale_out=replace(hw.scale_out, latency_s=latency_s)) if hw.id == hw_id else hw

    build_mod.load_hardware = patched
    try:
        yield
    finally:
        build_mod.load_hardware = load


def bench_run(r: pd.Series, dep=None) -> tuple[pd.DataFrame, str]:
    """The row simulated as its benchmark client ran it (``bench_traffic``): the finished requests and, where the
    simulation rejects some (its KV cache cannot hold them as the source launched it), what it says ("" if none)."""
    res = simulate(dep or deployment_for(r), bench_traffic(r), engine=r.engine)
    rejected = res.requests[res.requests.status == "rejected"]
    note = f"{len(rejected)} of {len(res.requests)} rejected ({rejected.reason.iloc[0]})" if len(rejected) else ""
    return res.requests[res.requests.status == "finished"], note


def published_statistic(r: pd.Series, m: str) -> str:
    """Which statistic a row publishes for ``m`` (ttft | tpot): the mean where the source prints one, else its
    median (``<m>_median_ms``), else "" (none)."""
    mean, med = r.get(f"{m}_mean_ms"), r.get(f"{m}_median_ms")
    if mean is not None and mean == mean:
        return "mean"
    return "median" if med is not None and med == med else ""


def run_row(r: pd.Series) -> dict:
    """Two readings of one published row: the simulator's own summary (fixed lengths, staggered
    start, steady-state window) and the benchmark client's reading (t = 0 burst, the client's length
    spread, mean over every request as the client reports it)."""
    dep = deployment_for(r)
    c = int(r.concurrency)
    rate = r.get("request_rate")
    if rate is not None and rate == rate and np.isfinite(rate):  # open loop: the same rate, more requests
        traffic = simple_traffic(rate=float(rate), concurrency=None, isl=int(r.isl), osl=int(r.osl),
                                 requests=max(200, int(r.num_prompts)), seed=0)
    else:
        traffic = simple_traffic(rate=None, concurrency=c, isl=int(r.isl), osl=int(r.osl),
                                 requests=requests_for(c), seed=0)
    s = simulate(dep, traffic, engine=r.engine).summary

    def ms(x):
        return np.nan if x is None else x * 1e3

    out = {"ttft_ms": ms(s["ttft_s"]["mean"]), "tpot_ms": ms(s["tpot_s"]["mean"]),
           "ttft_med_ms": ms(s["ttft_s"]["p50"]), "tpot_med_ms": ms(s["tpot_s"]["p50"]),
           "output_tok_s": s["output_tokens_per_s"]}
    q, out["bench_rejected"] = bench_run(r, dep)
    span = float(q.finish_s.max() - q.arrival_s.min()) if len(q) else np.nan
    out.update(bench_ttft_ms=float(q.ttft_s.mean()) * 1e3, bench_tpot_ms=float(q.tpot_s.mean()) * 1e3,
               bench_ttft_med_ms=float(q.ttft_s.median()) * 1e3, bench_tpot_med_ms=float(q.tpot_s.median()) * 1e3,
               bench_output_tok_s=float(q.output_tokens.sum()) / span)
    hw_dev = load_hardware(r.hardware)
    if int(r.devices) > hw_dev.scale_up.domain_size:  # sensitivity: the rows that cross nodes, on cloud fabrics
        for name, lat in FABRICS.items():
            with scale_out_latency(hw_dev.id, lat):
                qf, _ = bench_run(r, deployment_for(r))
            out[f"fabric_{name}_tpot_ms"] = float(qf.tpot_s.mean()) * 1e3
            out[f"fabric_{name}_ttft_ms"] = float(qf.ttft_s.mean()) * 1e3
    if r.engine == "sglang" and frontend_s(r) is None:  # sensitivity: the fitted TTFT excess on the engine's path
        with sglang_fixed_cost_on_path():
            q2, _ = bench_run(r)
        out.update(onpath_ttft_ms=float(q2.ttft_s.mean()) * 1e3, onpath_tpot_ms=float(q2.tpot_s.mean()) * 1e3,
                   onpath_ttft_med_ms=float(q2.ttft_s.median()) * 1e3,
                   onpath_tpot_med_ms=float(q2.tpot_s.median()) * 1e3)
    if int(r.ep) > 1 and int(r.dp) <= 1:
        # sensitivity: the old exchange (dispatch/combine all-to-all + all-gather) and expert TP over the
        # same ranks (ep = 1: one all-reduce over the TP-sharded experts)
        with old_all_to_all_exchange():
            s1 = simulate(dep, bench_traffic(r), engine=r.engine).requests
        s1 = s1[s1.status == "finished"]
        out.update(a2a_tpot_ms=float(s1.tpot_s.mean()) * 1e3)
        s2 = simulate(deployment_for(r, ep=1), bench_traffic(r), engine=r.engine).requests
        s2 = s2[s2.status == "finished"]
        out.update(etp_tpot_ms=float(s2.tpot_s.mean()) * 1e3)
    return out


def published_vs_simulated(df: pd.DataFrame) -> pd.DataFrame:
    """Per metric (TTFT, TPOT): the published figure to compare (``pub_<m>_ms``: the mean where the source prints
    one, else its median, ``<m>_median_ms``; ``<m>_stat`` says which) and the simulated figure of the same statistic
    for each reading (``bench_<m>_ms``, ``window_<m>_ms``)."""
    for m in ("ttft", "tpot"):
        mean = df[f"{m}_mean_ms"]
        med = df[f"{m}_median_ms"] if f"{m}_median_ms" in df else pd.Series(np.nan, index=df.index)
        use_med = mean.isna() & med.notna()
        df[f"{m}_stat"] = np.where(use_med, "median", np.where(mean.notna(), "mean", ""))
        df[f"pub_{m}_ms"] = mean.where(~use_med, med)
        df[f"bench_{m}_ms"] = df[f"sim_bench_{m}_ms"].where(~use_med, df[f"sim_bench_{m}_med_ms"])
        df[f"window_{m}_ms"] = df[f"sim_{m}_ms"].where(~use_med, df[f"sim_{m}_med_ms"])
    return df


def held_out_space(df: pd.DataFrame, precisions: bool = True) -> pd.Series:
    """Rows in the held-out check's space (``HELD_OUT_*``): its GPUs on one node and its models, and (``precisions``)
    its precisions."""
    inside = df.hardware.isin(HELD_OUT_HARDWARE) & (df.devices <= 8) & df.model_id.isin(HELD_OUT_MODELS)
    return inside & df.precision.isin(HELD_OUT_PRECISIONS) if precisions else inside


def load_shape(df: pd.DataFrame) -> pd.Series:
    """How each row's client drove the server: "open loop" (Poisson arrivals at a finite ``request_rate``),
    "burst" (every prompt sent at t = 0: as many clients as prompts, more than one) or "closed loop" (C clients,
    each sending its next prompt when the last one finishes: the issue's held-out runs are of this kind)."""
    rate = df.request_rate if "request_rate" in df else pd.Series(np.nan, index=df.index)
    open_loop = rate.notna() & np.isfinite(rate.astype(float))
    burst = ~open_loop & (df.num_prompts == df.concurrency) & (df.concurrency > 1)
    return pd.Series(np.where(open_loop, "open loop", np.where(burst, "burst", "closed loop")), index=df.index)


def group_of(r: pd.Series) -> str:
    return f"{r.gpu.split(' ')[0]} / {r.model_id} / {r.engine} / {r.precision}"


def group_means(df: pd.DataFrame) -> tuple[str, str, int]:
    """TPOT and TTFT mean absolute error (bench reading) with every GPU x model x engine group weighing alike: the
    mean over the groups of each group's mean over its rows; and how many groups have a figure."""
    keys = [df.gpu.str.split(" ").str[0], df.model_id, df.engine]
    per = df.assign(tp=(df.bench_tpot_ratio - 1).abs(), tt=(df.bench_ttft_ratio - 1).abs()).groupby(keys)[["tp", "tt"]]
    means = per.mean()  # NaN for a group with no figure of that kind
    return (f"{means.tp.mean() * 100:.0f}%" if means.tp.notna().any() else "-",
            f"{means.tt.mean() * 100:.0f}%" if means.tt.notna().any() else "-", len(means))


def stats(err: pd.Series, ratio: pd.Series) -> tuple[str, str, int]:
    err, ratio = err.dropna(), ratio.dropna()
    if not len(err):
        return "-", "-", 0
    return f"{np.mean(np.abs(err)) * 100:.0f}%", f"{np.median(ratio):.2f}", len(err)


def fabric_section(rows: pd.DataFrame, pct, num) -> list[str]:
    """The rows that cross nodes, re-run with the scale-out latency of two cloud fabrics (``FABRICS``) in place of
    the profile's InfiniBand figure."""
    names = list(FABRICS)
    lines = ["## Sensitivity: the rows that cross nodes, on cloud fabrics", "",
             "Every all-reduce of a tensor-parallel group spanning two nodes pays the scale-out latency once per "
             "log2(nodes) level. The shipped profile's is InfiniBand's (fitted on nccl-tests over 8 x ConnectX-7 NDR; "
             "reports/validation/scale-out-latency.md), and the published two-node runs read about twice as slow as "
             "that predicts. Re-run with the per-level latencies fitted there for two cloud fabrics ("
             + ", ".join(f"{n} {v * 1e6:.1f} us" for n, v in FABRICS.items()) + "):", "",
             "| id | engine | TPOT pub ms | TPOT InfiniBand | " + " | ".join(f"TPOT {n}" for n in names)
             + " | TTFT pub ms | TTFT InfiniBand | " + " | ".join(f"TTFT {n}" for n in names) + " |",
             "|---|---|---:|---:|" + "---:|" * len(names) + "---:|---:|" + "---:|" * len(names)]
    for _, r in rows.iterrows():
        tp = [f"{num(r[f'sim_fabric_{n}_tpot_ms'], '{:.2f}')} ({pct(r[f'sim_fabric_{n}_tpot_ms'] / r.pub_tpot_ms)})"
              for n in names]
        tt = [f"{num(r[f'sim_fabric_{n}_ttft_ms'], '{:.0f}')} ({pct(r[f'sim_fabric_{n}_ttft_ms'] / r.pub_ttft_ms)})"
              for n in names]
        lines.append(f"| {r.id} | {r.engine} | {num(r.pub_tpot_ms, '{:.2f}')} | {num(r.bench_tpot_ms, '{:.2f}')} "
                     f"({pct(r.bench_tpot_ratio)}) | " + " | ".join(tp) + f" | {num(r.pub_ttft_ms, '{:.0f}')} | "
                     f"{num(r.bench_ttft_ms, '{:.0f}')} ({pct(r.bench_ttft_ratio)}) | " + " | ".join(tt) + " |")
    return lines + [""]


def sglang_on_path_section(sg: pd.DataFrame, pct, num) -> list[str]:
    """The SGLang rows re-run with the profile's fitted TTFT excess on the engine's path (``sglang_fixed_cost_on_path``)
    next to the model as shipped (off the path), per row and per source."""
    from simulator.serving.profiles import engine_profile

    fixed_ms = engine_profile("sglang").frontend_latency_s * 1e3
    lines = ["## Sensitivity: SGLang's fixed TTFT excess on or off the engine's path", "",
             f"The `sglang` profile carries a {fixed_ms:.0f} ms `frontend_latency_s`, fitted to the batch-1 TTFTs "
             "(mechanism not identified, see `simulator/serving/engines.yaml`) and modelled as a delay before the "
             "scheduler has the request: it lengthens TTFT but holds neither the scheduler nor the GPU, so decodes "
             "never wait for it. The **on path** columns re-run every SGLang row (bench reading) with that time "
             "moved onto the engine instead: no frontend delay, and every step that prefills takes it longer, as a "
             "fixed per-prefill cost in the scheduler or on the GPU would (the issue's item 5 names a fixed latency "
             "per MoE prefill). At batch 1 the two are the same; under load the on-path form stalls the running "
             "decodes once per prefill batch.", "",
             "| id | C | ISL/OSL | TPOT pub / off path / on path ms | err off / on | TTFT pub / off path / on path ms "
             "| err off / on |", "|---|---:|---|---|---|---|---|"]
    for _, r in sg.iterrows():
        lines.append(f"| {r.id} | {r.concurrency} | {r.isl}/{r.osl} | {num(r.pub_tpot_ms, '{:.2f}')} / "
                     f"{num(r.bench_tpot_ms, '{:.2f}')} / {num(r.onpath_tpot_ms, '{:.2f}')} | "
                     f"{pct(r.bench_tpot_ratio)} / {pct(r.onpath_tpot_ratio)} | {num(r.pub_ttft_ms, '{:.0f}')} / "
                     f"{num(r.bench_ttft_ms, '{:.0f}')} / {num(r.onpath_ttft_ms, '{:.0f}')} | "
                     f"{pct(r.bench_ttft_ratio)} / {pct(r.onpath_ttft_ratio)} |")
    lines += ["", "| source (id prefix) | n | TPOT MAE off / on | TPOT median ratio off / on | TTFT MAE off / on "
              "| TTFT median ratio off / on |", "|---|---:|---|---|---|---|"]
    keyed = list(sg.groupby(sg.id.str.split("-").str[0], sort=False)) + [("**all SGLang rows**", sg)]
    for name, g in keyed:
        a = [stats(g[f"{w}_{m}_ratio"] - 1, g[f"{w}_{m}_ratio"]) for m in ("tpot", "ttft") for w in ("bench", "onpath")]
        lines.append(f"| {name} | {len(g)} | {a[0][0]} / {a[1][0]} | {a[0][1]} / {a[1][1]} | {a[2][0]} / {a[3][0]} "
                     f"| {a[2][1]} / {a[3][1]} |")
    return lines + [""]


def validate_cli_section(df: pd.DataFrame) -> list[str]:
    """The same rows through the user-facing path, `quadrant validate --serving CSV`: written as its CSV (the
    published mean TTFT/TPOT, the client's length spread, prompt count, engine and layout) and re-simulated by
    ``validate_serving``, which should agree with the bench reading above."""
    import tempfile

    from simulator.validation.serving import validate_serving

    rows = df[df.ttft_mean_ms.notna() & df.tpot_mean_ms.notna() & (df.dp.astype(int) <= 1)]
    rate = rows["request_rate"] if "request_rate" in rows else pd.Series(np.nan, index=rows.index)
    csv = pd.DataFrame({
        "model": rows.model_id, "hardware": rows.hardware, "engine": rows.engine, "devices": rows.devices,
        "tp": rows.tp, "ep": rows.ep, "precision": rows.precision, "kv_precision": rows.kv_precision,
        "isl": rows.isl, "osl": rows.osl,
        # an open loop (a finite client --request-rate) is a rate; a closed loop its clients
        "rate_per_s": rate, "concurrency": rows.concurrency.where(rate.isna()),
        "requests": [int(n) if not pd.isna(n) else max(10 * int(c), 8) for n, c in zip(rows.num_prompts,
                                                                                   rows.concurrency)],
        "ttft_ms": rows.ttft_mean_ms, "tpot_ms": rows.tpot_mean_ms, "statistic": "mean",
        "random_range_ratio": rows.length_low_fraction, "max_batch_tokens": rows.max_batch_tokens,
        # the launch's own running-request limit and KV memory flag where the row gives them, as the bench reading
        "max_seqs": [max_seqs_of(r) or "" for _, r in rows.iterrows()],
        "memory_fraction": rows.get("memory_fraction", pd.Series(np.nan, index=rows.index)),
        "scheduler_recv_interval": [int(x) if x == x and x is not None else 1
                                    for x in rows.get("scheduler_recv_interval", pd.Series(1, index=rows.index))],
        "frontend_latency_ms": rows.get("frontend_latency_ms", pd.Series(np.nan, index=rows.index)),
        **{k: rows.get(k, pd.Series(np.nan, index=rows.index))  # TensorRT-LLM's batch waiting, where the run set it
           for k in ("batch_wait_timeout_iters", "batch_wait_max_tokens_ratio")},
        "engine_version": [release_of(r) or "" for _, r in rows.iterrows()]})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "published.csv"
        csv.to_csv(path, index=False)
        res = validate_serving(path, {}, 100_000)
    got = pd.DataFrame(res["rows"])
    # rows the bench reading left unscored (its simulation rejected requests) are not compared
    same_ttft = np.abs(got.ttft_s_simulated.to_numpy() * 1e3 / rows.sim_bench_ttft_ms.to_numpy() - 1)
    same_ttft = same_ttft[np.isfinite(same_ttft)]
    o = res["overall"]
    return ["## The same rows through `quadrant validate --serving`", "",
            f"The {len(rows)} rows with a published TTFT and TPOT, written as the CSV `validate --serving` reads "
            "(engine and its release, layout, lengths, `random_range_ratio`, `requests`, `statistic: mean`) and "
            "re-simulated by "
            f"it: TTFT median APE {o['ttft_median_ape'] * 100:.0f}% (bias {o['ttft_bias']:.2f}), TPOT median APE "
            f"{o['tpot_median_ape'] * 100:.0f}% (bias {o['tpot_bias']:.2f}). Its simulated TTFT is within "
            f"{np.median(same_ttft) * 100:.1f}% of the bench reading above at the median (max "
            f"{same_ttft.max() * 100:.0f}%: the two sample the client's lengths separately).", ""]


def main() -> None:
    rows = load_rows()
    out = []
    t0 = time.time()
    for _, r in rows.iterrows():
        sim = run_row(r)
        out.append(sim)
        print(f"{r.id}: TTFT {sim['bench_ttft_ms']:.0f} ms  TPOT {sim['bench_tpot_ms']:.2f} ms", file=sys.stderr)
    sim = pd.DataFrame(out)
    df = pd.concat([rows, sim.add_prefix("sim_")], axis=1)
    df = published_vs_simulated(df)
    for reading, pre in (("bench", "sim_bench_"), ("window", "sim_")):
        df[f"{reading}_ttft_ratio"] = df[f"{reading}_ttft_ms"] / df.pub_ttft_ms
        df[f"{reading}_tpot_ratio"] = df[f"{reading}_tpot_ms"] / df.pub_tpot_ms
        df[f"{reading}_tput_ratio"] = df[f"{pre}output_tok_s"] / df.output_tok_s
    # a run the simulator cannot serve as published (some requests rejected) is listed, not scored
    rejected = df.sim_bench_rejected.astype(bool)
    df.loc[rejected, ["bench_ttft_ratio", "bench_tpot_ratio", "bench_tput_ratio"]] = np.nan
    if "sim_a2a_tpot_ms" in df:
        df["a2a_tpot_ratio"] = df.sim_a2a_tpot_ms / df.pub_tpot_ms
        df["etp_tpot_ratio"] = df.sim_etp_tpot_ms / df.pub_tpot_ms
    if "sim_onpath_tpot_ms" in df:
        for m in ("ttft", "tpot"):
            use_med = df[f"{m}_stat"] == "median"
            df[f"onpath_{m}_ms"] = df[f"sim_onpath_{m}_ms"].where(~use_med, df[f"sim_onpath_{m}_med_ms"])
            df[f"onpath_{m}_ratio"] = df[f"onpath_{m}_ms"] / df[f"pub_{m}_ms"]
        df.loc[rejected, ["onpath_ttft_ratio", "onpath_tpot_ratio"]] = np.nan
    df["group"] = df.apply(group_of, axis=1)

    def pct(x):
        return "-" if pd.isna(x) else f"{(x - 1) * 100:+.0f}%"

    def num(x, f="{:.1f}"):
        return "-" if pd.isna(x) else f.format(x)

    lines = [
        "# Serving check against published fixed-concurrency runs",
        "",
        "Generated by `python reports/scripts/serving_published_compare.py` (no hand edits). Published rows: "
        "`reports/validation/serving-published/*.csv` (source URL, the exact figures quoted, and a trust tag per "
        "row). Each row is simulated with the published engine profile (`engine=`), parallel layout, precision "
        "and the published step token budget (`max_batch_tokens`; 8192 where the source does not say), two ways:",
        "",
        "- **bench**: as the engines' benchmark clients run it (`vllm bench serve` / `sglang.bench_serving` with "
        "`--max-concurrency C --request-rate inf`): all C clients send at t = 0, the published number of prompts, "
        "the client's length spread (`--random-range-ratio`), and the mean over every request, as the client "
        "prints it. This is the reading to compare.",
        f"- **window**: `simulate`'s own summary: fixed lengths, staggered starts, {requests_for(1)} or 4 x C "
        "requests, steady-state window only.",
        "",
        "Errors are simulated / published - 1; the group figures are the mean absolute error and the median "
        "ratio, the statistics issue 9's held-out check uses. Where a source prints only the median TTFT or TPOT "
        "(marked *md*), the simulated median of the same reading is compared. A row whose simulation rejects "
        "requests (its KV cache cannot hold them as the source launched it) is listed but left out of the errors.",
        "",
        "| id | GPU x n | model | engine | prec | ISL/OSL | C | TTFT pub / bench / window ms | err (bench) "
        "| TPOT pub / bench / window ms | err (bench) | out tok/s pub / bench | err | trust |",
        "|---|---|---|---|---|---|---:|---|---:|---|---:|---|---:|---|",
    ]
    def cannot(r):
        return f" (simulated: {r.sim_bench_rejected})" if r.sim_bench_rejected else ""

    def md(r, m):
        return " *md*" if r[f"{m}_stat"] == "median" else ""

    for _, r in df.iterrows():
        lines.append(
            f"| [{r.id}]({r.source_url}) | {r.hardware} x {r.devices} (TP{r.tp} EP{r.ep}) | {r.model_id} | "
            f"{r.engine} | {r.precision} | {r.isl}/{r.osl} | {r.concurrency} | {num(r.pub_ttft_ms, '{:.0f}')} / "
            f"{num(r.bench_ttft_ms, '{:.0f}')} / {num(r.window_ttft_ms, '{:.0f}')}{md(r, 'ttft')} | "
            f"{pct(r.bench_ttft_ratio)} | {num(r.pub_tpot_ms, '{:.2f}')} / {num(r.bench_tpot_ms, '{:.2f}')} / "
            f"{num(r.window_tpot_ms, '{:.2f}')}{md(r, 'tpot')} | {pct(r.bench_tpot_ratio)} | "
            f"{num(r.output_tok_s, '{:,.0f}')} / {num(r.sim_bench_output_tok_s, '{:,.0f}')} | "
            f"{pct(r.bench_tput_ratio)} | {r.trust}{cannot(r)} |")

    def table(title: str, keyed) -> list[str]:
        t = [title, "", "| group | n | TPOT MAE | TPOT median ratio | TTFT MAE | TTFT median ratio | tok/s MAE "
             "| TPOT MAE (window) | TTFT MAE (window) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, g in keyed:
            tp_mae, tp_med, _ = stats(g.bench_tpot_ratio - 1, g.bench_tpot_ratio)
            tt_mae, tt_med, _ = stats(g.bench_ttft_ratio - 1, g.bench_ttft_ratio)
            tu_mae, _, _ = stats(g.bench_tput_ratio - 1, g.bench_tput_ratio)
            wtp, _, _ = stats(g.window_tpot_ratio - 1, g.window_tpot_ratio)
            wtt, _, _ = stats(g.window_ttft_ratio - 1, g.window_ttft_ratio)
            t.append(f"| {name} | {len(g)} | {tp_mae} | {tp_med} | {tt_mae} | {tt_med} | {tu_mae} | {wtp} | {wtt} |")
        return t + [""]

    lines += [""] + table("## Per group (bench reading unless marked)",
                          list(df.groupby("group", sort=False)) + [("**all rows**", df)])
    space = df[held_out_space(df)]
    closed = space[load_shape(space) == "closed loop"]
    lines += table("## In the held-out check's space (H100 / H200 / B200 on one node; Llama-3.1 8B / 70B, "
                   "Qwen3-32B, Qwen3-235B-A22B, DeepSeek-V3/R1; BF16 / FP16, FP8, FP4)",
                   [("**these rows**", space), ("the same GPUs and models, any precision (adds W4A16)",
                                                df[held_out_space(df, precisions=False)])]
                   + [(f"{e}", g) for e, g in space.groupby("engine", sort=True)]
                   + [(f"{k} ({LOAD_SHAPES[k]})", g) for k, g in space.groupby(load_shape(space), sort=True)]
                   + [(f"closed loop, {e}", g) for e, g in closed.groupby("engine", sort=True)])
    tp_g, tt_g, n_g = group_means(closed)
    lines += [f"Weighing each GPU x model x engine group of the closed-loop rows alike ({n_g} groups; a group's "
              f"error is the mean over its rows), instead of each row: TPOT {tp_g}, TTFT {tt_g}.", ""]
    lines += table("## By row set (rows.csv: MoE models; dense.csv: dense models; more.csv: MoE runs added later; "
                  "prs.csv: runs from pull requests and issues)",
                  df.groupby("row_set", sort=False))
    lines += table("## By concurrency", df.groupby(pd.cut(df.concurrency, [0, 1, 8, 32, 10**6],
                                                          labels=["C = 1", "C = 2-8", "C = 9-32", "C > 32"]),
                                                   observed=True))
    if "a2a_tpot_ratio" in df:
        ep = df[df.a2a_tpot_ratio.notna()]
        lines += ["## Sensitivity: the MoE exchange with attention TP (rows with EP > 1, no attention DP)", "",
                  "With attention TP and no all-to-all backend, SGLang (`--moe-a2a-backend none`, the default: "
                  "`create_moe_dispatcher` returns the rank-local `StandardDispatcher`) and TensorRT-LLM (attention "
                  "DP off) keep every token on every rank and sum the experts' outputs with one all-reduce; "
                  "`simulate` models EP that way (`moe_ep_all_reduce` in `simulator/ops/build.py`, the **model** "
                  "column). The other two columns re-run those rows (bench reading) with the exchange the model "
                  "used before: a dispatch and a combine all-to-all plus an all-gather over TP per MoE layer "
                  "(**old a2a**, the all-to-all path the model keeps for attention DP), and with expert TP over "
                  "the same ranks (**expert TP**, ep = 1: one all-reduce of TP-sharded experts, no routing "
                  "imbalance across ranks).", "",
                  "| id | TPOT pub | TPOT sim (model) | TPOT sim (old a2a) | TPOT sim (expert TP) | err (model) "
                  "| err (old a2a) | err (expert TP) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for _, r in ep.iterrows():
            lines.append(f"| {r.id} | {r.pub_tpot_ms:.2f} | {r.bench_tpot_ms:.2f} | {r.sim_a2a_tpot_ms:.2f} | "
                         f"{r.sim_etp_tpot_ms:.2f} | {pct(r.bench_tpot_ratio)} | {pct(r.a2a_tpot_ratio)} | "
                         f"{pct(r.etp_tpot_ratio)} |")
        m_mae, m_med, _ = stats(ep.bench_tpot_ratio - 1, ep.bench_tpot_ratio)
        a_mae, a_med, _ = stats(ep.a2a_tpot_ratio - 1, ep.a2a_tpot_ratio)
        e_mae, e_med, _ = stats(ep.etp_tpot_ratio - 1, ep.etp_tpot_ratio)
        lines += ["", f"TPOT over these {len(ep)} rows: MAE {m_mae} (median ratio {m_med}) with the model's "
                  f"all-reduce, {a_mae} ({a_med}) with the old all-to-all exchange, {e_mae} ({e_med}) with "
                  "expert TP.", ""]
    if "onpath_tpot_ratio" in df:
        lines += sglang_on_path_section(df[df.onpath_tpot_ms.notna()], pct, num)
    fab = [c for c in df.columns if c.startswith("sim_fabric_") and c.endswith("_tpot_ms")]
    if fab:
        lines += fabric_section(df[df[fab[0]].notna()], pct, num)
    lines += validate_cli_section(df)
    lines += [f"Simulated {len(df)} rows in {time.time() - t0:.0f} s.", ""]
    if NOTES.exists():
        lines += [NOTES.read_text()]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
