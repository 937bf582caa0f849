"""What-if composition: per-device prefill figures under PP, P/D KV transfer, attention-DP prefill,
A/F dispatch straight to the expert owners, context window, deployment overrides and replicas."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from simulator.analysis.whatif import whatif
from simulator.build import PlanOptions, plan_from_options
from simulator.cli import app
from simulator.errors import SimulatorError
from simulator.ops.build import StepShape, build_ops
from simulator.ops.kinds import wire_bytes
from simulator.specs.deployment import read_deployment

runner = CliRunner()


def _q(res, name):
    return res.quadrant(name)


def test_prefill_flop_per_device_halves_with_two_pipeline_stages():
    one = whatif(plan_from_options(PlanOptions(model="llama-3.1-70b", devices=8, tp=8, pp=1)), batch=8, isl=2048,
                 osl=128)
    two = whatif(plan_from_options(PlanOptions(model="llama-3.1-70b", devices=16, tp=8, pp=2)), batch=8, isl=2048,
                 osl=128)
    for q in ("prefill_attention", "prefill_ffn"):
        assert _q(two, q)["flop"] == pytest.approx(_q(one, q)["flop"] / 2, rel=1e-9)


def test_pd_ttft_pays_the_kv_transfer_left_after_the_prefill():
    plan = plan_from_options(PlanOptions(model="llama-3.1-70b", prefill_devices=8, decode_devices=8,
                                         decode_hardware="h100-sxm"))
    fast = whatif(plan, batch=32, isl=4096, osl=256)
    slow_link = replace(plan.prefill.attention.hardware, scale_out=replace(plan.prefill.attention.hardware.scale_out,
                                                                          bandwidth_bytes_per_s=1e8))
    slow = replace(plan, prefill=replace(plan.prefill, attention=replace(plan.prefill.attention, hardware=slow_link)))
    res = whatif(slow, batch=32, isl=4096, osl=256)
    assert fast.kv_transfer_s > 0 and res.kv_transfer_s > 10 * fast.kv_transfer_s
    assert res.ttft_s - res.kv_transfer_s == pytest.approx(fast.ttft_s - fast.kv_transfer_s, rel=1e-9)


def test_attention_dp_ranks_prefill_their_own_prompts_at_once():
    """Eight attention-DP ranks prefill eight prompts at once: a prefill-limited P/D fleet serves ~8x what one
    such device serves (it used to run the ranks' prompts one after another), at the same TTFT."""
    def run(devices):
        plan = plan_from_options(PlanOptions(model="llama-3.1-8b", prefill_devices=devices, prefill_tp=1,
                                             dp=devices, decode_devices=8, decode_hardware="h100-sxm"))
        return whatif(plan, batch=256, isl=8192, osl=16)
    one, eight = run(1), run(8)
    assert eight.output_tokens_per_s == pytest.approx(8 * one.output_tokens_per_s, rel=0.1)
    assert eight.ttft_s == pytest.approx(one.ttft_s, rel=0.05)


def test_af_dispatch_goes_straight_to_expert_owners_with_top_k_fan_out():
    dep = read_deployment("workloads/deployments/doubao-class-afd.yaml")
    plan = dep.serving_plan().decode
    model = dep.model
    ops = build_ops(model, plan, StepShape(decode_seqs=64, decode_kv=2048), "decode")
    assert not ops.named("moe_dispatch", "moe_combine").any()  # no second all-to-all inside the FFN pool
    wire = wire_bytes(ops.kind, ops.arrays)
    i = ops.names.index("attn_to_ffn")
    f, k = float(plan.ffn.devices), model.moe.top_k
    distinct = f * (1 - (1 - 1 / f) ** k)  # FFN ranks a token visits, every one on another device
    tokens_per_sender = 64 / plan.attention.dp / plan.attention.tp  # the TP ranks of a group split the sending
    assert wire[i, 0] == pytest.approx(tokens_per_sender * model.hidden_size * ops["a_bytes"][i, 0] * distinct)


def test_af_return_traffic_per_ffn_rank_falls_as_the_ffn_pool_grows():
    dep = read_deployment("workloads/deployments/doubao-class-afd.yaml")
    base = dep.serving_plan().decode
    back = []
    for f in (2, 8, 32):
        plan = replace(base, ffn=replace(base.ffn, devices=f, ep=f))
        ops = build_ops(dep.model, plan, StepShape(decode_seqs=128, decode_kv=2048), "decode")
        back.append(wire_bytes(ops.kind, ops.arrays)[ops.names.index("ffn_to_attn"), 0])
    assert back[0] > back[1] > back[2]


def test_af_one_micro_batch_pays_attention_transfer_and_ffn_in_series():
    dep = read_deployment("workloads/deployments/doubao-class-afd.yaml")
    base = dep.serving_plan()
    one = replace(base, decode=replace(base.decode, micro_batches=1))
    res = whatif(one, batch=64, isl=2048, osl=256)
    t = res.decode.times
    ops = res.decode.ops
    w = t.weighted(t.time_s)[:, 0]
    serial = (w[ops.mask("decode_attention")].sum() + w[ops.mask("decode_ffn")].sum())
    assert res.tpot_s >= serial * (1 - 1e-9)


def test_context_window_is_enforced():
    plan = plan_from_options(PlanOptions(model="llama-2-70b", devices=8))
    with pytest.raises(SimulatorError, match="context window of 4096"):
        whatif(plan, batch=8, isl=4000, osl=512)


def test_whatif_deployment_honours_chunk_precision_and_replicas():
    dep = "workloads/deployments/dbrx-8xh100.yaml"
    base = json.loads(runner.invoke(app, ["whatif", "--deployment", dep, "--json"]).output)
    fp8 = json.loads(runner.invoke(app, ["whatif", "--deployment", dep, "--precision", "fp8", "--json"]).output)
    chunked = json.loads(runner.invoke(app, ["whatif", "--deployment", dep, "--chunk", "256", "--json"]).output)
    assert fp8["tpot_s"] < base["tpot_s"]  # fp8 weights halve the bytes of a bandwidth-bound decode
    assert chunked["ttft_s"] != base["ttft_s"]
    replicas = read_deployment(dep).pools[0].replicas
    assert base["devices"] == replicas * read_deployment(dep).pools[0].plan.devices
    assert base["decode_tokens_per_s_per_device"] > 0


def test_ep_width_need_not_divide_the_experts():
    plan = plan_from_options(PlanOptions(model="dbrx", devices=6, tp=2, ep=6))  # 16 experts over 6 ranks
    res = whatif(plan, batch=16, isl=1024, osl=128)
    assert np.isfinite(res.tpot_s) and res.fits
