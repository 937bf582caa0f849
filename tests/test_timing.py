"""Property tests of the timing model: it never beats the pure roofline, and more bandwidth or
FLOP/s never makes anything slower."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.ops.build import StepShape, build_ops
from simulator.ops.kinds import ELEMENTWISE
from simulator.plan import simple_phase
from simulator.specs.catalog import load_hardware, load_model
from simulator.timing import RooflineModel, pure_roofline_s

MODELS = ["llama-3.1-8b", "dbrx", "deepseek-v3", "qwen3-30b-a3b", "step-3"]
HW = ["h100-sxm", "h20", "b200-sxm", "mi300x", "l40s"]
TM = RooflineModel()

shapes = st.builds(
    lambda ps, pl, pc, ds, dk: StepShape(prefill_seqs=ps, prefill_len=pl, prefill_ctx=pc, decode_seqs=ds, decode_kv=dk),
    st.integers(0, 4), st.integers(1, 4096), st.integers(0, 8192), st.integers(0, 256), st.integers(1, 32768))


def _ops(model, hw, shape, tp, ep):
    m = load_model(model)
    plan = simple_phase(hw, m, 8, tp=tp, ep=ep if m.moe and m.moe.num_experts % ep == 0 else 1)
    return build_ops(m, plan, shape, "mixed")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(MODELS), st.sampled_from(HW), shapes, st.sampled_from([1, 2, 8]), st.sampled_from([1, 8]))
def test_time_never_beats_the_roofline(model, hw, shape, tp, ep):
    ops = _ops(model, load_hardware(hw), shape, tp, ep)
    t = TM.evaluate(ops)
    assert np.all(t.time_s >= pure_roofline_s(ops) * (1 - 1e-12))
    assert np.all(t.time_s >= 0)


def _scaled(hw, bw=1.0, flops=1.0, link=1.0):
    return replace(hw, hbm_bytes_per_s=hw.hbm_bytes_per_s * bw,
                   peak_flop_per_s={k: v * flops for k, v in hw.peak_flop_per_s.items()},
                   scale_up=replace(hw.scale_up, bandwidth_bytes_per_s=hw.scale_up.bandwidth_bytes_per_s * link),
                   scale_out=replace(hw.scale_out, bandwidth_bytes_per_s=hw.scale_out.bandwidth_bytes_per_s * link))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MODELS), st.sampled_from(HW), shapes, st.floats(1.0, 4.0), st.sampled_from(["bw", "flops",
                                                                                                   "link"]))
def test_more_bandwidth_or_flops_is_never_slower(model, hw, shape, factor, what):
    base = load_hardware(hw)
    fast = _scaled(base, **{what: factor})
    t0 = TM.evaluate(_ops(model, base, shape, 8, 1)).time_s
    t1 = TM.evaluate(_ops(model, fast, shape, 8, 1)).time_s
    assert np.all(t1 <= t0 * (1 + 1e-12))


def test_small_decode_kernels_are_overhead_dominated():
    """A bare max(FLOP/peak, bytes/bandwidth) is far below the model on microsecond kernels."""
    m = load_model("llama-3.1-8b")
    hw = load_hardware("h100-sxm")
    ops = build_ops(m, simple_phase(hw, m, 1), StepShape(decode_seqs=1, decode_kv=128), "decode")
    t = TM.evaluate(ops)
    i = ops.names.index("attn_norm")
    assert t.time_s[i, 0] > 10 * pure_roofline_s(ops)[i, 0]
    assert t.overhead_s[i, 0] == hw.efficiency.kernels["elementwise"].floor_s


def test_an_engines_custom_all_reduce_replaces_nccls_fixed_cost_only_where_it_applies():
    """Inside one NVLink domain a message up to max_bytes costs the engine's fixed latency plus NCCL's bandwidth
    term; a larger message, or one that leaves the domain, keeps NCCL's time; other ops are untouched."""
    from simulator.ops.kinds import ALL_REDUCE
    from simulator.timing.collectives import collective_latency_s
    from simulator.timing.custom_allreduce import CustomAllReduce
    from simulator.timing.params import DeviceTable, collective_family_index

    model, hw = load_model("llama-3.1-70b"), load_hardware("h100-sxm")
    for devices, tp, small in ((8, 8, True), (16, 16, False)):  # one node / two nodes over the scale-out fabric
        ops = build_ops(model, simple_phase(hw, model, devices, tp=tp), StepShape(decode_seqs=np.array([1.0, 64.0]),
                        decode_len=1.0, decode_kv=1024.0), "decode")
        base, got = RooflineModel().evaluate(ops), CustomAllReduce(RooflineModel(), 10e-6, 8 * 2**20).evaluate(ops)
        ar = ops.kind == ALL_REDUCE
        assert ar.any() and np.array_equal(got.time_s[~ar], base.time_s[~ar])
        sub = ops.select(np.flatnonzero(ar))
        lat = collective_latency_s(sub, DeviceTable.of(ops.devices), collective_family_index(sub))
        want = base.time_s[ar] - lat + 10e-6 if small else base.time_s[ar]
        assert np.allclose(got.time_s[ar][base.time_s[ar] > 0], want[base.time_s[ar] > 0], rtol=1e-12)
        assert np.array_equal(got.comm_s[ar], got.time_s[ar])
        if small:  # the same one-node all-reduces over the size limit go through NCCL
            assert not np.array_equal(got.time_s, base.time_s)
            big = CustomAllReduce(RooflineModel(), 10e-6, 1.0).evaluate(ops)
            assert np.array_equal(big.time_s, base.time_s)


