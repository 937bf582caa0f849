"""Serving simulator: exact event logs on a constant-time fake, and properties on the analytic model."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.build import PlanOptions, quick_deployment
from simulator.serving.engine import ReplicaConfig, Requests, Simulation
from simulator.serving.policies import make_policy
from simulator.serving.runner import simulate
from simulator.serving.stepcost import ConstantStepCost
from simulator.specs.catalog import resolve_workload
from simulator.specs.deployment import read_deployment
from simulator.specs.traffic import read_traffic, simple_traffic


def _reqs(arrivals, prompts, outputs):
    return Requests(np.array(arrivals, float), np.array(prompts, np.int64), np.array(outputs, np.int64))


def _replica(role="colocated", cap=10_000, budget=100, seqs=16, pool="p", index=0, cost=None, **kw):
    return ReplicaConfig(pool, index, role, cost or ConstantStepCost(decode_s=0.5, prefill_s=1.0), cap, budget, seqs,
                         1, **kw)


def test_colocated_exact_event_log():
    req = _reqs([0.0, 0.5], [50, 80], [3, 2])
    sim = Simulation(req, [_replica()])
    sim.run()
    assert sim.events == [(0.0, "arrive", 0), (0.5, "arrive", 1), (2.5, "finish", 0), (2.5, "finish", 1)]
    steps = sim.step_frame()
    assert steps[["start_s", "end_s", "kind", "prefill_tokens", "decode_seqs"]].values.tolist() == [
        [0.0, 1.0, "prefill", 50, 0], [1.0, 2.0, "mixed", 80, 1], [2.0, 2.5, "decode", 0, 2]]
    df = sim.request_frame()
    assert df.ttft_s.tolist() == [1.0, 1.5]
    assert df.tpot_s.tolist() == [0.75, 0.5]
    assert df.e2e_s.tolist() == [2.5, 2.0]


def test_the_frontend_holds_a_request_before_the_scheduler_sees_it():
    """An engine's frontend latency (``frontend_s``) is off the GPU path: the request reaches the scheduler that
    much later, so its TTFT and E2E grow by it, its TPOT does not, and a closed loop's next request follows the
    finish at once (and reaches the scheduler that much later in turn)."""
    req = _reqs([0.0, 0.5], [50, 80], [3, 2])
    sim = Simulation(req, [_replica(frontend_s=0.25)])
    sim.run()
    # the same schedule as the exact log above, 0.25 s later: request 1 now lands while request 0 prefills
    assert sim.events == [(0.0, "arrive", 0), (0.5, "arrive", 1), (2.75, "finish", 0), (2.75, "finish", 1)]
    df = sim.request_frame()
    assert df.ttft_s.tolist() == [1.25, 1.75] and df.tpot_s.tolist() == [0.75, 0.5]
    assert df.admitted_s.tolist() == [0.25, 1.25]  # request 1 is admitted at the step boundary after it lands
    # the frontend time is its own column; queueing counts from when the scheduler has the request
    assert df.frontend_s.tolist() == [0.25, 0.25] and df.queue_s.tolist() == [0.0, 0.5]
    closed = Simulation(_reqs([0.0, 0.0], [50, 50], [1, 1]), [_replica(frontend_s=0.25)], closed_concurrency=1)
    closed.run()
    assert closed.events == [(0.0, "arrive", 0), (1.25, "finish", 0), (1.25, "arrive", 1), (2.5, "finish", 1)]


def test_a_busy_scheduler_receives_every_n_decode_steps():
    """SGLang's --scheduler-recv-interval N: while busy, the scheduler takes new requests only when its counter
    reaches N (+1 per decode step, +N per step with a prefill); idle, it takes them at once."""
    def run(n):
        sim = Simulation(_reqs([0.0, 1.1], [50, 80], [8, 2]), [_replica(recv_interval=n)])
        sim.run()
        return sim.request_frame()
    at_once, every3 = run(1), run(3)
    assert at_once.admitted_s.tolist() == [0.0, 1.5]  # the end of the decode step in progress
    # request 0's prefill (0-1 s) restarts the counter at 1.0; decode steps end at 1.5, 2.0 and 2.5, the third
    # reaching 3: request 1, which reached the scheduler at 1.1, is taken at 2.5
    assert every3.admitted_s.tolist() == [0.0, 2.5]
    assert every3.ttft_s[1] - at_once.ttft_s[1] == pytest.approx(1.0)
    # a request reaching an idle scheduler is taken at once
    assert run(3).admitted_s[0] == 0.0


def _engines():
    from tests.serving_reference import ReferenceSimulation
    return [Simulation, ReferenceSimulation]


def _landed(sim) -> list[float]:
    return [t for t, what, _ in sim.events if what == "kv_transferred"]


@pytest.mark.parametrize("make", _engines())
@pytest.mark.parametrize("layers,landed", [
    (0, [1.45, 1.85]),  # after the prefill: 1.0 + 0.4 (+ 0.05 latency), then the second waits for the port
    # streamed over 4 layers: the first leaves a layer into the prefill (0.25) but cannot finish before the last
    # layer's share after it (1.0 + 0.1); the second holds the port from 1.1 for its whole 0.4 s
    (4, [1.15, 1.55]),
])
def test_a_busy_kv_link_carries_one_transfer_at_a_time_for_its_whole_link_time(make, layers, landed):
    req = _reqs([0.0, 0.0], [50, 50], [3, 3])
    sim = make(req, [_replica("prefill", pool="pre"), _replica("decode", pool="dec")],
               kv_transfer_s=lambda rid, src, dst: (0.4, 0.05, layers))
    sim.run()
    assert _landed(sim) == pytest.approx(landed, abs=1e-12)


@pytest.mark.parametrize("make", _engines())
@pytest.mark.parametrize("decoders,landed", [(1, [1.4, 1.8]), (2, [1.4, 1.4])])
def test_transfers_into_one_decode_replica_share_its_receiving_port(make, decoders, landed):
    """Two prefill replicas hand off at once: into one decode replica the second transfer waits for the first;
    into two, they run side by side."""
    req = _reqs([0.0, 0.0], [50, 50], [3, 3])
    reps = [_replica("prefill", pool="pre", index=i) for i in range(2)]
    reps += [_replica("decode", pool="dec", index=i) for i in range(decoders)]
    sim = make(req, reps, kv_transfer_s=lambda rid, src, dst: (0.4, 0.0, 0))
    sim.run()
    assert sorted(_landed(sim)) == pytest.approx(landed, abs=1e-12)


@pytest.mark.parametrize("make", _engines())
def test_a_prefill_replica_holds_a_handed_off_requests_kv_until_it_has_left(make):
    """Room for one prompt: the second is admitted only when the first's KV has crossed the 2 s link."""
    req = _reqs([0.0, 0.0], [50, 50], [3, 3])
    sim = make(req, [_replica("prefill", pool="pre", cap=64), _replica("decode", pool="dec")],
               kv_transfer_s=lambda rid, src, dst: (2.0, 0.0, 0))
    sim.run()
    df = sim.request_frame()
    assert df.admitted_s.tolist() == [0.0, 3.0]
    assert df.prefill_done_s.tolist() == [1.0, 4.0]
    assert _landed(sim) == [3.0, 6.0]
    assert (sim.step_frame().kv_occupancy <= 1.0).all()


def test_chunked_prefill_respects_the_token_budget():
    req = _reqs([0.0], [250], [1])
    sim = Simulation(req, [_replica(budget=100)])
    sim.run()
    steps = sim.step_frame()
    assert steps.prefill_tokens.tolist() == [100, 100, 50]
    assert sim.events == [(0.0, "arrive", 0), (3.0, "finish", 0)]


def test_disaggregation_pays_the_kv_transfer():
    req = _reqs([0.0], [50], [3])
    sim = Simulation(req, [_replica("prefill", pool="pre"), _replica("decode", pool="dec")],
                     kv_transfer_s=lambda rid, src, dst: (0.25, 0.0, 0))
    sim.run()
    assert sim.events == [(0.0, "arrive", 0), (1.25, "kv_transferred", 0), (2.25, "finish", 0)]
    colo = Simulation(_reqs([0.0], [50], [3]), [_replica()])
    colo.run()
    assert colo.events[-1] == (2.0, "finish", 0)  # same steps without the 0.25 s transfer
    df = sim.request_frame()
    assert df.prefill_replica[0] == "pre/0" and df.decode_replica[0] == "dec/0"
    # the client sees the first token once the decode side holds the request: TTFT includes the transfer
    assert df.prefill_done_s[0] == 1.0 and df.ttft_s[0] == 1.25 and df.tpot_s[0] == 0.5


def test_request_too_large_for_kv_is_rejected_with_reason():
    req = _reqs([0.0, 0.0], [50, 5000], [10, 10])
    sim = Simulation(req, [_replica(cap=1024)])
    sim.run()
    df = sim.request_frame()
    assert df.status.tolist() == ["finished", "rejected"]
    assert "KV tokens" in df.reason[1]


@pytest.mark.parametrize("make", _engines())
def test_a_request_no_decode_replica_can_hold_is_refused_before_its_prefill(make):
    """P/D: the decode replica holds 1024 KV tokens, the prefill replica 10k; the 5000-token request is refused as
    it reaches the prefill pool (no prefill step, no first token), with the decode replica's reason."""
    req = _reqs([0.0, 0.0], [50, 5000], [3, 3])
    sim = make(req, [_replica("prefill", pool="pre"), _replica("decode", pool="dec", cap=1024)])
    sim.run()
    df = sim.request_frame()
    assert df.status.tolist() == ["finished", "rejected"]
    assert df.reason[1] == "needs 5008 KV tokens, replica dec/0 holds 1024"
    assert math.isnan(df.first_token_s[1]) and math.isnan(df.prefill_done_s[1])
    steps = sim.step_frame()
    assert steps.prefill_tokens.sum() == 50 and steps.output_tokens.sum() == 3


@pytest.mark.parametrize("make", _engines() + [lambda r, c, **kw: Simulation(r, c, coalesce=False, **kw)])
def test_the_router_passes_over_a_decode_replica_that_could_never_hold_the_request(make):
    """Two idle decode replicas, dec/0 holding 1024 KV tokens and dec/1 100k: by load alone (equal, lowest uid first)
    the 5000-token request went to dec/0 and was refused there after its prefill, though dec/1 could serve it; the
    50-token one still takes the lowest uid."""
    req = _reqs([0.0, 1.0], [5000, 50], [3, 3])
    sim = make(req, [_replica("prefill", pool="pre", cap=100_000, budget=8192),
                     _replica("decode", pool="dec", cap=1024), _replica("decode", pool="dec", index=1, cap=100_000)])
    sim.run()
    df = sim.request_frame()
    assert df.status.tolist() == ["finished", "finished"]
    assert df.decode_replica.tolist() == ["dec/1", "dec/0"]


@pytest.mark.parametrize("make", _engines())
def test_the_up_front_refusal_gives_the_first_decode_kinds_reason(make):
    """Two decode kinds, neither able to hold the 5000-token request: the reason is the first kind's (the engine
    gave the last kind's, the reference the first's)."""
    req = _reqs([0.0, 0.0], [50, 5000], [3, 3])
    sim = make(req, [_replica("prefill", pool="pre"), _replica("decode", pool="decA", cap=1024),
                     _replica("decode", pool="decB", cap=100_000, max_model_len=2048)])
    sim.run()
    assert sim.request_frame().reason[1] == "needs 5008 KV tokens, replica decA/0 holds 1024"


@pytest.mark.parametrize("make", _engines())
def test_a_request_over_the_context_window_is_refused(make):
    req = _reqs([0.0, 0.0], [100, 50], [5, 5])
    sim = make(req, [_replica(max_model_len=64)])
    sim.run()
    df = sim.request_frame()
    assert df.status.tolist() == ["rejected", "finished"]
    assert df.reason[0] == "prompt + output = 105 tokens exceed the model's context window of 64"


