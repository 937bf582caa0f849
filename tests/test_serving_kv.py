"""Decode attention per attention-DP rank (``DecodeRanks``) and the long/short context split (``route``).

Closed forms: a step's decode attention is its busiest rank's, so a step whose ranks hold one long
and several short sequences costs what a step costs whose every rank holds the long one (the same
tokens per rank; only the KV each rank reads differs). Equal ranks give the mean-KV result. The
engine deals requests out to ranks round robin and hands the models per-rank totals that add up to
the step's. A deployment's ``route`` sends each prompt length to its pools; splitting long prompts
onto their own decode GPU makes the short requests' TPOT fall.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from itertools import accumulate

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.errors import SpecError
from simulator.serving.disagg import PingPongStepCost
from simulator.serving.engine import ReplicaConfig, Requests, Simulation, decode_stretch_costs
from simulator.serving.overheads import OverheadStepCost
from simulator.serving.profiles import engine_profile
from simulator.serving.runner import simulate
from simulator.serving.stepcost import AnalyticStepCost, DecodeRanks, StepCost, TabulatedStepCost
from simulator.specs.deployment import ROUTE_MAX_TOKENS, read_deployment, route_gap
from simulator.specs.traffic import read_traffic

DSV3 = "workloads/deployments/deepseek-v3-8xh200-sglang-mtp.yaml"
SPLIT = "workloads/deployments/llama-3.1-8b-long-short-split.yaml"
FIELDS = ("time_s", "prefill_attention_s", "prefill_ffn_s", "decode_attention_s", "decode_ffn_s")


@pytest.fixture(scope="module")
def dsv3():
    """DeepSeek-V3 with attention DP over 8 H200s (SGLang's layout): the tabulated and the op-built model."""
    dep = read_deployment(DSV3)
    plan = dep.pools[0].plan
    assert plan.attention.dp == 8
    fast = TabulatedStepCost(dep.model, plan, 512, dep.kv_precision, dep.kv_scale_tokens)
    slow = AnalyticStepCost(dep.model, plan, None, dep.kv_precision, dep.kv_scale_tokens)
    return dep, fast, slow


def _close(a: StepCost, b: StepCost, rel=1e-9):
    for f in FIELDS:
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=rel, abs=1e-12), f


# -- the step-cost models --------------------------------------------------------------------------------
def test_decode_ranks_helpers():
    r = DecodeRanks.even(4, 10, 1000)
    assert r.seqs == (3, 3, 2, 2) and sum(r.seqs) == 10
    assert r.kv_tokens == (300, 300, 200, 200)
    assert r.grown(5).kv_tokens == (315, 315, 210, 210)  # each rank gains one token per sequence per step
    assert r.grown(2, tokens_per_step=3).kv_tokens == (318, 318, 212, 212)
    assert DecodeRanks((2, 0, 2, 1), (256, 0, 256, 4096)).shapes() == ((1, 4096.0), (2, 128.0))  # distinct, sorted
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.seqs = (10, 0, 0, 0)
    assert not hasattr(r, "__dict__")  # slotted


@pytest.mark.parametrize("long_kv,short_kv", [(32768, 512), (65536, 1024)])
def test_busiest_rank_sets_the_step(dsv3, long_kv, short_kv):
    """One long sequence on rank 0, short ones on the other seven: the step costs exactly what a step
    costs whose eight ranks all hold the long sequence (the op builder's own even spread), and more
    than the mean-KV view of the same step."""
    dep, fast, slow = dsv3
    ranks = DecodeRanks((1,) * 8, (long_kv,) + (short_kv,) * 7)
    total_kv = sum(ranks.kv_tokens)
    skewed = fast.cost(0, 0, 0, 8, 1, total_kv, ranks=ranks)
    all_long = slow._evaluate(0, 0.0, 0.0, 8, 1, float(long_kv))  # independent: the full op build
    _close(skewed, all_long, rel=1e-3)  # the tabulated decode core interpolates in KV (< 0.1 %)
    mean = fast.cost(0, 0, 0, 8, 1, total_kv)
    assert skewed.time_s > mean.time_s
    assert skewed.decode_attention_s - mean.decode_attention_s == pytest.approx(skewed.time_s - mean.time_s)
    assert skewed.decode_ffn_s == mean.decode_ffn_s  # the FFN side sees the same tokens
    # the op-built model with ranks agrees (attention side of the busiest rank shape)
    _close(slow.cost(0, 0, 0, 8, 1, total_kv, ranks=ranks), all_long, rel=1e-9)


