"""The engines' KV-cache sizing rules (``serving.kvmemory``, ``engines.yaml`` ``memory:``).

Closed forms on hand-computable cases for each rule (vLLM: utilisation x usable memory minus weights, the larger of
the forward and the profile sampler, and non-torch memory; SGLang: mem_fraction_static x the memory free at start
minus weights, with the server's default fraction tiers; TensorRT-LLM: a fraction of what the weights and the
profiling peak leave), properties (the vLLM rule never exceeds the old engine-agnostic bound; every rule grows with
its memory fraction; vLLM's shrinks as max_seqs grows), and the wiring: the simulation and the planner's screen
size the cache with the same function, a pool's ``memory_fraction`` reaches it, and bad ``memory:`` blocks are
refused with a one-line error.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.build import PlanOptions, plan_from_options, quick_deployment
from simulator.errors import SpecError
from simulator.serving import profiles
from simulator.serving.kvmemory import engine_kv_bytes, replica_kv_capacity
from simulator.serving.profiles import EngineMemory, engine_profile
from simulator.serving.runner import kv_capacity_tokens
from simulator.timing.memory import MemoryFit, kv_bytes_per_token_model

GIB = 2**30


def _fit(total_gib=80.0, weights_gib=30.0, act_gib=1.0):
    return MemoryFit("attention+ffn", "gpu", weights_gib * GIB, 0.0, act_gib * GIB, 8 * GIB, total_gib * GIB, 1024.0)


def _plan(tp=1, dp=1, pp=1):
    return SimpleNamespace(attention=SimpleNamespace(tp=tp, dp=dp), pp=pp)


MODEL = SimpleNamespace(vocab_size=100_000)


# -- closed forms ----------------------------------------------------------------------------------------
def test_vllm_rule_closed_form():
    mem = EngineMemory("vllm", 0.9, sampler_bytes_per_logit=40, non_torch_bytes=0.25 * GIB,
                       distributed_init_bytes=2 * GIB, driver_reserved_bytes=0.5 * GIB)
    kw = dict(model=MODEL, max_batch_tokens=8192)
    # sampler 1000 x 100000 x 40 B = 4e9 B (3.73 GiB) beats the 1 GiB forward
    got = engine_kv_bytes(_fit(), mem, plan=_plan(), max_seqs=1000, **kw)
    assert got == pytest.approx(0.9 * 79.5 * GIB - 30 * GIB - 4e9 - 0.25 * GIB)
    # 10 requests: the forward (1 GiB) is the peak; TP 2 adds the communicator buffers
    got = engine_kv_bytes(_fit(), mem, plan=_plan(tp=2), max_seqs=10, **kw)
    assert got == pytest.approx((0.9 * 79.5 - 30 - 1 - 0.25 - 2) * GIB)
    # each of 4 DP ranks profiles its own quarter of the requests (and holds communicator buffers); a launch flag
    # replaces the default utilisation
    got = engine_kv_bytes(_fit(), mem, plan=_plan(dp=4), max_seqs=2000, fraction=0.5, **kw)
    assert got == pytest.approx(0.5 * 79.5 * GIB - 30 * GIB - 2e9 - 2.25 * GIB)


def test_sglang_default_fraction_tiers():
    """ServerArgs' default mem_fraction_static, by hand: (gpu_mem - reserved) / gpu_mem, 3 decimals."""
    mem = engine_profile("sglang").memory
    h100, h200, b200 = 81559 * 2**20, 143771 * 2**20, 183359 * 2**20
    assert mem.mem_fraction_static(h100, 1) == round((81559 - 10 * 1024) / 81559, 3) == 0.874
    assert mem.mem_fraction_static(h100, 8) == round((81559 - 13.5 * 1024) / 81559, 3)
    assert mem.mem_fraction_static(h200, 8) == round((143771 - 16 * 1024) / 143771, 3) == 0.886
    assert mem.mem_fraction_static(b200, 8) == round((183359 - 32 * 1024) / 183359, 3) == 0.821
    assert mem.mem_fraction_static(h200, 8, dp_attention=True) == round((143771 - 20 * 1024) / 143771, 3)


