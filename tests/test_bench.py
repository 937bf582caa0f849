"""The torch harness on CPU: a tiny suite end to end (bench -> validate -> calibrate). Accuracy is
not asserted here (a busy CI machine makes timings noisy); the pipeline and the contract are."""

import json

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.validation.measurements import read_measurements

torch = pytest.importorskip("torch")
runner = CliRunner()


def test_tiny_suite_bench_validate_calibrate(tmp_path):
    csv = tmp_path / "host.csv"
    r = runner.invoke(app, ["bench", "run", "--device", "cpu", "--suite", "tiny", "--reps", "3", "--warmup", "1",
                            "--out", str(csv)])
    assert r.exit_code == 0, r.output
    df = read_measurements(csv)  # honours the contract
    assert set(df.op) == {"gemm", "attn_decode", "attn_prefill", "moe", "memcpy"}
    assert (df.hardware == "cpu-host").all() and (df.latency_us > 0).all()
    for col in ("device_name", "torch_version", "date", "p10_us", "p90_us"):
        assert col in df.columns
    r = runner.invoke(app, ["validate", "--measurements", str(csv), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["overall"]["n"] == len(df)
    cal = tmp_path / "cal.yaml"
    r = runner.invoke(app, ["calibrate", "--measurements", str(csv), "--hardware", "cpu-host", "--out", str(cal)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["validate", "--measurements", str(csv), "--calibration", str(cal), "--heldout", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["overall"]["n"] == len(df) // 2


def test_unsupported_rows_are_skipped_with_a_reason(tmp_path):
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("op,dtype,m,n,k\ngemm,fp8,16,16,16\ngemm,fp32,16,16,16\n")
    csv = tmp_path / "m.csv"
    r = runner.invoke(app, ["bench", "run", "--device", "cpu", "--suite", str(shapes), "--reps", "2",
                            "--out", str(csv)])
    assert r.exit_code == 0, r.output
    assert "skipped x1: fp8 GEMM needs a CUDA device" in r.output
    assert len(read_measurements(csv)) == 1