def test_busiest_rank_by_tokens_sizes_the_per_rank_ops(dsv3):
    """Three sequences on one rank and none on the others: the per-rank ops see that rank's three
    tokens, as in a step whose eight ranks each hold three (the routed experts still see 3 tokens)."""
    dep, fast, slow = dsv3
    ranks = DecodeRanks((3,) + (0,) * 7, (3 * 4096,) + (0,) * 7)
    lopsided = fast.cost(0, 0, 0, 3, 1, 3 * 4096, ranks=ranks)
    even = fast.cost(0, 0, 0, 3, 1, 3 * 4096)  # one sequence per rank
    assert lopsided.time_s > even.time_s
    # attention side and per-rank ops: the busy rank's three sequences, i.e. the even step of 24 sequences
    # (three per rank) less the routed experts' extra tokens
    assert lopsided.decode_attention_s == pytest.approx(fast.cost(0, 0, 0, 24, 1, 24 * 4096).decode_attention_s,
                                                        rel=1e-12)
    assert lopsided.decode_ffn_s < fast.cost(0, 0, 0, 24, 1, 24 * 4096).decode_ffn_s


def test_ranks_none_is_todays_path(dsv3):
    """``ranks=None`` (and a dp = 1 plan given ranks) takes the mean-KV path bit for bit."""
    dep, fast, slow = dsv3
    for args in ((0, 0, 0, 37, 1, 37 * 3000), (2, 900, 100, 20, 2, 20 * 777), (0, 0, 0, 8, 1, 8)):
        assert fast.cost(*args) == fast.cost(*args, ranks=None)
        assert slow.cost(*args) == slow.cost(*args, ranks=None)
    assert fast.decode_stretch(16, 16 * 2000, 9) == fast.decode_stretch(16, 16 * 2000, 9, ranks=None)


@settings(max_examples=25, deadline=None)
@given(per_rank=st.integers(1, 40), kv=st.integers(1, 60_000), dl=st.sampled_from([1, 2]),
       ps=st.integers(0, 2), pl=st.integers(1, 300))
def test_equal_ranks_equal_the_mean_view(dsv3, per_rank, kv, dl, ps, pl):
    """Property: ranks that all hold the same sequences and KV give the mean-KV result."""
    dep, fast, slow = dsv3
    ranks = DecodeRanks((per_rank,) * 8, (per_rank * kv,) * 8)
    n = 8 * per_rank
    args = (ps, ps * pl, 0, n, dl, n * kv)
    _close(fast.cost(*args, ranks=ranks), fast.cost(*args), rel=1e-9)
    _close(slow.cost(*args, ranks=ranks), slow.cost(*args), rel=1e-9)


def test_stretch_with_ranks_matches_step_by_step(dsv3):
    """The vectorised stretch (k steps x dp ranks) equals the steps one by one, each rank's KV growing
    by its sequence count a step; the overhead wrapper and the engine's fallback pass the ranks on."""
    dep, fast, slow = dsv3
    ranks = DecodeRanks((3, 1, 2, 2, 0, 1, 3, 2), (3 * 900, 60_000, 2 * 100, 2 * 5000, 0, 70, 3 * 20, 2 * 4000))
    n, kv0, k = sum(ranks.seqs), sum(ranks.kv_tokens), 40
    times, attn, ffn = fast.decode_stretch(n, kv0, k, ranks=ranks)
    for i in (0, 1, 17, k - 1):
        c = fast.cost(0, 0, 0, n, 1, kv0 + i * n, ranks=ranks.grown(i))
        assert times[i] == pytest.approx(c.time_s, rel=1e-12)
        assert c.prefill_attention_s == c.prefill_ffn_s == 0.0
        assert [attn[i], ffn[i]] == pytest.approx([c.decode_attention_s, c.decode_ffn_s], rel=1e-12)
    assert np.all(np.diff(times) > 0)  # the long rank's KV grows every step
    wrapped = OverheadStepCost(fast, engine_profile("sglang"), dep.model.num_layers, True)
    assert wrapped.wants_ranks and wrapped.attention_dp == 8
    t2 = decode_stretch_costs(wrapped, n, kv0, k, ranks)[0]
    assert np.subtract(t2, times) == pytest.approx(np.full(k, wrapped.overhead_s(0, 0, n)), rel=1e-9)
    # the step-by-step fallback (a model without a vectorised stretch) gives the same times
    no_fast = OverheadStepCost(slow, engine_profile("sglang"), dep.model.num_layers, True)
    t3 = no_fast.decode_stretch(n, kv0, 5, ranks)[0]
    ref = [no_fast.cost(0, 0, 0, n, 1, kv0 + i * n, ranks=ranks.grown(i)).time_s for i in range(5)]
    assert t3 == pytest.approx(ref, rel=1e-12)


