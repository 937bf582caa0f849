"""Measurement contract, validate and calibrate (no torch needed: synthetic measurements made by a
known 'true' efficiency, which calibration must recover)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from simulator.cli import app
from simulator.errors import MeasurementError
from simulator.specs.catalog import load_hardware
from simulator.timing.calibrated import apply_calibration
from simulator.validation.calibrate import _with_param, calibrate
from simulator.validation.measurements import COLUMNS, holdout_mask, read_measurements
from simulator.validation.validate import predict, score

from .conftest import one_line_error

runner = CliRunner()
H100 = load_hardware("h100-sxm")
ROOT = Path(__file__).resolve().parents[1]


def _rows(hw="h100-sxm"):
    rng = np.random.default_rng(0)
    rows = []
    for m in (1, 8, 64, 512, 4096, 16384):
        for nk in ((4096, 4096), (8192, 2048), (14336, 4096)):
            rows.append(dict(op="gemm", dtype="bf16", m=m, n=nk[0], k=nk[1]))
    for b in (1, 8, 64, 256):
        for L in (512, 4096, 32768):
            rows.append(dict(op="attn_decode", dtype="bf16", kv_dtype="bf16", batch=b, q_len=1, kv_len=L,
                             num_heads=8, num_kv_heads=1, head_dim=128))
    for b, s in ((1, 512), (1, 4096), (4, 2048), (16, 1024), (1, 16384), (2, 8192), (8, 512), (2, 1024),
                 (1, 2048), (4, 4096), (1, 32768), (32, 256)):
        rows.append(dict(op="attn_prefill", dtype="bf16", kv_dtype="bf16", batch=b, q_len=s, kv_len=s,
                         num_heads=8, num_kv_heads=1, head_dim=128))
    for t in (1, 16, 128, 1024, 8192, 32768):
        rows.append(dict(op="moe", dtype="bf16", tokens=t, hidden=4096, intermediate=1792, num_experts=8, top_k=2))
    for b in (1e3, 1e5, 1e7, 1e8, 1e9, 4e9):
        rows.append(dict(op="memcpy", dtype="", bytes=b))
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    for c in ("op", "hardware", "dtype", "kv_dtype"):
        df[c] = df[c].astype(object).fillna("")
    df["hardware"] = hw
    df["latency_us"] = 1.0
    return df, rng


# a made-up device whose kernel families differ from the profile's defaults; calibration must find them
TRUTH = {("gemm", "compute_fraction"): 0.70, ("gemm", "memory_fraction"): 0.65, ("gemm", "floor_s"): 7e-6,
         ("attn_prefill", "compute_fraction"): 0.55, ("attn_decode", "memory_fraction"): 0.6,
         ("grouped_gemm", "compute_fraction"): 0.6, ("elementwise", "memory_fraction"): 0.7}


def _truth():
    eff = H100.efficiency
    for (family, param), value in TRUTH.items():
        eff = _with_param(eff, family, param, value)
    return H100.with_efficiency(eff)


def _synthetic(tmp_path, noise=0.02):
    df, rng = _rows()
    truth = _truth()
    lat = predict(df, {"h100-sxm": truth})["predicted_us"].to_numpy()
    df["latency_us"] = lat * np.exp(rng.normal(0, noise, len(df)))
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    return path, truth


def test_calibration_recovers_known_efficiencies(tmp_path):
    path, truth = _synthetic(tmp_path)
    df = read_measurements(path)
    cal, report = calibrate(df, H100, test_fraction=0.3, seed=1, measurements_file=str(path))
    g = cal.efficiency.kernels["gemm"]
    assert g.compute_fraction == pytest.approx(0.70, rel=0.08)
    assert g.memory_fraction == pytest.approx(0.65, rel=0.08)
    assert cal.efficiency.kernels["attn_prefill"].compute_fraction == pytest.approx(0.55, rel=0.1)
    assert cal.efficiency.kernels["attn_decode"].memory_fraction == pytest.approx(0.6, rel=0.1)
    # held-out error: much better after calibration, near the injected 2% noise
    assert report["heldout_after"]["median_ape"] < 0.05
    assert report["heldout_after"]["median_ape"] < report["heldout_before"]["median_ape"]
    assert report["test_rows"] == round(0.3 * report["rows"])


def test_calibrate_and_validate_cli_roundtrip(tmp_path):
    path, _ = _synthetic(tmp_path)
    overlay = tmp_path / "h100.cal.yaml"
    r = runner.invoke(app, ["calibrate", "--measurements", str(path), "--hardware", "h100-sxm", "--out", str(overlay)])
    assert r.exit_code == 0, r.output
    assert "held-out" in r.output and overlay.exists()
    text = overlay.read_text()
    assert "provenance" in text and "heldout_error_after" in text
    # an entry marked PROFILE carries the profile's value, never a fitted one (the "default" block too)
    doc = yaml.safe_load(text)["efficiency"]["kernels"]
    assert doc["gemm"]["compute_fraction"]["source"] == "FIT"
    assert doc["default"]["compute_fraction"] == {"value": round(H100.efficiency.kernels["gemm"].compute_fraction, 6),
                                                  "source": "PROFILE"}
    # the overlay is usable wherever a profile is
    cal = apply_calibration(H100, overlay)
    assert cal.peak("bf16") == H100.peak("bf16")  # datasheet untouched
    # kernel benchmarks cannot measure the served-load throughput: the overlay carries the profile's
    assert yaml.safe_load(text)["efficiency"]["served_compute_fraction"] == {
        "value": H100.efficiency.served_compute_fraction, "source": "PROFILE"}
    assert cal.efficiency.served_compute_fraction == H100.efficiency.served_compute_fraction
    r = runner.invoke(app, ["validate", "--measurements", str(path), "--calibration", str(overlay), "--heldout",
                            "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert set(d["overall"]) == {"n", "median_ape", "p90_ape", "within_25pct", "bias"}
    assert d["overall"]["median_ape"] < 0.06
    for g in d["groups"]:
        assert {"hardware", "op", "n", "median_ape", "p90_ape", "within_25pct", "bias"} <= set(g)
    r = runner.invoke(app, ["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--calibration", str(overlay),
                            "--json"])
    assert r.exit_code == 0, r.output


def test_validate_table_plot_and_predictions(tmp_path):
    path, _ = _synthetic(tmp_path)
    r = runner.invoke(app, ["validate", "--measurements", str(path), "--out", str(tmp_path / "p.csv"),
                            "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    assert "overall" in r.output and "median APE" in r.output
    assert "predicted_us" in pd.read_csv(tmp_path / "p.csv").columns
    assert (tmp_path / "s.png").stat().st_size > 5000


def test_score_closed_form():
    pred = pd.DataFrame({"hardware": ["a"] * 4, "op": ["gemm"] * 4, "latency_us": [1.0, 1.0, 1.0, 1.0],
                         "predicted_us": [1.1, 0.9, 2.0, 1.0]})
    pred["ratio"] = pred.predicted_us / pred.latency_us
    pred["ape"] = (pred.ratio - 1).abs()
    s = score(pred)["overall"]
    assert s["n"] == 4 and s["median_ape"] == pytest.approx(0.1)
    assert s["within_25pct"] == 0.75
    assert s["bias"] == pytest.approx((1.1 * 0.9 * 2.0 * 1.0) ** 0.25)


def test_holdout_split_is_deterministic_and_sized():
    a, b = holdout_mask(100, 0.5, 3), holdout_mask(100, 0.5, 3)
    assert (a == b).all() and a.sum() == 50


@pytest.mark.parametrize("mutate,expect", [
    (lambda df: df.drop(columns=["kv_len"]), "missing required column(s): kv_len"),
    (lambda df: df.assign(latency_us=["x"] + ["1"] * (len(df) - 1)), "row 2 (line 2): column 'latency_us'"),
    (lambda df: df.assign(op=["gemm"] * 3 + ["conv"] + ["gemm"] * (len(df) - 4)), "row 5 (line 5): column 'op'"),
    (lambda df: df.assign(m=[""] + list(df.m[1:])), "row 2 (line 2): column 'm': required for op gemm"),
    # a second column of one name (pandas would read it as m.1 and the row's m silently from the first)
    (lambda df: df.assign(**{"m.1": df.m}).rename(columns={"m.1": "m"}), "line 1: column 'm' appears more than once"),
])
def test_bad_csv_one_line_errors(tmp_path, mutate, expect):
    df, _ = _rows()
    df = df[df.op == "gemm"].reset_index(drop=True)
    path = tmp_path / "bad.csv"
    mutate(df.astype(str).replace("nan", "")).to_csv(path, index=False)
    with pytest.raises(MeasurementError) as e:
        read_measurements(path)
    assert expect in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    r = runner.invoke(app, ["validate", "--measurements", str(path)])
    assert r.exit_code == 2 and expect in r.stderr


def test_a_device_named_by_an_alias_is_the_same_device(tmp_path):
    """Rows naming a device by an alias (H100) or by its id are one device: the same predictions and errors, no
    leave-one-device-out across two names of one card, and --hardware / calibrate take the alias too."""
    path, _ = _synthetic(tmp_path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[df.index % 2 == 0, "hardware"] = "H100"
    mixed = tmp_path / "mixed.csv"
    df.to_csv(mixed, index=False)
    assert set(read_measurements(mixed)["hardware"]) == {"h100-sxm"}
    a = json.loads(runner.invoke(app, ["validate", "--measurements", str(path), "--json"]).stdout)
    r = runner.invoke(app, ["validate", "--measurements", str(mixed), "--hardware", "H100", "--json"])
    assert r.exit_code == 0, r.output
    b = json.loads(r.stdout)
    assert b["overall"] == a["overall"] and "leave_one_device_out" not in b
    out = tmp_path / "cal.yaml"
    r = runner.invoke(app, ["calibrate", "--measurements", str(mixed), "--hardware", "H100", "--out", str(out)])
    assert r.exit_code == 0 and yaml.safe_load(out.read_text())["hardware"] == "h100-sxm", r.output


def test_calibration_and_timing_flags_that_would_change_nothing_or_double_count_are_refused(tmp_path):
    """An overlay for a device no row measures would leave every prediction as it was; an overlay and a measured
    table given as two --calibration flags would correct the profile twice; a split that leaves one side empty
    cannot fit or check. Each is a one-line error naming the flag."""
    path, _ = _synthetic(tmp_path)
    overlay = tmp_path / "h100.cal.yaml"
    assert runner.invoke(app, ["calibrate", "--measurements", str(path), "--hardware", "h100-sxm",
                               "--out", str(overlay)]).exit_code == 0
    df = pd.read_csv(path, dtype=str, keep_default_na=False).assign(hardware="h200-sxm")
    other = tmp_path / "h200.csv"
    df.to_csv(other, index=False)
    for args, words in (
            (["--measurements", str(other), "--calibration", str(overlay)], ["--calibration", "no row", "h200-sxm"]),
            (["--measurements", str(path), "--calibration", str(overlay), "--calibration", str(path)],
             ["--calibration", "--timing calibrated:"]),
            (["--measurements", str(path), "--tp", "2"], ["--tp", "--serving"])):
        line = one_line_error(runner.invoke(app, ["validate", *args]))
        for w in words:
            assert w in line, line
    for fraction in ("0.001", "0.999"):
        r = runner.invoke(app, ["calibrate", "--measurements", str(path), "--hardware", "h100-sxm", "--out",
                                str(tmp_path / "x.yaml"), "--test-fraction", fraction])
        assert r.exit_code == 2 and "--test-fraction" in r.stderr and "Traceback" not in r.stderr, r.output
        assert not (tmp_path / "x.yaml").exists()


def test_a_causal_flag_other_than_0_or_1_is_refused(tmp_path):
    from simulator.errors import MeasurementError
    from simulator.validation.validate import load_specs

    df, _ = _rows()
    df = df[df.op == "attn_prefill"].reset_index(drop=True)
    df["latency_us"] = 10.0
    df["causal"] = ["1"] * (len(df) - 1) + ["false"]
    path = tmp_path / "c.csv"
    df.to_csv(path, index=False)
    m = read_measurements(path)
    with pytest.raises(MeasurementError, match=r"row \d+ .*column 'causal': expected 0 or 1"):
        predict(m, load_specs(m))


def test_validation_is_vectorised_over_thousands_of_rows():
    df, _ = _rows()
    big = pd.concat([df] * 60, ignore_index=True)  # ~3,000 rows
    pred = predict(big, {"h100-sxm": H100})
    assert len(pred) == len(big) and np.isfinite(pred.predicted_us).all()


def test_kernel_times_read_the_kernel_only_column(tmp_path):
    """--kernel-times scores the rows against kernel_us; a CSV without that column is a one-line error."""
    path, _ = _synthetic(tmp_path)
    df = pd.read_csv(path)
    df["kernel_us"] = df["latency_us"] * 0.5  # kernel-only times half the event times
    both = tmp_path / "both.csv"
    df.to_csv(both, index=False)
    bias = {}
    for flag in ([], ["--kernel-times"]):
        r = runner.invoke(app, ["validate", "--measurements", str(both), "--json", *flag])
        assert r.exit_code == 0, r.output
        bias[bool(flag)] = json.loads(r.output)["overall"]["bias"]
    assert bias[True] == pytest.approx(2 * bias[False], rel=1e-9)  # predicted / (measured / 2)
    r = runner.invoke(app, ["calibrate", "--measurements", str(path), "--hardware", "h100-sxm", "--kernel-times",
                            "--out", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "no 'kernel_us' column" in r.output and not (tmp_path / "c.yaml").exists()


def test_kernel_times_with_an_empty_cell_name_the_column(tmp_path):
    path, _ = _synthetic(tmp_path)
    df = pd.read_csv(path)
    df["kernel_us"] = df["latency_us"]
    df.loc[3, "kernel_us"] = None
    df.to_csv(path, index=False)
    r = runner.invoke(app, ["validate", "--measurements", str(path), "--kernel-times"])
    assert r.exit_code == 2 and "row 5" in r.output and "'kernel_us'" in r.output


@pytest.mark.parametrize("text,words", [
    ("op,dtype,m,n,k\ngemm,fp32,,16,16\n", ["line 2, column 'm'", "whole number"]),
    ("op,dtype,m,n,k\ngemm,fp32,1.5,16,16\n", ["line 2, column 'm'", "'1.5'"]),
    ("op,dtype,m,n,k\ngemm,fp32,0,16,16\n", ["column 'm'"]),
    ("op,dtype,batch,q_len,kv_len,num_heads,num_kv_heads,head_dim\nattn_decode,fp32,1,4,64,4,1,16\n",
     ["column 'q_len'", "one query token"]),
    ("op,dtype,tokens,hidden,intermediate,num_experts,top_k\nmoe,fp32,5,16,16,8,2\n", ["column 'tokens'", "evenly"]),
    ("op\nfoo\n", ["column 'op'", "'foo'"]),
    ("op,dtype,m,n,k\n", ["no shapes"]),
])
def test_a_shape_file_is_checked_before_anything_is_measured(tmp_path, text, words):
    """`bench run --suite FILE`: every row is checked up front (a bad row 400 would otherwise end the run after 399
    measurements), and only shapes the harness times as written are taken (a decode row of one query token, MoE
    pairs spread evenly over the experts hit), so no row is written for a shape that was not timed."""
    from simulator.errors import SimulatorError
    from simulator.validation.bench.suites import load_suite

    p = tmp_path / "shapes.csv"
    p.write_text(text)
    with pytest.raises(SimulatorError) as e:
        load_suite(str(p))
    assert str(p) in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
    ok = tmp_path / "ok.csv"
    ok.write_text("op,bytes\nall_reduce,1048576\n")  # (a collective's world is the run's own)
    assert len(load_suite(str(ok))) == 1


def test_kernel_rows_are_benchmarks_and_an_overlay_without_a_served_fraction_keeps_the_profiles(tmp_path):
    """Measured kernels ran one at a time, so their predictions never carry the served-load derate; an overlay
    written before the field existed leaves the profile's served fraction in place."""
    df, _ = _rows()
    unloaded = H100.with_efficiency(replace(H100.efficiency, served_compute_fraction=1.0))
    assert H100.efficiency.served_compute_fraction < 1.0
    a = predict(df, {"h100-sxm": H100})["predicted_us"].to_numpy()
    b = predict(df, {"h100-sxm": unloaded})["predicted_us"].to_numpy()
    np.testing.assert_array_equal(a, b)
    h200 = load_hardware("h200-sxm")
    doc = yaml.safe_load((ROOT / "reports/validation/h200-sxm/calibration.yaml").read_text())
    doc["efficiency"].pop("served_compute_fraction", None)  # an overlay as calibrate wrote it before the field
    old = tmp_path / "old-overlay.yaml"
    old.write_text(yaml.safe_dump(doc))
    assert apply_calibration(h200, old).efficiency.served_compute_fraction == \
        h200.efficiency.served_compute_fraction