def test_sglang_rule_closed_form():
    mem = EngineMemory("sglang", None, context_bytes=1 * GIB, distributed_init_bytes=2 * GIB,
                       reserve_tiers=((float("inf"), 8 * GIB, 0.0),))
    f = round((80 - 8) / 80, 3)
    assert engine_kv_bytes(_fit(), mem, model=MODEL, plan=_plan(), max_seqs=1, max_batch_tokens=1) == \
        pytest.approx(f * 79 * GIB - 30 * GIB)
    assert engine_kv_bytes(_fit(), mem, model=MODEL, plan=_plan(tp=4), max_seqs=1, max_batch_tokens=1,
                           fraction=0.93) == pytest.approx(0.93 * 77 * GIB - 30 * GIB)


def test_trtllm_rule_closed_form():
    mem = EngineMemory("trtllm", 0.9, context_bytes=1 * GIB, distributed_init_bytes=2 * GIB)
    got = engine_kv_bytes(_fit(), mem, model=MODEL, plan=_plan(tp=2), max_seqs=1, max_batch_tokens=1)
    assert got == pytest.approx(0.9 * (80 - 1 - 2 - 30 - 1) * GIB)


def test_capacity_in_tokens_and_the_replica():
    """Tokens per replica = the device's KV budget / KV bytes per token on a device x attention-DP ranks."""
    o = PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=2, tp=2)
    built = plan_from_options(o)
    mem = engine_profile("vllm").memory
    cap = replica_kv_capacity(built.model, built.prefill, mem, max_seqs=256, max_batch_tokens=8192)
    assert cap.tokens == pytest.approx(cap.kv_bytes_per_device / cap.fits[0].kv_bytes_per_token)
    assert cap.fits[0].kv_bytes_per_token == 32 * 2 * 4 * 128 * 2  # 8 KV heads over TP 2, BF16


def test_weights_that_do_not_fit_leave_no_cache():
    o = PlanOptions(model="qwen3-32b", hardware="l40s", devices=1, tp=1)
    built = plan_from_options(o)
    for name in ("vllm", "sglang", "trtllm"):
        cap = replica_kv_capacity(built.model, built.prefill, engine_profile(name).memory, max_seqs=64,
                                  max_batch_tokens=2048)
        assert cap.tokens == 0 and cap.kv_bytes_per_device < 0 and name in cap.problem


# -- properties ------------------------------------------------------------------------------------------
LAYOUTS = [("llama-3.1-8b", "h100-sxm", 1), ("llama-3.1-70b", "h200-sxm", 4), ("qwen3-32b", "a100-sxm", 1),
           ("qwen3-235b-a22b", "b200-sxm", 4), ("mixtral-8x7b", "h100-sxm", 2)]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(LAYOUTS), st.integers(1, 2048), st.sampled_from([512, 2048, 8192, 16384]))
def test_vllm_never_exceeds_the_old_bound(layout, seqs, tokens):
    """gpu_memory_utilization 0.9 leaves what the hardware profiles' 10% reserve leaves, before anything else."""
    model, hw, tp = layout
    built = plan_from_options(PlanOptions(model=model, hardware=hw, devices=tp, tp=tp))
    kw = dict(max_seqs=seqs, max_batch_tokens=tokens)
    new = replica_kv_capacity(built.model, built.prefill, engine_profile("vllm").memory, **kw)
    old = replica_kv_capacity(built.model, built.prefill, None, **kw)
    assert new.kv_bytes_per_device <= old.kv_bytes_per_device
    assert new.tokens <= old.tokens


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(LAYOUTS), st.sampled_from(["vllm", "sglang", "trtllm"]), st.floats(0.3, 0.99),
       st.floats(0.0, 0.05), st.integers(1, 1024))
