import numpy as np
import pytest

from simulator.ops.build import StepShape, build_ops, expected_experts_hit, random_routing_imbalance
from simulator.ops.kinds import DTYPE_INDEX, GEMM, GROUPED_GEMM, wire_bytes
from simulator.plan import simple_phase
from simulator.specs.catalog import load_hardware, load_model

H100 = load_hardware("h100-sxm")


def _linear_flop(ops):
    lin = [i for i, k in enumerate(ops.kind) if k in (GEMM, GROUPED_GEMM)]
    return float(sum(ops["count"][i, 0] * ops["flop"][i, 0] for i in lin))


@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.1-70b", "qwen3-32b", "deepseek-v3", "mixtral-8x7b",
                                   "step-3", "kimi-k2"])
def test_linear_flop_per_token_is_two_x_active_matmul_params(model):
    """One device, one decode token per sequence: every linear layer's FLOP sum to 2 x active params."""
    m = load_model(model)
    plan = simple_phase(H100, m, 1)
    # many tokens so every expert is hit; routed FLOP per token stays top_k experts
    T = 4096
    ops = build_ops(m, plan, StepShape(decode_seqs=T, decode_kv=1), "decode")
    per_token = _linear_flop(ops) / T
    expected = 2 * m.matmul_params_per_token
    assert per_token == pytest.approx(expected, rel=0.01)
    # = 2 x active parameters, less the embedding table (a lookup, not a matmul)
    assert per_token == pytest.approx(2 * (m.active_params - m.embedding_params), rel=0.01)


def test_tensor_parallel_divides_per_device_work():
    m = load_model("llama-3.1-70b")
    one = build_ops(m, simple_phase(H100, m, 1), StepShape(decode_seqs=8, decode_kv=1000), "decode")
    eight = build_ops(m, simple_phase(H100, m, 8), StepShape(decode_seqs=8, decode_kv=1000), "decode")
    assert _linear_flop(eight) == pytest.approx(_linear_flop(one) / 8, rel=1e-9)


def test_decode_attention_reads_the_whole_kv_cache():
    m = load_model("llama-3.1-8b")
    ops = build_ops(m, simple_phase(H100, m, 1), StepShape(decode_seqs=4, decode_kv=1000), "decode")
    i = ops.names.index("attn_core_decode")
    kv_per_layer = 2 * 8 * 128 * 2  # K and V, 8 KV heads, dim 128, bf16
    assert ops["bytes"][i, 0] >= 4 * 1000 * kv_per_layer


def test_fp8_kv_halves_kv_bytes_plus_scales():
    m = load_model("llama-3.1-8b")
    plan = simple_phase(H100, m, 1)
    shape = StepShape(decode_seqs=4, decode_kv=4096)
    b16 = build_ops(m, plan, shape, "decode")
    b8 = build_ops(m, plan, shape, "decode", kv_precision="fp8", kv_scale_tokens=128)
    i = b16.names.index("attn_core_decode")
    ratio = b8["bytes"][i, 0] / b16["bytes"][i, 0]
    assert 0.5 < ratio < 0.52


def test_w4a8_halves_fp8_weight_bytes_and_uses_8bit_peak():
    m = load_model("dbrx")
    shape = StepShape(decode_seqs=1, decode_kv=10)
    fp8 = build_ops(m, simple_phase(H100, m, 8, precision="fp8"), shape, "decode")
    w4 = build_ops(m, simple_phase(H100, m, 8, precision="w4a8"), shape, "decode")
    i = fp8.names.index("experts_gate_up")
    assert w4["bytes"][i, 0] / fp8["bytes"][i, 0] == pytest.approx(0.5 + 2 / 128, rel=0.02)
    assert w4["dtype"][i, 0] == DTYPE_INDEX["int8"] and H100.peak("int8") == H100.peak("fp8")