def test_an_engines_moe_kernels_stream_expert_weights_at_their_own_fraction_of_the_bandwidth():
    """A memory-bound routed-expert GEMM of a listed format takes the wrapped model's floor plus its bytes over the
    engine's fraction of the device bandwidth; a compute-bound one, another format (W4A16 under a bf16 entry), or
    any other op keeps the wrapped model's time, which is never beaten."""
    from simulator.ops.kinds import GROUPED_GEMM
    from simulator.timing.engine_moe import EngineMoEKernels

    model, hw = load_model("qwen3-235b-a22b"), load_hardware("h100-sxm")
    shape = StepShape(decode_seqs=np.array([8.0, 64.0]), decode_len=1.0, decode_kv=1024.0)
    for precision in ("fp8", "bf16"):
        ops = build_ops(model, simple_phase(hw, model, 8, tp=8, ep=8, precision=precision), shape, "decode")
        base = RooflineModel().evaluate(ops)
        got = EngineMoEKernels(RooflineModel(), {precision: 0.4}).evaluate(ops)
        g = ops.kind == GROUPED_GEMM
        assert g.any() and np.array_equal(got.time_s[~g], base.time_s[~g])
        _, nbytes = ops.flop_bytes()
        want = base.overhead_s[g] + nbytes[g] / (0.4 * hw.hbm_bytes_per_s)
        np.testing.assert_allclose(got.time_s[g], np.maximum(want, base.time_s[g]), rtol=1e-12)
        assert (got.time_s[g] > base.time_s[g]).all()  # at decode the experts are memory-bound: slower at 40%
        # another format's entry leaves these ops alone; so does a fraction the device profile already beats
        other = "bf16" if precision == "fp8" else "fp8"
        assert np.array_equal(EngineMoEKernels(RooflineModel(), {other: 0.4}).evaluate(ops).time_s, base.time_s)
        assert np.array_equal(EngineMoEKernels(RooflineModel(), {precision: 1.0}).evaluate(ops).time_s, base.time_s)
    # a long prefill's expert GEMMs (~1,000 tokens an expert) are compute-bound: the wrapped model's time stands
    prefill = build_ops(model, simple_phase(hw, model, 8, tp=8, ep=8, precision="fp8"),
                        StepShape(prefill_seqs=1.0, prefill_len=16384.0), "prefill")
    g = prefill.kind == GROUPED_GEMM
    base, got = RooflineModel().evaluate(prefill), EngineMoEKernels(RooflineModel(), {"fp8": 0.4}).evaluate(prefill)
    assert (base.compute_s[g] > base.memory_s[g]).all() and np.array_equal(got.time_s, base.time_s)
    # FP4 weights carry their scales (0.5625 B a weight): an fp4 entry applies to an FP4 expert GEMM
    f4 = build_ops(model, simple_phase(load_hardware("b200-sxm"), model, 8, tp=8, ep=8, precision="fp4"), shape,
                   "decode")
    g4 = f4.kind == GROUPED_GEMM
    assert (EngineMoEKernels(RooflineModel(), {"fp4": 0.4}).evaluate(f4).time_s[g4] >
            RooflineModel().evaluate(f4).time_s[g4]).all()
    w4 = build_ops(model, simple_phase(hw, model, 8, tp=8, ep=8, precision="w4a16"), shape, "decode")
    assert np.array_equal(EngineMoEKernels(RooflineModel(), {"bf16": 0.4}).evaluate(w4).time_s,
                          RooflineModel().evaluate(w4).time_s)
    with pytest.raises(ValueError, match="fraction in"):
        EngineMoEKernels(RooflineModel(), {"fp8": 1.5})


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(MODELS), st.sampled_from(HW), st.sampled_from([1, 8]), st.booleans())
def test_times_do_not_depend_on_how_an_op_table_stores_its_columns(model, hw, ep, subset):
    """An op table keeps per-row constants as broadcast views and the timing models gather device parameters
    once a row for them (``per_row``); the same table with every column a full, writable array (or a row subset
    picked by a mask) times every op to the same bits, NCCL and the engines' custom all-reduce alike."""
    from simulator.ops.kinds import OpTable
    from simulator.timing.custom_allreduce import CustomAllReduce
    from simulator.timing.engine_moe import EngineMoEKernels

    shape = StepShape(prefill_seqs=np.array([0.0, 1, 2, 0]), prefill_len=np.array([0.0, 700, 3000, 0]),
                      prefill_ctx=0.0, decode_seqs=np.array([1.0, 0, 17, 256]), decode_kv=np.array([1.0, 0, 900, 5e4]))
    ops = _ops(model, load_hardware(hw), shape, 8, ep)
    if subset:
        ops = ops.select(np.arange(ops.n_ops) % 3 != 1)
    assert any(a.strides[1] == 0 for a in ops.arrays.values())  # (some columns are broadcast views)
    full = OpTable(ops.names, ops.quadrant, ops.kind, {c: np.array(a) for c, a in ops.arrays.items()}, ops.n,
                   ops.devices, served=ops.served)
    for tm in (TM, CustomAllReduce(TM, 1e-5, 8 * 2**20), EngineMoEKernels(TM, {"bf16": 0.5, "fp8": 0.4})):
        a, b = tm.evaluate(ops), tm.evaluate(full)
        for col in ("time_s", "compute_s", "memory_s", "comm_s", "overhead_s"):
            assert np.array_equal(getattr(a, col), getattr(b, col))
    assert np.array_equal(pure_roofline_s(ops), pure_roofline_s(full))