def test_ping_pong_attention_pool_times_its_busiest_rank():
    """A/F disaggregation with attention DP on the attention pool: one micro-batch's attention time is
    the busiest rank shape's, so skewed ranks cost what all-long ranks cost, and equal ranks the mean."""
    dep = read_deployment("workloads/deployments/doubao-class-afd.yaml")
    pool = next(p for p in dep.pools if p.plan.af_disaggregated)
    plan = replace(pool.plan, attention=replace(pool.plan.attention, tp=4, dp=2))
    pp = PingPongStepCost(dep.model, plan, None, dep.kv_precision, dep.kv_scale_tokens)
    assert pp.wants_ranks and pp.attention_dp == 2
    skew = pp.cost(0, 0, 0, 32, 1, 16 * 32768 + 16 * 512, ranks=DecodeRanks((16, 16), (16 * 32768, 16 * 512)))
    all_long = pp.cost(0, 0, 0, 32, 1, 32 * 32768)
    _close(skew, all_long, rel=1e-12)
    assert skew.time_s > pp.cost(0, 0, 0, 32, 1, 16 * 32768 + 16 * 512).time_s
    even = DecodeRanks((16, 16), (16 * 4096, 16 * 4096))
    _close(pp.cost(0, 0, 0, 32, 1, 32 * 4096, ranks=even), pp.cost(0, 0, 0, 32, 1, 32 * 4096))


@pytest.fixture(scope="module")
def ping_pong():
    dep = read_deployment("workloads/deployments/doubao-class-afd.yaml")
    pool = next(p for p in dep.pools if p.plan.af_disaggregated)
    return PingPongStepCost(dep.model, pool.plan, None, dep.kv_precision, dep.kv_scale_tokens)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 600), st.integers(0, 3_000_000), st.integers(1, 3000))
def test_ping_pong_stretch_equals_its_steps(ping_pong, n, kv0, k):
    """An A/F decode stretch is costed a run of equal memo keys at a time (each run's end found once per batch
    size and key): every step equals ``cost`` at its own KV total, and the step ends are their running sum."""
    times, attn, ffn = ping_pong.decode_stretch(n, kv0, k)
    steps = [ping_pong.cost(0, 0, 0, n, 1, kv0 + i * n) for i in range(k)]
    assert times == [c.time_s for c in steps]
    assert (attn, ffn) == ([c.decode_attention_s for c in steps], [c.decode_ffn_s for c in steps])
    ends, a2, f2 = ping_pong.decode_ends(n, kv0, k, 5.0, 1e-4)
    assert ends == list(accumulate((t + 1e-4 for t in times), initial=5.0))[1:]
    assert (a2, f2) == (attn, ffn)


@pytest.fixture(scope="module")
def tabulated():
    """DBRX's decode pool of the shipped P/D deployment (H20s; dp 1): the model the chat benchmark's stretches run."""
    dep = read_deployment("workloads/deployments/dbrx-h100-prefill-h20-decode.yaml")
    plan = dep.pools[1].plan
    return TabulatedStepCost(dep.model, plan, 512, dep.kv_precision, dep.kv_scale_tokens)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 512), st.integers(0, 3_000_000), st.integers(1, 3000), st.sampled_from([0.0, 1e-4, 3.7e-3]))
def test_tabulated_stretch_ends_equal_its_steps_bit_for_bit(tabulated, n, kv0, k, extra):
    """``decode_ends`` costs a grid cell's steps at once (their count in closed form): every end equals the running
    sum of ``cost``'s step times plus ``extra`` step by step, to the bit, across cell edges and off either end of the
    grid; a step's decode attention is its time less the first float, its decode FFN the second."""
    steps = [tabulated.cost(0, 0, 0, n, 1, kv0 + i * n) for i in range(k)]
    ends, attn_less, ffn = tabulated.decode_ends(n, kv0, k, 5.0, extra)
    assert ends == list(accumulate((c.time_s + extra for c in steps), initial=5.0))[1:]
    times = [c.time_s + extra for c in steps]
    assert [t - attn_less for t in times] == pytest.approx([c.decode_attention_s for c in steps], rel=1e-9)
    assert ffn == pytest.approx(steps[0].decode_ffn_s, rel=1e-12)


