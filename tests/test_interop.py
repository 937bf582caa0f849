"""Interop with real benchmark tooling: vLLM `bench serve` JSON out and back in, GuideLLM and CSV serving
results, Chrome/Perfetto traces."""

import json

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.errors import SpecError
from simulator.validation.serving import read_serving_results

runner = CliRunner()
QUICK = ["simulate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--tp", "1",
         "--isl", "256", "--osl", "32", "--requests", "40", "--rate", "4/s"]

# the keys of `vllm bench serve --save-result` that tools read (vLLM benchmarks/serve)
VLLM_KEYS = {"duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput",
             "request_goodput", "output_throughput", "total_token_throughput", "input_lens", "output_lens", "ttfts",
             *(f"{s}_{m}_ms" for s in ("mean", "median", "std", "p99") for m in ("ttft", "tpot", "itl", "e2el"))}


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    r = runner.invoke(app, [*QUICK, "--json", "--format", "vllm"])
    assert r.exit_code == 0, r.output
    path = tmp_path_factory.mktemp("vllm") / "run.json"
    path.write_text(r.stdout)
    return path, json.loads(r.stdout)


def test_vllm_format_has_the_bench_serve_fields(vllm_run):
    _, d = vllm_run
    assert VLLM_KEYS <= set(d)
    assert d["completed"] == 40 and d["total_input_tokens"] == 40 * 256 and d["total_output_tokens"] == 40 * 32
    assert d["output_throughput"] == pytest.approx(d["total_output_tokens"] / d["duration"])
    assert d["median_ttft_ms"] == pytest.approx(1e3 * sorted(d["ttfts"])[19:21][0], rel=0.5)
    assert 0 < d["mean_itl_ms"] and d["mean_tpot_ms"] > 0
    assert d["request_goodput"] is None  # no SLO was asked for: vLLM leaves it null too
    assert "metadata" in d


