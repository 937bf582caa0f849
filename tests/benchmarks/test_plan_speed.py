"""Planner speed: analytic screening throughput and case-study wall time (run with
``python -m pytest tests/benchmarks/test_plan_speed.py -s``)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.planning.candidates import parse_precision_pairs
from simulator.planning.cost import PriceBook
from simulator.planning.screen import Workload, screen
from simulator.specs.catalog import load_hardware, load_model

pytestmark = pytest.mark.benchmark
ROOT = Path(__file__).resolve().parents[2]


def test_screening_throughput():
    """Goal: >= 1e5 candidate fleets screened in < 10 s."""
    model = load_model("doubao-class-moe")
    specs = {h: load_hardware(h) for h in ("h100-sxm", "h200-sxm", "h20")}
    prices = PriceBook(specs, {"h20": 1.2})
    w = Workload(30.0, 1410.0, 307.0, 2900.0, 1.0, 0.05, 90.0)
    pairs = parse_precision_pairs("bf16/bf16,fp8/fp8,fp8/w4a8")
    screen(model, prices.priced_specs(), prices, w, pairs=pairs, max_devices=16)  # warm imports and caches
    t0 = time.perf_counter()
    res = screen(model, prices.priced_specs(), prices, w, pairs=pairs, max_devices=64)
    dt = time.perf_counter() - t0
    print(f"\nscreening: {res.evaluated:,} fleets over {res.layout_count:,} layouts in {dt:.2f} s "
          f"({res.evaluated / dt:,.0f} fleets/s); {len(res.candidates)} arrangements kept")
    assert res.evaluated >= 1e5 and dt < 10.0


@pytest.mark.parametrize("case,goal_s", [("doubao", 60.0), ("llama405b", None), ("dbrx", None)])
def test_case_study_wall_time(case, goal_s, tmp_path):
    """Goal: the Doubao case study regenerates in < 60 s on 2 cores (the others are reported)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "reports" / "scripts" / "case_studies.py"), "--only", case,
                    "--out", str(tmp_path)], check=True, cwd=ROOT, capture_output=True)  # (the committed reports stay)
    dt = time.perf_counter() - t0
    print(f"\ncase study {case}: {dt:.1f} s wall (including interpreter start and report rendering)")
    if goal_s:
        assert dt < goal_s