def test_preemption_recomputes_and_everything_finishes():
    # 5 blocks of 16 tokens; two requests that each grow to 48 tokens (3 blocks) cannot both stay resident
    req = _reqs([0.0, 0.0], [16, 16], [32, 32])
    sim = Simulation(req, [_replica(cap=80, budget=64)])
    sim.run()
    df = sim.request_frame()
    assert (df.status == "finished").all()
    assert df.preemptions.sum() >= 1
    assert (sim.step_frame().kv_occupancy <= 1.0 + 1e-9).all()


def test_swap_preemption_keeps_kv():
    req = _reqs([0.0, 0.0], [16, 16], [32, 32])
    sim = Simulation(req, [_replica(cap=80, budget=64, preemption="swap", kv_bytes_per_token=1e6,
                                    swap_bytes_per_s=1e9)])
    sim.run()
    df = sim.request_frame()
    assert (df.status == "finished").all() and df.preemptions.sum() >= 1


def test_swap_moves_the_kv_out_on_the_next_step_and_in_on_readmission():
    """Two 16-token prompts grow past an 80-token cache: request 1 is swapped out at the end of step 16 holding its
    prompt plus 17 generated tokens (one from the prefill step, 16 decode steps), 33 tokens of 1 MB over a 1 GB/s host
    link: the step after the preemption and the step that re-admits it each take 33 ms longer than with free swaps,
    and no other step changes."""
    def steps(kv_bytes_per_token):
        req = _reqs([0.0, 0.0], [16, 16], [32, 32])
        sim = Simulation(req, [_replica(cap=80, budget=64, preemption="swap", kv_bytes_per_token=kv_bytes_per_token,
                                        swap_bytes_per_s=1e9)])
        sim.run()
        return sim.step_frame(), sim.request_frame()

    (free, free_requests), (paid, _) = steps(0.0), steps(1e6)
    preempted_at = int(np.flatnonzero(free.preempted)[0])
    # request 1 comes back when request 0 finishes and frees its blocks
    readmitted_at = int(np.flatnonzero(free.start_s == free_requests.finish_s[0])[0])
    assert preempted_at == 16 and readmitted_at > preempted_at + 1
    extra = (paid.end_s - paid.start_s).to_numpy() - (free.end_s - free.start_s).to_numpy()
    assert np.flatnonzero(~np.isclose(extra, 0.0)).tolist() == [preempted_at + 1, readmitted_at]
    assert extra[[preempted_at + 1, readmitted_at]] == pytest.approx([0.033, 0.033])


def test_a_full_swap_space_preempts_by_recompute():
    """A request whose KV would overflow the host swap space (33 MB against 10 MB) is preempted by recompute: the run
    is the recompute run, step for step."""
    def frames(**kw):
        req = _reqs([0.0, 0.0], [16, 16], [32, 32])
        sim = Simulation(req, [_replica(cap=80, budget=64, **kw)])
        sim.run()
        return sim.step_frame(), sim.request_frame()

    full = frames(preemption="swap", kv_bytes_per_token=1e6, swap_bytes_per_s=1e9, swap_space_bytes=10e6)
    recompute = frames(preemption="recompute", kv_bytes_per_token=1e6, swap_bytes_per_s=1e9)
    assert full[0].equals(recompute[0]) and full[1].equals(recompute[1])
    assert full[0].prefill_tokens.sum() > 32  # the preempted request's prompt and tokens were prefilled again


def test_closed_loop_keeps_concurrency():
    req = _reqs([np.nan] * 6, [10] * 6, [2] * 6)
    sim = Simulation(req, [_replica()], closed_concurrency=2)
    sim.run()
    arrivals = [t for t, what, _ in sim.events if what == "arrive"]
    assert arrivals[:2] == [0.0, 0.0] and len(arrivals) == 6
    assert (sim.request_frame().status == "finished").all()


def test_speculative_decoding_advances_several_tokens_per_step():
    req = _reqs([0.0], [10], [41])
    sim = Simulation(req, [_replica(spec_draft_tokens=3, spec_acceptance=1.0)])
    sim.run()
    # prefill gives token 1; each decode step then accepts all 3 drafts + 1 = 4 tokens: 10 steps
    assert len(sim.step_frame()) == 11


# ---- on the analytic model ------------------------------------------------------------------------

def _quick(replicas=1, **traffic):
    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1),
                           replicas=replicas, max_batch_tokens=4096, max_seqs=64)
    t = simple_traffic(rate=traffic.get("rate", 6.0), concurrency=None, isl=traffic.get("isl", 1024),
                       osl=traffic.get("osl", 128), requests=traffic.get("requests", 300), seed=traffic.get("seed", 0))
    return simulate(dep, t)


def test_every_request_finishes_and_ttft_le_e2e():
    res = _quick()
    df = res.requests
    assert (df.status == "finished").all()
    assert (df.ttft_s <= df.e2e_s + 1e-12).all()
    assert (df.queue_s >= 0).all()
    assert res.summary["requests_completed"] == 300


def _closed(concurrency=8, requests=400, engine=None, **kw):
    from dataclasses import replace as dc_replace

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1),
                           max_batch_tokens=4096, max_seqs=64)
    t = simple_traffic(rate=None, concurrency=concurrency, isl=512, osl=64, requests=requests, seed=2, **kw)
    t = dc_replace(t, prompt=dc_replace(t.prompt, kind="uniform", low=64, high=1500),
                   output=dc_replace(t.output, kind="uniform", low=8, high=200))
    return simulate(dep, t, engine=engine)


def test_closed_loop_littles_law_in_the_measurement_window():
    """A closed loop holds C requests in flight, so C = X * R over the steady-state window: the
    completion rate counted from the finish events times the mean latency of the measured requests."""
    res = _closed(concurrency=8, requests=400)
    w = res.summary["window"]
    assert w["start_s"] > 0 and w["requests"] < 400  # warm-up and drain were cut
    finishes = [t for t, what, _ in res.events if what == "finish" and w["start_s"] < t <= w["end_s"]]
    X = len(finishes) / (w["end_s"] - w["start_s"])
    R = res.summary["e2e_s"]["mean"]
    assert X * R == pytest.approx(8, rel=0.05)


def test_closed_loop_starts_staggered_and_reports_its_window():
    res = _closed(concurrency=8, requests=120)
    first = sorted(t for t, what, rid in res.events if what == "arrive" and rid < 8)
    ramp = res.summary["window"]["ramp_up_s"]
    assert ramp > 0 and first[0] == 0.0 and len(set(first)) == 8 and first[-1] < ramp
    together = _closed(concurrency=8, requests=120, ramp_up_s=0.0)
    assert [t for t, what, rid in together.events if what == "arrive" and rid < 8] == [0.0] * 8


def test_goodput_is_not_applicable_without_an_slo():
    s = _quick(requests=100).summary
    assert s["goodput"]["requests_per_s"] is None and s["goodput"]["fraction_of_requests"] is None
    assert s["slo_attainment"] is None


def test_engines_differ_in_ttft_at_the_same_load():
    """Prefill-first SGLang gets first tokens out sooner than vLLM's budget-shared chunks, and pays for
    it in inter-token latency; the three engines do not give the same answer. (Poisson arrivals: the same
    load for every engine, whatever its frontend latency; SGLang's is taken out of its TTFT to compare the
    schedulers.)"""
    from simulator.serving.profiles import engine_profile

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    t = simple_traffic(rate=20.0, concurrency=None, isl=512, osl=128, requests=400, seed=0)
    runs = {e: simulate(dep, t, engine=e).summary for e in ("vllm", "sglang", "trtllm")}
    sched = {e: r["ttft_s"]["mean"] - engine_profile(e).frontend_for(dep.model) for e, r in runs.items()}
    assert sched["sglang"] < sched["vllm"]
    assert runs["sglang"]["itl_s"]["p99"] > runs["vllm"]["itl_s"]["p99"]
    assert len({round(r["tpot_s"]["mean"], 9) for r in runs.values()}) == 3


def test_more_devices_never_make_p99_worse():
    one = _quick(replicas=1, rate=12.0, requests=300).summary
    two = _quick(replicas=2, rate=12.0, requests=300).summary
    assert two["e2e_s"]["p99"] <= one["e2e_s"]["p99"]
    assert two["ttft_s"]["p99"] <= one["ttft_s"]["p99"]


def test_same_seed_same_bytes_different_seed_differs():
    a = json.dumps(_quick(seed=5).summary, sort_keys=True)
    b = json.dumps(_quick(seed=5).summary, sort_keys=True)
    c = json.dumps(_quick(seed=6).summary, sort_keys=True)
    assert a == b and a != c


@pytest.mark.parametrize("dep", ["dbrx-8xh100", "llama-3.1-405b-fp8-8xh100", "dbrx-h100-prefill-h20-decode",
                                 "doubao-class-h100-prefill-h20-decode", "doubao-class-all-h100",
                                 "doubao-class-afd", "deepseek-v3-8xh200-sglang-mtp"])
def test_shipped_deployments_run(dep):
    d = read_deployment(resolve_workload(dep, "deployments", "deployment"))
    t = read_traffic(resolve_workload("chat", "traffic", "traffic"))
    from dataclasses import replace
    res = simulate(d, replace(t, requests=60))
    s = res.summary
    assert s["requests_completed"] + s["requests_rejected"] == 60
    assert s["requests_completed"] > 0
    if not d.disaggregated:
        return
    # PD disaggregation: the KV cache ships after the prefill, and the client sees the first token only
    # once the decode replica has it (TTFT includes the transfer)
    kv = {rid: t for t, what, rid in res.events if what == "kv_transferred"}
    df = res.requests.set_index("request_id")
    assert kv and all(df.prefill_done_s[rid] < t == df.first_token_s[rid] for rid, t in kv.items())


def test_shipped_traffic_files_load():
    for name in ("chat", "rag-long-context", "reasoning", "offline-batch", "trace-replay"):
        t = read_traffic(resolve_workload(name, "traffic", "traffic"))
        df = t.sample()
        assert len(df) == t.requests and (df.prompt_tokens >= 1).all()


@pytest.mark.parametrize("model,kw", [("llama-3.1-8b", dict(devices=1)), ("dbrx", dict(devices=8, ep=8)),
                                      ("deepseek-v3", dict(devices=8, precision="fp8")),
                                      ("qwen3-30b-a3b", dict(devices=2, tp=2, ffn_precision="w4a8"))])
def test_tabulated_step_cost_equals_the_op_model(model, kw):
    """The DES fast path reproduces the full op build (dp = 1, pp = 1): exactly, but where the decode
    core's KV-length table interpolates across a roofline kink (< 0.1 %)."""
    from simulator.build import plan_from_options
    from simulator.serving.stepcost import AnalyticStepCost, TabulatedStepCost

    plan = plan_from_options(PlanOptions(model=model, **kw))
    fast = TabulatedStepCost(plan.model, plan.prefill, 8192, "fp8", 64)
    slow = AnalyticStepCost(plan.model, plan.prefill, None, "fp8", 64)
    rng = np.random.default_rng(0)
    for _ in range(25):
        ps, ds = int(rng.integers(0, 4)), int(rng.integers(0, 200))
        pl = int(rng.integers(1, 2000)) if ps else 0
        pc = int(rng.choice([0, int(rng.integers(1, 8000))])) if ps else 0  # fresh prompts and cached prefixes
        dk = int(rng.integers(1, 30000))
        dl = int(rng.choice([1, 3]))
        if ps * pl + ds * dl == 0 or ps * pl + ds * dl > 8192:
            continue
        a = fast.cost(ps, ps * pl, ps * pc, ds, dl, ds * dk)
        b = slow._evaluate(ps, pl, pc, ds, dl, dk)
        for field in ("time_s", "prefill_attention_s", "prefill_ffn_s", "decode_attention_s", "decode_ffn_s"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-3, abs=1e-12), field


