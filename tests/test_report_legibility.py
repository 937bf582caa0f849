"""What a reader sees in the figures and summaries: titles and labels that do not overlap, SLO lines where an SLO
was given, plain tick labels, and summary lines that name only what was set."""

import numpy as np
import pandas as pd
import pytest

from simulator.report import documents, plots


@pytest.fixture
def kept(monkeypatch):
    """The figures drawn, kept open (and laid out) instead of saved."""
    figs = []

    def keep(fig, path):
        fig.canvas.draw()
        figs.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(documents, "_save", keep)
    return figs


def _box(fig, artist):
    return artist.get_window_extent(fig.canvas.get_renderer())


def _requests(n=50):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"status": "finished", "ttft_s": rng.uniform(0.02, 0.2, n),
                         "tpot_s": rng.uniform(0.01, 0.02, n), "e2e_s": rng.uniform(1, 5, n)})


def test_the_latency_cdfs_title_clears_the_panels_and_the_slo_line_says_its_value(kept, tmp_path):
    from simulator.specs.traffic import SLO

    plots.latency_cdfs(_requests(), tmp_path / "c.png", SLO(ttft_s=1.0, tpot_s=0.05, percentile=90.0))
    fig = kept[-1]
    sup = _box(fig, fig._suptitle)
    for ax in fig.axes:
        assert not sup.overlaps(_box(fig, ax.title)), ax.get_title()
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert labels == ["SLO 1 s", "SLO 0.05 s"]


def test_the_time_series_labels_do_not_run_into_each_other_and_the_queue_counts_whole_requests(kept, tmp_path):
    n = 200
    steps = pd.DataFrame({"pool": "p", "replica_id": "p/0", "start_s": np.arange(n) * 0.1,
                          "end_s": np.arange(n) * 0.1 + 0.05, "output_tokens": 8, "queued": np.arange(n) % 3,
                          "kv_occupancy": np.linspace(0, 0.04, n)})
    plots.time_series(steps, _requests(), tmp_path / "t.png")
    fig = kept[-1]
    boxes = [_box(fig, ax.yaxis.label) for ax in fig.axes]
    for a, b in zip(boxes, boxes[1:]):
        assert not a.overlaps(b)
    ticks = fig.axes[1].get_yticks()
    assert np.allclose(ticks, np.round(ticks))


def test_the_load_figure_labels_milliseconds_as_plain_numbers(kept, tmp_path):
    trace = [{"rate_per_s": r, "ttft_p_s": t, "tpot_p_s": p, "slo_met": r <= 30}
             for r, t, p in ((30, 0.76, 0.037), (33, 1.1, 0.039), (36, 1.3, 0.040), (60, 40.0, 0.041))]
    cand = {"id": "c5", "mode": "pd", "arrangement": "pd: c5", "devices": 20, "cost_per_hour_usd": 24.0,
            "pools": [{"role": "prefill", "cost_per_hour_usd": 24.0}],
            "verified": {"slo_met": True, "max_rate_per_s": 30.0, "load_trace": trace}}
    doc = {"inputs": {"rate_per_s": 30.0}, "slo": {"ttft_s": 1.0, "tpot_s": 0.05, "percentile": 90},
           "candidates": [cand], "recommended": cand}
    documents.fig_load(doc, tmp_path / "l.png", 0.13)
    fig = kept[-1]
    for ax in fig.axes:
        shown = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
        assert shown and not any("times" in t or "^" in t for t in shown), shown
    tpot = [t.get_text() for t in fig.axes[1].get_yticklabels(minor=True) if t.get_text()]
    assert "40" in tpot  # (under a decade of range: the in-between ticks carry plain labels)


def _summary(slo):
    pct = {"mean": 0.01, "p50": 0.01, "p90": 0.01, "p99": 0.01}
    return {"requests_completed": 10, "requests_rejected": 0, "requests_total": 10, "makespan_s": 5.0, "steps": 100,
            "devices": 1, "rejection_reasons": {}, "ttft_s": pct, "tpot_s": pct, "e2e_s": pct, "queue_s": pct,
            "goodput": {"requests_per_s": 2.0, "fraction_of_requests": 1.0, "slo_met": True,
                        "slo": dict(slo, percentile=90.0)},
            "input_tokens_per_s": 100.0, "output_tokens_per_s": 10.0, "output_tokens_per_s_per_device": 10.0,
            "preemptions": 0, "cost_usd_per_mtok": 1.0, "cost_usd_per_hour": 2.5, "utilisation": {},
            "kv_occupancy": {}}


