import pandas as pd
import pytest

from simulator import PlanOptions, plan_from_options, read_deployment, read_traffic, simulate, sweep, whatif

from .conftest import ROOT


def test_readme_python_example():
    res = whatif(plan_from_options(PlanOptions(model="dbrx", hardware="h100-sxm", devices=8, precision="fp8")),
                 batch=64, isl=2048, osl=512)
    assert isinstance(res.quadrants, pd.DataFrame) and res.ttft_s > 0 and res.cost_usd_per_mtok > 0
    from dataclasses import replace

    traffic = replace(read_traffic(ROOT / "workloads/traffic/chat.yaml"), requests=30)
    sim = simulate(read_deployment(ROOT / "workloads/deployments/dbrx-8xh100.yaml"), traffic)
    assert isinstance(sim.requests, pd.DataFrame) and isinstance(sim.steps, pd.DataFrame)
    assert sim.summary["requests_completed"] == 30


def test_sweep_and_pareto_front():
    from simulator.planning.sweep import pareto_front

    df = sweep("mixtral-8x7b", ["h100-sxm", "h20"], 8, isl=1024, osl=256, batches=(1, 16, 128))
    assert len(df) == 2 * 2 * 4 * 4 * 3  # hardware x precision x tp x ep x batch
    front = pareto_front(df[df.fits])
    # nothing on the front is dominated
    for r in front.itertuples():
        faster = df.output_tokens_per_s_per_device > r.output_tokens_per_s_per_device
        better = df[df.fits & (df.tpot_s <= r.tpot_s) & faster]
        assert better.empty
    # the vectorised sweep agrees with a single what-if of the same plan
    row = df[(df.hardware == "h100-sxm") & (df.precision == "bf16") & (df.tp == 8) & (df.ep == 1) & (df.batch == 16)]
    one = whatif(plan_from_options(PlanOptions(model="mixtral-8x7b", hardware="h100-sxm", devices=8, tp=8)),
                 batch=16, isl=1024, osl=256)
    assert row.tpot_s.iloc[0] == pytest.approx(one.tpot_s, rel=1e-9)