def test_vllm_output_round_trips_through_validate_serving(vllm_run):
    path, _ = vllm_run
    r = runner.invoke(app, ["validate", "--serving", str(path), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    row = res["rows"][0]
    # the same deployment, lengths, arrivals and seed: the simulator reproduces its own result
    assert row["ttft_s_simulated"] == pytest.approx(row["ttft_s_measured"], rel=1e-9)
    assert row["tpot_s_simulated"] == pytest.approx(row["tpot_s_measured"], rel=1e-9)
    assert res["overall"]["ttft_bias"] == pytest.approx(1.0, rel=1e-9)


def test_a_closed_loop_on_another_engine_round_trips_too(tmp_path):
    """`simulate --format vllm` records the engine and the clients' ramp, so `validate --serving` re-runs the same
    closed loop (not vLLM's engine, not clients starting together)."""
    r = runner.invoke(app, [*QUICK[:-2], "--concurrency", "8", "--engine", "sglang", "--json", "--format", "vllm"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["engine"] == "sglang" and d["max_concurrency"] == 8 and d["ramp_up_s"] > 0
    path = tmp_path / "closed.json"
    path.write_text(r.stdout)
    row = json.loads(runner.invoke(app, ["validate", "--serving", str(path), "--json"]).stdout)["rows"][0]
    assert row["engine_simulated"] == "sglang"
    assert row["ttft_s_simulated"] == pytest.approx(row["ttft_s_measured"], rel=1e-9)
    assert row["tpot_s_simulated"] == pytest.approx(row["tpot_s_measured"], rel=1e-9)


def test_validate_serving_reports_a_slower_cluster_as_optimistic(vllm_run, tmp_path):
    path, d = vllm_run
    slow = {**d, "median_ttft_ms": 2 * d["median_ttft_ms"], "median_tpot_ms": 2 * d["median_tpot_ms"]}
    p = tmp_path / "slow.json"
    p.write_text(json.dumps(slow))
    r = runner.invoke(app, ["validate", "--serving", str(p), "--json"])
    g = json.loads(r.stdout)["overall"]
    assert g["ttft_bias"] == pytest.approx(0.5, rel=1e-9) and g["tpot_median_ape"] == pytest.approx(0.5, rel=1e-9)


def test_serving_csv_and_guidellm_layouts(tmp_path):
    csv = tmp_path / "runs.csv"
    csv.write_text("model,hardware,engine,tp,isl,osl,concurrency,ttft_ms,tpot_ms\n"
                   "llama-3.1-8b,h100-sxm,vllm,1,512,64,4,40,8\n")
    (case,) = read_serving_results(csv)
    assert (case.concurrency, case.ttft_s, case.tpot_s, case.tp) == (4, 0.04, 0.008, 1)
    gl = tmp_path / "guidellm.json"
    gl.write_text(json.dumps({"benchmarks": [{
        "args": {"strategy": {"type_": "constant", "rate": 2.0}},
        "metrics": {k: {"successful": {"median": v, "mean": v}} for k, v in (
            ("time_to_first_token_ms", 50.0), ("time_per_output_token_ms", 9.0), ("prompt_token_count", 300),
            ("output_token_count", 40))}}]}))
    (g,) = read_serving_results(gl)
    assert (g.rate_per_s, g.isl, g.osl, g.ttft_s) == (2.0, 300, 40, 0.05)
    r = runner.invoke(app, ["validate", "--serving", str(gl), "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
                            "--tp", "1", "--requests", "10"])
    assert r.exit_code == 0, r.output


def _direct(engine, concurrency, requests, *, ramp_up_s, statistic="median", spread=1.0, isl=512, osl=64):
    """The same run built by hand (the quick deployment, a closed loop of ``requests`` prompts on ``engine``):
    its (TTFT, TPOT) ``statistic`` over the finished requests."""
    from dataclasses import replace

    from simulator.build import PlanOptions, quick_deployment
    from simulator.serving.runner import simulate
    from simulator.specs.traffic import LengthDist, simple_traffic

    dep = quick_deployment(PlanOptions(model="llama-3.1-8b", hardware="h100-sxm", devices=1, tp=1))
    t = simple_traffic(rate=None, concurrency=concurrency, isl=isl, osl=osl, requests=requests, seed=0,
                       ramp_up_s=ramp_up_s)
    if spread < 1:
        t = replace(t, prompt=LengthDist("uniform", low=max(1, int(isl * spread)), high=isl),
                    output=LengthDist("uniform", low=max(1, int(osl * spread)), high=osl))
    req = simulate(dep, t, engine=engine).requests
    done = req[req.status == "finished"]
    return tuple(float(getattr(done[c], statistic)()) for c in ("ttft_s", "tpot_s"))


def _validate_rows(tmp_path, csv_text, *flags):
    """`validate --serving` on a CSV of ``csv_text``: its rows, as JSON."""
    csv = tmp_path / "runs.csv"
    csv.write_text(csv_text)
    r = runner.invoke(app, ["validate", "--serving", str(csv), "--json", *flags])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["rows"]


def test_validate_serving_runs_each_row_as_its_client_and_engine_did(tmp_path):
    """A CSV row is re-simulated on the engine that served it, with the clients of a closed loop starting
    together, the client's length spread and (without a ``requests`` cell) 10 x C prompts."""
    sg, trt = _validate_rows(tmp_path, "model,hardware,engine,tp,isl,osl,concurrency,ttft_ms,tpot_ms,statistic,"
                                       "random_range_ratio\n"
                                       "llama-3.1-8b,h100-sxm,sglang,1,512,64,8,40,8,,\n"
                                       "llama-3.1-8b,h100-sxm,TensorRT-LLM,1,512,64,8,40,8,mean,0.5\n")
    assert (sg["engine_simulated"], trt["engine_simulated"]) == ("sglang", "trtllm")
    assert sg["requests_simulated"] == trt["requests_simulated"] == 80
    got = lambda row: (row["ttft_s_simulated"], row["tpot_s_simulated"])  # noqa: E731
    burst = _direct("sglang", 8, 80, ramp_up_s=0.0)
    assert got(sg) == pytest.approx(burst, rel=1e-9)
    assert got(trt) == pytest.approx(_direct("trtllm", 8, 80, ramp_up_s=0.0, statistic="mean", spread=0.5), rel=1e-9)
    # what the check tells apart: the staggered start `simulate` uses by default, and another engine
    assert _direct("sglang", 8, 80, ramp_up_s=None) != pytest.approx(burst, rel=1e-3)
    assert _direct("vllm", 8, 80, ramp_up_s=0.0) != pytest.approx(burst, rel=1e-3)
    # --engine fills in rows that do not name one; an unknown one is refused
    text = "model,hardware,tp,isl,osl,concurrency,requests,ttft_ms,tpot_ms\nllama-3.1-8b,h100-sxm,1,512,64,8,24,40,8\n"
    (row,) = _validate_rows(tmp_path, text, "--engine", "trtllm")
    assert row["engine_simulated"] == "trtllm" and row["requests_simulated"] == 24
    r = runner.invoke(app, ["validate", "--serving", str(tmp_path / "runs.csv"), "--engine", "tgi"])
    assert r.exit_code == 2 and "--engine" in r.output and "Traceback" not in r.output


def test_an_engine_the_run_names_beats_the_flag(tmp_path):
    rows = _validate_rows(tmp_path, "model,hardware,engine,tp,isl,osl,concurrency,requests,ttft_ms,tpot_ms\n"
                                    "llama-3.1-8b,h100-sxm,sglang,1,256,32,4,8,40,8\n"
                                    "llama-3.1-8b,h100-sxm,,1,256,32,4,8,40,8\n", "--engine", "trtllm")
    assert [row["engine_simulated"] for row in rows] == ["sglang", "trtllm"]


def test_a_deployment_run_with_an_engine_override_round_trips(tmp_path):
    traffic = tmp_path / "t.yaml"
    traffic.write_text("schema_version: 1\narrivals: {process: closed, concurrency: 8}\nrequests: 24\n"
                       "prompt_tokens: {dist: fixed, value: 512}\noutput_tokens: {dist: fixed, value: 32}\n")
    r = runner.invoke(app, ["simulate", "dbrx-8xh100", "--traffic", str(traffic), "--engine", "sglang", "--json",
                            "--format", "vllm"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["engine_override"] == "sglang" and d["deployment_file"]
    path = tmp_path / "run.json"
    path.write_text(r.stdout)
    row = json.loads(runner.invoke(app, ["validate", "--serving", str(path), "--json"]).stdout)["rows"][0]
    assert row["engine_simulated"] == "sglang"
    assert row["ttft_s_simulated"] == pytest.approx(row["ttft_s_measured"], rel=1e-9)


def test_vllm_and_sglang_length_spreads(tmp_path):
    """`vllm bench serve --random-range-ratio r` draws lengths in [(1-r) L, (1+r) L]; sglang.bench_serving (and
    vLLM's older benchmark_serving.py) in [r L, L]: each has its column."""
    csv = tmp_path / "runs.csv"
    csv.write_text("model,hardware,isl,osl,concurrency,ttft_ms,tpot_ms,vllm_random_range_ratio\n"
                   "llama-3.1-8b,h100-sxm,1000,100,2,40,8,0.25\n")
    (case,) = read_serving_results(csv)
    assert (case.length_low, case.length_high) == (0.75, 1.25)
    csv.write_text("model,hardware,isl,osl,concurrency,ttft_ms,tpot_ms,random_range_ratio\n"
                   "llama-3.1-8b,h100-sxm,1000,100,2,40,8,0.25\n")
    (case,) = read_serving_results(csv)
    assert (case.length_low, case.length_high) == (0.25, 1.0)


def test_a_run_the_simulator_cannot_build_is_named(tmp_path):
    csv = tmp_path / "runs.csv"
    csv.write_text("model,hardware,tp,isl,osl,concurrency,ttft_ms,tpot_ms\nllama-3.1-8b,h100-sxm,3,256,32,2,40,8\n")
    r = runner.invoke(app, ["validate", "--serving", str(csv)])
    assert r.exit_code == 2 and f"{csv} line 2" in r.output and "Traceback" not in r.output


def test_csv_precisions_in_engine_spellings(tmp_path):
    rows = _validate_rows(tmp_path, "model,hardware,precision,kv_precision,tp,isl,osl,concurrency,requests,ttft_ms,"
                                    "tpot_ms\n"
                                    "meta-llama/Llama-3.1-8B-Instruct,NVIDIA H100 80GB HBM3,FP8,fp8_e4m3,1,256,32,2,4,"
                                    "30,8\n"
                                    "llama-3.1-8b,h100-sxm,bfloat16,auto,1,256,32,2,4,30,8\n")
    assert [row["model"] for row in rows] == ["llama-3.1-8b", "llama-3.1-8b"]


def test_a_vllm_result_with_its_hugging_face_model_id(tmp_path):
    """`vllm bench serve` records the served model's repo id; the catalogue knows it (and `--hardware H100`)."""
    p = tmp_path / "run.json"
    p.write_text(json.dumps({"model_id": "meta-llama/Llama-3.1-8B-Instruct", "backend": "vllm", "completed": 8,
                             "total_input_tokens": 2048, "total_output_tokens": 256, "max_concurrency": 2,
                             "median_ttft_ms": 30.0, "median_tpot_ms": 8.0}))
    r = runner.invoke(app, ["validate", "--serving", str(p), "--hardware", "H100", "--tp", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"][0]["model"] == "llama-3.1-8b"


def test_vllm_backend_names_the_server_only_when_engine_specific(tmp_path):
    base = {"model_id": "llama-3.1-8b", "completed": 10, "total_input_tokens": 5120, "total_output_tokens": 640,
            "max_concurrency": 2, "median_ttft_ms": 30.0, "median_tpot_ms": 8.0}
    engines = []
    for backend in ("sglang", "tensorrt-llm", "openai", "vllm"):
        p = tmp_path / f"{backend}.json"
        p.write_text(json.dumps({**base, "backend": backend}))
        (case,) = read_serving_results(p)
        engines.append(case.engine)
        assert case.ramp_up_s is None  # vLLM's own result: the clients start together
    assert engines == ["sglang", "trtllm", "unknown", "unknown"]


@pytest.mark.parametrize("text,where", [
    ("model,hardware,isl,osl,rate_per_s,ttft_s,tpot_s\nllama-3.1-8b,h100-sxm,nan,64,1,0.1,0.01\n",
     "line 2, column isl"),
    ("model,hardware,engine,isl,osl,concurrency,ttft_s,tpot_s\nllama-3.1-8b,h100-sxm,tgi,512,64,1,0.1,0.01\n",
     "line 2, column engine"),
    ("model,hardware,isl,osl,concurrency,ttft_s,tpot_s,statistic\nllama-3.1-8b,h100-sxm,512,64,1,0.1,0.01,p99\n",
     "column statistic"),
    ("model,hardware,isl,osl,concurrency,ttft_s,tpot_s,random_range_ratio\nx,y,512,64,1,0.1,0.01,1.5\n",
     "column random_range_ratio"),
    ("model,hardware,isl,osl,concurrency,ttft_s,tpot_s,random_range_ratio\nx,y,512,64,1,0.1,0.01,-0.5\n",
     "column random_range_ratio"),
    ("model,hardware,isl,osl,concurrency,ttft_s,tpot_s,vllm_random_range_ratio\nx,y,512,64,1,0.1,0.01,1\n",
     "column vllm_random_range_ratio"),
    ("model,hardware,isl,osl,concurrency,ttft_s,tpot_s\nx,y,512,64,1,0.1\n", "line 2: expected 7"),
    ('{"mean_ttft_ms": 30, "mean_tpot_ms": 8, "max_concurrency": 2, "completed": 4, "total_input_tokens": 40, '
     '"total_output_tokens": 40, "ramp_up_s": "inf"}', "ramp_up_s"),
    ('{"mean_ttft_ms": 30, "mean_tpot_ms": 8, "max_concurrency": 2, "completed": 4, "total_input_tokens": 40, '
     '"total_output_tokens": 40, "scheduler_recv_interval": 0}', "scheduler_recv_interval"),
    ('{"mean_ttft_ms": 30, "mean_tpot_ms": 8, "max_concurrency": 2, "completed": 4, "total_input_tokens": 40, '
     '"total_output_tokens": 40, "max_seqs": "ten"}', "max_seqs"),
    ("model,hardware,isl,osl,rate_per_s,ttft_s,tpot_s\nllama-3.1-8b,h100-sxm,512,64,-1,0.1,0.01\n", "rate_per_s"),
    ("model,hardware,isl,osl,ttft_s,tpot_s\nx,y,1,1,1,1\n", "rate_per_s or concurrency"),
    ('{"mean_ttft_ms": "fast"}', "mean_ttft_ms"),
    # counts are whole numbers >= 1 and measured latencies finite (not truncated, not an internal error)
    ('{"mean_ttft_ms": 30, "mean_tpot_ms": 8, "max_concurrency": "inf", "completed": 4, "total_input_tokens": 40, '
     '"total_output_tokens": 40}', "max_concurrency"),
    ('{"mean_ttft_ms": 30, "mean_tpot_ms": 8, "max_concurrency": 2.5, "completed": 4, "total_input_tokens": 40, '
     '"total_output_tokens": 40}', "max_concurrency"),
    ('{"mean_ttft_ms": 30, "mean_tpot_ms": 8, "max_concurrency": 2, "completed": "inf", "total_input_tokens": 40, '
     '"total_output_tokens": 40}', "completed"),
    ('{"mean_ttft_ms": 30, "mean_tpot_ms": 8, "max_concurrency": 2, "completed": 4, "total_input_tokens": 40, '
     '"total_output_tokens": 40, "tp": 1.5}', "tp"),
    ('{"mean_ttft_ms": "inf", "mean_tpot_ms": 8, "max_concurrency": 2, "completed": 4, "total_input_tokens": 40, '
     '"total_output_tokens": 40}', "mean_ttft_ms"),
    ("model,hardware,isl,isl,osl,concurrency,ttft_s,tpot_s\nx,y,1,2,1,1,1,1\n", "column 'isl' appears more than once"),
    ('{"foo": 1}', "not a vLLM"),
])
def test_bad_serving_files_name_the_place(tmp_path, text, where):
    p = tmp_path / ("r.csv" if text.startswith("model") else "r.json")
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        read_serving_results(p)
    assert where in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_validate_serving_runs_under_the_timing_model_it_is_given(tmp_path):
    """`validate --serving --timing calibrated:OVERLAY` re-simulates the runs with the overlay (an H200 run moves
    off the roofline's figures it recorded); an overlay for no device the runs used is refused (it would change
    nothing), and the kernel check's own flags are refused with --serving rather than ignored."""
    overlay = "reports/validation/h200-sxm/calibration.yaml"
    r = runner.invoke(app, [*QUICK[:4], "h200-sxm", *QUICK[5:], "--json", "--format", "vllm"])
    assert r.exit_code == 0, r.output
    h200 = tmp_path / "h200.json"
    h200.write_text(r.stdout)
    plain = json.loads(runner.invoke(app, ["validate", "--serving", str(h200), "--json"]).stdout)["rows"][0]
    assert plain["ttft_s_simulated"] == pytest.approx(plain["ttft_s_measured"], rel=1e-9)
    r = runner.invoke(app, ["validate", "--serving", str(h200), "--timing", f"calibrated:{overlay}", "--json"])
    assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)
    assert cal["rows"][0]["ttft_s_simulated"] != pytest.approx(plain["ttft_s_simulated"], rel=1e-6)
    assert "calibrated" in cal["metadata"]["timing_model"]
    h100 = tmp_path / "h100.json"
    h100.write_text(runner.invoke(app, [*QUICK, "--json", "--format", "vllm"]).stdout)
    for extra, words in ((["--timing", f"calibrated:{overlay}"], ["--timing", "h200-sxm", "change nothing"]),
                         (["--plot", str(tmp_path / "p.png")], ["--plot", "--serving"])):
        r = runner.invoke(app, ["validate", "--serving", str(h100), *extra])
        assert r.exit_code == 2, r.output
        assert all(w in r.stderr for w in words) and "Traceback" not in r.stderr, r.stderr


def test_perfetto_trace_is_valid_chrome_trace_json(tmp_path):
    out = tmp_path / "trace.json"
    r = runner.invoke(app, ["simulate", "dbrx-h100-prefill-h20-decode", "--traffic", "chat", "--requests", "20",
                            "--trace", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(c))
    events = doc["traceEvents"]
    steps = [e for e in events if e["ph"] == "X"]
    assert steps and all(isinstance(e["pid"], int) and isinstance(e["tid"], int) and e["dur"] >= 0 and e["ts"] >= 0
                         for e in steps)
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert {n for n in names if n.startswith("pool ")} and len(names) >= 2  # one process per pool
    kinds = {e["cat"] for e in steps}
    assert kinds & {"prefill", "mixed"} and "decode" in kinds
    kv = [e for e in events if e.get("cat") == "kv_transfer"]  # PD disaggregation ships KV caches
    assert kv and {e["ph"] for e in kv} == {"b", "e"} and len(kv) % 2 == 0
    # each transfer spans the request's end of prefill to its KV's arrival: a real span, not a point
    begin = {e["id"]: e["ts"] for e in kv if e["ph"] == "b"}
    end = {e["id"]: e["ts"] for e in kv if e["ph"] == "e"}
    assert begin.keys() == end.keys() and all(end[i] >= begin[i] for i in begin)
    assert any(end[i] > begin[i] for i in begin)
    # per replica, steps never overlap (one batch step at a time)
    by = {}
    for e in sorted(steps, key=lambda e: e["ts"]):
        last = by.get((e["pid"], e["tid"]))
        assert last is None or e["ts"] >= last - 1e-6
        by[(e["pid"], e["tid"])] = e["ts"] + e["dur"]


def test_an_sglang_bench_serving_record(tmp_path):
    """sglang.bench_serving's JSON lines: no model id (the flag gives it), the server named by the client's
    --backend, and a random dataset's lengths drawn as the client drew them: uniform in [max(1, r L), L]."""
    rec = {"backend": "vllm", "dataset_name": "random", "request_rate": float("inf"), "max_concurrency": 4,
           "sharegpt_output_len": None, "random_input_len": 1000, "random_output_len": 200, "random_range_ratio": 0.0,
           "completed": 20, "total_input_tokens": 10_400, "total_output_tokens": 1_900, "mean_ttft_ms": 40.0,
           "median_ttft_ms": 38.0, "mean_tpot_ms": 9.0, "median_tpot_ms": 8.5}
    p = tmp_path / "sglang.jsonl"
    p.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "backend": "sglang", "random_range_ratio": 0.5}) + "\n")
    a, b = read_serving_results(p)
    assert (a.engine, b.engine) == ("vllm", "sglang")
    assert (a.isl, a.osl, a.length_low, a.length_high) == (1000, 200, 0.0, 1.0)
    assert (b.length_low, b.concurrency, b.requests, b.model) == (0.5, 4, 20, None)
    r = runner.invoke(app, ["validate", "--serving", str(p), "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
                            "--tp", "1", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert [row["engine_simulated"] for row in rows] == ["vllm", "sglang"]
    assert rows[0]["group"] == "llama-3.1-8b on 1x h100-sxm (tp1 pp1 ep1) vllm"  # the flags fill the label
    spread = _direct("vllm", 4, 20, ramp_up_s=0.0, statistic="median", spread=0.0, isl=1000, osl=200)
    assert (rows[0]["ttft_s_simulated"], rows[0]["tpot_s_simulated"]) == pytest.approx(spread, rel=1e-9)
    p.write_text(json.dumps({**rec, "random_range_ratio": 2}))
    with pytest.raises(SpecError, match="random_range_ratio"):
        read_serving_results(p)


def _export(**over):
    """A genai-perf / AIPerf aggregate export: each metric its statistics and unit, the arguments under input_config."""
    d = {"request_count": {"unit": "requests", "avg": 24.0},
         "time_to_first_token": {"unit": "ms", "avg": 41.0, "p50": 40.0, "p99": 80.0},
         "inter_token_latency": {"unit": "ms", "avg": 8.2, "p50": 8.0},
         "input_sequence_length": {"unit": "tokens", "avg": 512.0, "p50": 512.0},
         "output_sequence_length": {"unit": "tokens", "avg": 64.0, "p50": 64.0},
         "input_config": {"model": ["meta-llama/Llama-3.1-8B-Instruct"], "concurrency": 4, "request_rate": None}}
    d.update(over)
    return d


def test_genai_perf_and_aiperf_exports(tmp_path):
    """genai-perf keeps its arguments flat under input_config, AIPerf nests them (endpoint.model_names,
    loadgen.concurrency); both report TTFT and their per-request inter-token latency (= TPOT) with a unit."""
    p = tmp_path / "profile_export_genai_perf.json"
    p.write_text(json.dumps(_export()))
    (g,) = read_serving_results(p)
    assert (g.model, g.concurrency, g.rate_per_s, g.requests, g.isl, g.osl) == \
        ("meta-llama/Llama-3.1-8B-Instruct", 4, None, 24, 512, 64)
    assert (g.ttft_s, g.tpot_s, g.statistic) == (pytest.approx(0.040), pytest.approx(0.008), "median")
    p.write_text(json.dumps(_export(
        time_to_first_token={"unit": "ns", "avg": 4.1e7}, inter_token_latency={"unit": "s", "avg": 0.0082},
        input_config={"endpoint": {"model_names": ["llama-3.1-8b"]}, "loadgen": {"request_rate": 2.5}})))
    (a,) = read_serving_results(p)
    assert (a.model, a.concurrency, a.rate_per_s) == ("llama-3.1-8b", None, 2.5)
    assert (a.ttft_s, a.tpot_s, a.statistic) == (pytest.approx(0.041), pytest.approx(0.0082), "mean")
    r = runner.invoke(app, ["validate", "--serving", str(p), "--hardware", "h100-sxm", "--tp", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"][0]["requests_simulated"] == 24


@pytest.mark.parametrize("over,where", [
    ({"time_to_first_token": {"unit": "min", "avg": 1.0}}, "time_to_first_token.unit"),
    ({"inter_token_latency": None}, "inter_token_latency"),
    ({"input_config": {"model": "x"}}, "input_config.concurrency"),
    ({"input_sequence_length": {"avg": "long"}}, "input_sequence_length"),
])
def test_bad_aiperf_exports_name_the_metric(tmp_path, over, where):
    p = tmp_path / "export.json"
    p.write_text(json.dumps(_export(**over)))
    with pytest.raises(SpecError) as e:
        read_serving_results(p)
    assert where in str(e.value) and str(p) in str(e.value)


def test_a_csv_row_served_through_another_frontend(tmp_path):
    """``frontend_latency_ms``: the run's own frontend replaces the engine profile's (empty: the profile's). At
    C = 1 the TTFTs differ by exactly the profile's frontend latency (SGLang's: its fit covers dense models too)."""
    from simulator.serving.profiles import engine_profile

    head = "model,hardware,engine,tp,isl,osl,concurrency,ttft_ms,tpot_ms,frontend_latency_ms\n"
    own, zero = _validate_rows(tmp_path, head + "llama-3.1-8b,h100-sxm,sglang,1,512,64,1,40,8,\n"
                                                "llama-3.1-8b,h100-sxm,sglang,1,512,64,1,40,8,0\n")
    assert own["ttft_s_simulated"] - zero["ttft_s_simulated"] == pytest.approx(
        engine_profile("sglang").frontend_latency_s, abs=1e-9)
    assert (own["frontend_s_simulated"], zero["frontend_s_simulated"]) == (
        pytest.approx(engine_profile("sglang").frontend_latency_s), 0.0)
    for cell in ("-3", "nan", "inf", "fast"):
        csv = tmp_path / "bad.csv"
        csv.write_text(head + f"llama-3.1-8b,h100-sxm,sglang,1,512,64,1,40,8,{cell}\n")
        r = runner.invoke(app, ["validate", "--serving", str(csv)])
        assert r.exit_code == 2 and "line 2, column frontend_latency_ms: expected a finite number >= 0" in r.output
        assert "Traceback" not in r.output
    csv.write_text(head.replace("\n", ",frontend_latency_s\n") + "llama-3.1-8b,h100-sxm,sglang,1,512,64,1,40,8,,0.3\n")
    r = runner.invoke(app, ["validate", "--serving", str(csv)])
    assert r.exit_code == 2 and "not both" in r.output
    # with a deployment file, the row's frontend replaces the file's pools' (those clients send to)
    dep = tmp_path / "one.yaml"
    dep.write_text("schema_version: 1\nmodel: llama-3.1-8b\npools:\n  - {name: node, serves: [prefill, decode], "
                   "hardware: h100-sxm, devices: 1, engine: sglang, attention: {tp: 1}}\n")
    with_file = _validate_rows(tmp_path, head + "llama-3.1-8b,h100-sxm,sglang,1,512,64,1,40,8,0\n",
                               "--deployment", str(dep))
    assert with_file[0]["ttft_s_simulated"] == pytest.approx(zero["ttft_s_simulated"], rel=1e-9)


def test_a_csv_row_launched_with_its_own_kv_memory_flag(tmp_path):
    """``memory_fraction``: the launch's KV memory flag (here TensorRT-LLM's ``free_gpu_memory_fraction``). A
    KV-bound run (64 clients of 8k-token prompts on one H100) launched with a third of the default fraction holds
    fewer requests at once, so its requests queue longer for KV; values outside (0, 1] are refused by cell."""
    head = "model,hardware,engine,tp,isl,osl,concurrency,requests,ttft_ms,tpot_ms,memory_fraction\n"
    row = "llama-3.1-8b,h100-sxm,trtllm,1,8000,200,64,128,500,20,"
    default, small = _validate_rows(tmp_path, head + row + "\n" + row + "0.3\n")
    assert small["ttft_s_simulated"] > 1.5 * default["ttft_s_simulated"]
    for cell in ("1.5", "0", "-0.2", "most"):
        csv = tmp_path / "bad.csv"
        csv.write_text(head + row + cell + "\n")
        r = runner.invoke(app, ["validate", "--serving", str(csv)])
        assert r.exit_code == 2 and "line 2, column memory_fraction" in r.output, r.output
        assert "Traceback" not in r.output


def test_layout_flags_fill_what_a_run_lacks_and_a_contradicted_flag_is_reported(tmp_path):
    """--tp and friends supply what a run does not record; where the run records its own value, the run's is
    simulated and the flag is named as not used (in the row and under the text table), never silently."""
    text = ("model,hardware,tp,isl,osl,concurrency,requests,ttft_ms,tpot_ms\n"
            "llama-3.1-8b,h100-sxm,1,256,32,4,8,40,8\n"
            "meta-llama/Llama-3.1-8B-Instruct,h100-sxm,,256,32,4,8,40,8\n")
    a, b = _validate_rows(tmp_path, text, "--tp", "2", "--model", "llama-3.1-8b")
    assert "--tp 2 (the run records 1)" in a["flags_ignored"] and "--model" not in a["flags_ignored"]
    assert b["flags_ignored"] == ""  # its TP comes from the flag; its model name is the same model
    assert a["tpot_s_simulated"] > b["tpot_s_simulated"]  # TP1 as recorded, against TP2 from the flag
    r = runner.invoke(app, ["validate", "--serving", str(tmp_path / "runs.csv"), "--tp", "2"])
    assert r.exit_code == 0 and "not used: --tp 2 (the run records 1)" in r.stdout


def test_an_engine_flag_a_run_contradicts_is_reported_and_an_unnamed_engine_is_labelled_as_simulated(tmp_path):
    """--engine fills in a run that names no engine; a run that names its own keeps it, and the flag is listed as not
    used. A run with no engine and no flag is simulated under vLLM and grouped under that name, not 'unknown'."""
    text = ("model,hardware,tp,engine,isl,osl,concurrency,requests,ttft_ms,tpot_ms\n"
            "llama-3.1-8b,h100-sxm,1,vllm,256,32,4,8,40,8\n"
            "llama-3.1-8b,h100-sxm,1,,256,32,4,8,40,8\n")
    named, unnamed = _validate_rows(tmp_path, text, "--engine", "sglang")
    assert named["flags_ignored"] == "--engine sglang (the run records vllm)" and named["engine_simulated"] == "vllm"
    assert unnamed["flags_ignored"] == "" and unnamed["engine_simulated"] == "sglang"
    assert unnamed["group"].endswith(" sglang (not recorded)")
    _, unnamed = _validate_rows(tmp_path, text)
    assert unnamed["engine_simulated"] == "vllm" and unnamed["group"].endswith(" vllm (not recorded)")


def test_a_precision_spelled_the_engine_way_agrees_with_the_flag(tmp_path):
    (row,) = _validate_rows(tmp_path, "model,hardware,tp,precision,isl,osl,concurrency,requests,ttft_ms,tpot_ms\n"
                                      "llama-3.1-8b,h100-sxm,1,FP8,256,32,4,8,40,8\n", "--precision", "fp8")
    assert row["flags_ignored"] == ""
    (row,) = _validate_rows(tmp_path, "model,hardware,tp,precision,isl,osl,concurrency,requests,ttft_ms,tpot_ms\n"
                                      "llama-3.1-8b,h100-sxm,1,bfloat16,256,32,4,8,40,8\n", "--precision", "fp8")
    assert row["flags_ignored"] == "--precision fp8 (the run records bfloat16)"


def test_layout_flags_with_a_deployment_are_refused(tmp_path):
    csv = tmp_path / "runs.csv"
    csv.write_text("isl,osl,concurrency,requests,ttft_ms,tpot_ms\n256,32,4,8,40,8\n")
    r = runner.invoke(app, ["validate", "--serving", str(csv), "--deployment", "dbrx-8xh100", "--tp", "4"])
    assert r.exit_code == 2 and "--tp" in r.stderr and "--deployment" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("column,value,words", [
    ("requests", "0", "line 2, column requests: expected a whole number >= 1, got '0'"),
    ("num_prompts", "0", "line 2, column num_prompts: expected a whole number >= 1, got '0'"),
    ("num_prompts", "2.5", "line 2, column num_prompts: expected a whole number >= 1"),
])
def test_a_serving_csv_prompt_count_of_zero_is_refused_by_line_and_column(tmp_path, column, value, words):
    """vLLM's name for the prompt count (num_prompts) is read as `requests`, not ignored as an extra column."""
    from .conftest import one_line_error

    csv = tmp_path / "runs.csv"
    csv.write_text(f"model,hardware,tp,isl,osl,concurrency,{column},ttft_ms,tpot_ms\n"
                   f"llama-3.1-8b,h100-sxm,1,512,64,8,{value},40,8\n")
    err = one_line_error(runner.invoke(app, ["validate", "--serving", str(csv)]))
    assert f"{csv}: {words}" in err


def test_a_serving_csv_prompt_count_by_vllms_name_is_used_and_one_name_only(tmp_path):
    (row,) = _validate_rows(tmp_path, "model,hardware,tp,isl,osl,concurrency,num_prompts,ttft_ms,tpot_ms\n"
                                      "llama-3.1-8b,h100-sxm,1,256,32,4,8,40,8\n")
    assert row["requests_simulated"] == 8
    csv = tmp_path / "both.csv"
    csv.write_text("model,hardware,tp,isl,osl,concurrency,num_prompts,requests,ttft_ms,tpot_ms\n"
                   "llama-3.1-8b,h100-sxm,1,256,32,4,8,8,40,8\n")
    r = runner.invoke(app, ["validate", "--serving", str(csv)])
    assert r.exit_code == 2 and "give one of requests and num_prompts" in r.stderr


def test_a_vllm_result_with_zero_prompts_is_refused(tmp_path):
    r = runner.invoke(app, [*QUICK, "--json", "--format", "vllm"])
    doc = json.loads(r.stdout)
    doc["num_prompts"] = 0
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SpecError, match="num_prompts"):
        read_serving_results(path)


def test_vllm_format_does_not_count_requests_never_sent_as_failed():
    """A horizon that stops the clock before some requests arrived: the client never sent them, so vLLM's layout
    counts them neither completed nor failed (they are ``not_arrived``); one being served at the horizon failed."""
    r = runner.invoke(app, [*QUICK, "--horizon", "3s", "--json"])
    assert r.exit_code == 0, r.output
    sm = json.loads(r.stdout)
    r = runner.invoke(app, [*QUICK, "--horizon", "3s", "--json", "--format", "vllm"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    gone = sm["requests_not_arrived"]
    assert 0 < gone < 40 and d["not_arrived"] == gone
    assert d["completed"] == sm["requests_completed"]
    assert d["failed"] == sm["requests_rejected"] - gone  # the ones cut off while being served
    assert d["completed"] + d["failed"] + d["not_arrived"] == d["num_prompts"] == 40


def test_a_run_that_names_its_engine_release_round_trips(tmp_path):
    """`simulate --engine-version 0.8.4` records the release in its vLLM-format result, and `validate --serving`
    re-runs it under that release: a block-scaled FP8 model's prefill with vLLM's own block-FP8 GEMMs, not the
    current DeepGEMM ones (the recorded TTFT is matched exactly, and differs from the current release's)."""
    args = ["simulate", "--model", "qwen3-30b-a3b", "--hardware", "h100-sxm", "--devices", "1", "--precision", "fp8",
            "--concurrency", "4", "--isl", "4096", "--osl", "16", "--requests", "16", "--json", "--format", "vllm"]
    r = runner.invoke(app, [*args, "--engine-version", "0.8.4"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["engine_version"] == "0.8.4"
    current = json.loads(runner.invoke(app, args).stdout)
    assert "engine_version" not in current and current["mean_ttft_ms"] < 0.97 * d["mean_ttft_ms"]
    path = tmp_path / "run.json"
    path.write_text(r.stdout)
    row = json.loads(runner.invoke(app, ["validate", "--serving", str(path), "--json"]).stdout)["rows"][0]
    assert row["ttft_s_simulated"] == pytest.approx(row["ttft_s_measured"], rel=1e-9)


def test_a_batch_waiting_run_round_trips(tmp_path):
    """TensorRT-LLM's batch waiting is recorded in the vLLM-format result and re-run by `validate --serving`: the
    re-run reproduces the run's own TTFT, which the waiting raised (the same run without it reads lower)."""
    args = [*QUICK[:-2], "--concurrency", "16", "--engine", "trtllm", "--json", "--format", "vllm"]
    r = runner.invoke(app, [*args, "--batch-wait-timeout-iters", "8", "--batch-wait-max-tokens-ratio", "0.9"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["batch_wait_timeout_iters"], d["batch_wait_max_tokens_ratio"]) == (8, 0.9)
    assert json.loads(runner.invoke(app, args).stdout)["mean_ttft_ms"] < d["mean_ttft_ms"]
    path = tmp_path / "waited.json"
    path.write_text(r.stdout)
    row = json.loads(runner.invoke(app, ["validate", "--serving", str(path), "--json"]).stdout)["rows"][0]
    assert row["ttft_s_simulated"] == pytest.approx(row["ttft_s_measured"], rel=1e-9)


def test_validate_serving_reads_a_csv_rows_batch_waiting_and_applies_it_to_a_deployment_file(tmp_path):
    """A CSV row's batch waiting (0: off, as TensorRT-LLM's default) is re-run on a quick deployment and on a
    deployment file's pools that run prompts; a bad cell is named by line and column."""
    # four clients whose lengths spread (uniform in [0.5 L, L]) drift apart: prompts arrive beside decodes, and at
    # 1024 tokens or fewer never fill the 8192-token step, so each waits up to 40 steps
    head = "model,hardware,engine,devices,tp,isl,osl,concurrency,requests,ttft_ms,tpot_ms,statistic,random_range_ratio"
    run = "llama-3.1-8b,h100-sxm,trtllm,1,1,1024,256,4,40,300,12,mean,0.5"
    rows = _validate_rows(tmp_path, f"{head},batch_wait_timeout_iters,batch_wait_max_tokens_ratio\n"
                                    f"{run},40,1.0\n{run},0,0\n{run},,\n")
    waited, off, unset = (r["ttft_s_simulated"] for r in rows)
    assert off == unset and waited > off
    dep = tmp_path / "d.yaml"
    dep.write_text("schema_version: 1\nmodel: llama-3.1-8b\npools:\n  - name: node\n    serves: [prefill, decode]\n"
                   "    hardware: h100-sxm\n    devices: 1\n    engine: trtllm\n    attention: {tp: 1}\n")
    rows = _validate_rows(tmp_path, f"{head},batch_wait_timeout_iters,batch_wait_max_tokens_ratio\n"
                                    f"{run},40,1.0\n{run},,\n", "--deployment", str(dep))
    assert rows[0]["ttft_s_simulated"] == pytest.approx(waited, rel=1e-9)
    assert rows[1]["ttft_s_simulated"] == pytest.approx(unset, rel=1e-9)
    from .conftest import one_line_error

    for cells, column in (("40,", "batch_wait_timeout_iters"), ("40,1.5", "batch_wait_max_tokens_ratio"),
                          ("-1,0.8", "batch_wait_timeout_iters"), ("nan,0.8", "batch_wait_timeout_iters")):
        csv = tmp_path / "bad.csv"
        csv.write_text(f"{head},batch_wait_timeout_iters,batch_wait_max_tokens_ratio\n{run},{cells}\n")
        err = one_line_error(runner.invoke(app, ["validate", "--serving", str(csv)]))
        assert f"bad.csv: line 2, column {column}" in err, (cells, err)