@pytest.mark.parametrize("tp,dp,ep,etp", [(1, 8, 1, None), (1, 8, 1, 1), (1, 8, 2, 1), (1, 8, 2, None),
                                          (2, 4, 1, 2), (2, 4, 1, None), (1, 8, 8, None)])
def test_tabulated_step_cost_routes_like_the_op_model_under_attention_dp(tp, dp, ep, etp):
    """With attention DP the routed experts see the tokens of the ranks that feed their group: every token when
    one expert group spans all ranks (the default expert TP, tp x dp / ep, or ep 8), the busiest group's whole
    sequences when experts are replicated over groups (expert TP 1 at tp 1, 2 at tp 2: one long prompt lands whole on
    one group). The DES fast path reads its routed table where the op model says, for a lone prompt and for pure
    decode batches."""
    from simulator.build import plan_from_options
    from simulator.serving.stepcost import AnalyticStepCost, TabulatedStepCost

    plan = plan_from_options(PlanOptions(model="dbrx", hardware="h200-sxm", devices=8, tp=tp, dp=dp, ep=ep,
                                         expert_tp=etp, precision="fp8"))
    fast, slow = TabulatedStepCost(plan.model, plan.decode, 8192), AnalyticStepCost(plan.model, plan.decode)
    for args in [(1, 4096, 0, 0, 1, 0), (0, 0, 0, 5, 1, 5 * 2048), (0, 0, 0, 64, 1, 64 * 1000)]:
        assert fast.cost(*args).time_s == pytest.approx(slow.cost(*args).time_s, rel=2e-3), args
    f = plan.decode.ffn
    groups = tp * dp // (f.ep * f.expert_tp)
    lone, spread = slow.cost(1, 4096, 0, 0, 1, 0).time_s, slow.cost(dp, 4096 * dp, 0, 0, 1, 0).time_s
    assert groups == (dp if etp is not None and etp * ep == tp else 1 if etp is None else 4)
    if groups == dp:  # every rank its own expert replica: a lone prompt's step is as long as one on every rank
        assert lone == pytest.approx(spread, rel=1e-9)
    elif groups == 1:  # one group takes every rank's tokens: a prompt on every rank costs more than one
        assert spread > 1.5 * lone


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("spec", [None, "tiny-kv", "swap-tiny-kv", "speculative", "speculative-tiny-kv", "dp-ranks",
                                  "swap-dp-ranks", "batch-wait", "horizon",
                                  "closed", "recv-interval", "recv-interval-closed", "recv-interval-burst"])
def test_engine_matches_the_slow_reference_stepper(spec, engine):
    """The engine's running totals, decode stretches and callback scheduling change nothing but the
    cost of a run: ``tests/serving_reference.py`` (one process and one event per step, numpy state
    recounted every step) is the definition it must reproduce, under every engine, with and without
    preemptions, with stretches on and off."""
    from simulator.serving.runner import replica_configs
    from tests.serving_reference import ReferenceSimulation

    opts = PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1)
    if spec in ("dp-ranks", "swap-dp-ranks"):  # attention DP: every step is timed at its busiest rank
        opts = PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=2, tp=1, dp=2)
    dep = quick_deployment(opts, replicas=2, max_batch_tokens=2048, max_seqs=32)
    t = simple_traffic(rate=20.0, concurrency=None, isl=700, osl=90, requests=150, seed=3)
    if spec in ("closed", "recv-interval-closed", "recv-interval-burst"):  # a closed loop: each finish (after the
        # engine's frontend, for sglang) sends the next
        t = simple_traffic(rate=None, concurrency=24, isl=700, osl=90, requests=150, seed=3, ramp_up_s=0.5)
    from dataclasses import replace as dc_replace
    t = dc_replace(t, prompt=dc_replace(t.prompt, kind="uniform", low=100, high=1500),
                   output=dc_replace(t.output, kind="uniform", low=2, high=300))
    frames = []
    for make in (ReferenceSimulation, lambda r, c, **kw: Simulation(r, c, coalesce=False, **kw), Simulation):
        req = t.sample()
        r = Requests(req.arrival_s.to_numpy(float).copy(), req.prompt_tokens.to_numpy(np.int64),
                     req.output_tokens.to_numpy(np.int64))
        cfgs = replica_configs(dep, engine=engine)
        if spec in ("tiny-kv", "speculative-tiny-kv"):  # force preemptions too
            cfgs = [dc_replace(c, kv_capacity_tokens=6000) for c in cfgs]
        if spec in ("swap-tiny-kv", "swap-dp-ranks"):  # preempt by swap while the host swap space (~1,100 tokens)
            # holds them, else by recompute (both happen here under vllm and sglang); with attention DP each rank
            # swaps into its own devices' space and over their own links
            cfgs = [dc_replace(c, kv_capacity_tokens=6000, preemption="swap", swap_space_bytes=150e6) for c in cfgs]
        assert cfgs[0].cost.wants_ranks == (spec in ("dp-ranks", "swap-dp-ranks"))
        if spec.startswith("speculative") if spec else False:  # random per-sequence gains (same seeded draws)
            cfgs = [dc_replace(c, spec_draft_tokens=2, spec_acceptance=0.7) for c in cfgs]
        if spec and spec.startswith("recv-interval"):  # SGLang's receive skipper (any policy runs it here)
            cfgs = [dc_replace(c, recv_interval=5) for c in cfgs]
        if spec == "batch-wait":  # TensorRT-LLM's batch waiting (any policy runs it here)
            cfgs = [dc_replace(c, batch_wait_iters=6, batch_wait_tokens_ratio=0.8) for c in cfgs]
        # "horizon": the run stops mid-way, with decode stretches in flight
        if spec == "recv-interval-burst":  # every client at t = 0, as the benchmark clients start them
            sim = make(r, cfgs, closed_concurrency=24)
        elif spec in ("closed", "recv-interval-closed"):
            sim = make(r, cfgs, closed_concurrency=24, closed_starts_s=np.arange(24) * (0.5 / 24))
        else:
            sim = make(r, cfgs, horizon_s=3.0) if spec == "horizon" else make(r, cfgs)
        sim.run()
        frames.append((sim.request_frame(), sim.step_frame()))
        if make is ReferenceSimulation:
            swaps = sum(rep.swaps for rep in sim.replicas), sum(rep.recomputes for rep in sim.replicas)
    if spec in ("tiny-kv", "swap-tiny-kv", "swap-dp-ranks", "speculative-tiny-kv") and engine != "trtllm":
        assert frames[0][0].preemptions.sum() > 0  # the case exercises preemption (trtllm never preempts)
        if spec.startswith("swap"):
            assert min(swaps) > 0  # by swap, and by recompute once the swap space is full
    if spec == "horizon":
        assert (frames[0][0].status == "rejected").any()  # the horizon cut the run short
    if spec == "batch-wait" and engine != "sglang":  # the case holds prompts back: later first tokens than without
        # (SGLang runs its prefills alone, never beside decodes, so there is nothing to hold back)
        plain = ReferenceSimulation(Requests(*(x.copy() for x in (r.arrival_s, r.prompt, r.output))),
                                    replica_configs(dep, engine=engine))
        plain.run()
        assert frames[0][0].first_token_s.sum() > plain.request_frame().first_token_s.sum()
    if spec and spec.startswith("recv-interval"):  # the case exercises the skipper: later admissions than without
        closed = {"recv-interval-closed": {"closed_concurrency": 24, "closed_starts_s": np.arange(24) * (0.5 / 24)},
                  "recv-interval-burst": {"closed_concurrency": 24}}.get(spec, {})
        plain = ReferenceSimulation(Requests(*(x.copy() for x in (r.arrival_s, r.prompt, r.output))),
                                    replica_configs(dep, engine=engine), **closed)
        plain.run()
        assert (frames[0][0].admitted_s.sum() > plain.request_frame().admitted_s.sum())
    for b, sb in frames[1:]:
        _same_run(frames[0], (b, sb))


def _same_run(ref, new):
    (a, sa), (b, sb) = ref, new
    # a stretch records its steps when it ends: compare each replica's steps in time order
    sa, sb = (f.sort_values(["replica_id", "start_s"], kind="stable").reset_index(drop=True) for f in (sa, sb))
    assert len(sa) == len(sb)
    for col in ("first_token_s", "finish_s", "admitted_s", "prefill_done_s"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9)
    for col in ("preemptions", "status", "reason", "prefill_replica", "decode_replica"):
        assert (a[col] == b[col]).all(), col
    for col in ("start_s", "end_s", "kv_occupancy"):
        np.testing.assert_allclose(sa[col], sb[col], rtol=1e-9)
    for col in ("replica_id", "kind", "prefill_seqs", "prefill_tokens", "decode_seqs", "output_tokens", "queued",
                "running", "preempted"):
        assert (sa[col].astype(str) == sb[col].astype(str)).all(), col


def test_step_frame_rebuilds_kv_blocks_the_same_in_any_chunks(monkeypatch):
    """Decode stretches record their KV blocks compactly (blocks before, the 16-tick opening pattern, blocks
    after) and the frame rebuilds every step's a few million steps at a time: chunks of a handful of steps
    give the same occupancy, step for step, as one chunk, and that matches the step-by-step run's."""
    from simulator.serving.records import StepLog
    from simulator.serving.runner import replica_configs

    opts = PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1)
    dep = quick_deployment(opts, replicas=1, max_batch_tokens=2048, max_seqs=32)
    t = simple_traffic(rate=20.0, concurrency=None, isl=300, osl=120, requests=60, seed=5)

    def occupancy(coalesce=True):
        req = t.sample()
        r = Requests(req.arrival_s.to_numpy(float).copy(), req.prompt_tokens.to_numpy(np.int64),
                     req.output_tokens.to_numpy(np.int64))
        sim = Simulation(r, replica_configs(dep, engine="vllm"), coalesce=coalesce)
        sim.run()
        return sim.step_frame().sort_values("start_s", kind="stable").kv_occupancy.to_numpy()

    one = occupancy()
    monkeypatch.setattr(StepLog, "EXPAND_STEPS", 7)
    small = occupancy()
    stepwise = occupancy(coalesce=False)
    assert len(one) > 100 and np.ptp(one) > 0  # many steps, and the cache fills and drains
    assert np.array_equal(one, small)
    np.testing.assert_array_equal(one, stepwise)


def test_a_kv_cache_beyond_two_billion_blocks_is_recorded():
    """A cache given as "unlimited" (2^36 tokens: 2^32 blocks, past int32) runs and records its occupancy."""
    sim = Simulation(_reqs([0.0, 0.5], [50, 80], [40, 2]), [_replica(cap=2**36)])
    sim.run()
    occ = sim.step_frame().sort_values("start_s").kv_occupancy.to_numpy()
    assert (sim.request_frame().status == "finished").all()
    assert (occ[:-1] > 0).all() and (occ < 1e-6).all() and occ[-1] == 0  # (empty after the last finish)


def test_empirical_length_distribution_from_file(tmp_path):
    (tmp_path / "lens.txt").write_text("100\n200\n300\n")
    (tmp_path / "t.yaml").write_text(
        "schema_version: 1\narrivals: {process: poisson, rate_per_s: 5}\nrequests: 50\n"
        "prompt_tokens: {dist: empirical, file: lens.txt}\noutput_tokens: {dist: fixed, value: 8}\nseed: 1\n")
    df = read_traffic(tmp_path / "t.yaml").sample()
    assert set(df.prompt_tokens) <= {100, 200, 300} and (df.output_tokens == 8).all()


def test_bad_traffic_yaml_names_key(tmp_path):
    from simulator.errors import SpecError

    (tmp_path / "t.yaml").write_text("schema_version: 1\narrivals: {process: poisson}\nrequests: 5\n"
                                     "prompt_tokens: {dist: fixed, value: 8}\noutput_tokens: {dist: fixed, value: 8}\n")
    with pytest.raises(SpecError, match="arrivals.rate_per_s"):
        read_traffic(tmp_path / "t.yaml")