def _served_and_benchmarked(hw_id, shape, model="llama-3.1-70b"):
    """The same op table timed as a served step and as kernels benchmarked one at a time."""
    m, hw = load_model(model), load_hardware(hw_id)
    ops = build_ops(m, simple_phase(hw, m, 8, tp=8), shape, "prefill")
    bench = replace(ops, served=False)
    return ops, TM.evaluate(ops), TM.evaluate(bench)


def test_a_served_step_computes_at_the_throughput_the_card_keeps_under_load():
    """A served step's compute-bound tensor-core work runs at ``served_compute_fraction`` of the speed the same
    kernel reaches benchmarked alone (the card at its power limit under continuous load); memory-bound and
    elementwise work, and collectives, are untouched, and op builders mark their tables as served steps."""
    ops, served, bench = _served_and_benchmarked("h200-sxm", StepShape(prefill_seqs=1, prefill_len=8192))
    assert ops.served and not replace(ops, served=False).served
    frac = load_hardware("h200-sxm").efficiency.served_compute_fraction
    assert 0 < frac < 1
    compute = (bench.compute_s > bench.memory_s) & (ops.kind[:, None] != ELEMENTWISE)
    assert compute.any()
    np.testing.assert_allclose(served.compute_s[compute], bench.compute_s[compute] / frac, rtol=1e-12)
    np.testing.assert_array_equal(served.memory_s, bench.memory_s)
    untouched = ops.kind[:, None] == ELEMENTWISE
    np.testing.assert_array_equal(served.time_s[untouched.repeat(ops.n, 1)], bench.time_s[untouched.repeat(ops.n, 1)])
    assert served.time_s.sum() > bench.time_s.sum()


def test_a_profile_without_a_served_fraction_times_served_and_benchmarked_kernels_alike():
    assert load_hardware("mi300x").efficiency.served_compute_fraction is None
    _, served, bench = _served_and_benchmarked("mi300x", StepShape(prefill_seqs=1, prefill_len=8192))
    np.testing.assert_array_equal(served.time_s, bench.time_s)


def test_a_decode_step_bound_by_memory_is_not_slowed_by_the_load_clock():
    """Decode at batch 1 reads weights: the derate of compute throughput cannot move it."""
    _, served, bench = _served_and_benchmarked("h200-sxm", StepShape(decode_seqs=1, decode_kv=1024))
    np.testing.assert_allclose(served.time_s.sum(), bench.time_s.sum(), rtol=1e-3)