def test_expected_experts_hit_closed_form():
    assert expected_experts_hit(16, 4, 1) == pytest.approx(4.0)
    assert expected_experts_hit(16, 4, 10_000) == pytest.approx(16.0)
    assert expected_experts_hit(8, 2, 2) == pytest.approx(8 * (1 - (6 / 8) ** 2))


def test_routing_imbalance_is_one_without_ep_and_shrinks_with_tokens():
    assert random_routing_imbalance(100, 8, 1) == 1.0
    small, big = random_routing_imbalance(np.array([64, 65536]), 8, 8)
    assert small > big > 1.0


def test_the_busiest_ep_rank_reads_the_weights_of_its_own_experts():
    """The busiest EP rank sets the step time: its FLOP are its token-expert pairs (the mean rank's x the routing
    imbalance) and its bytes the weights of the distinct experts those pairs hit, the mean rank's scaled the same
    way but never more than the experts it holds. DeepSeek-V3 on 8 ranks at one token: 8 pairs, one expert a rank
    on average, ~2.9 on the busiest (it reads ~2.9 experts' weights, not one); at a large batch every rank reads
    all 32 of its experts."""
    m = load_model("deepseek-v3")
    plan = simple_phase(H100, m, 8, ep=8, precision="fp8")
    for seqs, want in ((1.0, None), (4096.0, 256 / 8)):
        ops = build_ops(m, plan, StepShape(decode_seqs=seqs, decode_kv=1000), "decode")
        i = ops.names.index("experts_gate_up")
        imb = float(random_routing_imbalance(seqs, 8, 8))
        hit = float(expected_experts_hit(256, 8, seqs)) / 8
        groups = ops.arrays["groups"][i, 0] if np.ndim(ops.arrays["groups"]) else float(ops.arrays["groups"])
        assert groups == pytest.approx(want if want is not None else hit * imb)
        pairs = seqs * 8 / 8 * imb  # the busiest rank's token-expert pairs
        assert ops["flop"][i, 0] == pytest.approx(2 * pairs * 2 * m.moe.expert_intermediate * m.hidden_size)
    assert hit * imb > 2.5  # (the one-token case above: several experts' weights on the busiest rank)


def test_moe_expert_parallel_exchanges_by_attention_layout():
    m = load_model("dbrx")
    shape = StepShape(decode_seqs=64, decode_kv=1000)
    # attention data-parallel: each rank holds its own tokens and dispatches them to the experts' owners
    ops = build_ops(m, simple_phase(H100, m, 8, tp=1, dp=8, ep=8), shape, "decode")
    i = ops.names.index("moe_dispatch")
    wire = wire_bytes(ops.kind, ops.arrays)
    assert ops["count"][i, 0] == 40
    assert ops["count"][ops.names.index("moe_ep_all_reduce"), 0] == 0
    # 64 tokens / 8 devices, each sent once to every distinct rank among its top-4 experts' owners:
    # 8 x (1 - (7/8)^4) ranks expected, 7/8 of them remote; hidden x bf16 per copy
    distinct = 8 * (1 - (7 / 8) ** 4)
    assert wire[i, 0] == pytest.approx(64 / 8 * 6144 * 2 * distinct * 7 / 8)
    # attention TP: every rank already holds every token, so the experts' outputs are summed with one
    # all-reduce of the whole batch (SGLang without an all-to-all backend, TensorRT-LLM without attention DP)
    tp = build_ops(m, simple_phase(H100, m, 8, ep=8), shape, "decode")
    for name in ("moe_dispatch", "moe_combine", "moe_all_gather"):
        assert tp["count"][tp.names.index(name), 0] == 0
    j = tp.names.index("moe_ep_all_reduce")
    assert tp["count"][j, 0] == 40 and tp["msg_bytes"][j, 0] == 64 * 6144 * 2