def test_every_family_calibrate_keeps_is_no_worse_on_its_held_out_rows_at_the_median_or_the_p90():
    """The acceptance rule, checked family by family on the CPU harness run: a fit ships only where its own held-out
    rows get no worse at the median nor at the 90th percentile. (The CPU GEMM fit, which took the held-out median
    from 77% to 55% but the p90 from 81% to 198%, is refused and says so.)"""
    from simulator.specs.catalog import load_hardware
    from simulator.validation.calibrate import family_of

    root = Path(__file__).resolve().parents[1]
    df = read_measurements(root / "reports/validation/cpu-host-quick.csv")
    hw = load_hardware("cpu-host")
    cal, report = calibrate(df, hw, test_fraction=0.5, seed=0)
    rows = df[df["hardware"] == hw.id].reset_index(drop=True)
    held = rows[holdout_mask(len(rows), 0.5, 0)].reset_index(drop=True)
    fam = family_of(held)
    before, after = predict(held, {hw.id: hw})["ape"].to_numpy(), predict(held, {hw.id: cal})["ape"].to_numpy()
    assert report["fitted_classes"]
    for family in report["fitted_classes"]:
        m = fam == family
        if m.any():
            assert np.median(after[m]) <= np.median(before[m]) + 1e-12
            assert np.quantile(after[m], 0.9) <= np.quantile(before[m], 0.9) + 1e-12
    assert any("held-out p90 APE" in n for n in report["notes"].get("gemm", []))
