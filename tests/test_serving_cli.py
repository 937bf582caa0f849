"""`quadrant simulate` flags for engines, SLOs, preemption and closed loops (in-process, CliRunner)."""

import json

import pytest
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
    for extra, flag in ((["--ttft-slo", "fast"], "--ttft-slo"), (["--engine", "tgi"], "--engine"),
                        (["--preemption", "none"], "--preemption")):
        r = runner.invoke(app, QUICK + ["--rate", "2", "--requests", "10"] + extra)
        assert r.exit_code == 2, (extra, r.output)
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert r.output.startswith("error: ") and flag in r.output, r.output


@pytest.mark.parametrize("key,value,words", [
    ("preemption", "none", ["pools[0].preemption", "GUARANTEED_NO_EVICT"]),
    ("scheduler_recv_interval", 4, ["pools[0].scheduler_recv_interval", "SGLang server flag"]),
])
def test_a_pool_setting_its_engine_cannot_take_names_the_file_and_key(tmp_path, key, value, words):
    """Settings that depend on the pool's engine are checked when the pool is simulated; the error still names
    the deployment file and the key path, as the YAML reader's own errors do."""
    import yaml

    path = tmp_path / "dep.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "model": "llama-3.1-8b", "pools": [
        {"name": "node", "serves": ["prefill", "decode"], "hardware": "h100-sxm", "devices": 1,
         "attention": {"tp": 1}, "engine": "vllm", key: value}]}))
    r = runner.invoke(app, ["simulate", str(path), "--rate", "2", "--requests", "10"])
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"error: {path}: ") and "Traceback" not in line
    for w in words:
        assert w in line