def test_vectorised_sweep_matches_scalar_builds():
    m = load_model("mixtral-8x7b")
    plan = simple_phase(H100, m, 8)
    tps = np.array([1.0, 2.0, 4.0, 8.0])
    batch = np.array([1.0, 16.0, 64.0, 256.0])
    vec = build_ops(m, plan, StepShape(decode_seqs=batch, decode_kv=2048), "decode", tp=tps, dp=8 / tps)
    for j, (t, b) in enumerate(zip(tps, batch)):
        one = build_ops(m, simple_phase(H100, m, 8, tp=int(t)), StepShape(decode_seqs=b, decode_kv=2048), "decode")
        np.testing.assert_allclose(vec["flop"][:, j], one["flop"][:, 0], rtol=1e-12)
        np.testing.assert_allclose(vec["bytes"][:, j], one["bytes"][:, 0], rtol=1e-12)


def test_attention_dp_without_ep_all_reduces_every_ranks_tokens_over_the_sharded_experts():
    """DBRX with attention DP 8 and no EP: the experts are TP-sharded over the 8 devices (vLLM's and SGLang's
    default), so each MoE layer gathers the 8 ranks' tokens and reduce-scatters the outputs, all 64 tokens (the plain
    TP 8 layout all-reduces the same 64); the routed GEMMs see those 64 tokens."""
    m = load_model("dbrx")
    shape = StepShape(decode_seqs=64, decode_kv=1000)
    plans = simple_phase(H100, m, 8, tp=1, dp=8), simple_phase(H100, m, 8)
    assert plans[0].ffn.expert_tp == plans[1].ffn.expert_tp == 8
    dp8, tp8 = (build_ops(m, p, shape, "decode") for p in plans)

    def row(ops, name):
        i = ops.names.index(name)
        return ops["count"][i, 0], ops["msg_bytes"][i, 0]

    # attention DP: gathered to the experts and reduce-scattered back (two NCCL collectives, vLLM's
    # allgather_reducescatter path), each over all 64 tokens
    assert row(dp8, "moe_dp_gather") == row(dp8, "moe_dp_scatter") == (40, 64 * 6144 * 2)
    assert row(dp8, "moe_all_reduce")[0] == 0
    # attention TP: every rank holds the 64 tokens already; one all-reduce of them
    assert row(tp8, "moe_all_reduce") == (40, 64 * 6144 * 2) and row(tp8, "moe_dp_gather")[0] == 0
    for ops in (dp8, tp8):
        assert ops["m"][ops.names.index("experts_gate_up"), 0] == pytest.approx(64 * 4)


def test_swept_expert_layouts_default_as_the_deployment_reader_does(tmp_path):
    """``build_ops`` given arrays of parallel degrees and no expert TP defaults it per column as a deployment file
    would: the A/F pool of doubao-class-afd swept over ep 1, 2, 4, 8 matches the pool read with each ep written out."""
    import yaml

    from simulator.specs.catalog import resolve_workload
    from simulator.specs.deployment import read_deployment

    path = resolve_workload("doubao-class-afd", "deployments", "deployment")
    dep = read_deployment(path)
    pool = next(p for p in dep.pools if p.plan.af_disaggregated)
    eps = np.array([1.0, 2.0, 4.0, 8.0])
    shape = StepShape(decode_seqs=64, decode_kv=1000)
    vec = build_ops(dep.model, pool.plan, shape, "decode", ep=eps)
    doc = yaml.safe_load(path.read_text())
    for j, ep in enumerate(eps):
        one = dict(doc)
        one["pools"] = [dict(p, ffn={**p.get("ffn", {}), "ep": int(ep)}) if p.get("name") == pool.name else p
                        for p in doc["pools"]]
        f = tmp_path / f"afd-ep{int(ep)}.yaml"
        f.write_text(yaml.safe_dump(one))
        plan = next(p for p in read_deployment(f).pools if p.name == pool.name).plan
        ref = build_ops(dep.model, plan, shape, "decode")
        np.testing.assert_allclose(vec["flop"][:, j], ref["flop"][:, 0], rtol=1e-12)
        np.testing.assert_allclose(vec["bytes"][:, j], ref["bytes"][:, 0], rtol=1e-12)
