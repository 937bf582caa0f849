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

    traffic = replace(read_traffic("chat"), requests=30)  # (the README passes catalogue ids)
    sim = simulate(read_deployment("dbrx-8xh100"), traffic)
    assert isinstance(sim.requests, pd.DataFrame) and isinstance(sim.steps, pd.DataFrame)
    assert sim.summary["requests_completed"] == 30


def test_sweep_and_pareto_front():
    from simulator.planning.sweep import pareto_front

    df = sweep("mixtral-8x7b", ["h100-sxm", "h20"], 8, isl=1024, osl=256, batches=(1, 16, 128))
    assert len(df) == 2 * 2 * 4 * 4 * 3  # hardware x precision x tp x ep x batch
    front = pareto_front(df[df.fits])
    # nothing on the front is dominated (on the TPOT a request sees, the front's default axis)
    for r in front.itertuples():
        faster = df.output_tokens_per_s_per_device > r.output_tokens_per_s_per_device
        better = df[df.fits & (df.tpot_served_s <= r.tpot_served_s) & faster]
        assert better.empty
    assert not pareto_front(df[df.fits], x="tpot_s").equals(front)  # (the bare step gives another front)
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


def test_a_trace_built_in_code_is_checked_as_a_file_would_be():
    """A trace given to ``Traffic`` in code is held to the trace reader's rules (a NaN arrival used to hang the
    simulator), and rows out of order are put in arrival order as the reader does."""
    import dataclasses

    import pandas as pd

    import simulator as S

    tr = S.read_traffic(ROOT / "workloads/traffic/chat.yaml")

    def with_trace(df):
        return dataclasses.replace(tr, arrival="trace", trace=df, requests=2)

    bad = [({"arrival_s": [0.0, float("nan")], "prompt_tokens": [10, 10], "output_tokens": [5, 5]}, "arrival_s"),
           ({"arrival_s": [0.0, 1.0], "prompt_tokens": [0, 10], "output_tokens": [5, 5]}, "prompt_tokens"),
           ({"arrival_s": [0.0, 1.0], "prompt_tokens": [3, 10], "output_tokens": [5, 2.5]}, "output_tokens"),
           ({"arrival_s": [0.0, 1.0], "prompt_tokens": [3, 10]}, r"missing column\(s\) output_tokens")]
    for cols, what in bad:
        with pytest.raises(S.SimulatorError, match=f"Traffic.trace: (.* )?{what}"):
            with_trace(pd.DataFrame(cols))
    with pytest.raises(S.SimulatorError, match="expected a DataFrame"):
        with_trace([1, 2])
    t = with_trace(pd.DataFrame({"arrival_s": [1.0, 0.0], "prompt_tokens": [30, 10], "output_tokens": [5, 6]}))
    assert t.sample().values.tolist() == [[0.0, 10, 6], [1.0, 30, 5]]


def test_arrivals_past_the_clocks_resolution_are_refused():
    import dataclasses

    import simulator as S

    tr = dataclasses.replace(S.read_traffic(ROOT / "workloads/traffic/chat.yaml"), requests=20, rate_per_s=1e-300)
    dep = read_deployment("dbrx-8xh100")
    with pytest.raises(S.SimulatorError, match="simulate: 20 requests at 1e-300/s would arrive over"):
        simulate(dep, tr)
    # checked on the run as given (its rate and its request count together), not on a step of building it
    ok = dataclasses.replace(dataclasses.replace(tr, rate_per_s=2e-6), requests=10)
    assert simulate(dep, ok).summary["requests_completed"] == 10


def test_the_builders_the_readme_and_the_errors_name_are_exported():
    import simulator as S

    for name in ("quick_deployment", "simple_traffic", "PlanOutcome"):
        assert name in S.__all__ and getattr(S, name) is not None


def test_whatif_refuses_what_is_not_a_plan_and_says_when_a_batch_does_not_fit():
    import simulator as S

    with pytest.raises(S.SimulatorError, match="whatif: plan: expected a ServingPlan"):
        S.whatif(PlanOptions(model="llama-3.1-8b", devices=1), batch=1, isl=8, osl=8)
    res = whatif(plan_from_options(PlanOptions(model="llama-3.1-8b", devices=1)), batch=100_000, isl=1024, osl=128)
    assert not res.fits and any("does not fit in memory" in n for n in res.notes)
    with pytest.raises(S.SimulatorError, match="quadrant: expected one of prefill_attention"):
        res.quadrant("nope")


