"""The engine servers' own batch limits, used where a deployment sets none (``engines.yaml`` server_defaults)."""

import pytest

from simulator.build import PlanOptions, quick_deployment
from simulator.errors import SpecError
from simulator.serving import profiles
from simulator.serving.profiles import server_defaults
from simulator.serving.runner import replica_configs, simulate
from simulator.specs.catalog import load_hardware
from simulator.specs.traffic import simple_traffic

GIB = 2**30


@pytest.mark.parametrize("engine,gib,name,tp,expected", [
    # vLLM: the large defaults from 70 GiB, except on an A100 (vllm/engine/arg_utils.py)
    ("vllm", 79.6, "NVIDIA H100 SXM5 80GB", 1, (1024, 8192, None)),
    ("vllm", 80.0, "NVIDIA A100 SXM4 80GB", 8, (256, 2048, None)),
    ("vllm", 45.0, "NVIDIA L40S", 1, (256, 2048, None)),
    # SGLang: the prefill chunk and the CUDA-graph batch by memory, the graph batch by TP too (server_args.py)
    ("sglang", 79.6, "NVIDIA H100 SXM5 80GB", 1, (2048, 8192, 256)),
    ("sglang", 79.6, "NVIDIA H100 SXM5 80GB", 8, (2048, 8192, 512)),
    ("sglang", 179.1, "NVIDIA B200", 8, (2048, 16384, 512)),
    ("sglang", 45.0, "NVIDIA L40S", 2, (2048, 4096, 32)),
    ("sglang", 24.0, "NVIDIA L4", 4, (2048, 2048, 80)),
    ("trtllm", 140.4, "NVIDIA H200", 8, (2048, 8192, None)),
])
def test_server_defaults_follow_the_engines_own_rules(engine, gib, name, tp, expected):
    d = server_defaults(engine, gib * GIB, name, tp)
    assert (d.max_seqs, d.max_batch_tokens, d.cuda_graph_max_bs) == expected


def test_a_quick_run_takes_its_engines_limits_and_explicit_ones_win():
    h100 = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    a100 = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="a100-sxm", devices=1, tp=1))
    assert h100.pools[0].max_seqs is None  # unset: the server's default applies when the run is built
    (h,), (a,) = replica_configs(h100), replica_configs(a100)
    assert (h.max_seqs, h.max_batch_tokens, a.max_seqs, a.max_batch_tokens) == (1024, 8192, 256, 2048)
    (s,) = replica_configs(h100, engine="sglang")
    assert (s.max_seqs, s.max_batch_tokens, s.cost.profile.cuda_graph_max_bs) == (2048, 8192, 256)
    mine = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1), max_seqs=40,
                            max_batch_tokens=1024)
    (m,) = replica_configs(mine, engine="sglang")
    assert (m.max_seqs, m.max_batch_tokens) == (40, 1024)


def test_concurrency_past_256_runs_on_an_h100_and_queues_on_an_a100():
    """vLLM serves up to 1024 sequences at once by default on an H100, 256 on an A100: a closed loop of 400
    clients fills the first and queues on the second."""
    t = simple_traffic(rate=None, concurrency=400, isl=128, osl=64, requests=800, seed=0, ramp_up_s=0.0)
    running = {}
    for hw in ("h100-sxm", "a100-sxm"):
        dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware=hw, devices=1, tp=1))
        steps = simulate(dep, t).steps
        running[hw] = int(steps.running.max())
    assert running["h100-sxm"] == 400 and running["a100-sxm"] == 256


def test_attention_dp_replicas():
    """vLLM runs an engine core per DP rank, each with its own limits; SGLang splits its limits over the DP ranks
    and picks its CUDA-graph batch by all the ranks (its tp_size)."""
    h200 = load_hardware("h200-sxm")
    v = server_defaults("vllm", h200.hbm_bytes, h200.name, 1, 8)
    s = server_defaults("sglang", h200.hbm_bytes, h200.name, 1, 8)
    assert (v.max_seqs, v.max_batch_tokens) == (8 * 1024, 8 * 8192)
    assert (s.max_seqs, s.max_batch_tokens, s.cuda_graph_max_bs) == (2048, 8192, 512)


def test_a_bad_tier_is_named(monkeypatch):
    table = {"vllm": {"server_defaults": {"tiers": [{"max_seqs": 8, "max_tokens": 64}]}}}
    monkeypatch.setattr(profiles, "_table", lambda: table)
    with pytest.raises(SpecError, match=r"engines.vllm.server_defaults.tiers\[0\]"):
        server_defaults("vllm", 80 * GIB, "x", 1)
    table["vllm"]["server_defaults"]["tiers"] = [{"min_memory_gib": 200, "max_seqs": 8, "max_batch_tokens": 64}]
    with pytest.raises(SpecError, match="no tier matches"):
        server_defaults("vllm", 80 * GIB, "x", 1)


def test_shipped_hardware_all_resolve():
    for hw_id in ("a100-sxm", "h100-sxm", "h200-sxm", "b200-sxm", "gb200", "h20", "l40s", "mi300x"):
        hw = load_hardware(hw_id)
        for engine in ("vllm", "sglang", "trtllm"):
            d = server_defaults(engine, hw.hbm_bytes, hw.name, 8)
            assert d.max_seqs >= 256 and d.max_batch_tokens >= 2048


def test_sglang_with_speculative_decoding_runs_at_most_48_requests_by_default():
    """SGLang resets an unset max_running_requests to 48 for EAGLE/EAGLE3/NEXTN (MTP) speculative decoding
    (server_args.py _handle_speculative_decoding); vLLM keeps its own default, and an explicit limit wins."""
    spec = dict(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1, spec_draft_tokens=2, spec_acceptance=0.7)
    dep = quick_deployment(PlanOptions(**spec))
    (s,) = replica_configs(dep, engine="sglang")
    (v,) = replica_configs(dep, engine="vllm")
    assert (s.max_seqs, v.max_seqs) == (48, 1024)
    plain = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    assert replica_configs(plain, engine="sglang")[0].max_seqs == 2048
    (m,) = replica_configs(quick_deployment(PlanOptions(**spec), max_seqs=300), engine="sglang")
    assert m.max_seqs == 300
