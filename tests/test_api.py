from dataclasses import replace

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


@pytest.mark.parametrize("make,needle", [
    (lambda t: replace(t, rate_per_s=float("nan")), "Traffic.rate_per_s"),
    (lambda t: replace(t, rate_per_s=0.0), "Traffic.rate_per_s"),
    (lambda t: replace(t, requests=0), "Traffic.requests"),
    (lambda t: replace(t, arrival="bogus"), "Traffic.arrival"),
    (lambda t: replace(t, prompt=replace(t.prompt, minimum=0)), "LengthDist.minimum"),
    (lambda t: replace(t, slo=replace(t.slo, tpot_s=-1.0)), "SLO.tpot_s"),
])
def test_traffic_built_in_code_is_checked_like_a_file(make, needle):
    """``dataclasses.replace`` builds specs without the file readers: the specs check themselves (a NaN rate
    would never come due and hang the run)."""
    from simulator.errors import SimulatorError
    from simulator.specs.catalog import resolve_workload
    from simulator.specs.traffic import read_traffic

    t = read_traffic(resolve_workload("chat", "traffic", "traffic"))
    with pytest.raises(SimulatorError, match=needle):
        make(t)


@pytest.mark.parametrize("call,needle", [
    (lambda: _whatif(batch=0), "whatif: batch"),
    (lambda: _whatif(isl=-5), "whatif: isl"),
    (lambda: _plan_options(expert_tp=0), "PlanOptions.expert_tp"),
    (lambda: _plan_options(price_usd_per_hour=-3.0), "PlanOptions.price_usd_per_hour"),
    (lambda: _simulate(horizon_s=0.0), "horizon_s"),
    (lambda: _simulate(preemption="Swap"), "preemption"),
    (lambda: _sweep(hardware="h100-sxm"), "sweep: hardware"),
    (lambda: _sweep(batches=(0,)), "sweep: batches"),
])
def test_api_arguments_are_refused_with_the_packages_error(call, needle):
    from simulator.errors import SimulatorError

    with pytest.raises(SimulatorError, match=needle):
        call()


def _plan_options(**kw):
    from simulator.build import PlanOptions

    return PlanOptions(model="llama-3.1-8b", devices=1, **kw)


def _whatif(**kw):
    from simulator.analysis.whatif import whatif
    from simulator.build import plan_from_options

    args = {"batch": 8, "isl": 512, "osl": 64, **kw}
    return whatif(plan_from_options(_plan_options()), **args)


def _simulate(**kw):
    from simulator.build import quick_deployment
    from simulator.serving.runner import simulate
    from simulator.specs.traffic import simple_traffic

    dep = quick_deployment(_plan_options(tp=1))
    return simulate(dep, simple_traffic(rate=2.0, concurrency=None, isl=128, osl=8, requests=5, seed=0), **kw)


def _sweep(**kw):
    from simulator.planning.sweep import sweep

    args = {"hardware": ["h100-sxm"], "devices": 1, "isl": 512, "osl": 64, **kw}
    return sweep("llama-3.1-8b", args.pop("hardware"), args.pop("devices"), **args)