def test_plan_options_and_requests_stay_as_checked():
    """Frozen: a field set after construction would skip the checks (``PlanRequest.top_k = 0`` reached the
    planner as a raw IndexError); ``dataclasses.replace`` makes a checked copy."""
    import dataclasses

    import simulator as S

    o = PlanOptions(model="dbrx")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.devices = -1
    with pytest.raises(S.SimulatorError, match="PlanOptions.devices"):
        dataclasses.replace(o, devices=-1)
    tr = read_traffic(ROOT / "workloads/traffic/chat.yaml")
    r = S.PlanRequest(model="llama-3.1-8b", traffic=tr, hardware=["h100-sxm"], rate_per_s=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.top_k = 0
    with pytest.raises(S.SimulatorError, match="PlanRequest.top_k"):
        dataclasses.replace(r, top_k=0)


def test_simulate_checks_its_keyword_arguments():
    import dataclasses

    import simulator as S

    tr = dataclasses.replace(read_traffic(ROOT / "workloads/traffic/chat.yaml"), requests=5)
    dep = read_deployment(ROOT / "workloads/deployments/dbrx-8xh100.yaml")
    for kw, what in (({"timing": "roofline"}, "timing must be a TimingModel"),
                     ({"progress": 5}, "progress must be a callable"), ({"overheads": "no"}, "overheads must be")):
        with pytest.raises(S.SimulatorError, match=f"simulate: {what}"):
            simulate(dep, tr, **kw)
    with pytest.raises(S.SimulatorError, match="no replica to serve with"):
        simulate(dataclasses.replace(dep, pools=()), tr)


def test_sweep_prices_and_plan_options_are_checked():
    import simulator as S

    for prices, what in (({"h100-sxm": -3}, "> 0"), ({"h20": 2.0}, "not a device of this sweep"), ([1], "a dict")):
        with pytest.raises(S.SimulatorError, match=f"sweep: prices_usd_per_hour.*{what}"):
            sweep("llama-3.1-8b", ["h100-sxm"], devices=8, isl=512, osl=64, batches=[8], prices_usd_per_hour=prices)
    df = sweep("llama-3.1-8b", ["h100-sxm"], devices=8, isl=512, osl=64, batches=[8],
               prices_usd_per_hour={"H100": 4.0})  # (a profile alias is the profile)
    assert (df.usd_per_hour == 32.0).all()
    with pytest.raises(S.SimulatorError, match="price"):
        S.load_hardware("h100-sxm").with_price(-1)
    for kw, what in (({"kv_precision": "nope"}, "kv_precision"), ({"overlap_comm": "yes"}, "overlap_comm"),
                     ({"spec_draft_tokens": 10**6}, "spec_draft_tokens")):
        with pytest.raises(S.SimulatorError, match=f"PlanOptions.{what}"):
            PlanOptions(model="dbrx", **kw)


def test_the_validation_api_checks_the_tables_it_is_given():
    import simulator as S

    df = S.read_measurements(ROOT / "reports/validation/cpu-host-quick.csv")
    hw = S.load_hardware("cpu-host")
    for call, what in ((lambda: S.predict(df.iloc[:0], {"cpu-host": hw}), "predict: df: no rows"),
                       (lambda: S.predict(df.assign(latency_us=0.0), {"cpu-host": hw}), "latency_us.*> 0"),
                       (lambda: S.predict(df, [hw]), "predict: specs"),
                       (lambda: S.score(df.iloc[:0]), "score: pred"),
                       (lambda: S.calibrate(df, "cpu-host"), "calibrate: hw"),
                       (lambda: S.calibrate(df, hw, test_fraction=float("nan")), "calibrate: test_fraction"),
                       (lambda: S.calibrate(df, hw, seed=-1), "calibrate: seed")):
        with pytest.raises(S.SimulatorError, match=what):
            call()


def test_memory_fit_refuses_a_negative_or_missing_token_count():
    import simulator as S

    m = S.load_model("llama-3.1-8b")
    ph = plan_from_options(PlanOptions(model="llama-3.1-8b", devices=1)).decode
    for kv, what in ((-1, ">= 0"), (float("nan"), "finite"), ("1", "a number")):
        with pytest.raises(S.SimulatorError, match=f"memory_fit: kv_tokens_per_replica: expected .*{what}"):
            S.memory_fit(m, ph, kv_tokens_per_replica=kv, step_tokens=2048)


def test_plan_request_checks_its_collections():
    import simulator as S

    tr = read_traffic(ROOT / "workloads/traffic/chat.yaml")
    base = dict(model="llama-3.1-8b", traffic=tr, hardware=["h100-sxm"], rate_per_s=2.0)
    for kw, what in (({"hardware": []}, "hardware"), ({"precisions": ["fp8/fp8"]}, "precisions"),
                     ({"prices": [3.0]}, "prices")):
        with pytest.raises(S.SimulatorError, match=f"PlanRequest.{what}: expected"):
            S.PlanRequest(**{**base, **kw})


def test_readers_take_catalogue_ids_as_the_cli_does():
    import simulator as S

    assert S.read_traffic("chat").id == "chat" and S.read_deployment("dbrx-8xh100").id == "dbrx-8xh100"
    with pytest.raises(S.SimulatorError, match="no traffic with this id"):
        S.read_traffic("nosuch")
    with pytest.raises(S.SimulatorError, match="expected a path to a YAML file or a catalogue id"):
        S.read_deployment(None)
