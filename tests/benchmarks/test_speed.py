import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from simulator.analysis.whatif import time_phase
from simulator.devices import DeviceArrays
from simulator.ops.build import StepShape
from simulator.plan import simple_phase
from simulator.specs.catalog import load_hardware, load_model
from simulator.timing import RooflineModel

pytestmark = pytest.mark.benchmark


def _best(fn, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def test_sweep_op_evaluations_per_second():
    """Goal (issue 8): >= 5 million op evaluations per second on one core (build + cost, vectorised)."""
    m = load_model("deepseek-v3")
    hw = [load_hardware(h) for h in ("h100-sxm", "h200-sxm", "h20", "b200-sxm", "mi300x")]
    n = 5000
    rng = np.random.default_rng(0)
    tp = rng.choice([1, 2, 4, 8], n).astype(float)
    ep = rng.choice([1, 8, 16, 32], n).astype(float)
    batch = rng.integers(1, 512, n).astype(float)
    kv = rng.integers(256, 32768, n).astype(float)
    dev = DeviceArrays.of(hw, rng.integers(0, len(hw), n))
    plan = simple_phase(hw[0], m, 32, tp=8)
    tm = RooflineModel()

    def run():
        return time_phase(m, plan, StepShape(decode_seqs=batch, decode_kv=kv), "decode", tm, tp=tp, dp=32 / tp,
                          ep=ep, expert_tp=np.ones(n), attn_dev=dev, ffn_dev=dev)

    secs, pt = _best(run)
    evals = pt.ops.n_ops * n
    rate = evals / secs
    print(f"\n[bench] sweep: {n} configs x {pt.ops.n_ops} ops = {evals} op evaluations in {secs * 1e3:.1f} ms "
          f"-> {rate:,.0f} op evaluations/s")
    assert rate >= 5_000_000


def test_whatif_process_time():
    """Goal: one `quadrant whatif` process, start-up included, in < 1 s."""
    cmd = [sys.executable, "-m", "simulator.cli", "whatif", "--model", "dbrx", "--hardware", "h100-sxm",
           "--devices", "8", "--batch", "64", "--isl", "2048", "--osl", "512", "--json"]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
    json.loads(out.stdout)
    best, median = min(times), float(np.median(times))
    print(f"\n[bench] quadrant whatif process: best {best:.3f} s, median {median:.3f} s")
    assert median < 1.0


def test_validate_thousands_of_rows():
    """Goal: thousands of measurement rows predicted in well under a second."""
    import pandas as pd

    from simulator.validation.measurements import COLUMNS
    from simulator.validation.validate import predict

    rng = np.random.default_rng(1)
    n = 5000
    df = pd.DataFrame({"op": "gemm", "hardware": rng.choice(["h100-sxm", "h20", "mi300x"], n), "dtype": "bf16",
                       "kv_dtype": "", "m": rng.integers(1, 8192, n), "n": 4096, "k": 4096, "latency_us": 100.0})
    df = df.reindex(columns=COLUMNS)
    for c in ("op", "hardware", "dtype", "kv_dtype"):
        df[c] = df[c].astype(object).fillna("")
    specs = {h: load_hardware(h) for h in ("h100-sxm", "h20", "mi300x")}
    secs, _ = _best(lambda: predict(df, specs), repeat=3)
    print(f"\n[bench] validate: {n} rows predicted in {secs * 1e3:.1f} ms")
    assert secs < 0.5


def test_des_saturated_throughput_run():
    """A throughput study (MLPerf-Offline style): one replica kept full by a closed loop of 256."""
    from simulator.build import PlanOptions, quick_deployment
    from simulator.serving.runner import simulate
    from simulator.specs.traffic import simple_traffic

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1, precision="fp8",
                                       kv_precision="fp8"), max_batch_tokens=8192, max_seqs=256)
    traffic = simple_traffic(rate=None, concurrency=256, isl=1024, osl=128,
                             requests=int(os.environ.get("BENCH_REQUESTS", 100_000)), seed=0)
    t0 = time.perf_counter()
    res = simulate(dep, traffic)
    secs = time.perf_counter() - t0
    s = res.summary
    print(f"\n[bench] DES saturated: {traffic.requests:,} requests, {s['steps']:,} steps in {secs:.1f} s -> "
          f"{traffic.requests / secs:,.0f} requests/s, {s['steps'] / secs:,.0f} steps/s")
    assert s["requests_completed"] == traffic.requests
    assert traffic.requests / secs >= 10_000


def test_des_requests_per_second_and_peak_memory():
    """Goal: >= 10,000 simulated requests per wall-clock second for a 100,000-request run
    (chat traffic on 4 replicas at moderate load: ~9 batch steps per request)."""
    from simulator.build import PlanOptions, quick_deployment
    from simulator.serving.runner import simulate
    from simulator.specs.catalog import resolve_workload
    from simulator.specs.traffic import LengthDist, read_traffic

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1, precision="fp8",
                                       kv_precision="fp8"), max_batch_tokens=8192, max_seqs=256, replicas=4)
    chat = read_traffic(resolve_workload("chat", "traffic", "traffic"))
    traffic = replace(chat, requests=int(os.environ.get("BENCH_REQUESTS", 100_000)), rate_per_s=80.0,
                      output=LengthDist("lognormal", median=128, sigma=0.6, minimum=1, maximum=1024))
    t0 = time.perf_counter()
    res = simulate(dep, traffic)
    secs = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = res.summary
    rate = traffic.requests / secs
    print(f"\n[bench] DES: {traffic.requests:,} requests, {s['steps']:,} steps in {secs:.1f} s -> "
          f"{rate:,.0f} requests/s, {s['steps'] / secs:,.0f} steps/s; peak RSS {peak_mib:,.0f} MiB; "
          f"p99 TTFT {s['ttft_s']['p99']:.3f} s, output {s['output_tokens_per_s']:,.0f} tok/s")
    assert s["requests_completed"] + s["requests_rejected"] == traffic.requests
    assert rate >= 10_000
