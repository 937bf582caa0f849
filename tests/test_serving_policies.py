"""Engine batching policies: one contract suite every policy passes, an exact event log per policy on
the constant-time fake step cost, simulation properties, and the engine step overheads."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.serving.engine import ReplicaConfig, Requests, Simulation
from simulator.serving.overheads import OverheadStepCost
from simulator.serving.policies import POLICIES, make_policy
from simulator.serving.profiles import ENGINES, engine_profile
from simulator.serving.stepcost import ConstantStepCost

POLICY_MODES = [("vllm", "recompute"), ("sglang", "recompute"), ("trtllm", "none"), ("trtllm", "recompute")]


def _reqs(arrivals, prompts, outputs):
    return Requests(np.array(arrivals, float), np.array(prompts, np.int64), np.array(outputs, np.int64))


def _replica(policy, mode="recompute", cap=10_000, budget=80, seqs=16, **kw):
    return ReplicaConfig("p", 0, "colocated", ConstantStepCost(decode_s=0.5, prefill_s=1.0), cap, budget, seqs, 1,
                         policy=make_policy(policy, mode), **kw)


# ---- the contract every policy passes --------------------------------------------------------------

@pytest.mark.parametrize("name,mode", POLICY_MODES)
@settings(max_examples=60, deadline=None)
@given(n_dec=st.integers(0, 40), rem=st.lists(st.integers(1, 5000), max_size=6), budget=st.integers(1, 8192),
       q_len=st.integers(1, 4))
def test_policy_contract(name, mode, n_dec, rem, budget, q_len):
    pol = make_policy(name, mode)
    run_dec, chunks = pol.plan(n_dec, list(rem), budget, q_len)
    assert len(chunks) == len(rem)
    assert all(0 <= c <= r for c, r in zip(chunks, rem))
    n_run = n_dec if run_dec else 0
    # never over the token budget, unless the decodes alone exceed it (they are never starved)
    assert sum(chunks) + n_run * q_len <= max(budget, n_run * q_len)
    if sum(chunks) and n_run * q_len >= budget:
        pytest.fail("prefill scheduled into a budget the decodes already use up")
    # progress: a step with work to do schedules something; with nothing to prefill the decodes run
    # (the engine relies on it and does not ask)
    if n_dec or len(rem):
        assert n_run or sum(chunks)
    if not rem:
        assert run_dec
    # prompt chunks are taken in admission order: a request is chunked only if all before it run whole
    for i, c in enumerate(chunks):
        if c:
            assert all(chunks[j] == rem[j] for j in range(i))
    # KV reservation: at least what is cached now, constant when the policy does not grow
    tp, gen, out, off = np.array([500]), np.array([3]), np.array([40]), np.array([0])
    res = pol.reserved_tokens(tp, gen, out, off)
    assert res[0] >= 503
    if not pol.grows:
        assert pol.reserved_tokens(tp, gen + 10, out, off)[0] == res[0]
    assert pol.admit_tokens(500, 0, 40) >= 501


def test_every_engine_has_a_policy_and_every_constant_a_source():
    for name in ENGINES:
        p = engine_profile(name)
        assert p.policy in POLICIES
        for key, text in p.sources.items():
            assert isinstance(text, str) and len(text) > 20, (name, key)
        assert p.kernel_launch_s >= p.kernel_floor_s > 0 and p.cuda_graph_max_bs >= 1


# ---- exact event logs: the same two requests under each engine --------------------------------------
# request 0: prompt 50, 3 output tokens, arrives at 0; request 1: prompt 80, 2 output tokens, arrives
# at 0.5; 80-token step budget; prefill-bearing steps take 1 s, pure-decode steps 0.5 s.

def _run(policy, mode="recompute", **kw):
    sim = Simulation(_reqs([0.0, 0.5], [50, 80], [3, 2]), [_replica(policy, mode, **kw)])
    sim.run()
    return sim


def test_vllm_mixes_prompt_chunks_into_decode_steps():
    sim = _run("vllm")
    # t=1: request 0 decodes (1 token) and 79 prompt tokens of request 1 fill the budget; t=2: the last one
    assert sim.events == [(0.0, "arrive", 0), (0.5, "arrive", 1), (3.0, "finish", 0), (3.5, "finish", 1)]
    assert sim.step_frame()[["start_s", "kind", "prefill_tokens", "decode_seqs"]].values.tolist() == [
        [0.0, "prefill", 50, 0], [1.0, "mixed", 79, 1], [2.0, "mixed", 1, 1], [3.0, "decode", 0, 1]]


def test_sglang_runs_prefill_first_and_pauses_decode():
    sim = _run("sglang")
    assert sim.events == [(0.0, "arrive", 0), (0.5, "arrive", 1), (2.5, "finish", 1), (3.0, "finish", 0)]
    assert sim.step_frame()[["start_s", "kind", "prefill_tokens", "decode_seqs"]].values.tolist() == [
        [0.0, "prefill", 50, 0], [1.0, "prefill", 80, 0], [2.0, "decode", 0, 2], [2.5, "decode", 0, 1]]


def test_trtllm_runs_whole_prompts_in_flight():
    sim = _run("trtllm", "none")
    # at t=1 the 80-token prompt does not fit beside the decode (79 left) and is not chunked: it waits
    assert sim.events == [(0.0, "arrive", 0), (0.5, "arrive", 1), (2.0, "finish", 0), (3.5, "finish", 1)]
    steps = sim.step_frame().sort_values("start_s")
    assert steps[["start_s", "kind", "prefill_tokens", "decode_seqs"]].values.tolist() == [
        [0.0, "prefill", 50, 0], [1.0, "decode", 0, 1], [1.5, "decode", 0, 1], [2.0, "prefill", 80, 0],
        [3.0, "decode", 0, 1]]


def test_trtllm_guaranteed_no_evict_never_preempts():
    # 5 KV blocks of 16 tokens; each request grows to 48 tokens (3 blocks): only one fits whole
    req = _reqs([0.0, 0.0], [16, 16], [32, 32])
    no_evict = Simulation(req, [_replica("trtllm", "none", cap=80, budget=64)])
    no_evict.run()
    df = no_evict.request_frame()
    assert (df.status == "finished").all() and df.preemptions.sum() == 0
    assert df.admitted_s[1] >= df.finish_s[0]  # the second waits for the first's reservation
    vllm = Simulation(_reqs([0.0, 0.0], [16, 16], [32, 32]), [_replica("vllm", cap=80, budget=64)])
    vllm.run()
    assert vllm.request_frame().preemptions.sum() >= 1  # admits both on the prompt alone, then evicts


# ---- properties of whole simulations, every policy --------------------------------------------------

@pytest.mark.parametrize("name,mode", POLICY_MODES + [("vllm", "swap")])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_simulation_properties(name, mode, data):
    n = data.draw(st.integers(1, 12))
    arrivals = sorted(data.draw(st.lists(st.floats(0, 5), min_size=n, max_size=n)))
    prompts = data.draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outputs = data.draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    cap = data.draw(st.sampled_from([96, 400, 10_000]))
    budget = data.draw(st.sampled_from([16, 64, 256]))
    sim = Simulation(_reqs(arrivals, prompts, outputs),
                     [_replica(name, mode, cap=cap, budget=budget, seqs=4, kv_bytes_per_token=1e3)])
    sim.run()
    df, steps = sim.request_frame(), sim.step_frame()
    assert set(df.status) <= {"finished", "rejected"}
    done = df[df.status == "finished"]
    assert (done.ttft_s <= done.e2e_s + 1e-12).all() and (done.ttft_s > 0).all()
    assert (steps.kv_occupancy <= 1.0 + 1e-12).all()
    assert (steps.prefill_tokens + steps.decode_seqs <= budget + steps.decode_seqs).all()
    # tokens are conserved: every output token of a finished request was produced exactly once
    assert int(steps.output_tokens.sum()) == int(done.output_tokens.sum())
    if df.preemptions.sum() == 0:
        assert int(steps.prefill_tokens.sum()) == int(done.prompt_tokens.sum())
    if mode == "none":
        assert df.preemptions.sum() == 0


# ---- step overheads --------------------------------------------------------------------------------

def test_overheads_hide_launches_in_cuda_graphs_for_decode_only():
    prof = engine_profile("vllm")
    oc = OverheadStepCost(ConstantStepCost(1e-3), prof, num_layers=32, moe=False)
    small = oc.cost(0, 0, 0, 8, 1, 8000).time_s
    beyond = oc.cost(0, 0, 0, prof.cuda_graph_max_bs + 1, 1, 8000).time_s
    prefill = oc.cost(1, 2048, 0, 0, 0, 0).time_s  # past vLLM's piecewise-graph token sizes: eager
    kernels = prof.kernels_per_layer * 32
    # past the largest captured batch every unlisted kernel pays its host launch, as a prefill does
    per_seq = prof.per_seq_s * (prof.cuda_graph_max_bs + 1 - 8)
    assert beyond - small == pytest.approx(per_seq + kernels * (prof.kernel_launch_s - prof.kernel_floor_s))
    assert prefill > oc.cost(0, 0, 0, 1, 1, 8).time_s
    assert small > 1e-3 + prof.step_cpu_s  # never free
    moe = OverheadStepCost(ConstantStepCost(1e-3), prof, num_layers=32, moe=True)
    assert moe.cost(1, 2048, 0, 0, 0, 0).time_s - prefill == pytest.approx(prof.moe_prefill_s)
    assert moe.cost(0, 0, 0, 8, 1, 8000).time_s == pytest.approx(small)  # decode pays no MoE prefill set-up


@pytest.mark.parametrize("engine,padded", [("vllm", True), ("sglang", True), ("trtllm", False)])
def test_a_decode_batch_between_captured_sizes_replays_only_where_the_engine_pads(engine, padded):
    """vLLM and SGLang pad a decode batch up to the next captured CUDA-graph size; TensorRT-LLM's default graphs
    (no padding) cover 1-32 and the powers of two, so a batch of 40 or 100 runs eagerly and pays every unlisted
    kernel's host launch, where 32, 64 and 128 replay."""
    prof = engine_profile(engine)
    assert prof.cuda_graph_padding is padded
    oc = OverheadStepCost(ConstantStepCost(1e-3), prof, num_layers=32, moe=False)
    launch = prof.kernels_per_layer * 32 * (prof.kernel_launch_s - prof.kernel_floor_s)

    def extra(n):  # the step's overhead less its per-sequence part
        return oc.cost(0, 0, 0, n, 1, 8000).time_s - prof.per_seq_s * n

    for n in (40, 100):
        assert extra(n) - extra(32) == pytest.approx(0.0 if padded else launch, abs=1e-12)
    for n in (32, 64, 128):
        assert extra(n) == pytest.approx(extra(1), abs=1e-12)
    if not padded:  # with attention DP a graph replays only when every rank holds the same captured batch
        oc.attention_dp = 8
        assert extra(256) == pytest.approx(extra(8), abs=1e-12)  # 32 a rank
        assert extra(17) - extra(16) == pytest.approx(launch, abs=1e-12)  # uneven ranks: eager
        assert extra(264) - extra(256) == pytest.approx(launch, abs=1e-12)  # 33 a rank: not captured


