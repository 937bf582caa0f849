"""Analytic screening: properties that hold for any traffic (fast, no simulation)."""

import pandas as pd
import pytest

from simulator.planning.candidates import parse_precision_pairs
from simulator.planning.cost import PriceBook
from simulator.planning.screen import Workload, screen
from simulator.specs.catalog import load_hardware, load_model

MODEL = load_model("llama-3.1-8b")
SPECS = {h: load_hardware(h) for h in ("h100-sxm", "h20")}
PRICES = PriceBook(SPECS, {"h20": 0.9})


def _screen(rate, tpot=0.03, max_devices=16, request_max_tokens=0.0, **kw):
    w = Workload(rate, 512.0, 64.0, 512.0, 0.5, tpot, 90.0, request_max_tokens=request_max_tokens)
    return screen(MODEL, PRICES.priced_specs(), PRICES, w, pairs=parse_precision_pairs("fp8,bf16"),
                  max_devices=max_devices, **kw)


@pytest.mark.parametrize("lo,hi", [(1.0, 10.0), (10.0, 40.0)])
def test_more_traffic_never_costs_less(lo, hi):
    a, b = _screen(lo).candidates, _screen(hi).candidates
    assert len(a) and len(b)
    assert a.cost_per_hour_usd.min() <= b.cost_per_hour_usd.min()


def test_a_tighter_tpot_never_costs_less():
    loose, tight = _screen(20.0, tpot=0.05).candidates, _screen(20.0, tpot=0.008).candidates
    assert len(tight) and loose.cost_per_hour_usd.min() <= tight.cost_per_hour_usd.min()


def test_candidates_respect_limits_and_tolerance():
    res = _screen(20.0, max_devices=6, tolerance=0.1)
    c = res.candidates
    assert len(c) and (c.devices <= 6).all()
    assert (c.tpot_p_s <= 0.03 * 1.1 + 1e-12).all() and (c.ttft_p_s <= 0.5 * 1.1 + 1e-12).all()
    assert c.cost_per_hour_usd.is_monotonic_increasing and c.arrangement.is_unique
    assert res.evaluated >= len(c)


def test_placement_constraints():
    c = _screen(20.0, modes=("pd",), prefill_hw={"h100-sxm"}, decode_hw={"h20"}).candidates
    assert len(c) and all(a.startswith("pd: ") and " h100-sxm " in a.split(" + ")[0] and " h20 " in a.split(" + ")[1]
                          for a in c.arrangement)


def test_the_engine_brings_its_all_reduce_and_frontend_to_the_screen():
    """Screened under an engine, TTFT carries the engine's frontend latency and all-reduces the engine's own
    kernel. On one-device replicas (no all-reduce) at a rate low enough that queueing is nil, every fleet's TTFT
    is its bare TTFT plus the frontend latency and its TPOT the bare one; with TP the all-reduce only shortens
    a step, so no TPOT is above the bare one."""
    import re

    from simulator.serving.profiles import engine_profile

    tol = dict(tolerance=1e6, keep=10_000)
    key = ["mode", "layout_a", "replicas_a", "layout_b", "replicas_b"]  # (an arrangement label omits tp/dp)
    bare = _screen(0.01, engine=None, **tol).candidates
    one = bare.index[[all(d == "1" for d in re.findall(r"\d+x(\d+) ", a)) for a in bare.arrangement]]
    one = pd.MultiIndex.from_frame(bare.loc[one, key])
    bare = bare.set_index(key)
    assert 10 < len(one) < len(bare)
    for name in ("vllm", "sglang", "trtllm"):
        eng = _screen(0.01, engine=name, **tol).candidates.set_index(key)
        d_ttft = eng.loc[one, "ttft_p_s"] - bare.loc[one, "ttft_p_s"]
        assert d_ttft.to_numpy() == pytest.approx(engine_profile(name).frontend_for(MODEL), abs=1e-9), name
        assert eng.loc[one, "tpot_p_s"].to_numpy() == pytest.approx(bare.loc[one, "tpot_p_s"].to_numpy(), rel=1e-12)
        both = bare.index.intersection(eng.index)
        assert (eng.loc[both, "tpot_p_s"] <= bare.loc[both, "tpot_p_s"] * (1 + 1e-12)).all(), name
        assert (eng.loc[both, "tpot_p_s"] < bare.loc[both, "tpot_p_s"]).any(), name  # some TP fleet gains


def test_every_replica_holds_the_longest_request():
    """A layout whose KV cache cannot hold the traffic's longest request (prompt + output) is never a candidate,
    on either side of a P/D fleet; one that can is unaffected (the same fleets as without a longest request)."""
    tol = dict(tolerance=1e6, keep=10_000)
    free = _screen(5.0, **tol)
    caps = [min(r.get(f"kv_tokens_{role}", 0.0) for role in ("colocated", "prefill", "decode") if
                f"kv_tokens_{role}" in r) for r in free.layouts if r.get("ok")]
    longest = sorted(caps)[len(caps) // 2]  # the median layout's capacity: some layouts hold it, some do not
    held = _screen(5.0, request_max_tokens=longest, **tol)
    assert 0 < len(held.candidates) < len(free.candidates)
    for _, c in held.candidates.iterrows():
        sides = [(c.layout_a, "colocated" if c["mode"] == "agg" else "prefill")]
        if c.layout_b >= 0:
            sides.append((c.layout_b, "decode"))
        for lay, role in sides:
            assert held.layouts[int(lay)][f"kv_tokens_{role}"] >= longest
    tiny = _screen(5.0, request_max_tokens=1.0, **tol)
    assert len(tiny.candidates) == len(free.candidates)


def test_an_arrangement_is_represented_by_its_best_layout_on_both_margins():
    """Layouts of one arrangement (same pools and devices, different TP / DP / EP) often share the binding margin
    (the decode pool's TPOT): the representative is then the one with the shorter TTFT, whatever order the screen
    produced them in; the binding margin still comes first, and a cheaper arrangement before a dearer one."""
    from simulator.planning.screen import representatives

    rows = pd.DataFrame({"arrangement": ["a", "a", "a", "b"], "cost_per_hour_usd": [10.0, 10.0, 10.0, 5.0],
                         "ttft_p_s": [0.30, 0.10, 0.05, 0.9], "tpot_p_s": [0.02, 0.02, 0.025, 0.01],
                         "devices": [4, 4, 4, 2]})
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        best = representatives(rows.iloc[order], ttft_slo_s=1.0, tpot_slo_s=0.03)
        assert best.arrangement.tolist() == ["b", "a"]
        a = best.iloc[1]
        assert (a.ttft_p_s, a.tpot_p_s) == (0.10, 0.02)  # tied on TPOT / SLO (0.67) with row 0: the shorter TTFT
        assert a.slo_ratio == pytest.approx(0.02 / 0.03)  # (row 2's shorter TTFT does not buy its worse TPOT)