def test_a_pool_can_be_served_through_another_frontend(tmp_path):
    """``--frontend-latency`` / a pool's ``frontend_latency`` replace the engine profile's frontend latency. At
    C = 1 the requests never overlap, so every TTFT moves by exactly the difference and TPOT not at all."""
    from simulator.serving.profiles import engine_profile

    trt = QUICK + ["--concurrency", "1", "--requests", "6", "--engine", "trtllm", "--json"]
    runs = {}
    for flag in ([], ["--frontend-latency", "0ms"], ["--frontend-latency", "40ms"]):
        r = runner.invoke(app, trt + flag)
        assert r.exit_code == 0, r.output
        runs[tuple(flag)] = json.loads(r.output)
    default, zero, forty = runs.values()
    from simulator.specs.catalog import load_model

    own = engine_profile("trtllm").frontend_for(load_model(QUICK[QUICK.index("--model") + 1]))
    assert default["ttft_s"]["mean"] - zero["ttft_s"]["mean"] == pytest.approx(own, abs=1e-9)
    assert forty["ttft_s"]["mean"] - zero["ttft_s"]["mean"] == pytest.approx(0.04, abs=1e-9)
    assert default["tpot_s"]["mean"] == pytest.approx(zero["tpot_s"]["mean"], rel=1e-12)
    # a vLLM-layout result describes itself, so `validate --serving` re-simulates it behind the same frontend
    r = runner.invoke(app, trt + ["--frontend-latency", "40ms", "--format", "vllm"])
    vl = json.loads(r.output)
    assert vl["frontend_latency_s"] == pytest.approx(0.04)
    out = tmp_path / "run.json"
    out.write_text(r.output)
    r = runner.invoke(app, ["validate", "--serving", str(out), "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)["rows"]
    assert row["ttft_s_simulated"] == pytest.approx(row["ttft_s_measured"], rel=1e-9)

    # a frontend the user set is theirs: --no-overheads drops only the engine profile's own
    bare = [json.loads(runner.invoke(app, trt + flag + ["--no-overheads"]).output)
            for flag in ([], ["--frontend-latency", "40ms"])]
    assert bare[1]["ttft_s"]["mean"] - bare[0]["ttft_s"]["mean"] == pytest.approx(0.04, abs=1e-9)
    assert bare[0]["frontend_s"]["mean"] == 0.0
    # and a result simulated without overheads says so, so it re-simulates the same way
    r = runner.invoke(app, trt + ["--no-overheads", "--format", "vllm"])
    assert json.loads(r.output)["overheads"] is False
    (tmp_path / "bare.json").write_text(r.output)
    r = runner.invoke(app, ["validate", "--serving", str(tmp_path / "bare.json"), "--json"])
    (row,) = json.loads(r.output)["rows"]
    assert row["ttft_s_simulated"] == pytest.approx(row["ttft_s_measured"], rel=1e-9)

    r = runner.invoke(app, trt + ["--frontend-latency", "-5ms"])
    assert r.exit_code == 2 and "--frontend-latency" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["simulate", "dbrx-8xh100", "--traffic", "chat", "--frontend-latency", "0ms"])
    assert r.exit_code == 2 and "--frontend-latency cannot be combined with a deployment file" in r.output


def test_frontend_latency_in_a_deployment_file(tmp_path):
    from dataclasses import replace as dc_replace

    import yaml

    from simulator.errors import SimulatorError, SpecError
    from simulator.serving.runner import replica_configs
    from simulator.specs.catalog import resolve_workload
    from simulator.specs.deployment import read_deployment

    src = resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment")
    doc = yaml.safe_load(open(src))
    pools = doc["pools"]
    prefill = next(p for p in pools if p.get("serves") == "prefill" or p.get("serves") == ["prefill"])
    decode = next(p for p in pools if p is not prefill)

    def write(doc):
        p = tmp_path / "dep.yaml"
        p.write_text(yaml.safe_dump(doc))
        return p

    prefill["frontend_latency"] = "20 ms"
    dep = read_deployment(write(doc))
    fe = {c.pool: c.frontend_s for c in replica_configs(dep, engine="sglang")}
    assert fe == {prefill["name"]: pytest.approx(0.02), decode["name"]: 0.0}
    prefill["frontend_latency"] = "-1 ms"
    with pytest.raises(SpecError, match="frontend_latency"):
        read_deployment(write(doc))
    del prefill["frontend_latency"]
    decode["frontend_latency"] = "5 ms"
    with pytest.raises(SpecError, match=r"pools\[1\]\.frontend_latency.*decode pool has no frontend"):
        read_deployment(write(doc))
    del decode["frontend_latency"]
    dep = read_deployment(write(doc))  # a decode pool built by hand is refused when simulated
    pools = tuple(dc_replace(p, frontend_latency_s=0.005) if p.role == "decode" else p for p in dep.pools)
    with pytest.raises(SimulatorError, match=r"pools\[1\]\.frontend_latency: a decode pool has no frontend"):
        replica_configs(dc_replace(dep, pools=pools))


def test_traffic_flags_with_a_traffic_file_or_a_deployment():
    # a traffic file settles the lengths and the arrivals: --isl / --osl / --concurrency beside it are refused
    r = runner.invoke(app, QUICK + ["--traffic", "chat", "--requests", "20"])
    assert r.exit_code == 2 and "--isl, --osl cannot be combined with --traffic" in r.output
    r = runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--traffic",
                            "chat", "--concurrency", "4", "--requests", "20"])
    assert r.exit_code == 2 and "--concurrency cannot be combined with --traffic" in r.output
    # a deployment file says nothing of the traffic: a closed loop of given lengths runs on it
    r = runner.invoke(app, ["simulate", "dbrx-8xh100", "--concurrency", "4", "--isl", "300", "--osl", "20",
                            "--requests", "16", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["requests_completed"] == 16
    assert s["input_tokens_per_s"] / s["output_tokens_per_s"] == pytest.approx(300 / 20)


def test_requests_a_horizon_stops_before_they_arrive_are_counted_apart_not_as_rejected():
    """README: a request the horizon cut off before it arrived counts neither way; the summary lists it on its own
    (JSON: requests_not_arrived, still among requests_rejected as its status in requests.csv is)."""
    args = QUICK + ["--rate", "10", "--requests", "200", "--horizon", "6s"]
    sm = json.loads(runner.invoke(app, [*args, "--json"]).output)
    late = sm["requests_not_arrived"]
    served = sm["requests_rejected"] - late
    assert late > 0 and served > 0 and sm["requests_completed"] > 0
    assert sm["rejection_reasons"]["not arrived before the simulation horizon"] == late
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (f"requests: {sm['requests_completed']} finished, {served} rejected, {late} not arrived before the "
            f"horizon (of 200)") in r.output
    r2 = runner.invoke(app, [*args, "--ttft-slo", "10s"])  # the attainment says what it is of
    assert (f"% of the {sm['requests_completed']:,} requests finished or sure to miss by the horizon meet "
            "TTFT <= 10 s") in r2.output
    # a horizon before any request could finish or miss a 10 s TTFT: no share to print, not "n/a of the 0 requests"
    r3 = runner.invoke(app, [*QUICK, "--rate", "10", "--requests", "20", "--horizon", "0.05s", "--ttft-slo", "10s"])
    assert r3.exit_code == 1 and "error: no request finished" in r3.output  # (the summary is printed first)
    assert "n/a: no request finished or was sure to miss TTFT <= 10 s by the horizon" in r3.output
    assert not [line for line in r.output.splitlines() if line.startswith("  rejected x") and "arrived" in line]
    # the open loop's window (the whole run) measures the requests that arrived, not the 200 drawn
    assert sm["window"]["requests"] == 200 - late
    assert f"measured {200 - late} requests in [" in r.output


def test_a_horizon_before_any_finish_names_the_not_arrived_apart():
    r = runner.invoke(app, QUICK + ["--rate", "10", "--requests", "200", "--horizon", "50ms"])
    assert r.exit_code == 1
    err = r.output.splitlines()[-1]
    assert err.startswith("error: no request finished: of 200, ") and "x unfinished at the simulation horizon" in err
    assert err.endswith(" not arrived before the horizon") and "x not arrived" not in err


def test_a_horizon_before_every_arrival_says_none_arrived():
    """Nothing arrived before a 100 ms horizon on the trace (its first request comes later): the error says so,
    with no empty 'rejected' clause, and the summary names no window span (nothing finished to span: it read
    "[0 s, 0 s]")."""
    r = runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--traffic",
                            "trace-replay", "--horizon", "100ms", "--no-plots"])
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == "error: no request finished: none of the 200 arrived before the horizon"
    assert "measured 0 requests (" in r.output and "[0 s, 0 s]" not in r.output


