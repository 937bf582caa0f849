"""Serving-simulator speed targets of issue 9 (run explicitly: python -m pytest tests/benchmarks -s).

- >= 20,000 simulated requests per wall-clock second on one core for the shipped chat traffic on the
  shipped aggregated, P/D and A/F deployments;
- 1,000,000 requests in under 2 GB peak RSS (run in a fresh process so the peak is this run's).

BENCH_REQUESTS sets the run size (default 20,000 for the rate, 1,000,000 for memory)."""

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from simulator.serving.runner import simulate
from simulator.specs.catalog import resolve_workload
from simulator.specs.deployment import read_deployment
from simulator.specs.traffic import read_traffic

pytestmark = pytest.mark.benchmark


@pytest.mark.parametrize("dep", ["dbrx-8xh100", "dbrx-h100-prefill-h20-decode", "doubao-class-afd"])
def test_chat_requests_per_second(dep):
    n = int(os.environ.get("BENCH_REQUESTS", 20_000))
    d = read_deployment(resolve_workload(dep, "deployments", "deployment"))
    t = replace(read_traffic(resolve_workload("chat", "traffic", "traffic")), requests=n)
    t0 = time.perf_counter()
    s = simulate(d, t).summary
    secs = time.perf_counter() - t0
    t0 = time.perf_counter()  # again in the same process: the pool's step-cost tables are built (cached) already
    simulate(d, t)
    warm = time.perf_counter() - t0
    print(f"\n[bench] chat on {dep}: {n:,} requests, {s['steps']:,} steps in {secs:.1f} s -> {n / secs:,.0f} req/s "
          f"(a second run, tables cached: {n / warm:,.0f} req/s; {_yardstick()})")
    assert s["requests_completed"] + s["requests_rejected"] == n
    assert n / secs >= 20_000


def _yardstick() -> str:
    """This machine's pure-Python speed, so figures from different machines can be compared: 10 million
    integer additions in a loop (reports/benchmarks.md records it next to the rates it measured with)."""
    t0 = time.perf_counter()
    acc = 0
    for i in range(10_000_000):
        acc += i
    return f"yardstick loop {time.perf_counter() - t0:.2f} s"


def test_a_million_requests_under_2_gb():
    n = int(os.environ.get("BENCH_REQUESTS", 1_000_000))
    code = (
        "import resource, sys\n"
        "from dataclasses import replace\n"
        "from simulator.serving.runner import simulate\n"
        "from simulator.specs.catalog import resolve_workload\n"
        "from simulator.specs.deployment import read_deployment\n"
        "from simulator.specs.traffic import read_traffic\n"
        "d = read_deployment(resolve_workload('dbrx-8xh100', 'deployments', 'deployment'))\n"
        f"t = replace(read_traffic(resolve_workload('chat', 'traffic', 'traffic')), requests={n})\n"
        "simulate(d, t)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak_mib = float(out.stdout.strip().splitlines()[-1])
    print(f"\n[bench] {n:,} chat requests: peak RSS {peak_mib:,.0f} MiB")
    assert peak_mib < 2 * 1e9 / 2**20