def test_speculative_draft_passes_cost_time():
    prof = engine_profile("sglang")
    plain = OverheadStepCost(ConstantStepCost(1e-3), prof, 61, True)
    mtp = OverheadStepCost(ConstantStepCost(1e-3), prof, 61, True, draft_cost_fraction=0.05)
    assert mtp.cost(0, 0, 0, 4, 3, 400).time_s == pytest.approx(plain.cost(0, 0, 0, 4, 3, 400).time_s + 2 * 0.05e-3)


def test_overheads_keep_the_stretch_fast_path_exact():
    from simulator.build import PlanOptions, quick_deployment
    from simulator.serving.runner import replica_configs

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    cost = replica_configs(dep, engine="trtllm")[0].cost
    times, _, _ = cost.decode_stretch(24, 24 * 900, 5)
    for i in range(5):
        assert times[i] == pytest.approx(cost.cost(0, 0, 0, 24, 1, 24 * 900 + 24 * i).time_s, rel=1e-9)


def test_engine_override_and_deployment_field(tmp_path):
    from simulator.specs.catalog import resolve_workload
    from simulator.specs.deployment import read_deployment

    src = resolve_workload("dbrx-8xh100", "deployments", "deployment").read_text()
    (tmp_path / "d.yaml").write_text(src.replace("max_seqs: 256", "max_seqs: 256\n    engine: trtllm\n"
                                                                   "    preemption: none"))
    dep = read_deployment(tmp_path / "d.yaml")
    assert dep.pools[0].engine == "trtllm" and dep.pools[0].preemption == "none"
    (tmp_path / "bad.yaml").write_text(src.replace("max_seqs: 256", "max_seqs: 256\n    engine: tgi"))
    from simulator.errors import SpecError

    with pytest.raises(SpecError, match="engine"):
        read_deployment(tmp_path / "bad.yaml")
    assert replace(dep.pools[0], engine="vllm").engine == "vllm"


