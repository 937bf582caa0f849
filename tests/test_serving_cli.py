"""`quadrant simulate` flags for engines, SLOs, preemption and closed loops (in-process, CliRunner)."""

import json

from typer.testing import CliRunner

from simulator.cli import app

runner = CliRunner()
QUICK = ["simulate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--tp", "1",
         "--isl", "512", "--osl", "64"]


def test_engine_and_slo_flags():
    r = runner.invoke(app, QUICK + ["--concurrency", "8", "--requests", "120", "--engine", "sglang",
                                    "--ttft-slo", "200ms", "--tpot-slo", "50ms", "--slo-percentile", "99", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["engines"] == {"pool": "sglang"}
    assert s["goodput"]["slo"] == {"ttft_s": 0.2, "tpot_s": 0.05, "percentile": 99.0}
    assert 0 <= s["slo_attainment"]["both"] <= 1 and s["goodput"]["requests_per_s"] is not None
    assert s["window"]["requests"] > 0 and "itl_s" in s
    for u in s["utilisation"].values():
        assert 0 <= u["busy"] <= 1 + 1e-9 and 0 <= u["batch_fill"] <= 1


def test_no_slo_reads_not_applicable_in_text():
    r = runner.invoke(app, QUICK + ["--rate", "2", "--requests", "30"])
    assert r.exit_code == 0, r.output
    assert "goodput      n/a" in r.output


def test_swap_preemption_is_reachable():
    r = runner.invoke(app, QUICK + ["--rate", "2", "--requests", "20", "--preemption", "swap", "--json"])
    assert r.exit_code == 0, r.output


def test_bad_flags_give_one_line_and_exit_2():
    for extra in (["--ttft-slo", "fast"], ["--engine", "tgi"], ["--preemption", "none"]):
        r = runner.invoke(app, QUICK + ["--rate", "2", "--requests", "10"] + extra)
        assert r.exit_code == 2, (extra, r.output)
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