# -- the engine ---------------------------------------------------------------------------------------
class RecordingCost:
    """Constant-time fake that times DP ranks: records every ``ranks`` the engine passes."""

    wants_ranks, attention_dp = True, 2

    def __init__(self):
        self.calls = []

    def cost(self, ps, pt, pc, ds, dl, dk, ranks=None):
        self.calls.append((ds, dk, ranks))
        return StepCost(1.0 if pt else 0.5)


def test_engine_deals_requests_to_ranks_round_robin_and_passes_their_totals():
    cost = RecordingCost()
    req = Requests(np.array([0.0, 0.1, 0.2, 0.3, 0.4]), np.array([50, 900, 60, 70, 80], np.int64),
                   np.array([6, 9, 4, 5, 7], np.int64))
    sim = Simulation(req, [ReplicaConfig("p", 0, "colocated", cost, 100_000, 4096, 16, 2)])
    sim.run()
    assert (req.status == 3).all()
    # SGLang's default DP dispatch: round robin in arrival order
    assert req.dp_rank.tolist() == [0, 1, 0, 1, 0]
    seen = [c for c in cost.calls if c[0]]
    assert seen and all(r is not None for _, _, r in seen)
    for ds, dk, r in seen:  # per-rank totals add up to the step's
        assert len(r.seqs) == 2 and sum(r.seqs) == ds and sum(r.kv_tokens) == dk
    # the long prompt (request 1) sits on rank 1: whenever it decodes, rank 1 holds the most KV
    assert any(r.kv_tokens[1] > r.kv_tokens[0] for _, _, r in seen)


def test_engine_without_wants_ranks_passes_none():
    calls = []

    class Plain(RecordingCost):
        wants_ranks = False

        def cost(self, *a, **kw):
            calls.append(kw)
            return StepCost(0.5)

    req = Requests(np.array([0.0, 0.1]), np.array([50, 60], np.int64), np.array([5, 5], np.int64))
    sim = Simulation(req, [ReplicaConfig("p", 0, "colocated", Plain(), 100_000, 4096, 16, 1)])
    sim.run()
    assert calls and all(kw == {} for kw in calls)
    assert req.dp_rank.tolist() == [-1, -1]


# -- route: the long/short split -------------------------------------------------------------------------
def test_route_gap_closed_forms():
    M = ROUTE_MAX_TOKENS
    assert route_gap([]) is None
    assert route_gap([(0, M)]) is None
    assert route_gap([(0, 8192), (8193, M)]) is None
    assert route_gap([(0, 8192), (4000, M)]) is None  # overlaps are fine
    assert route_gap([(0, 8192), (9000, M)]) == (8193, 8999)
    assert route_gap([(0, 8192)]) == (8193, M)
    assert route_gap([(100, M)]) == (1, 99)


def _write_split(tmp_path, short_route, long_route):
    text = open(SPLIT).read()
    text = text.replace("route: {max_prompt_tokens: 8192}", short_route)
    text = text.replace("route: {min_prompt_tokens: 8193}", long_route)
    path = tmp_path / "dep.yaml"
    path.write_text(text)
    return path


def test_route_must_cover_every_prompt_length(tmp_path):
    with pytest.raises(SpecError, match=r"no decode pool takes prompts of 8193 to 9999 tokens"):
        read_deployment(_write_split(tmp_path, "route: {max_prompt_tokens: 8192}",
                                     "route: {min_prompt_tokens: 10000}"))
    with pytest.raises(SpecError, match=r"pools\[1\]\.route\.max_prompt_tokens: expected max_prompt_tokens >= "):
        read_deployment(_write_split(tmp_path, "route: {min_prompt_tokens: 10, max_prompt_tokens: 5}",
                                     "route: {}"))
    with pytest.raises(SpecError, match=r"route\.max_tokens: unknown key"):
        read_deployment(_write_split(tmp_path, "route: {max_tokens: 8192}", "route: {}"))
    dep = read_deployment(SPLIT)
    assert [p.prompt_range for p in dep.pools] == [(0, ROUTE_MAX_TOKENS), (0, 8192), (8193, ROUTE_MAX_TOKENS)]