def test_the_simulation_summary_names_only_the_targets_set_and_counts_one_device():
    from simulator.report.render import simulation_text

    text = simulation_text(_summary({"ttft_s": None, "tpot_s": 0.05}))
    assert simulation_text(_summary({"ttft_s": float("inf"), "tpot_s": 0.05})) == text
    assert "meet TPOT <= 50 ms; p90 SLO met" in text and "n/a" not in text.split("goodput")[1].split("\n")[0]
    assert "; 1 device\n" in text
    both = simulation_text(dict(_summary({"ttft_s": 1.0, "tpot_s": 0.05}), devices=8))
    assert "meet TTFT <= 1 s and TPOT <= 50 ms" in both and "; 8 devices\n" in both


def test_the_recommendation_names_every_parallel_dimension_that_splits_the_devices():
    from simulator.report.documents import recommendation_text

    pool = {"role": "decode", "replicas": 2, "devices": 8, "hardware": "h20",
            "parallelism": {"tp": 2, "dp": 2, "pp": 1, "ep": 2, "expert_tp": 2},
            "precision": {"attention": "fp8", "ffn": "w4a8"}}
    rec = {"id": "c5", "arrangement": "pd: c5", "mode": "pd", "devices": 8, "cost_per_hour_usd": 9.6,
           "usd_per_mtok_output": 0.3, "pools": [pool],
           "verified": {"slo_met": True, "ttft_p_s": 0.7, "tpot_p_s": 0.03, "max_rate_per_s": 40.0}}
    doc = {"inputs": {"rate_per_s": 30.0}, "slo": {"ttft_s": 1.0, "tpot_s": 0.05, "percentile": 90},
           "candidates": [rec], "recommended": rec}
    assert "2 x 4 h20 (tp 2, dp 2, ep 2, expert tp 2, fp8/w4a8)" in recommendation_text(doc)


def test_the_demo_draws_the_chat_traffic_slo_on_its_latency_cdfs(monkeypatch, tmp_path):
    from simulator import commands

    seen = {}
    real = commands.write_simulation

    def spy(res, out, **kw):
        seen["slo"] = kw.get("slo")
        return real(res, out, **dict(kw, plots=False))

    monkeypatch.setattr(commands, "write_simulation", spy)
    list(commands.run_demo(tmp_path / "demo"))
    assert seen["slo"] is not None and seen["slo"].ttft_s == 1.0 and seen["slo"].tpot_s == 0.06


def test_only_a_plan_describes_its_screening():
    """A comparison simulates the deployments it is given and screens nothing; its assumptions do not say how
    screening works."""
    cand = {"id": "d0", "mode": "agg", "arrangement": "agg: d0", "devices": 1, "cost_per_hour_usd": 1.0,
            "analytic": None, "pools": [{"role": "colocated", "cost_per_hour_usd": 1.0}],
            "verified": {"slo_met": True, "ttft_p_s": 0.1, "tpot_p_s": 0.01, "max_rate_per_s": 8.0}}
    inputs = {"rate_per_s": 4.0, "isl_mean": 512.0, "osl_mean": 64.0, "traffic": "chat"}
    compare = {"inputs": inputs, "slo": {"ttft_s": 0.5, "tpot_s": 0.03, "percentile": 90},
               "candidates": [cand], "recommended": None}
    plan = dict(compare, inputs=dict(inputs, modes=["agg"]))

    def assumptions(doc):
        return " ".join(next(s for s in documents.sections(doc, {}) if s["title"].startswith("Assumptions"))["text"])

    assert "Screening" not in assumptions(compare)
    assert "Screening uses queueing approximations" in assumptions(plan)


def test_durations_print_at_human_scale_and_zero_in_seconds():
    # a zero (a window starting at t = 0, an empty queue) reads "0 s", not "0 µs"
    from simulator.report.render import s

    assert s(0.0) == "0 s"
    assert s(0) == "0 s"
    assert s(2.5) == "2.5 s"
    assert s(0.0365) == "36.5 ms"
    assert s(4.2e-5) == "42 µs"
    assert s(float("nan")) == "n/a"