def _afd(micro_batches):
    from dataclasses import replace as dc_replace

    d = read_deployment(resolve_workload("doubao-class-afd", "deployments", "deployment"))
    pools = tuple(dc_replace(p, plan=dc_replace(p.plan, micro_batches=micro_batches)) if p.plan.af_disaggregated
                  else p for p in d.pools)
    return dc_replace(d, pools=pools)


def test_af_one_micro_batch_pays_attention_transfer_and_ffn_in_series():
    """With one micro-batch nothing overlaps: every decode step is at least the attention, both trips
    over the link and the FFN of every layer (summed from the op model, not from the step model)."""
    from simulator.analysis.whatif import time_phase
    from simulator.ops.build import StepShape
    from simulator.timing import RooflineModel

    dep = _afd(1)
    plan = next(p.plan for p in dep.pools if p.plan.af_disaggregated)
    pt = time_phase(dep.model, plan, StepShape(decode_seqs=1, decode_len=1, decode_kv=512), "step", RooflineModel(),
                    kv_precision=dep.kv_precision, kv_scale_tokens=dep.kv_scale_tokens)
    w = pt.times.weighted(pt.times.time_s)[:, 0]
    serial = float(w[pt.ops.mask("step_attention") | pt.ops.mask("step_ffn")].sum())
    assert serial > 0
    res = simulate(dep, simple_traffic(rate=None, concurrency=1, isl=512, osl=32, requests=3), overheads=False)
    assert (res.requests.tpot_s >= serial * (1 - 1e-9)).all()


@pytest.mark.parametrize("mb", [2, 8])
def test_af_a_lone_sequence_is_one_micro_batch(mb):
    """One sequence cannot be split: whatever the plan's micro-batch count, its steps cost what one micro-batch's
    do (not a fraction of a sequence in each of mb micro-batches), in simulate and in whatif."""
    from simulator.analysis import whatif

    traffic = simple_traffic(rate=None, concurrency=1, isl=512, osl=32, requests=2)
    one = simulate(_afd(1), traffic, overheads=False).requests.tpot_s.to_numpy()
    many = simulate(_afd(mb), traffic, overheads=False).requests.tpot_s.to_numpy()
    np.testing.assert_allclose(many, one, rtol=1e-12)
    w1, wm = (whatif(_afd(m).serving_plan(), batch=1, isl=512, osl=32) for m in (1, mb))
    assert wm.tpot_s == pytest.approx(w1.tpot_s, rel=1e-12)


def test_af_with_pipeline_stages_crosses_every_layer():
    """Two pipeline stages of the attention pool hold half the layers each; a token still crosses all of them, so
    a lone request's TPOT stays that of one stage (within the stage hop), as whatif says."""
    from dataclasses import replace as dc_replace

    from simulator.analysis import whatif

    dep = _afd(1)
    traffic = simple_traffic(rate=None, concurrency=1, isl=512, osl=32, requests=2)
    tpot = {}
    for pp in (1, 2):
        d = dc_replace(dep, pools=tuple(dc_replace(p, plan=dc_replace(p.plan, pp=pp)) if p.plan.af_disaggregated
                                        else p for p in dep.pools))
        sim = simulate(d, traffic, overheads=False).requests.tpot_s.mean()
        ref = whatif(d.serving_plan(), batch=1, isl=512, osl=32).tpot_s
        assert sim == pytest.approx(ref, rel=0.05), pp
        tpot[pp] = sim
    assert tpot[2] == pytest.approx(tpot[1], rel=0.05)


@pytest.mark.parametrize("mb", [1, 2, 3])
def test_af_pool_utilisation_never_exceeds_one(mb):
    res = simulate(_afd(mb), simple_traffic(rate=None, concurrency=48, isl=512, osl=64, requests=150))
    for pool, u in res.summary["utilisation"].items():
        for k in ("busy", "prefill_attention", "prefill_ffn", "decode_attention", "decode_ffn"):
            assert 0 <= u[k] <= 1 + 1e-9, (pool, k, u[k])


@pytest.mark.parametrize("chunk", [2048, 0])
def test_chunked_pp_prefill_is_pipelined(chunk):
    """One long prompt in 2048-token chunks (the pool's chunk_tokens, under a 16k step budget): each chunk is a
    micro-batch, so TTFT is (chunks + pp - 1) stage times and falls with pipeline depth, in step with whatif. A
    prompt prefilled whole is one micro-batch: more stages do not shorten it."""
    from simulator.analysis import whatif
    from simulator.build import plan_from_options

    ttft, ref = [], []
    for pp in (1, 2, 4):
        o = PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=pp, tp=1, pp=pp, chunk=chunk)
        dep = quick_deployment(o, max_batch_tokens=16384, max_seqs=8)
        s = simulate(dep, simple_traffic(rate=None, concurrency=1, isl=8192, osl=4, requests=2),
                     overheads=False).summary
        ttft.append(s["ttft_s"]["mean"])
        ref.append(whatif(plan_from_options(o), batch=1, isl=8192, osl=4).ttft_s)
    if chunk:
        assert ttft[0] > 1.4 * ttft[1] > 1.4 * 1.2 * ttft[2]
    else:
        assert ttft[1] == pytest.approx(ttft[0], rel=0.01) and ttft[2] == pytest.approx(ttft[0], rel=0.01)
    for a, b in zip(ttft, ref):
        assert a == pytest.approx(b, rel=0.06)


def test_a_pipelined_prefill_pool_hands_off_after_the_last_stage():
    """In a P/D prefill pool with pipeline stages, a prompt's KV is whole once its last chunk has crossed every
    stage: the step's drain comes before the transfer, while the pool's next step starts at once."""
    from dataclasses import replace as dc_replace

    from simulator.serving.runner import replica_configs

    dep = read_deployment(resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment"))
    pre, dec = dep.pools
    pre = dc_replace(pre, plan=dc_replace(pre.plan, pp=2, attention=dc_replace(pre.plan.attention, tp=4)))
    dep = dc_replace(dep, pools=(pre, dec))
    res = simulate(dep, simple_traffic(rate=1e-3, concurrency=None, isl=4096, osl=4, requests=1, seed=0),
                   overheads=False)
    steps = res.steps[res.steps.pool == pre.name]
    assert len(steps) == 1
    step = steps.iloc[0]
    cfg = replica_configs(dep)[0]
    drain = cfg.cost.cost(1, 4096, 0, 0, 1, 0).drain_s
    assert drain > 0
    row = res.requests.iloc[0]
    assert row.prefill_done_s == pytest.approx(step.end_s + drain, rel=1e-12)
    assert row.first_token_s > row.prefill_done_s


def test_pd_kv_transfer_takes_the_right_link_and_streams_per_layer():
    from dataclasses import replace as dc_replace

    from simulator.serving.disagg import kv_link, kv_shipping, kv_transfer_time_s
    from simulator.specs.catalog import load_hardware

    d = read_deployment(resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment"))
    pre, dec = d.pools
    assert kv_link(pre, dec)[0] == "scale_out"  # H100 and H20 nodes: over the NICs
    gb = load_hardware("gb200")
    on_rack = [dc_replace(p, plan=dc_replace(p.plan, attention=dc_replace(p.plan.attention, hardware=gb)))
               for p in (pre, dec)]
    level, bw = kv_link(*on_rack)
    assert level == "scale_up" and bw > kv_link(pre, dec)[1]  # one NVL72 domain: over NVLink
    # the deployment sets no latency: the link's own (the slower side's scale-out latency, as the profiles source it)
    latency = kv_shipping(d, pre, dec)[1]
    assert d.transfer.latency_s is None and latency == max(p.plan.attention.hardware.scale_out.latency_s
                                                           for p in (pre, dec))
    assert kv_shipping(d, *on_rack)[1] == gb.scale_up.latency_s
    exposed = [kv_transfer_time_s(d, pre, dec, 4096, p) for p in (0.0, 2e-4, 10.0)]
    # streaming hides the transfer under a longer prefill, down to the last layer's share
    assert exposed[0] > exposed[1] > exposed[2] > latency
    assert exposed[2] == pytest.approx(latency + (exposed[0] - latency) / d.model.num_layers)


def test_traffic_yaml_carries_slo_and_ramp_up(tmp_path):
    from simulator.errors import SpecError

    (tmp_path / "t.yaml").write_text(
        "schema_version: 1\narrivals: {process: closed, concurrency: 4, ramp_up: 250 ms}\nrequests: 40\n"
        "prompt_tokens: {dist: fixed, value: 64}\noutput_tokens: {dist: fixed, value: 16}\n"
        "slo: {ttft: 80 ms, tpot: 20 ms, percentile: 95}\n")
    t = read_traffic(tmp_path / "t.yaml")
    assert t.ramp_up_s == pytest.approx(0.25) and t.slo.ttft_s == pytest.approx(0.08) and t.slo.percentile == 95
    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    res = simulate(dep, t)
    starts = sorted(tm for tm, what, rid in res.events if what == "arrive" and rid < 4)
    assert starts == pytest.approx([0.0, 0.0625, 0.125, 0.1875])
    att = res.summary["slo_attainment"]
    assert res.summary["goodput"]["requests_per_s"] is not None and 0 <= att["both"] <= min(att["ttft"], att["tpot"])
    (tmp_path / "bad.yaml").write_text((tmp_path / "t.yaml").read_text().replace("250 ms", "-1 s"))
    with pytest.raises(SpecError, match="ramp_up"):
        read_traffic(tmp_path / "bad.yaml")


@pytest.mark.parametrize("name", ["dbrx-h100-prefill-h20-decode", "doubao-class-afd"])
def test_engine_matches_the_reference_on_disaggregated_deployments(name):
    """P/D (KV transfers landing on decode replicas) and A/F (the ping-pong step model's own stretch
    path) against the slow reference stepper, on the shipped deployments and chat traffic."""
    from dataclasses import replace as dc_replace

    from simulator.serving.runner import kv_transfer_for, replica_configs
    from tests.serving_reference import ReferenceSimulation

    dep = read_deployment(resolve_workload(name, "deployments", "deployment"))
    t = dc_replace(read_traffic(resolve_workload("chat", "traffic", "traffic")), requests=120)
    frames = []
    for make in (ReferenceSimulation, Simulation):
        req = t.sample()
        r = Requests(req.arrival_s.to_numpy(float).copy(), req.prompt_tokens.to_numpy(np.int64),
                     req.output_tokens.to_numpy(np.int64))
        cfgs = replica_configs(dep)
        sim = make(r, cfgs, kv_transfer_s=kv_transfer_for(dep, cfgs, r))
        sim.run()
        frames.append((sim.request_frame(), sim.step_frame()))
    assert (frames[0][0].status == "finished").all()
    _same_run(*frames)


def test_a_long_run_of_rejections_in_a_closed_loop_does_not_recurse():
    """Each rejection sends the closed loop's next request at once; thousands in a row must not nest."""
    n = 5000
    req = _reqs([np.nan] * n, [5000] * n, [4] * n)
    sim = Simulation(req, [_replica(cap=1024)], closed_concurrency=1)
    sim.run()
    df = sim.request_frame()
    assert (df.status == "rejected").all() and len(sim.events) == 2 * n


def test_scheduler_recv_interval_is_an_sglang_flag():
    from typer.testing import CliRunner

    from simulator.cli import app
    from simulator.errors import SimulatorError
    from simulator.serving.runner import replica_configs

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1),
                           scheduler_recv_interval=10)
    assert replica_configs(dep, engine="sglang")[0].recv_interval == 10
    with pytest.raises(SimulatorError, match="SGLang server flag"):
        replica_configs(dep, engine="vllm")
    quick = ["simulate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--tp", "1",
             "--concurrency", "8", "--requests", "40", "--isl", "256", "--osl", "32", "--json"]
    runner = CliRunner()
    ttft = {}
    for n in (1, 30):
        r = runner.invoke(app, [*quick, "--engine", "sglang", "--scheduler-recv-interval", str(n)])
        assert r.exit_code == 0, r.output
        ttft[n] = json.loads(r.stdout)["ttft_s"]["mean"]
    assert ttft[30] > ttft[1]  # new requests wait for the scheduler's next receive
    r = runner.invoke(app, [*quick, "--scheduler-recv-interval", "10"])
    assert r.exit_code == 2 and "SGLang server flag" in r.output and "Traceback" not in r.output