def test_engine_rejects_a_prompt_no_replica_takes():
    from simulator.serving.stepcost import ConstantStepCost

    req = Requests(np.array([0.0, 0.1]), np.array([50, 5000], np.int64), np.array([3, 3], np.int64))
    cfg = ReplicaConfig("p", 0, "colocated", ConstantStepCost(0.5), 100_000, 4096, 16, 1, context_range=(0, 4096))
    sim = Simulation(req, [cfg])
    sim.run()
    assert req.status.tolist() == [3, 4]
    assert "no colocated replica takes prompts of 5000 tokens" in req.reason[1]


def test_long_short_split_improves_short_tpot():
    """The shipped split: prompts over 8k decode on their own GPU. Short requests no longer share a
    batch (whose decode attention reads every sequence's KV) with 32k-64k-token caches, so their TPOT
    falls against the same GPUs routed least-loaded; the long requests, now all on one GPU, pay."""
    dep = read_deployment(SPLIT)
    base = replace(dep, pools=tuple(replace(p, prompt_range=(0, ROUTE_MAX_TOKENS)) for p in dep.pools))
    traffic = replace(read_traffic("workloads/traffic/long-short-mix.yaml"), requests=300)
    res = {name: simulate(d, traffic).requests for name, d in (("base", base), ("split", dep))}
    for q in res.values():
        assert (q.status == "finished").all()
    q = res["split"]
    short = q.prompt_tokens <= 8192
    assert short.any() and (~short).any()
    assert (q.decode_replica[short] == "decode-short/0").all()
    assert (q.decode_replica[~short] == "decode-long/0").all()
    assert set(res["base"].decode_replica[short]) == {"decode-short/0", "decode-long/0"}  # unsplit: both take both
    tpot = {name: (r.tpot_s[short].mean(), r.tpot_s[~short].mean()) for name, r in res.items()}
    assert tpot["split"][0] < tpot["base"][0]
    assert tpot["split"][1] > tpot["split"][0]  # long requests read more KV a step than short ones


def test_a_pool_no_request_reaches_still_reads_in_the_summary():
    """Short prompts only: the long-context pool of the split runs no step, and still has its utilisation (batch
    fill 0) and KV occupancy (0) in the summary, as every pool does."""
    from simulator.specs.traffic import simple_traffic

    dep = read_deployment(SPLIT)
    s = simulate(dep, simple_traffic(rate=2.0, concurrency=None, isl=512, osl=64, requests=40, seed=0)).summary
    assert set(s["utilisation"]) == set(s["kv_occupancy"]) == {p.name for p in dep.pools}
    assert s["utilisation"]["decode-long"]["busy"] == 0.0 and s["utilisation"]["decode-long"]["batch_fill"] == 0.0
    assert s["kv_occupancy"]["decode-long"] == {"mean": 0.0, "max": 0.0}


def test_ping_pong_block_fills_equal_single_shape_evaluations():
    """A/F decode steps are evaluated a block of shapes at a time (16 batch sizes x 64 KV grid points, on a
    fixed grid): every entry equals the same shape evaluated alone, whichever miss brought its block in, with
    and without attention DP (rank shapes: multiples of dp)."""
    from simulator.serving.stepcost import memo_key

    dep = read_deployment("workloads/deployments/doubao-class-afd.yaml")
    pool = next(p for p in dep.pools if p.plan.af_disaggregated)
    rng = np.random.default_rng(7)
    for dp in (1, 2):
        plan = replace(pool.plan, attention=replace(pool.plan.attention, tp=pool.plan.attention.tp // dp, dp=dp))
        blocks = PingPongStepCost(dep.model, plan, None, dep.kv_precision, dep.kv_scale_tokens)
        alone = PingPongStepCost(dep.model, plan, None, dep.kv_precision, dep.kv_scale_tokens)
        for n, kv in zip(rng.integers(1, 200, 12) * dp, rng.integers(64, 20_000, 12)):
            key = memo_key(0, 0, 0, int(n), 1, int(n * kv))
            filled = blocks.cost(0, 0, 0, int(n), 1, int(n * kv))
            # its block came along: BATCH_BLOCK batch sizes x DECODE_BLOCK KV lengths
            assert key in blocks._memo and len(blocks._memo) >= blocks.BATCH_BLOCK * blocks.DECODE_BLOCK
            single = alone._evaluate(*key)
            assert (filled.time_s, filled.decode_attention_s, filled.decode_ffn_s) == \
                (single.time_s, single.decode_attention_s, single.decode_ffn_s)
            part = blocks._parts_of((0, 0.0, 0.0, int(n), 1, key[5]), dp)
            assert part == alone.parts(*key)
