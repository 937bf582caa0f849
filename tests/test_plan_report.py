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


def _cands(costs):
    return [{"id": f"d{i}", "mode": "agg", "arrangement": f"agg: d{i}", "devices": 1, "cost_per_hour_usd": usd,
             "usd_per_mtok_output": None, "analytic": None, "pools": [{"role": "colocated", "cost_per_hour_usd": usd}],
             "verified": {"slo_met": True, "ttft_p_s": 0.1, "tpot_p_s": 0.01, "max_rate_per_s": 8.0,
                          "load_trace": _trace((4.0, True), (8.0, True), (16.0, False))}}
            for i, usd in enumerate(costs)]


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_a_comparison_lists_every_deployment_and_a_plan_says_what_its_table_leaves_out():
    slo = {"ttft_s": 0.5, "tpot_s": 0.03, "percentile": 90}
    compare = {"inputs": {"rate_per_s": 4.0}, "slo": slo, "candidates": _cands(range(1, 15)), "recommended": None}
    head, rows = documents.candidate_rows(compare)
    assert [r[0] for r in rows] == [c["id"] for c in compare["candidates"]]
    plan = dict(compare, inputs={"rate_per_s": 4.0, "modes": ["agg"], "isl_mean": 512.0, "osl_mean": 64.0})
    head, rows = documents.candidate_rows(plan)
    assert len(rows) < len(plan["candidates"])
    text = next(s for s in documents.sections(plan, {}) if s["title"] == "Top candidates")["text"]
    assert any(f"{len(rows)} of {len(plan['candidates'])} candidates" in t for t in text)


@pytest.mark.parametrize("n", [3, 10])
def test_figures_say_when_they_leave_candidates_out(drawn, tmp_path, n):
    """The latency and cost figures draw a few candidates: their titles say how many of how many (a comparison
    of many deployments does not lose some silently)."""
    doc = {"inputs": {"rate_per_s": 4.0}, "slo": {"ttft_s": 0.5, "tpot_s": 0.03, "percentile": 90},
           "candidates": _cands([1.0] * n), "recommended": None}
    samples = {c["id"]: {"ttft_s": [0.1, 0.2], "tpot_s": [0.01, 0.02]} for c in doc["candidates"]}
    documents.fig_cdfs(doc, samples, tmp_path / "c.png")
    documents.fig_load(doc, tmp_path / "l.png", None)
    documents.fig_pool_costs(doc, tmp_path / "p.png")
    assert len(drawn) == 3
    for fig in drawn:
        drawn_ids = {lab.split(" ")[0] for ax in fig.axes for lab in [ln.get_label() for ln in ax.get_lines()]
                     + [t.get_text() for t in ax.get_xticklabels()] if lab.startswith("d")}
        titles = " ".join(_titles(fig))
        if len(drawn_ids) < n:
            assert f"({len(drawn_ids)} of {n} shown)" in titles, titles
        else:
            assert "shown" not in titles, titles


def test_the_cost_figure_is_cheapest_first_whatever_the_candidates_order(drawn, tmp_path):
    """A plan's candidates are drawn cheapest first; a comparison's deployments in the order given, as its table
    lists them (the title says which)."""
    doc = {"inputs": {"rate_per_s": 4.0, "modes": ["agg"]}, "candidates": _cands([3.0, 1.0, 2.0])}
    documents.fig_pool_costs(doc, tmp_path / "p.png")
    ax = drawn[-1].axes[0]
    ids = [t.get_text() for t in ax.get_xticklabels()]
    cost = {c["id"]: c["cost_per_hour_usd"] for c in doc["candidates"]}
    assert sorted(ids) == sorted(cost) and [cost[i] for i in ids] == sorted(cost.values())
    assert "cheapest first" in ax.get_title()
    del doc["inputs"]["modes"]  # (a comparison)
    documents.fig_pool_costs(doc, tmp_path / "c.png")
    ax = drawn[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [c["id"] for c in doc["candidates"]]
    assert "in the order given" in ax.get_title() and ax.get_xlabel() == "deployment (id in the table)"


def test_an_unpriced_fleet_reads_as_unpriced_and_draws_no_empty_cost_figure(drawn, tmp_path):
    import warnings

    doc = _doc({"slo_met": True, "ttft_p_s": 0.1, "tpot_p_s": 0.01, "max_rate_per_s": 8.0,
                "load_trace": _trace((4.0, True), (8.0, True), (16.0, False))})
    for c in (doc["candidates"][0], doc["recommended"]):
        c.update(cost_per_hour_usd=None, usd_per_mtok_output=None, pools=[
            {"role": "colocated", "replicas": 1, "devices": 1, "hardware": "h20", "cost_per_hour_usd": None,
             "parallelism": {"tp": 1, "ep": 1}, "precision": {"attention": "fp8", "ffn": "fp8"}}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (matplotlib's "no artists with labels" legend warning included)
        assert documents.fig_pool_costs(doc, tmp_path / "p.png") is None
        assert documents.fig_pareto(doc, tmp_path / "x.png") is None
    assert not drawn
    text = documents.recommendation_text(doc)
    assert "no price (pass --price)" in text and "n/a" not in text


def test_the_recommendation_names_only_the_latency_targets_the_traffic_sets():
    from simulator.report.documents import recommendation_text

    doc = {"recommended": None, "slo": {"percentile": 90.0, "ttft_s": 0.5, "tpot_s": None},
           "inputs": {"rate_per_s": 2.0}}
    assert recommendation_text(doc) == "No candidate met 2 requests/s under p90 TTFT <= 500.0 ms in the simulation."
    doc["slo"] = {"percentile": 99.0, "ttft_s": float("inf"), "tpot_s": 0.05}
    assert recommendation_text(doc) == "No candidate met 2 requests/s under p99 TPOT <= 50.0 ms in the simulation."


def test_the_cost_latency_figure_names_each_simulated_fleet(drawn, tmp_path):
    """Two fleets at one price are told apart by their table ids beside their points, in both panels; a candidate
    only screened (no simulation) carries none."""
    doc = {"inputs": {"rate_per_s": 4.0}, "slo": {"ttft_s": 0.5, "tpot_s": 0.03, "percentile": 90},
           "candidates": _cands([2.0, 2.0]) + [dict(_cands([3.0])[0], id="d2", verified=None,
                                                    analytic={"ttft_p_s": 0.2, "tpot_p_s": 0.02})]}
    doc["recommended"] = doc["candidates"][0]
    documents.fig_pareto(doc, tmp_path / "x.png")
    for ax in drawn[-1].axes:
        assert sorted(t.get_text() for t in ax.texts) == ["d0", "d1"]