def test_an_attention_dp_rank_chunks_a_long_prompt_under_its_own_budget():
    """The replica's step budget pools its DP ranks' budgets; one prompt lives on one rank, which chunks it under
    that rank's share (vLLM: a per-rank engine core; SGLang: chunked_prefill_size split over the DP ranks)."""
    from simulator.serving.runner import replica_configs

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=4, tp=1, dp=4),
                           max_batch_tokens=8192)
    (cfg,) = replica_configs(dep)
    assert cfg.max_chunk_tokens == 2048
    t = simple_traffic(rate=None, concurrency=1, isl=6000, osl=4, requests=1, seed=0, ramp_up_s=0.0)
    steps = simulate(dep, t).steps
    assert steps.prefill_tokens[steps.prefill_tokens > 0].tolist() == [2048, 2048, 1904]


def test_recv_interval_limits():
    from simulator.errors import SimulatorError
    from simulator.serving.runner import replica_configs

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1),
                           scheduler_recv_interval=2000)
    with pytest.raises(SimulatorError, match="above 1000"):
        replica_configs(dep, engine="sglang")
    pd_dep = read_deployment(resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment"))
    from dataclasses import replace as dc_replace
    pools = tuple(dc_replace(p, scheduler_recv_interval=4) if p.role == "decode" else p for p in pd_dep.pools)
    with pytest.raises(SimulatorError, match="decode pool"):
        replica_configs(dc_replace(pd_dep, pools=pools), engine="sglang")


def test_inter_token_gaps_stop_at_an_idle_replica():
    """ITL is the gap between a request's successive tokens: a decode step's sequences each get the gap since
    the replica's previous decode-bearing step, a prefill-only step in between lengthening it, but never across
    a spell in which the replica ran nothing (the sequences before it had all finished). Both readings (the
    summary's and the vLLM-layout result's) use this one rule."""
    from simulator.report.formats import itl_samples
    from simulator.serving.metrics import inter_token_samples

    # request 0 alone (prefill 1 s, decode 0.5 s x 2), the replica idles, then request 1 the same way
    sim = Simulation(_reqs([0.0, 10.0], [50, 50], [3, 3]), [_replica()])
    sim.run()
    gaps, w = inter_token_samples(sim.step_frame())
    assert gaps.tolist() == [0.5, 0.5] and w.tolist() == [1, 1]  # within each request; not 10 s across the idle
    # a prefill-only step between two decode steps (SGLang pauses decoding for it) lengthens the gap it spans
    sim = Simulation(_reqs([0.0, 1.2], [50, 50], [4, 2]), [_replica(policy=make_policy("sglang", "recompute"))])
    sim.run()
    steps = sim.step_frame()
    assert steps.kind.tolist() == ["prefill", "decode", "prefill", "decode", "decode"]
    gaps, w = inter_token_samples(steps)
    # without the requests, request 1's first decode gap is taken as its batch's (1.5 s, from before its own first
    # token) and request 0's first one is lost (its first decode step opens the busy spell's decode steps)
    assert gaps.tolist() == [1.5, 0.5] and w.tolist() == [2, 1]
    assert all(np.array_equal(a, b) for a, b in zip(itl_samples(steps), (gaps, w)))
    # with them, each first gap runs from the request's own first token: request 0 gets 0.5 s (token 1 at 1.0 s,
    # token 2 at 1.5 s), 1.5 s (the prefill of request 1 in between), 0.5 s; request 1 gets 0.5 s (2.5 -> 3.0 s)
    requests = sim.request_frame()
    gaps, w = inter_token_samples(steps, requests=requests)
    assert sorted(np.repeat(gaps, w).tolist()) == [0.5, 0.5, 0.5, 1.5]
    assert all(np.array_equal(a, b) for a, b in zip(itl_samples(steps, requests), (gaps, w)))


@pytest.mark.parametrize("case", ["sglang-long-prompts", "vllm", "trtllm", "pd-shipped", "pd-waiting"])
def test_inter_token_gaps_are_each_requests_own_token_gaps(case):
    """Every gap ``inter_token_samples`` gives (with the requests) is one request's: rebuilt here from the records
    as each finished request's first token, then the ends of the last (output - 1) decode steps of its decode
    replica up to its finish (no preemption or speculative decoding in these runs, so from the step that first
    decodes it to its finish it is in every one), the two multisets of gaps are equal, under prefill-first (SGLang)
    and mixed (vLLM, TRT-LLM) scheduling, over a KV transfer (P/D), and where landed requests wait for one of the
    decode replica's two slots (their first gap includes the wait)."""
    from dataclasses import replace as dc_replace

    from simulator.serving.metrics import inter_token_samples

    if case.startswith("pd-"):
        dep = read_deployment(resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment"))
        rate = 8.0
        if case == "pd-waiting":
            dep = dc_replace(dep, pools=tuple(dc_replace(p, max_seqs=2) if p.role == "decode" else p
                                              for p in dep.pools))
            rate = 20.0
        res = simulate(dep, simple_traffic(rate=rate, concurrency=None, isl=2000, osl=40, requests=150, seed=3))
        if case == "pd-waiting":  # most landed requests wait for a slot
            assert ((res.requests.decode_start_s - res.requests.first_token_s) > 0.05).mean() > 0.5
    else:
        engine = case.split("-")[0]
        dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1), replicas=2)
        isl = 16000 if case == "sglang-long-prompts" else 1500
        res = simulate(dep, simple_traffic(rate=3.0, concurrency=None, isl=isl, osl=48, requests=120, seed=5),
                       engine=engine)
    req, steps = res.requests, res.steps
    assert (req.status == "finished").all() and req.preemptions.sum() == 0
    dec = steps[steps.decode_seqs > 0]
    truth = []
    for r in req.itertuples():
        on = np.sort(dec[(dec.replica_id == r.decode_replica) & (dec.end_s <= r.finish_s)].end_s.to_numpy())
        times = np.concatenate([[r.first_token_s], on[len(on) - (r.output_tokens - 1):]])
        assert len(times) == r.output_tokens and times[1] > r.first_token_s  # one token a step after the first
        truth += np.diff(times).tolist()
    gaps, w = inter_token_samples(steps, requests=req)
    assert sorted(np.repeat(gaps, w).tolist()) == sorted(truth)


def test_inter_token_gaps_do_not_depend_on_the_row_order():
    """The engine records each replica's steps in time order, which ``inter_token_samples`` uses as a fast
    path; a steps frame in any other row order (sorted by start, shuffled, several replicas interleaved) gives
    the same gaps with the same weights."""
    from simulator.serving.metrics import inter_token_samples

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1), replicas=3)
    res = simulate(dep, simple_traffic(rate=30.0, concurrency=None, isl=300, osl=60, requests=200, seed=2))
    steps = res.steps
    base = sorted(zip(*(x.tolist() for x in inter_token_samples(steps))))
    assert len(base) > 100
    for other in (steps.sort_values("start_s", kind="stable"), steps.sample(frac=1.0, random_state=4)):
        assert sorted(zip(*(x.tolist() for x in inter_token_samples(other)))) == base


def _percentiles_by_sort(v, w, ps):
    """The inverted-CDF weighted percentiles by a full stable sort and running weight: what selection must give."""
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    return [float(v[order][min(np.searchsorted(cum, p / 100 * cum[-1], side="left"), len(v) - 1)]) for p in ps]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["spread", "ties", "cluster", "tiny", "equal", "infinite"]),
       st.integers(1, 30), st.booleans())
def test_weighted_percentiles_select_what_a_full_sort_gives(seed, shape, hundreds, ones):
    """The ITL percentiles are found by selection (bins by value, only the target's bin cut again and sorted):
    for every shape of values (spread, heavy ties, one cluster with outliers, a spread near the float spacing,
    all equal, infinities among them) and whole-number weights, each percentile is the value a full sort and
    running weight give, here with small bins and sort threshold so the selection recurses. Unit weights on a
    multiple of 100 values put targets exactly on a running-weight value (the first value that reaches it, not
    the one after)."""
    from simulator.serving import metrics

    rng = np.random.default_rng(seed)
    n = 100 * hundreds
    v = {"spread": lambda: rng.random(n), "ties": lambda: np.round(rng.exponential(0.01, n), 3),
         "cluster": lambda: np.concatenate([np.full(n - 3, 0.009), rng.random(3) * 10]),
         "tiny": lambda: 0.009 + rng.random(n) * 1e-15, "equal": lambda: np.full(n, 1.5),
         "infinite": lambda: np.concatenate([rng.random(n - 2), [np.inf, -np.inf]])}[shape]()
    w = np.ones(len(v)) if ones else rng.integers(1, 300, len(v)).astype(float)
    ps = (0.01, 50, 90, 99, 100)
    expect = _percentiles_by_sort(v, w, ps)
    old = metrics.SELECT_BINS, metrics.SORT_BELOW
    try:
        metrics.SELECT_BINS, metrics.SORT_BELOW = 7, 5
        assert metrics.weighted_percentiles(v, w, ps) == expect
    finally:
        metrics.SELECT_BINS, metrics.SORT_BELOW = old
    assert metrics.weighted_percentiles(v, w, ps) == expect


def test_weighted_percentiles_at_full_size_and_with_weights_selection_cannot_take():
    """At the shipped bin count and sort threshold (a long run's ~1M gaps: here 200,000 clustered like decode
    steps, with prefill-lengthened outliers) the selection gives the full sort's values; fractional weights and
    values spanning more than the float range are sorted outright, as before selection existed."""
    from simulator.serving.metrics import SORT_BELOW, weighted_percentiles

    by_sort = _percentiles_by_sort
    rng = np.random.default_rng(3)
    n = 200_000
    assert n > 10 * SORT_BELOW
    v = np.concatenate([0.009 + rng.random(n - 500) * 1e-4, rng.random(500)])
    ps = (50, 90, 99, 99.9)
    for w in (rng.integers(1, 256, n).astype(float), np.round(rng.random(n), 1) + 0.05):
        assert weighted_percentiles(v, w, ps) == by_sort(v, w, ps)
    wide = np.concatenate([rng.random(n), [-1e308, 1e308]])
    assert weighted_percentiles(wide, np.ones(len(wide)), ps) == by_sort(wide, np.ones(len(wide)), ps)
    for v, w in ((np.zeros(0), np.zeros(0)), (np.ones(3), np.ones(2))):  # nothing to pick from, or mismatched
        with pytest.raises(ValueError, match="one length > 0"):
            weighted_percentiles(v, w, ps)


def test_a_request_longer_than_the_context_window_is_rejected_with_its_reason():
    """As a server refuses a request over ``max_model_len``: prompt + output above the model's context window is
    rejected when it reaches a replica, one at the window is served."""
    sim = Simulation(_reqs([0.0, 0.1], [90, 90], [10, 11]), [_replica(max_model_len=100)])
    sim.run()
    df = sim.request_frame()
    assert df.status.tolist() == ["finished", "rejected"]
    assert df.reason.iloc[1] == "prompt + output = 101 tokens exceed the model's context window of 100"
    # simulate sets the window from the model spec (Llama-2-70B: 4,096 tokens)
    dep = quick_deployment(PlanOptions(model="llama-2-70b", hardware="h100-sxm", devices=4, tp=4))
    res = simulate(dep, simple_traffic(rate=2.0, concurrency=None, isl=4000, osl=200, requests=3))
    assert (res.requests.status == "rejected").all()


