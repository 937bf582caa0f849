import math

import pytest

from simulator.analysis.whatif import whatif
from simulator.build import PlanOptions, plan_from_options
from simulator.errors import InfeasibleError


def run(**kw):
    o = dict(model="dbrx", hardware="h100-sxm", devices=8)
    shape = {k: kw.pop(k) for k in ("batch", "isl", "osl", "prefill_batch") if k in kw}
    o.update(kw)
    return whatif(plan_from_options(PlanOptions(**o)), **{"batch": 64, "isl": 2048, "osl": 512, **shape})


def q(res, name):
    return res.quadrants.set_index("quadrant").loc[name]


def test_llama_405b_fits_one_h100_node_in_fp8_not_bf16():
    fp8 = run(model="llama-3.1-405b", precision="fp8", kv_precision="fp8", batch=16)
    bf16 = run(model="llama-3.1-405b", precision="bf16", batch=16)
    assert fp8.fits
    assert not bf16.fits
    weights = bf16.memory[0].weights_bytes
    assert weights == pytest.approx(405.85e9 * 2 / 8, rel=0.01)  # bf16 weights alone exceed 80 GB per device
    assert "short by" in bf16.memory[0].explain()


def test_decode_attention_is_bandwidth_bound_and_faster_on_h20():
    from simulator.timing.base import BOUNDS

    h100, h20 = run(hardware="h100-sxm"), run(hardware="h20")
    core_s = []
    for r in (h100, h20):
        core = r.decode.ops.named("attn_core_decode")
        assert BOUNDS[int(r.decode.times.bound[core, 0][0])] == "memory"
        core_s.append(float(r.decode.times.time_s[core, 0][0]))
    assert core_s[1] < core_s[0]  # the KV-cache read: 4.0 vs 3.35 TB/s


def test_prefill_ffn_is_compute_bound_and_several_times_slower_on_h20():
    h100, h20 = run(hardware="h100-sxm"), run(hardware="h20")
    assert q(h100, "prefill_ffn").bound == "compute"
    assert q(h20, "prefill_ffn").bound == "compute"
    # 148 vs 989 dense TFLOP/s, the H100's at 0.80 of that under a served step's load (H200-SUSTAINED): 5.3x
    assert q(h20, "prefill_ffn").time_s > 3 * q(h100, "prefill_ffn").time_s


def test_latency_grows_with_the_work_and_throughput_with_the_batch():
    short, long = run(isl=512), run(isl=8192)
    assert long.ttft_s > 4 * short.ttft_s  # 16x the prompt: prefill time grows at least 4x
    small, big = run(batch=8), run(batch=64)
    assert big.tpot_s >= small.tpot_s  # more KV to read per step
    assert big.output_tokens_per_s > 4 * small.output_tokens_per_s  # decode is bandwidth-bound: batching pays


def test_cost_scales_with_the_price_and_is_unknown_without_one():
    cheap, dear = run(price_usd_per_hour=1.0), run(price_usd_per_hour=3.0)
    assert dear.cost_usd_per_mtok == pytest.approx(3 * cheap.cost_usd_per_mtok, rel=1e-12)
    assert dear.tpot_s == cheap.tpot_s  # the price changes nothing but the cost
    assert not math.isfinite(run(hardware="h20").cost_usd_per_mtok)  # H20 has no sourced price


def test_fp8_speeds_up_bandwidth_bound_decode():
    assert run(precision="fp8").tpot_s < run().tpot_s


def test_chunked_pipeline_prefill_bubble():
    one = run(model="llama-3.1-70b", pp=4, tp=2, chunk=2048, isl=2048)  # one chunk: bubble = 3/4
    many = run(model="llama-3.1-70b", pp=4, tp=2, chunk=256, isl=2048)  # 8 chunks
    assert many.ttft_s < one.ttft_s
    assert any("bubble" in n and "75%" in n and "smaller --chunk" in n for n in one.notes)
    assert any("bubble" in n and "27%" in n and "smaller" not in n for n in many.notes)  # 3 / (8 + 3)


def test_speculative_decoding_lowers_tpot_with_good_acceptance():
    base = run(model="llama-3.1-70b", batch=8)
    spec = run(model="llama-3.1-70b", batch=8, spec_draft_tokens=3, spec_acceptance=0.8, spec_draft_cost=0.05)
    assert spec.tpot_s < base.tpot_s


def test_pd_disaggregation_uses_both_pools():
    r = run(prefill_hardware="h100-sxm", prefill_devices=8, decode_hardware="h20", decode_devices=8)
    assert r.devices == 16
    assert r.plan.decode.attention.hardware.id == "h20"


def test_the_first_token_comes_from_the_prefill():
    """A request's first token is its prefill's; decode steps make the other osl - 1. With one output token there
    is no decode at all: a colocated replica's throughput is one token per prefill (TTFT apart), whatever a decode
    step costs, and a P/D fleet's is its prefill pool's rate; one more output token adds one decode step."""
    one = run(batch=8, osl=1)
    assert one.output_tokens_per_s == pytest.approx(1.0 / one.ttft_s, rel=1e-12)
    two = run(batch=8, osl=2)
    # a cycle of the 8-sequence batch: each of the 8 prefills, then one decode step; 2 tokens per sequence
    assert two.output_tokens_per_s == pytest.approx(8 * 2 / (two.tpot_s + 8 * two.ttft_s), rel=1e-12)
    pd = dict(prefill_hardware="h100-sxm", prefill_devices=8, decode_hardware="h20", decode_devices=8)
    pd_one, pd_many = run(batch=8, osl=1, **pd), run(batch=8, osl=512, **pd)
    assert pd_one.output_tokens_per_s < pd_many.output_tokens_per_s
    assert any("prefill pool limits throughput" in n for n in pd_one.notes)


