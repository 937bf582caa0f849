"""Analytic screening: properties that hold for any traffic (fast, no simulation)."""

import pytest

from simulator.planning.candidates import parse_precision_pairs
from simulator.planning.cost import PriceBook
from simulator.planning.screen import Workload, screen
from simulator.specs.catalog import load_hardware, load_model

MODEL = load_model("llama-3.1-8b")
SPECS = {h: load_hardware(h) for h in ("h100-sxm", "h20")}
PRICES = PriceBook(SPECS, {"h20": 0.9})


def _screen(rate, tpot=0.03, max_devices=16, **kw):
    w = Workload(rate, 512.0, 64.0, 512.0, 0.5, tpot, 90.0)
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