def test_steady_window_drops_the_filling_and_draining_lifetimes():
    """The planner's steady state: open-loop requests arriving at least one median lifetime after the first and
    before the last arrival, over that span; too few of them and the whole run counts."""
    import pandas as pd

    from simulator.planning.verify import steady_window

    arr = np.arange(100.0)  # one arrival a second, each living 10 s
    mask, span = steady_window(pd.DataFrame({"arrival_s": arr, "e2e_s": np.full(100, 10.0)}))
    assert span == 79.0 and mask.sum() == 80 and arr[mask].min() == 10 and arr[mask].max() == 89
    mask, span = steady_window(pd.DataFrame({"arrival_s": arr, "e2e_s": np.full(100, 45.0)}))
    assert mask.all() and span == 99.0  # 10 requests in the middle: too few, the whole run


def test_step_cost_models_are_shared_across_runs_of_a_pool_under_the_roofline():
    """A planner verifies one deployment at several rates with an explicit RooflineModel: the pools' step-cost
    models (tables, memos) are built once and reused, and a reused model gives byte-identical results. A timing
    model with state of its own (a calibration overlay) is never shared this way."""
    from dataclasses import replace

    from simulator.serving import runner
    from simulator.timing.roofline import RooflineModel

    dep = read_deployment(resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment"))
    traffic = replace(read_traffic(resolve_workload("chat", "traffic", "traffic")), requests=300)
    runner._COST_CACHE.clear()
    first = simulate(dep, traffic, timing=RooflineModel())
    built = dict(runner._COST_CACHE)
    assert len(built) == len(dep.pools)
    again = simulate(dep, traffic, timing=RooflineModel())
    default = simulate(dep, traffic)  # no timing model given: the same roofline, the same cached models
    assert runner._COST_CACHE.keys() == built.keys()
    assert all(runner._COST_CACHE[k] is v for k, v in built.items())
    for res in (again, default):
        assert res.requests.to_csv() == first.requests.to_csv() and res.steps.to_csv() == first.steps.to_csv()
    from pathlib import Path

    from simulator.timing.calibrated import CalibratedModel

    cal = CalibratedModel([Path(__file__).resolve().parents[1] / "reports/validation/h200-sxm/calibration.yaml"])
    simulate(dep, traffic, timing=cal)
    assert runner._COST_CACHE.keys() == built.keys()


def test_requests_a_horizon_cuts_off_count_as_misses_only_once_a_miss_is_certain():
    """A run stopped by a horizon leaves requests unfinished (right-censored). Under a loose SLO every finished
    request meets it and none of the unfinished ones can have missed yet: they are left out, and the run meets
    its SLO (before, all of them counted as misses and it failed). Under a TTFT target that some of them had
    already outlived by the horizon (a first token later than it, or none by arrival + target), exactly those
    count as misses, and so do those whose TPOT must exceed its target whatever their finish; requests the horizon
    stopped before they arrived count neither way."""
    from dataclasses import replace as dc_replace

    from simulator.serving.engine import NOT_ARRIVED, UNFINISHED
    from simulator.specs.traffic import SLO

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1),
                           max_batch_tokens=4096, max_seqs=64)
    t = dc_replace(simple_traffic(rate=10.0, concurrency=None, isl=512, osl=128, requests=200, seed=0),
                   slo=SLO(100.0, 10.0, 90.0))
    full = simulate(dep, t).summary
    assert full["requests_rejected"] == 0 and full["slo_attainment"]["both"] == 1.0 and full["goodput"]["slo_met"]
    horizon = 6.0
    res = simulate(dep, t, horizon_s=horizon)
    req, cut = res.requests, res.summary
    late = int((req.reason == NOT_ARRIVED).sum())
    unfinished = req[req.reason == UNFINISHED]
    done = cut["requests_completed"]
    assert late > 0 and len(unfinished) > 10 * (done + len(unfinished)) / 90 and done > 0
    assert cut["requests_rejected"] == late + len(unfinished) and cut["requests_not_arrived"] == late
    assert set(cut["rejection_reasons"]) == {NOT_ARRIVED, UNFINISHED}
    assert cut["slo_attainment"]["both"] == 1.0 and cut["goodput"]["slo_met"] is True
    assert cut["goodput"]["requests_judged"] == done  # what the fraction is of: none unfinished has missed yet
    assert "requests_judged" not in full["goodput"]  # (no horizon cut: every request is judged)
    # a TTFT target half the unfinished requests had outlived by the horizon (their TTFT, or their wait so far)
    so_far = unfinished.ttft_s.fillna(horizon - unfinished.arrival_s)
    target = float(so_far.median())
    missed = int((so_far > target).sum())
    assert 0 < missed < len(unfinished)
    tight = simulate(dep, dc_replace(t, slo=SLO(target, 10.0, 90.0)), horizon_s=horizon)
    fin = tight.requests[tight.requests.status == "finished"]
    ok = int((fin.ttft_s <= target).sum())
    assert tight.summary["slo_attainment"]["both"] == pytest.approx(ok / (len(fin) + missed))
    assert tight.summary["goodput"]["requests_judged"] == len(fin) + missed
    # a TPOT target an unfinished request must already miss, whatever its finish: its TPOT is at least
    # (horizon - first token) / (output - 1)
    floor = (horizon - unfinished.first_token_s) / (unfinished.output_tokens - 1)
    tpot_target = float(floor.median())
    sure = int((floor > tpot_target).sum())
    assert 0 < sure < len(unfinished)
    slow = simulate(dep, dc_replace(t, slo=SLO(100.0, tpot_target, 90.0)), horizon_s=horizon)
    fin = slow.requests[slow.requests.status == "finished"]
    ok = int((fin.tpot_s <= tpot_target).sum())
    att = slow.summary["slo_attainment"]
    assert att["both"] == pytest.approx(ok / (len(fin) + sure)) and att["tpot"] == att["both"]
    # each target on its own: a sure TPOT miss is no TTFT miss; the cut requests' first tokens count for TTFT
    with_first = int(unfinished.first_token_s.notna().sum())
    assert att["ttft"] == 1.0 and with_first > 0
    if att["tpot"] < 0.9:  # under 90% within the TPOT target: the p90 TPOT cannot be
        assert slow.summary["goodput"]["slo_met"] is False


@pytest.mark.parametrize("kind", ["closed", "closed-horizon", "open-horizon"])
def test_goodput_is_the_share_of_throughput_that_met_the_slos(kind):
    """Goodput is over the same span as the throughput beside it: under an SLO every request meets it equals the
    throughput, and under one that some miss it is below it (before, a closed loop's goodput counted the whole
    output of the window's requests, and a horizon run's divided by the span to the last finish, both above the
    throughput). The vLLM-layout result counts it as vLLM does: the completed requests within the SLOs over the
    same duration as its request throughput."""
    from dataclasses import replace as dc_replace

    from simulator.report.formats import vllm_bench_result
    from simulator.specs.traffic import SLO

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    if kind == "open-horizon":
        t, horizon = simple_traffic(rate=6.0, concurrency=None, isl=800, osl=300, requests=300, seed=1), 30.0
    else:
        t = simple_traffic(rate=None, concurrency=64, isl=128, osl=1024, requests=400, seed=1)
        horizon = 20.0 if kind == "closed-horizon" else math.inf
    loose = simulate(dep, dc_replace(t, slo=SLO(1e3, 1e3, 90.0)), horizon_s=horizon)
    g, s = loose.summary["goodput"], loose.summary
    assert g["output_tokens_per_s"] == pytest.approx(s["output_tokens_per_s"], rel=1e-12)
    b = vllm_bench_result(loose, dc_replace(t, slo=SLO(1e3, 1e3, 90.0)), dep)
    assert b["request_goodput"] == pytest.approx(b["request_throughput"], rel=1e-12)
    tpot = loose.requests.tpot_s.dropna()
    slo = SLO(1e3, float(tpot.quantile(0.5)), 90.0)  # about half the requests miss the TPOT target
    tight = simulate(dep, dc_replace(t, slo=slo), horizon_s=horizon)
    g, s = tight.summary["goodput"], tight.summary
    assert 0 < g["output_tokens_per_s"] < s["output_tokens_per_s"]
    b = vllm_bench_result(tight, dc_replace(t, slo=slo), dep)
    done = tight.requests[tight.requests.status == "finished"]
    assert b["request_goodput"] == pytest.approx((done.tpot_s <= slo.tpot_s).sum() / b["duration"])
    assert b["request_goodput"] < b["request_throughput"]


def test_a_closed_loops_input_rate_counts_each_prompt_once():
    """Recompute preemptions prefill a prompt again; the closed loop's input token rate counts each prompt once
    (those whose prefill completed in the window), so with fixed lengths input/output stays the prompt/output
    ratio, where the steps' prefill tokens in the window (which include the recomputation) read ~13% higher."""
    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    res = simulate(dep, simple_traffic(rate=None, concurrency=128, isl=8192, osl=1024, requests=1500, seed=0))
    s, steps = res.summary, res.steps
    assert s["preemptions"] > 100
    win = s["window"]
    inside = (steps.end_s > win["start_s"]) & (steps.end_s <= win["end_s"])
    recomputed = steps.prefill_tokens[inside].sum() / (win["end_s"] - win["start_s"])
    assert recomputed > 1.1 * s["input_tokens_per_s"]
    assert s["input_tokens_per_s"] / s["output_tokens_per_s"] == pytest.approx(8192 / 1024, rel=0.03)


def test_a_pool_sets_its_fabric_latency_and_a_two_node_step_pays_it(tmp_path):
    """``scale_out_latency`` on a pool replaces its device's cross-node latency: a TP group across two nodes pays
    it on every all-reduce (a one-node group never does)."""
    import yaml

    from simulator.analysis.whatif import whatif
    from simulator.specs.deployment import read_deployment

    base = yaml.safe_load((Path(__file__).parents[1] / "workloads/deployments/dbrx-8xh100.yaml").read_text())

    def tpot(devices, latency=None):
        doc = dict(base, pools=[dict(base["pools"][0], devices=devices, attention={"tp": devices, "precision": "fp8"},
                                     **({"scale_out_latency": latency} if latency else {}))])
        p = tmp_path / f"d{devices}{latency or ''}.yaml".replace(" ", "")
        p.write_text(yaml.safe_dump(doc))
        dep = read_deployment(p)
        assert dep.pools[0].plan.attention.hardware.scale_out.latency_s == pytest.approx(
            125e-6 if latency else 8e-6, rel=0.1)
        return whatif(dep.serving_plan(), batch=8, isl=512, osl=64).tpot_s

    assert tpot(8, "125 us") == pytest.approx(tpot(8))  # one node: no cross-node hop
    layers = 40  # DBRX: two all-reduces a layer over 16 ranks on two nodes
    assert tpot(16, "125 us") - tpot(16) == pytest.approx(2 * layers * (125e-6 - 8e-6), rel=0.15)


def test_an_ffn_pool_inherits_its_pools_fabric_and_nonsense_latency_is_refused(tmp_path):
    import yaml

    from simulator.errors import SpecError
    from simulator.specs.deployment import read_deployment

    doc = yaml.safe_load((Path(__file__).parents[1] / "workloads/deployments/doubao-class-afd.yaml").read_text())
    af = next(i for i, p in enumerate(doc["pools"]) if "ffn_pool" in p)
    doc["pools"][af]["scale_out_latency"] = "125 us"
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump(doc))
    plan = read_deployment(p).pools[af].plan
    assert plan.attention.hardware.scale_out.latency_s == pytest.approx(125e-6)
    assert plan.ffn.hardware.scale_out.latency_s == pytest.approx(125e-6)  # inherited
    doc["pools"][af]["ffn_pool"]["scale_out_latency"] = "40 us"  # its own wins
    p.write_text(yaml.safe_dump(doc))
    assert read_deployment(p).pools[af].plan.ffn.hardware.scale_out.latency_s == pytest.approx(40e-6)
    doc["pools"][af]["scale_out_latency"] = "35 ms"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match="scale_out_latency: expected at most 10 ms"):
        read_deployment(p)