def test_infeasible_parallelism_is_reported():
    with pytest.raises(InfeasibleError, match="--tp 3 does not divide"):
        run(tp=3)
    with pytest.raises(InfeasibleError, match="no fp8"):
        run(hardware="a100-sxm", precision="fp8")


def test_moe_with_attention_dp_steps_at_the_busiest_rank():
    """Attention DP 8 with every device a full expert replica (DBRX FP8 on 8 x H200, tp 1, ep 1, expert TP 1, asked
    for: by default the experts are TP-sharded over the 8 devices): up to 8 sequences, the busiest rank holds one and
    its experts see one token, so the step costs the same; a ninth sequence puts two on one rank (the experts then
    see two tokens)."""
    o = dict(model="dbrx", hardware="h200-sxm", devices=8, tp=1, dp=8, ep=1, expert_tp=1, precision="fp8", isl=1024,
             osl=256)
    one, eight, nine = (run(batch=b, **o) for b in (1, 8, 9))
    assert one.tpot_s == pytest.approx(eight.tpot_s, rel=1e-12)
    assert q(one, "decode_ffn").bytes == pytest.approx(q(eight, "decode_ffn").bytes, rel=1e-12)
    assert q(nine, "decode_ffn").bytes > 1.5 * q(one, "decode_ffn").bytes


def test_attention_dp_without_ep_shards_the_experts_over_every_device_by_default(tmp_path):
    """With attention DP and no EP the experts are TP-sharded over tp x dp devices, as vLLM (which flattens TP across
    DP for its MoE layers) and SGLang (its MoE on the whole --tp group) run them: the default equals asking for expert
    TP 8, in a quick run and in a deployment file alike, and holds an eighth of the expert weights a device that a
    full replica per device (expert TP 1) holds."""
    from simulator.specs.deployment import read_deployment

    o = dict(model="dbrx", hardware="h200-sxm", devices=8, tp=1, dp=8, ep=1, precision="fp8", isl=1024, osl=256)
    default, sharded, replica = run(**o), run(expert_tp=8, **o), run(expert_tp=1, **o)
    assert default.plan.decode.ffn.expert_tp == 8
    assert default.tpot_s == sharded.tpot_s and default.memory[0].weights_bytes == sharded.memory[0].weights_bytes
    assert replica.memory[0].weights_bytes > 4 * default.memory[0].weights_bytes
    f = tmp_path / "dp.yaml"
    f.write_text("schema_version: 1\nmodel: dbrx\npools:\n  - {name: node, serves: [prefill, decode], "
                 "hardware: h200-sxm, devices: 8, attention: {tp: 1, dp: 8, precision: fp8}}\n")
    assert read_deployment(f).pools[0].plan.ffn.expert_tp == 8


def test_a_colocated_pool_with_its_ffn_apart_pays_each_device_its_own_price(tmp_path):
    """An A/F-disaggregated pool that also prefills: its FFN devices are paid at their own profile's price (before,
    at the attention device's)."""
    from simulator.specs.catalog import load_hardware
    from simulator.specs.deployment import read_deployment

    p = tmp_path / "coaf.yaml"
    p.write_text("schema_version: 1\nmodel: doubao-class-moe\nkv_cache: {precision: fp8, scale_tokens: 64}\n"
                 "pools:\n  - name: both\n    serves: [prefill, decode]\n    hardware: h20\n"
                 "    price_per_device_hour: 1.20 USD/h\n    devices: 8\n    attention: {tp: 8, precision: fp8}\n"
                 "    ffn_pool: {hardware: h100-sxm, devices: 8}\n    ffn: {ep: 8, precision: w4a8}\n"
                 "    micro_batches: 2\n")
    r = whatif(read_deployment(p).serving_plan(), batch=64, isl=2048, osl=512)
    usd_per_s = (8 * 1.20 + 8 * load_hardware("h100-sxm").price_usd_per_hour) / 3600
    assert r.devices == 16
    assert r.cost_usd_per_mtok == pytest.approx(usd_per_s / r.output_tokens_per_s * 1e6, rel=1e-12)


def test_whatif_takes_a_deployments_kv_transfer_as_simulate_does(tmp_path):
    """A deployment's kv_transfer block (bandwidth, latency, streaming) is the one whatif charges a P/D request:
    at 1 GB/s, not streamed, TTFT grows by the whole KV cache over that link plus the latency (before, whatif
    kept the devices' scale-out links and streaming whatever the file said)."""
    import yaml

    from simulator.specs.catalog import resolve_workload
    from simulator.specs.deployment import read_deployment
    from simulator.timing.memory import kv_bytes_per_token_model

    src = resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment")
    doc = yaml.safe_load(src.read_text())
    base = read_deployment(src)
    doc["kv_transfer"] = {"bandwidth": "1 GB/s", "latency": "20 us", "overlap_with_prefill": False}
    p = tmp_path / "slow.yaml"
    p.write_text(yaml.safe_dump(doc))
    slow = read_deployment(p)
    a = whatif(base.serving_plan(), batch=64, isl=2048, osl=512)
    b = whatif(slow.serving_plan(), batch=64, isl=2048, osl=512)
    kv = 2048 * kv_bytes_per_token_model(slow.model, slow.kv_precision, slow.kv_scale_tokens)
    assert b.kv_transfer_s == pytest.approx(kv / 1e9 + 20e-6, rel=1e-12)
    assert b.ttft_s - a.ttft_s == pytest.approx(b.kv_transfer_s - a.kv_transfer_s, rel=1e-9)