def test_capacity_grows_with_the_memory_fraction(layout, engine, fraction, step, seqs):
    model, hw, tp = layout
    built = plan_from_options(PlanOptions(model=model, hardware=hw, devices=tp, tp=tp))
    mem = engine_profile(engine).memory
    lo, hi = (replica_kv_capacity(built.model, built.prefill, mem, max_seqs=seqs, max_batch_tokens=8192, fraction=f)
              for f in (fraction, min(fraction + step, 1.0)))
    assert hi.kv_bytes_per_device >= lo.kv_bytes_per_device
    assert hi.tokens >= lo.tokens


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(LAYOUTS), st.integers(1, 1024), st.integers(0, 1024))
def test_vllm_capacity_falls_with_max_seqs(layout, seqs, more):
    """The profile run samples every request's full vocabulary: more requests, less cache."""
    model, hw, tp = layout
    built = plan_from_options(PlanOptions(model=model, hardware=hw, devices=tp, tp=tp))
    mem = engine_profile("vllm").memory
    a, b = (replica_kv_capacity(built.model, built.prefill, mem, max_seqs=s, max_batch_tokens=16384)
            for s in (seqs, seqs + more))
    assert b.kv_bytes_per_device <= a.kv_bytes_per_device


# -- wiring ----------------------------------------------------------------------------------------------
def test_simulation_uses_the_pool_engine_rule_and_its_memory_fraction():
    o = PlanOptions(model="qwen3-32b", hardware="h100-sxm", devices=1, tp=1)
    dep = quick_deployment(o, engine="vllm")
    pool = dep.pools[0]
    built = plan_from_options(o)
    want = replica_kv_capacity(built.model, built.prefill, engine_profile("vllm").memory, max_seqs=1024,
                               max_batch_tokens=8192)  # vLLM's H100 server defaults
    assert kv_capacity_tokens(dep, pool, 8192) == int(want.tokens)
    lower = replace(pool, memory_fraction=0.85)
    assert kv_capacity_tokens(dep, lower, 8192) < kv_capacity_tokens(dep, pool, 8192)
    sgl = replace(pool, engine="sglang")
    assert kv_capacity_tokens(dep, sgl, 8192) != kv_capacity_tokens(dep, pool, 8192)


def test_a_pool_that_names_vllm_0_17_or_later_is_sized_with_its_smaller_sampler_peak():
    """vLLM 0.17 cut the profile run's sampler peak from 39 to 15.4 B per (request x vocabulary entry): where that
    peak sets the profile run (Qwen3-32B, 1024 requests x 151,936 logits, above the 8192-token forward), a pool
    naming 0.17.0 holds exactly the difference more KV bytes; 0.16.0, or no release, keeps the old peak."""
    o = PlanOptions(model="qwen3-32b", hardware="h100-sxm", devices=1, tp=1)
    dep = quick_deployment(o, engine="vllm")
    pool = dep.pools[0]
    old, new = (kv_capacity_tokens(dep, replace(pool, engine_version=v), 8192) for v in ("0.16.0", "0.17.0"))
    assert old == kv_capacity_tokens(dep, pool, 8192)
    per_token = kv_bytes_per_token_model(dep.model, dep.kv_precision, dep.kv_scale_tokens)
    assert (new - old) * per_token == pytest.approx(1024 * 151936 * (39 - 15.4), rel=1e-3)


def test_deployment_yaml_memory_fraction(tmp_path):
    from simulator.specs.deployment import read_deployment

    src = open("workloads/deployments/llama-3.1-8b-long-short-split.yaml").read()
    for value, ok in (("0.8", True), ("1.5", False), ("0", False)):
        text = src.replace("  - name:", f"  - memory_fraction: {value}\n    name:", 1)
        path = tmp_path / f"d{value}.yaml"
        path.write_text(text)
        if ok:
            assert read_deployment(path).pools[0].memory_fraction == 0.8
        else:
            with pytest.raises(SpecError, match="memory_fraction"):
                read_deployment(path)