@pytest.mark.parametrize("prefill_tp,prefill_dp", [(8, 1), (2, 4)])
def test_whatif_and_simulate_ship_one_requests_kv_over_the_same_link(prefill_tp, prefill_dp):
    """One request's KV lives on one attention-DP rank's tp x pp devices: a prefill pool split into 4 ranks of TP 2
    ships it over a quarter of the ports. Unstreamed on an idle link, simulate lands it latency + bytes / link
    bandwidth after the prefill, as whatif charges it."""
    from dataclasses import replace as dc_replace

    from simulator.analysis.whatif import whatif
    from simulator.plan import kv_link
    from simulator.serving.disagg import kv_shipping
    from simulator.timing.memory import kv_bytes_per_token_model

    dep = read_deployment(resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment"))
    pre, dec = dep.pools
    a = dc_replace(pre.plan.attention, tp=prefill_tp, dp=prefill_dp)
    pre = dc_replace(pre, plan=dc_replace(pre.plan, attention=a))
    dep = dc_replace(dep, pools=(pre, dec), transfer=dc_replace(dep.transfer, overlap_with_prefill=False))
    isl = 8192
    res = simulate(dep, simple_traffic(rate=1e-3, concurrency=None, isl=isl, osl=2, requests=1, seed=0),
                   overheads=False)
    row = res.requests.iloc[0]
    landed = row.first_token_s - row.prefill_done_s
    bw = kv_link(pre.plan, dec.plan)[1]
    want = kv_shipping(dep, pre, dec)[1] + isl * kv_bytes_per_token_model(dep.model, dep.kv_precision,
                                                                   dep.kv_scale_tokens) / bw
    assert landed == pytest.approx(want, rel=1e-9)
    w = whatif(dep.serving_plan(), batch=1, isl=isl, osl=2)
    assert w.kv_transfer_s == pytest.approx(want, rel=1e-9)
    shipped = read_deployment(resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment"))
    assert bw == pytest.approx(kv_link(shipped.pools[0].plan, dec.plan)[1] * prefill_tp / 8, rel=1e-12)


class _TwoRanks(ConstantStepCost):
    """Constant step times on a replica of two attention-DP ranks."""
    wants_ranks = True
    attention_dp = 2


@pytest.mark.parametrize("make", _engines())
def test_a_transfer_ships_over_its_own_ranks_ports(make):
    """Round robin puts requests 0 and 2 on prefill rank 0: request 2's KV waits for rank 0's port (busy with
    request 0's 2 s transfer) even though rank 1's is free again at 1.1 s."""
    req = _reqs([0.0, 0.0, 0.0], [400, 50, 50], [3, 3, 3])
    reps = [_replica("prefill", pool="pre", cost=_TwoRanks(0.5, 1.0), budget=10_000),
            _replica("decode", pool="dec", cost=_TwoRanks(0.5, 1.0))]
    sim = make(req, reps, kv_transfer_s=lambda rid, src, dst: ((2.0, 0.1, 0.2)[rid], 0.0, 0))
    sim.run()
    landed = [(t, rid) for t, what, rid in sim.events if what == "kv_transferred"]
    assert [rid for _, rid in landed] == [1, 0, 2]
    assert [t for t, _ in landed] == pytest.approx([1.1, 3.0, 3.2], abs=1e-12)


@pytest.mark.parametrize("make", _engines())
def test_prompts_leave_a_pipelined_prefill_pool_in_the_order_they_entered(make):
    """Two pipeline stages: a short prompt entering stage 1 right after a long one cannot pass it in stage 2."""
    from dataclasses import replace as dc_replace

    from simulator.serving.runner import kv_transfer_for, replica_configs

    dep = read_deployment(resolve_workload("llama-3.1-8b-long-short-split", "deployments", "deployment"))
    dep = dc_replace(dep, pools=tuple(dc_replace(p, plan=dc_replace(p.plan, pp=2), replicas=1) if p.role == "prefill"
                                      else p for p in dep.pools))
    req = _reqs([0.0, 0.01], [8000, 200], [4, 1])
    cfgs = replica_configs(dep, overheads=False)
    sim = make(req, cfgs, kv_transfer_s=kv_transfer_for(dep, cfgs, req))
    sim.run()
    df, steps = sim.request_frame(), sim.step_frame()
    pre = steps[steps.pool == "prefill"]
    long_stage, short_stage = (pre.end_s - pre.start_s).tolist()
    assert df.prefill_done_s[0] == pytest.approx(pre.end_s.iloc[0] + long_stage, rel=1e-12)
    # stage 2 holds the long prompt until then; the short one follows it through
    assert df.prefill_done_s[1] == pytest.approx(df.prefill_done_s[0] + short_stage, rel=1e-12)


@pytest.mark.parametrize("make", _engines())
@pytest.mark.parametrize("roles", [("prefill", "decode"), ("colocated",)])
def test_a_prefill_that_drains_past_the_horizon_has_no_first_token(make, roles):
    """A 1 s prefill step whose prompt leaves the pipeline 0.5 s later: a 1.2 s horizon cuts it unfinished, with
    neither its prefill's end nor a first token (they had not happened)."""
    from simulator.serving.stepcost import StepCost

    class Drain(ConstantStepCost):
        def cost(self, ps, pt, pc, ds, dl, dk, ranks=None):
            return StepCost(1.0, 0.5, 0.5, drain_s=0.5) if pt else StepCost(0.5, 0.0, 0.0, 0.25, 0.25)

    sim = make(_reqs([0.0], [50], [1]), [_replica(r, pool=r, cost=Drain(0.5, 1.0)) for r in roles], horizon_s=1.2)
    sim.run()
    row = sim.request_frame().iloc[0]
    assert row.status == "rejected" and "horizon" in row.reason
    assert math.isnan(row.prefill_done_s) and math.isnan(row.first_token_s)


def test_quadrants_split_the_busy_time_with_overlapped_collectives():
    """With ``overlap_comm`` the collectives hide behind compute: the quadrants split the step time the pool was
    busy and never add up to more (they did, counting the hidden communication)."""
    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=8, tp=8, precision="fp8",
                                       overlap_comm=True))
    u = simulate(dep, simple_traffic(rate=None, concurrency=64, isl=32, osl=100, requests=128, seed=0),
                 overheads=False).summary["utilisation"]["pool"]
    quads = sum(u[k] for k in ("prefill_attention", "prefill_ffn", "decode_attention", "decode_ffn"))
    assert 0.5 < quads <= u["busy"] + 1e-9 and u["other"] >= 0


@pytest.mark.parametrize("make", _engines() + [lambda r, c, **kw: Simulation(r, c, coalesce=False, **kw)])
def test_an_admission_stopped_by_its_own_overcount_is_retried_at_the_next_step(make):
    """An admission pass counts a request it admits by one token more than it holds, so at 1.5 s it stops at
    request 2 (1 block) with 5 of 6 blocks counted, 4 held; the next step boundary counts exactly and admits it
    (a decode stretch must not skip that boundary: it did, admitting request 2 at 25.5 s)."""
    req = _reqs([0.0, 1.2, 1.2], [10, 64, 15], [50, 5, 5])
    sim = make(req, [_replica(cap=96, budget=64, policy=make_policy("trtllm", "recompute"))])
    sim.run()
    df = sim.request_frame()
    assert df.admitted_s.tolist() == [0.0, 1.5, 2.0]
    assert df.preemptions.tolist() == [0, 1, 2]


@pytest.mark.parametrize("make", _engines() + [lambda r, c, **kw: Simulation(r, c, coalesce=False, **kw)])
def test_requests_arriving_at_the_same_instant_are_scheduled_together(make):
    """Requests 1 and 2 arrive together at 0.9 s at an idle replica and share one prefill step. The reference
    stepper reached an arrival by a relative timeout from the one before (0.2 + (0.9 - 0.2) = 0.8999999999999999):
    request 1 arrived an ulp early and started its step alone, and request 2 waited for the next one."""
    req = _reqs([0.2, 0.9, 0.9], [50, 50, 50], [1, 1, 1])
    sim = make(req, [_replica(cost=ConstantStepCost(0.25, 0.5))])
    sim.run()
    df = sim.request_frame()
    assert df.finish_s.tolist() == pytest.approx([0.7, 1.4, 1.4], abs=1e-12)
    assert sim.step_frame().prefill_seqs.tolist() == [1, 2]


@pytest.mark.parametrize("make", _engines())
def test_attention_dp_ranks_swap_over_their_own_links_at_once(make):
    """Six 15-token prompts dealt round robin to two attention-DP ranks outgrow a 9-block cache on the step that
    takes them to 17 tokens (12 blocks): requests 5 (rank 1) and 4 (rank 0) are swapped out together. Each rank's
    devices move their own request's KV over their own host links, so the next step waits for one transfer, not two
    in a row as on a replica without ranks; and each rank has its own swap space."""
    def extra_s(cost, **kw):
        out = []
        for kv_bytes_per_token in (0.0, 1e6):
            req = _reqs([0.0] * 6, [15] * 6, [40] * 6)
            sim = make(req, [_replica(cap=144, budget=1000, cost=cost, preemption="swap", swap_bytes_per_s=1e9,
                                      kv_bytes_per_token=kv_bytes_per_token, **kw)])
            sim.run()
            steps, requests = sim.step_frame(), sim.request_frame()
            out.append(((steps.end_s - steps.start_s).to_numpy(), steps.preempted.to_numpy(), requests, req))
        (free, preempted, requests, req), (paid, _, _, _) = out
        assert (requests.status == "finished").all()
        first = int(np.flatnonzero(preempted)[0])
        assert preempted[first] == 2 and (requests.preemptions[[4, 5]] >= 1).all()  # (more follow, later)
        return paid[first + 1] - free[first + 1], req.dp_rank  # (the runs may part after that step)

    one_kv_s = 17 * 1e6 / 1e9  # a preempted request holds its 15 prompt tokens and 2 generated ones
    two_ranks, ranks = extra_s(_TwoRanks(0.5, 1.0))
    assert ranks.tolist() == [0, 1, 0, 1, 0, 1]  # (round robin)
    assert two_ranks == pytest.approx(one_kv_s, rel=1e-9)
    assert extra_s(ConstantStepCost(0.5, 1.0))[0] == pytest.approx(2 * one_kv_s, rel=1e-9)


@pytest.mark.parametrize("make", _engines())
def test_each_attention_dp_rank_swaps_into_its_own_swap_space(make):
    """The same six requests with 17 MB of swap space a device, one preempted request's KV: each rank's devices hold
    one, so the double preemption swaps both, as a replica without ranks does with 34 MB; without ranks and 17 MB,
    request 4 is recomputed (its 17 tokens prefilled again)."""
    def prefilled(cost, space):
        req = _reqs([0.0] * 6, [15] * 6, [40] * 6)
        sim = make(req, [_replica(cap=144, budget=1000, cost=cost, preemption="swap", swap_bytes_per_s=1e9,
                                  kv_bytes_per_token=1e6, swap_space_bytes=space)])
        sim.run()
        assert (sim.request_frame().status == "finished").all()
        return int(sim.step_frame().prefill_tokens.sum())

    ranks = prefilled(_TwoRanks(0.5, 1.0), 17e6)
    assert ranks == prefilled(ConstantStepCost(0.5, 1.0), 34e6)
    assert prefilled(ConstantStepCost(0.5, 1.0), 17e6) == ranks + 17


