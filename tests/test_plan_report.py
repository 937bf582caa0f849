"""The plan/compare report's figures and tables, from hand-made plan.json documents (no simulation)."""

import pytest

from simulator.report import documents


@pytest.fixture
def drawn(monkeypatch):
    """The figures the report functions draw, kept open for inspection instead of saved."""
    figs = []
    monkeypatch.setattr(documents, "_save", lambda fig, path: figs.append(fig) or path)
    return figs


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _doc(verified: dict) -> dict:
    cand = {"id": "d0", "mode": "agg", "arrangement": "agg: d0", "devices": 1, "cost_per_hour_usd": 1.0,
            "pools": [{"role": "colocated", "cost_per_hour_usd": 1.0}], "verified": verified}
    return {"inputs": {"rate_per_s": 4.0}, "slo": {"ttft_s": 0.5, "tpot_s": 0.03, "percentile": 90},
            "candidates": [cand], "recommended": cand}


def _trace(*rates_met):
    return [{"rate_per_s": r, "ttft_p_s": 0.1, "tpot_p_s": 0.01, "slo_met": met} for r, met in rates_met]


def test_the_load_figure_calls_an_unbounded_maximum_a_lower_bound_not_a_knee(drawn, tmp_path):
    unbounded = _doc({"slo_met": True, "max_rate_per_s": 16.0, "max_rate_bounded": False,
                      "load_trace": _trace((4.0, True), (8.0, True), (16.0, True))})
    documents.fig_load(unbounded, tmp_path / "a.png", None)
    text = " ".join(_texts(drawn[-1]))
    assert "knee" not in text and "≥ 16/s" in text and "no SLO broke" in text
    bounded = _doc({"slo_met": True, "max_rate_per_s": 8.0, "max_rate_bounded": True,
                    "load_trace": _trace((4.0, True), (8.0, True), (16.0, False))})
    documents.fig_load(bounded, tmp_path / "b.png", None)
    assert "knee 8/s" in " ".join(_texts(drawn[-1]))