def test_an_engines_moe_kernels_time_the_routed_experts_of_moe_models_only(monkeypatch):
    """vLLM's profile gives its fused-MoE kernels' bandwidth fraction for FP8 experts (``moe_memory_fraction``): a
    served FP8 MoE decode step is slower with it than with the device profile's grouped GEMMs; a BF16 MoE (no entry)
    and a dense model are not touched, and ``--no-overheads`` (the bare timing model) leaves it out. The step-cost
    cache keeps the two apart (its key holds the profile)."""
    import simulator.serving.runner as runner_mod
    from simulator.build import PlanOptions, quick_deployment

    fractions = dict(engine_profile("vllm").moe_memory_fraction)
    assert set(fractions) == {"fp8"}  # (the engine and format that ship one)
    real = runner_mod.engine_profile

    def step_s(model: str, precision: str, *, kernels: bool, overheads: bool = True) -> float:
        monkeypatch.setattr(runner_mod, "engine_profile",
                            lambda name: real(name) if kernels else replace(real(name), moe_memory_fraction=()))
        dep = quick_deployment(PlanOptions(model=model, hardware="h100-sxm", devices=8, tp=8,
                                           ep=8 if "235b" in model else 1, precision=precision), max_seqs=64)
        cost = runner_mod.replica_configs(dep, overheads=overheads)[0].cost
        return cost.cost(0, 0, 0, 32, 1, 32 * 1024).time_s

    runner_mod._COST_CACHE.clear()  # (then both variants are built and cached side by side: the second call of each
    # variant below is served from the cache, so a key that ignored the fraction would return the other's cost)
    assert step_s("qwen3-235b-a22b", "fp8", kernels=True) > 1.2 * step_s("qwen3-235b-a22b", "fp8", kernels=False)
    assert step_s("qwen3-235b-a22b", "bf16", kernels=True) == step_s("qwen3-235b-a22b", "bf16", kernels=False)
    assert step_s("llama-3.1-70b", "fp8", kernels=True) == step_s("llama-3.1-70b", "fp8", kernels=False)
    assert step_s("qwen3-235b-a22b", "fp8", kernels=True, overheads=False) == \
        step_s("qwen3-235b-a22b", "fp8", kernels=False, overheads=False)
    runner_mod._COST_CACHE.clear()