@pytest.mark.parametrize("make", _engines())
def test_batch_waiting_holds_a_prompt_back_beside_decodes_until_the_step_budget_fills_or_the_wait_ends(make):
    """TensorRT-LLM's batch waiting (batch_wait_timeout_iters 2, batch_wait_max_tokens_ratio 1.0 of a 100-token
    budget): request 1's 80-token prompt reaches a replica decoding request 0 at 1.2 s; a step with both would
    schedule 81 tokens, under the 100 the ratio asks for, so the decodes at 1.5 s and 2.0 s run alone and the prompt
    joins at 2.5 s, when two steps have waited: its first token comes at 3.5 s instead of 2.5 s. With a ratio of 0.8
    (80 tokens) 81 is enough and nothing waits; so does a prompt with no decode beside it (request 0's, at 0 s)."""
    def first_tokens(**kw):
        req = _reqs([0.0, 1.2], [50, 80], [10, 3])
        sim = make(req, [_replica(budget=100, **kw)])
        sim.run()
        return sim.request_frame().first_token_s.tolist(), sim.step_frame()

    plain, _ = first_tokens()
    assert plain == pytest.approx([1.0, 2.5])
    waited, steps = first_tokens(batch_wait_iters=2, batch_wait_tokens_ratio=1.0)
    assert waited == pytest.approx([1.0, 3.5])
    assert steps[["start_s", "kind"]].values.tolist()[:5] == [
        [0.0, "prefill"], [1.0, "decode"], [1.5, "decode"], [2.0, "decode"], [2.5, "mixed"]]
    assert first_tokens(batch_wait_iters=2, batch_wait_tokens_ratio=0.8)[0] == pytest.approx(plain)


@pytest.mark.parametrize("make", _engines())
def test_batch_waiting_counts_a_chunked_prompt_whole(make):
    """TensorRT-LLM counts each scheduled prompt whole (``len(get_tokens(0))``): a 150-token prompt over a 100-token
    budget runs in chunks of 99 and 51 tokens beside a decode, and at 150 + 1 tokens it is never held back under a
    ratio of 0.8 (80 tokens), though its last chunk alone would be."""
    def first_tokens(**kw):
        req = _reqs([0.0, 1.2], [50, 150], [20, 3])
        sim = make(req, [_replica(budget=100, **kw)])
        sim.run()
        return sim.request_frame().first_token_s.tolist()

    assert first_tokens(batch_wait_iters=40, batch_wait_tokens_ratio=0.8) == pytest.approx(first_tokens())


def _queue_frame(arrivals: np.ndarray, service_s) -> pd.DataFrame:
    """A FIFO single server (a closed form: each finish is max(arrival, the last finish) plus the request's service
    time, one for all or one each), as the requests frame ``open_loop_backlog`` reads."""
    service = np.broadcast_to(np.asarray(service_s, dtype=float), arrivals.shape)
    fin, last = np.empty_like(arrivals), -math.inf
    for i, a in enumerate(arrivals):
        last = fin[i] = max(a, last) + service[i]
    return pd.DataFrame({"arrival_s": arrivals, "admitted_s": fin - service, "finish_s": fin, "status": "finished",
                         "reason": ""})


def _poisson(rate: float, n: int, rng) -> np.ndarray:
    return np.cumsum(rng.exponential(1 / rate, n))


@pytest.mark.parametrize("rate, service_s, growing", [
    (10.0, 0.05, False),  # half loaded: the backlog stays near zero
    (10.0, 0.095, False),  # 95% loaded: it wanders, but does not grow with the arrivals
    (10.0, 0.12, True),  # 20% over capacity: 1/6 of the second half's arrivals pile up
    (10.0, 0.5, True),  # five times over
])
def test_an_open_loop_backlog_that_grows_with_the_arrivals_is_overload(rate, service_s, growing):
    """Arrivals evenly spaced at ``rate`` into a server of capacity 1 / service_s: the backlog check flags the runs
    whose queue grows without bound (capacity below the rate) and only those."""
    from simulator.serving.metrics import open_loop_backlog

    b = open_loop_backlog(_queue_frame(np.arange(2000) / rate, service_s))
    assert b["growing"] is growing
    assert b["arrivals_per_s"] == pytest.approx(rate, rel=1e-3)
    # finishing at the server's capacity when it cannot keep up, at the arrival rate when it can
    assert b["finished_per_s"] == pytest.approx(min(rate, 1 / service_s), rel=0.01)


@pytest.mark.parametrize("load, growing", [(0.9, False), (1.2, True)])
def test_a_random_queue_is_judged_by_its_load(load, growing):
    """Poisson arrivals into a server with exponential service times (an M/M/1 queue, seeded): at 90% load its
    backlog wanders widely but is not read as overload; at 120% it is."""
    from simulator.serving.metrics import open_loop_backlog

    rng = np.random.default_rng(7)
    b = open_loop_backlog(_queue_frame(_poisson(10.0, 4000, rng), rng.exponential(load / 10.0, 4000)))
    assert b["growing"] is growing


def test_a_rising_arrival_rate_is_not_overload():
    """A server that takes every request at once, each for 10 s (as a batch does, far from its limits), fed 5 a
    second for 270 s and then 50 a second for 30 s: the backlog rises tenfold with the arrival rate (Little's law),
    but its requests do not age, so it is not overload; the same arrivals into a FIFO server of one request each 0.1 s
    (10 a second) are."""
    from simulator.serving.metrics import open_loop_backlog

    rng = np.random.default_rng(3)
    arr = np.concatenate([np.arange(1350) / 5.0, 270.0 + np.arange(1500) / 50.0])
    stay = 10.0 + rng.uniform(-1, 1, len(arr))
    batch = pd.DataFrame({"arrival_s": arr, "admitted_s": arr, "finish_s": arr + stay, "status": "finished",
                          "reason": ""})
    b = open_loop_backlog(batch)
    assert b["in_system_at_last_arrival"] > 5 * b["in_system_halfway"] and b["growing"] is False
    assert open_loop_backlog(_queue_frame(arr, 0.1))["growing"] is True


def test_a_run_a_horizon_cut_keeps_its_unfinished_requests_in_the_backlog():
    """An overloaded run stopped at its last arrival: the requests still queued or in service then end rejected
    as unfinished, and they are the backlog (refused requests, by contrast, left as they came)."""
    from simulator.serving.engine import UNFINISHED
    from simulator.serving.metrics import open_loop_backlog

    f = _queue_frame(np.arange(2000) / 10.0, 0.12)
    cut = f.finish_s > f.arrival_s.max()
    f.loc[cut, ["finish_s", "admitted_s"]] = np.nan
    f.loc[cut, ["status", "reason"]] = ["rejected", UNFINISHED]
    b = open_loop_backlog(f)
    assert b["growing"] is True and b["in_system_at_last_arrival"] == int(cut.sum())


def test_the_backlog_check_gives_no_verdict_on_a_run_too_short_to_tell():
    """A run whose first half is shorter than a request's median time in service is still filling up (and one with
    few arrivals is noise): no verdict either way, however the backlog moved."""
    from simulator.serving.metrics import open_loop_backlog

    assert open_loop_backlog(_queue_frame(np.arange(2000) / 10.0, 0.5))["growing"]  # (long enough: overload)
    assert open_loop_backlog(_queue_frame(np.arange(100) / 10.0, 0.5))["growing"] is None  # 50 in the second half
    slow = _queue_frame(np.arange(1000) / 100.0, 0.001)
    slow["finish_s"] += 20.0  # every request in service 20 s (as a batch serves them together), past the 5 s half
    assert open_loop_backlog(slow)["growing"] is None


def test_an_overloaded_open_loop_says_so():
    from typer.testing import CliRunner

    from simulator.cli import app

    args = ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--isl", "1024", "--osl", "256",
            "--requests", "1500"]
    over = CliRunner().invoke(app, [*args, "--rate", "30"])
    assert over.exit_code == 0 and "note: overloaded" in over.output and "--requests" in over.output
    assert "sustained" not in over.output  # (the fleet does not sustain that rate: no figures at it)
    under = CliRunner().invoke(app, [*args, "--rate", "4"])
    assert under.exit_code == 0 and "overloaded" not in under.output
    assert "sustained    at the offered 4 req/s: output 1,024 tok/s" in under.output
    closed = CliRunner().invoke(app, [*args, "--concurrency", "64", "--json"])
    assert json.loads(closed.stdout)["backlog"] is None  # (a closed loop's clients wait: no backlog to grow)
    assert json.loads(closed.stdout)["sustained"] is None  # (its rate is what the loop drives, not an offer)


def test_an_open_loop_reports_its_figures_at_the_offered_rate():
    """A capacity plan prices a fleet at its target rate: price / (rate x output tokens a request). A finite run's
    own throughput and cost average over its makespan, the drain after the last arrival included, so at the same
    rate they read lower (its cost higher); ``sustained`` gives the plan's figures. With fixed lengths that is a
    closed form: 20 req/s x 128 tokens, every request finished, goodput the rate x the share meeting the SLOs."""
    from dataclasses import replace

    from simulator.specs.traffic import SLO

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    t = simple_traffic(rate=20.0, concurrency=None, isl=512, osl=128, requests=1200, seed=3)
    sm = simulate(dep, replace(t, slo=SLO(0.2, 0.012, 90.0))).summary
    st, price_per_h = sm["sustained"], sm["cost_usd_per_hour"]
    assert sm["backlog"]["growing"] is False and sm["requests_completed"] == 1200
    assert st["rate_per_s"] == 20.0 and st["output_tokens_per_s"] == 20.0 * 128 and st["input_tokens_per_s"] == 20 * 512
    assert st["cost_usd_per_mtok"] == pytest.approx(price_per_h / 3600 / (20.0 * 128) * 1e6, rel=1e-12)
    assert sm["cost_usd_per_mtok"] > st["cost_usd_per_mtok"]  # (the run's own, over its drain too)
    assert sm["output_tokens_per_s"] < st["output_tokens_per_s"]
    share = sm["slo_attainment"]["both"]
    assert 0 < share < 1 and st["goodput_requests_per_s"] == pytest.approx(20.0 * share, rel=1e-12)
    # a horizon that cuts the run leaves no sample of the load to scale
    cut = simulate(dep, t, horizon_s=30.0).summary
    assert cut["requests_rejected"] > 0 and cut["sustained"] is None


def test_sustained_figures_need_a_run_that_kept_up():
    """``sustained`` scales what a request brought by the rate only where the backlog says the fleet kept up. A run
    too short to tell (60 requests at 200 req/s, ten times what one H100 serves) reads no verdict and so no figures,
    where it once priced the offer as if served; a trace's rate is its arrivals over its span, and a trace that comes
    as one burst has no rate to sustain."""
    from dataclasses import replace

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    short = simulate(dep, simple_traffic(rate=200.0, concurrency=None, isl=1024, osl=256, requests=60, seed=1)).summary
    assert short["backlog"]["growing"] is None and short["sustained"] is None
    from typer.testing import CliRunner

    from simulator.cli import app
    out = CliRunner().invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--rate",
                                   "200", "--isl", "1024", "--osl", "256", "--requests", "60"]).output
    assert "sustained    n/a: too few arrivals" in out  # (the printed summary says why it gives no figures)
    base = simple_traffic(rate=4.0, concurrency=None, isl=512, osl=64, requests=1000, seed=2)
    n = 1000
    steady = pd.DataFrame({"arrival_s": np.arange(n) * 0.25, "prompt_tokens": 512, "output_tokens": 64})
    sm = simulate(dep, replace(base, arrival="trace", rate_per_s=0.0, trace=steady)).summary
    assert sm["backlog"]["growing"] is False
    assert sm["sustained"]["rate_per_s"] == pytest.approx(4.0, rel=1e-12)  # (999 gaps over 249.75 s)
    assert sm["sustained"]["output_tokens_per_s"] == pytest.approx(4.0 * 64, rel=1e-12)
    burst = steady.assign(arrival_s=np.arange(n) * 1e-9)
    sb = simulate(dep, replace(base, arrival="trace", rate_per_s=0.0, trace=burst)).summary
    assert sb["backlog"]["growing"] is not False and sb["sustained"] is None
