"""The published serving rows (reports/validation/serving-published/*.csv) are complete, resolve to
catalogue specs, and their derived figures follow the formula their notes state."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.specs.catalog import load_hardware, load_model

DATA = Path(__file__).resolve().parents[1] / "reports/validation/serving-published"
ROWS = pd.concat([pd.read_csv(p) for p in sorted(DATA.glob("*.csv"))], ignore_index=True)


def test_every_row_cites_and_quotes():
    assert ROWS.id.is_unique
    assert ROWS.source_url.str.startswith("https://").all()
    assert (ROWS.quoted.str.len() > 20).all()
    assert ROWS.trust.str.match(r"^(exact table|exact output)").all()
    figures = [c for c in ("ttft_mean_ms", "tpot_mean_ms", "ttft_median_ms", "tpot_median_ms") if c in ROWS]
    assert ROWS[figures].notna().any(axis=1).all()  # a mean or a median of TTFT or TPOT
    assert (ROWS[figures].fillna(1.0) > 0).all().all()


def test_open_loop_rows_have_a_finite_rate():
    if "request_rate" not in ROWS:
        pytest.skip("no open-loop rows")
    rate = ROWS.request_rate.dropna()
    assert (np.isfinite(rate) & (rate > 0)).all()
    # the compare script models an uncapped open loop: such a row's concurrency is its prompt count
    open_loop = ROWS[ROWS.request_rate.notna()]
    assert (open_loop.concurrency == open_loop.num_prompts).all()


@pytest.mark.parametrize("model_id", sorted(ROWS.model_id.unique()))
def test_models_resolve(model_id):
    assert load_model(model_id).num_layers > 0


@pytest.mark.parametrize("hardware", sorted(ROWS.hardware.unique()))
def test_hardware_resolves(hardware):
    load_hardware(hardware)


def test_layouts_are_consistent():
    assert (ROWS.devices == ROWS.tp * ROWS.dp).all()
    assert (ROWS.devices % ROWS.ep == 0).all()
    assert ROWS.length_low_fraction.between(0.0, 1.0).all()


def test_derived_tpot_follows_the_closed_loop_formula():
    # TPOT = (C x mean OSL / output tok/s - TTFT) / (mean OSL - 1), lengths uniform in [low x L, L]
    d = ROWS[ROWS.trust.str.contains("TPOT derived") & ROWS.ttft_mean_ms.notna()]
    assert len(d)
    low = np.floor(d.osl * d.length_low_fraction)
    mean_osl = (low + d.osl) / 2
    tpot = (d.concurrency * mean_osl / d.output_tok_s - d.ttft_mean_ms / 1e3) / (mean_osl - 1) * 1e3
    np.testing.assert_allclose(d.tpot_mean_ms, tpot, rtol=0.01)


def test_single_stream_throughput_matches_its_latencies_where_the_notes_say_so():
    # at C = 1 with fixed lengths one request runs at a time: output tok/s = OSL / (TTFT + (OSL - 1) x TPOT)
    d = ROWS[ROWS.notes.str.contains("reproduces OSL / (TTFT + (OSL - 1) x ITL)", regex=False)
             & (ROWS.concurrency == 1)]
    assert len(d)
    assert (d.length_low_fraction == 1.0).all()
    tput = d.osl / (d.ttft_mean_ms / 1e3 + (d.osl - 1) * d.tpot_mean_ms / 1e3)
    np.testing.assert_allclose(d.output_tok_s, tput, rtol=0.005)


def test_genai_perf_rows_match_their_quoted_export():
    # rows read from a GenAI-Perf export quote its ns figures: TTFT = time_to_first_token-avg, and the
    # inter-token latency GenAI-Perf prints is (request latency - TTFT) / (output tokens - 1), i.e. the TPOT
    d = ROWS[ROWS.quoted.str.contains("inter_token_latency-avg", regex=False)]
    assert len(d)

    def ns(field):
        return d.quoted.str.extract(field + r"(?:-avg)? ([0-9.]+)")[0].astype(float)

    ttft, itl, lat = ns("time_to_first_token"), ns("inter_token_latency"), ns("request_latency")
    n_out = ns("num_output_token")
    np.testing.assert_allclose(d.ttft_mean_ms, ttft / 1e6, rtol=0, atol=0.005)  # rounded to 0.01 ms
    np.testing.assert_allclose(d.tpot_mean_ms, itl / 1e6, rtol=0, atol=0.0005)  # rounded to 0.001 ms
    np.testing.assert_allclose(d.tpot_mean_ms, (lat - ttft) / (n_out - 1) / 1e6, rtol=2e-3)


def test_save_result_rows_carry_the_figures_they_quote():
    # rows read from `--save-result` JSONs quote the JSON's key/value pairs; the columns are those numbers, and the
    # totals confirm fixed lengths (50 x ISL, 50 x OSL) and a full run
    import re

    d = ROWS[ROWS.quoted.str.contains("mean_ttft_ms ", regex=False)]
    assert len(d)
    for _, r in d.iterrows():
        kv = dict(re.findall(r"(\w+) ([-+.\deE]+|null)", r.quoted))
        assert float(kv["mean_ttft_ms"]) == r.ttft_mean_ms and float(kv["median_ttft_ms"]) == r.ttft_median_ms
        assert float(kv["mean_tpot_ms"]) == r.tpot_mean_ms and float(kv["median_tpot_ms"]) == r.tpot_median_ms
        assert float(kv["output_throughput"]) == r.output_tok_s
        assert float(kv["request_rate"]) == r.request_rate and int(kv["num_prompts"]) == r.num_prompts
        assert kv["max_concurrency"] == "null" and r.concurrency == r.num_prompts
        assert int(kv["completed"]) == r.num_prompts
        assert r.length_low_fraction == 1.0
        assert int(kv["total_input_tokens"]) == r.num_prompts * r.isl
        assert int(kv["total_output_tokens"]) == r.num_prompts * r.osl


def test_launch_flags_quoted_in_the_notes_are_in_the_columns():
    """A row whose launch command (in ``notes`` / ``quoted``) sets the KV memory flag or the running-request limit
    carries it in ``memory_fraction`` / ``max_seqs``, which the compare script hands to the simulation."""
    import re

    frac = re.compile(r"(?:free_gpu_memory_fraction|mem-fraction-static|gpu-memory-utilization)\s+([0-9]*\.[0-9]+)")
    seqs = re.compile(r"(?:--max-running-requests|--max_batch_size)\s+([0-9]+)")
    checked = 0
    for _, r in ROWS.iterrows():
        text = f"{r.notes} {r.quoted}"
        for pat, col in ((frac, "memory_fraction"), (seqs, "max_seqs")):
            found = {float(v) for v in pat.findall(text)}
            if found:
                assert r.get(col) in found, (r.id, col, found, r.get(col))
                checked += 1
    assert checked >= 30


def test_the_held_out_space_names_rows_of_every_kind_it_lists():
    """The compare script's held-out-like table selects by catalogue ids: each GPU, model and precision it names
    must match published rows (a renamed id would silently shrink the table), and the subset spans the three
    engines the held-out check covers."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "reports/scripts/serving_published_compare.py"
    spec = importlib.util.spec_from_file_location("serving_published_compare", path)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    for column, names in (("hardware", compare.HELD_OUT_HARDWARE), ("model_id", compare.HELD_OUT_MODELS),
                          ("precision", compare.HELD_OUT_PRECISIONS)):
        assert set(names) <= set(ROWS[column]), column
    inside = ROWS[compare.held_out_space(ROWS)]
    assert set(inside.engine) == {"vllm", "sglang", "trtllm"}
    assert (inside.devices <= 8).all() and not inside.precision.eq("w4a16").any()
    assert compare.held_out_space(ROWS, precisions=False).sum() > len(inside)  # the W4A16 rows
    shapes = compare.load_shape(inside)
    assert set(shapes) == set(compare.LOAD_SHAPES)  # each load shape the table lists has rows in the space
    rate = inside.request_rate.astype(float)
    assert (shapes[rate.notna() & np.isfinite(rate)] == "open loop").all()
    assert (inside.num_prompts[shapes == "burst"] == inside.concurrency[shapes == "burst"]).all()


def test_group_means_weigh_each_gpu_model_engine_group_alike():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "reports/scripts/serving_published_compare.py"
    spec = importlib.util.spec_from_file_location("serving_published_compare", path)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    # group A (two rows, TPOT off by 10% and 30%: 20%) and group B (one row, 40%): 30% by group, 26.7% by row;
    # A's two rows differ in precision, which does not split a GPU x model x engine group; B has no TTFT figure
    rows = pd.DataFrame({"gpu": ["H100 SXM", "H100 SXM", "B200"], "model_id": ["m", "m", "m"],
                         "engine": ["vllm", "vllm", "vllm"], "precision": ["fp8", "bf16", "fp8"],
                         "bench_tpot_ratio": [1.1, 0.7, 1.4], "bench_ttft_ratio": [0.5, 1.5, np.nan]})
    assert compare.group_means(rows) == ("30%", "50%", 2)
    assert compare.group_means(rows.assign(bench_ttft_ratio=np.nan))[1] == "-"