def test_screen_uses_the_same_capacity():
    from simulator.planning.candidates import COLOCATED_BATCH_TOKENS, phase_plan
    from simulator.planning.screen import BATCH_GRID, Workload, _layout_metrics
    from simulator.specs.hardware import read_hardware
    from simulator.specs.model import read_model
    from simulator.timing.roofline import RooflineModel

    model = read_model("workloads/models/qwen3-32b.yaml")
    specs = {"h100-sxm": read_hardware("hardware/h100-sxm.yaml")}
    row = {"hw": "h100-sxm", "tp": 1, "dp": 1, "ep": 1, "etp": 1, "pp": 1, "attn_precision": "bf16",
           "ffn_precision": "bf16", "kv_precision": "bf16", "devices": 1}
    w = Workload(1.0, 1000, 200, 1000, float("inf"), float("inf"), 0.9)
    got = {}
    for engine, release in ((None, None), ("vllm", None), ("vllm", "0.17.0")):
        rows = [dict(row)]
        _layout_metrics(model, rows, specs, w, RooflineModel(), engine_profile(engine) if engine else None, release)
        got[engine, release] = rows[0]["kv_tokens_colocated"]
    plan = phase_plan(row, specs, model)
    mem = engine_profile("vllm").memory
    for release in (None, "0.17.0"):  # (the screen sizes a named release's cache as the simulation does)
        want = replica_kv_capacity(model, plan, mem.for_release(release), max_seqs=int(BATCH_GRID[-1]),
                                   max_batch_tokens=COLOCATED_BATCH_TOKENS)
        assert got["vllm", release] == pytest.approx(want.tokens)
    assert got[None, None] == pytest.approx(replica_kv_capacity(model, plan, None, max_seqs=512,
                                                                 max_batch_tokens=COLOCATED_BATCH_TOKENS).tokens)
    assert got["vllm", None] < got["vllm", "0.17.0"] < got[None, None]


@pytest.mark.parametrize("block, where", [
    ({"rule": "tgi"}, "memory.rule"),
    ({"rule": "vllm", "source": "x"}, "memory"),
    ({"rule": "trtllm", "source": "x", "free_gpu_memory_fraction": {"value": 1.5, "source": "s"},
      "context_bytes": {"value": 1, "source": "s"}, "distributed_init_bytes": {"value": 1, "source": "s"}},
     "free_gpu_memory_fraction"),
    ({"rule": "trtllm", "source": "x", "free_gpu_memory_fraction": {"value": 0.9},
      "context_bytes": {"value": 1, "source": "s"}, "distributed_init_bytes": {"value": 1, "source": "s"}},
     "free_gpu_memory_fraction"),
    ({"rule": "sglang", "source": "x", "context_bytes": {"value": 1, "source": "s"},
      "distributed_init_bytes": {"value": 1, "source": "s"},
      "mem_fraction_static": {"source": "s", "dp_attention_extra_gib": 4, "speculative_extra_gib": 2,
                              "tiers": [{"below_memory_gib": 90, "reserved_gib": 9.5, "reserved_gib_per_rank": 0.5}]}},
     "mem_fraction_static"),
])
def test_bad_memory_blocks_are_refused(block, where):
    with pytest.raises(SpecError, match=where.replace(".", r"\.")):
        profiles._memory("x", block)


def test_engine_memory_rows_are_well_formed():
    """The published startup logs (reports/validation/published/engine-memory.csv): every row cites a source and
    quotes its lines, and every row marked checked builds on a catalogued model and GPU."""
    import pandas as pd

    df = pd.read_csv("reports/validation/published/engine-memory.csv")
    assert df.id.is_unique and set(df.engine) <= {"vllm", "sglang", "trtllm"} and set(df.trust) <= {"A", "B", "C"}
    assert df.source.str.startswith("https://").all() and (df.log_lines.str.len() > 10).all()
    checked = df[df.checked == 1]
    assert (checked.logged_kv_gib.notna() | checked.logged_kv_tokens.notna()).all()
    for _, r in checked.iterrows():
        built = plan_from_options(PlanOptions(model=r.model_id, hardware=r.hardware, devices=int(r.tp * r.pp),
                                              tp=int(r.tp), pp=int(r.pp), precision=r.precision,
                                              kv_precision=r.kv_precision))
        assert built.prefill.attention.hardware.id == r.hardware