def test_tensorrt_llm_s_fitted_frontend_latency_applies_to_moe_models_only():
    """TensorRT-LLM's 155 ms frontend latency was fitted on DeepSeek-R1 (MoE) runs; its one published dense run
    shows none, so a dense model's requests pay the profile's dense figure (0). At C = 1 the TTFT moves by exactly
    the frontend latency against a run with --frontend-latency 0ms."""
    from simulator.serving.profiles import engine_profile

    trt = engine_profile("trtllm")
    for model, precision, own in (("qwen3-30b-a3b", "fp8", trt.frontend_latency_s), ("llama-3.1-8b", "fp8", 0.0)):
        base = ["simulate", "--model", model, "--hardware", "h100-sxm", "--devices", "1", "--tp", "1", "--precision",
                precision, "--isl", "256", "--osl", "16", "--concurrency", "1", "--requests", "4", "--engine",
                "trtllm", "--json"]
        runs = [json.loads(runner.invoke(app, base + flag).output) for flag in ([], ["--frontend-latency", "0ms"])]
        assert runs[0]["ttft_s"]["mean"] - runs[1]["ttft_s"]["mean"] == pytest.approx(own, abs=1e-9), model
    assert trt.frontend_latency_dense_s is not None and trt.frontend_latency_dense_s < trt.frontend_latency_s