def test_the_cost_per_pool_figure_names_both_axes(kept, tmp_path):
    cands = [{"id": f"c{i}", "cost_per_hour_usd": usd, "pools": [{"role": "prefill", "cost_per_hour_usd": usd / 2},
                                                                  {"role": "decode", "cost_per_hour_usd": usd / 2}]}
             for i, usd in enumerate((24.0, 30.0))]
    documents.fig_pool_costs({"inputs": {"modes": ["pd"]}, "candidates": cands}, tmp_path / "p.png")
    ax = kept[-1].axes[0]
    assert ax.get_xlabel() == "candidate (id in the table)"
    assert ax.get_ylabel() == "USD per hour"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c0", "c1"]


def test_the_roofline_legend_names_the_memory_roof_and_its_bandwidth(kept, tmp_path):
    from simulator.commands import run_whatif

    res = run_whatif(dict(model="llama-3.1-8b", hardware="h100-sxm", devices=1, batch=8, isl=512, osl=64,
                          prefill_batch=1))
    plots.roofline(res, tmp_path / "r.png")
    ax = kept[-1].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "memory roof (HBM 3.35 TB/s)" in labels and "bf16 peak 989 TFLOP/s" in labels
    slope = next(ln for ln in ax.get_lines() if ln.get_label().startswith("memory roof"))
    x, y = slope.get_data()
    assert np.allclose(np.asarray(y) / np.asarray(x), 3.35e12)  # the slope is the bandwidth


def test_the_validation_scatter_names_its_25_percent_lines(kept, tmp_path):
    # the dotted lines bound what the score counts as "within 25%": |predicted / measured - 1| <= 0.25
    df = pd.DataFrame({"op": ["gemm", "gemm", "attention"], "latency_us": [10.0, 100.0, 40.0],
                       "predicted_us": [12.0, 80.0, 41.0]})
    plots.validation_scatter(df, tmp_path / "v.png")
    ax = kept[-1].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"predicted = measured", "±25% of measured"} <= set(labels)
    ratios = sorted(float(np.mean(ln.get_ydata() / ln.get_xdata())) for ln in ax.get_lines())
    assert np.allclose(ratios, [0.75, 1.0, 1.25])


def _fleet(cid, usd, slo_met=True, devices=8):
    return {"id": cid, "arrangement": f"pd: {cid}", "mode": "pd", "devices": devices, "cost_per_hour_usd": usd,
            "usd_per_mtok_output": 0.3, "pools": [],
            "verified": {"slo_met": slo_met, "ttft_p_s": 0.7, "tpot_p_s": 0.03, "max_rate_per_s": 40.0}}


def test_the_recommendation_says_how_it_broke_a_tie_on_price():
    from simulator.report.documents import recommendation_text

    rec, twin, dearer = _fleet("c1", 9.6), _fleet("c4", 9.6, devices=6), _fleet("c5", 12.0)
    slo = {"ttft_s": 1.0, "tpot_s": 0.05, "percentile": 90}
    plan = {"inputs": {"rate_per_s": 30.0, "modes": ["pd"]}, "slo": slo, "recommended": rec,
            "candidates": [_fleet("c0", 9.6, slo_met=False), rec, twin, dearer]}
    text = recommendation_text(plan)
    assert ("2 simulated fleets meet the SLOs at this price (c1, c4). At one price the planner takes the one the "
            "analytic screen ranked first: the larger margin to the SLO nearest its limit, then to the other, then "
            "fewer devices; that is c1, confirmed on a second run.") in text
    # (c0: the one that missed is counted apart; nothing is cheaper, so no "0 cheaper candidates" clause)
    assert "1 candidate at the same price was simulated and missed the SLOs" in text and "cheaper" not in text
    compare = dict(plan, inputs={"rate_per_s": 30.0}, recommended=_fleet("d2", 9.6),
                   candidates=[_fleet("d2", 9.6), _fleet("d10", 9.6)])
    assert ("2 deployments meet the SLOs at this price (d2, d10); ties go to the order they were given, so d2, the "
            "first, was picked.") in recommendation_text(compare)
    alone = dict(plan, candidates=[rec, dearer])
    assert "ties go" not in recommendation_text(alone)


def test_the_breakdown_title_gives_its_shape_with_units_and_one_sequence_in_the_singular():
    rows = [{"quadrant": "decode_attention", "decode_batch": 1, "prompt_tokens": 2048}]
    assert documents.breakdown_title(rows) == ("Recommended arrangement: time per quadrant (one 2,048-token prefill, "
                                               "one decode step of 1 sequence)")
    assert documents.breakdown_title([dict(rows[0], decode_batch=64)]).endswith("one decode step of 64 sequences)")
    assert documents.breakdown_title([]) == "Recommended arrangement: time per quadrant"