def test_memory_fraction_survives_the_planner_yaml(tmp_path):
    import yaml

    from simulator.planning.candidates import deployment_yaml
    from simulator.specs.deployment import read_deployment

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1), engine="sglang")
    dep = replace(dep, pools=(replace(dep.pools[0], memory_fraction=0.93),))
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(deployment_yaml(dep, "round trip", {})))
    back = read_deployment(path).pools[0]
    assert back.memory_fraction == 0.93 and back.engine == "sglang"


def test_sglang_dp_attention_and_a_draft_model_raise_the_reserve():
    """SGLang's default fraction on 8 x H200 (143,771 MiB) with DP attention (+4 GiB) and a draft model (+2 GiB), as
    ServerArgs computes it, reaches the replica's capacity through engine_kv_bytes (tp x dp = 8 ranks)."""
    mem = engine_profile("sglang").memory
    h200 = 143771 * 2**20
    fit = _fit(total_gib=h200 / GIB, weights_gib=80.0)
    for dp, spec, reserve_gib in ((1, False, 16), (8, False, 20), (8, True, 22)):
        frac = round((143771 - reserve_gib * 1024) / 143771, 3)
        got = engine_kv_bytes(fit, mem, model=MODEL, plan=_plan(tp=8 // dp, dp=dp), max_seqs=1, max_batch_tokens=1,
                              speculative=spec)
        assert got == pytest.approx(frac * (h200 - mem.context_bytes - mem.distributed_init_bytes) - 80 * GIB)


def test_a_request_must_fit_one_attention_dp_rank():
    """With attention DP each rank keeps its own share of the cache: a request longer than one rank's share is
    rejected even though the replica as a whole could hold it; one that fits a rank finishes."""
    from simulator.serving.runner import replica_configs, simulate
    from simulator.specs.traffic import simple_traffic

    o = PlanOptions(model="qwen3-30b-a3b", hardware="h100-sxm", devices=2, tp=1, dp=2, ep=2, precision="fp8")
    dep = quick_deployment(o, engine="sglang")
    # the requests below are longer than the model's 40,960-token context window, which would reject them first
    dep = replace(dep, model=replace(dep.model, context_tokens=0))
    cap = replica_configs(dep)[0].kv_capacity_tokens
    rank = cap // 16 // 2 * 16
    for prompt, status in ((rank + 64, "rejected"), (rank - 64, "finished")):
        res = simulate(dep, simple_traffic(rate=None, concurrency=1, isl=prompt, osl=8, requests=1))
        r = res.requests.iloc[0]
        assert r.status == status, (prompt, rank, r.reason)
        if status == "rejected":
            assert f"holds {rank} per attention-DP rank" in r.reason


def test_a_memory_fraction_is_its_own_engines_flag():
    """A pool's memory_fraction is its engine's flag: simulating the pool under another engine is refused by name,
    not read as that engine's flag."""
    from simulator.errors import SimulatorError
    from simulator.serving.runner import replica_configs

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1), engine="sglang")
    dep = replace(dep, pools=[replace(dep.pools[0], memory_fraction=0.85)])
    assert replica_configs(dep, engine="sglang")  # its own engine: fine
    with pytest.raises(SimulatorError, match="memory_fraction: 0.85 is sglang's KV memory flag; --engine vllm"):
        replica_configs(dep, engine="vllm")


def test_no_room_for_a_cache_says_why():
    from simulator.errors import InfeasibleError

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1), engine="vllm")
    dep = replace(dep, pools=[replace(dep.pools[0], memory_fraction=0.2)])
    with pytest.raises(InfeasibleError, match=r"gpu_memory_utilization 0.2\) leaves nothing beside weights of 16.1 GB"):
        kv_capacity_tokens(dep, dep.pools[0], 8192, max_seqs=1024, profile=engine_profile("vllm"))