def test_a_malformed_moe_memory_fraction_is_refused(monkeypatch):
    from simulator.errors import SpecError
    from simulator.serving import profiles

    table = {k: dict(v) for k, v in profiles._table().items()}
    bad_entries = ({"value": {"fp8": 1.4}, "source": "x"}, {"value": {"fp9": 0.4}, "source": "x"},
                   {"value": {"fp8": 0.4}})  # over 1, not a dtype, no source
    for bad in bad_entries:
        table["vllm"]["moe_memory_fraction"] = bad
        monkeypatch.setattr(profiles, "_table", lambda t=table: t)
        with pytest.raises(SpecError, match="moe_memory_fraction"):
            profiles.engine_profile("vllm")


@pytest.mark.parametrize("key,entry,words", [
    ("kernels_per_layer", {"value": -50, "source": "x"}, "kernels_per_layer.value: expected a finite number >= 0"),
    ("step_cpu_s", {"value": -5e-4, "source": "x"}, "step_cpu_s.value: expected a finite number >= 0"),
    ("step_cpu_s", {"value": "abc", "source": "x"}, "step_cpu_s.value: expected a finite number >= 0"),
    ("step_cpu_s", {"value": 1e-4}, "step_cpu_s: expected {value: ..., source: ...}"),
    ("kernels_per_layer", {"value": 12.5, "source": "x"}, "kernels_per_layer.value: expected a whole number"),
    ("cuda_graph_padding", {"value": 1, "source": "x"}, "cuda_graph_padding.value: expected true or false"),
    ("step_cpu_sec", {"value": 1e-4, "source": "x"}, "step_cpu_sec: unknown key"),
    ("policy", "fifo", "policy: expected one of vllm, sglang, trtllm"),
    (None, None, "step_cpu_s: required key is missing"),
])
def test_an_engine_profile_constant_out_of_range_or_misspelt_is_refused_by_key(monkeypatch, key, entry, words):
    """An edited ``engines.yaml`` is held to what its constants mean: a negative overhead (a step faster than its
    kernels), a count that is not whole, a typo or a missing constant is refused with its key path, not computed
    (and not an internal KeyError)."""
    from simulator.errors import SpecError
    from simulator.serving import profiles

    table = {k: dict(v) for k, v in profiles._table().items()}
    if key is None:
        del table["vllm"]["step_cpu_s"]
    else:
        table["vllm"][key] = entry
    monkeypatch.setattr(profiles, "_table", lambda: table)
    with pytest.raises(SpecError) as exc:
        profiles.engine_profile("vllm")
    assert f"engines.vllm.{words}" in str(exc.value)


def test_the_plan_screen_times_an_fp8_moe_with_the_engines_moe_kernels_too():
    """The planner's analytic screen applies the same engine kernels as the simulation it screens for: under vLLM an
    FP8 MoE's decode TPOT grid is slower than with the device profile's grouped GEMMs, by the same wrapper."""
    from simulator.planning.screen import Workload, _layout_metrics
    from simulator.specs.catalog import load_hardware, load_model
    from simulator.timing.roofline import RooflineModel

    model = load_model("qwen3-235b-a22b")
    specs = {"h100-sxm": load_hardware("h100-sxm")}
    row = {"hw": "h100-sxm", "tp": 8, "dp": 1, "ep": 8, "etp": 1, "pp": 1, "attn_precision": "fp8",
           "ffn_precision": "fp8", "kv_precision": "fp8", "devices": 8}
    w = Workload(1.0, 1000, 200, 1000, float("inf"), float("inf"), 0.9)
    grids = {}
    for kernels in (True, False):
        p = engine_profile("vllm")
        rows = [dict(row)]
        _layout_metrics(model, rows, specs, w, RooflineModel(), p if kernels else replace(p, moe_memory_fraction=()))
        grids[kernels] = np.asarray(rows[0]["tpot_grid"], dtype=float)
    assert (grids[True] > 1.1 * grids[False]).all()
