"""Inputs a user can get wrong that used to be computed, silently ignored or reported as an internal error: token
counts past any context window (which overflowed int64 into negative prompts), keys that do not apply to a traffic's
arrival process, SLO percentiles written as fractions, engine-profile constants, prices and rates no fleet has, a
mistyped path that quietly loaded a catalogue spec of the same name, two plots aimed at one file, and calibrations
that could fit nothing. Each is refused with the file and key (or the flag) and exit 2, and nothing is written."""

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.errors import SimulatorError

from .conftest import one_line_error

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
QUICK = ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1"]
BASE = "schema_version: 1\nrequests: 20\nseed: 1\n"
POISSON = "arrivals: {process: poisson, rate_per_s: 4}\n"
OUTPUT = "output_tokens: {dist: fixed, value: 16}\n"


def _traffic(tmp_path: Path, body: str) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(BASE + body)
    return str(path)


@pytest.mark.parametrize("body,words", [
    # past int64 the clipped draw became -9223372036854775808 prompt tokens, and the run reported garbage
    (POISSON + OUTPUT + "prompt_tokens: {dist: lognormal, median: 1.0e+300, sigma: 1, max: 1.0e+300}\n",
     "prompt_tokens.max: expected an integer <= 1,000,000,000"),
    (POISSON + OUTPUT + "prompt_tokens: {dist: uniform, low: 1, high: 1.0e+30}\n", "prompt_tokens.high: expected an "
                                                                                   "integer <= 1,000,000,000"),
    # a uniform of 1.2..1.8 drew only 1s; a fixed length above its own max was clipped to the max
    (POISSON + OUTPUT + "prompt_tokens: {dist: uniform, low: 1.2, high: 1.8}\n", "prompt_tokens.low: expected an "
                                                                                 "integer"),
    (POISSON + OUTPUT + "prompt_tokens: {dist: fixed, value: 128, max: 10}\n", "prompt_tokens.value: expected a "
                                                                               "length within the distribution's min "
                                                                               "and max [1, 10], got 128"),
    # keys of another arrival process: refused, as concurrency on a poisson traffic already was
    ("arrivals: {process: poisson, rate_per_s: 4, cv: 5}\n" + OUTPUT + "prompt_tokens: {dist: fixed, value: 64}\n",
     "arrivals.cv: applies to gamma arrivals only"),
    # an SLO percentile written as a fraction (it read as p0.9)
    (POISSON + OUTPUT + "prompt_tokens: {dist: fixed, value: 64}\nslo: {ttft: 1s, percentile: 0.9}\n",
     "slo.percentile: expected a percentile in [1, 100] (90 for p90)"),
])
def test_a_traffic_file_with_an_impossible_or_inapplicable_key_is_refused_by_key(tmp_path, body, words):
    err = one_line_error(runner.invoke(app, [*QUICK, "--traffic", _traffic(tmp_path, body)]))
    assert words in err and "t.yaml" in err


@pytest.mark.parametrize("extra,words", [
    ("arrivals: {process: trace, file: tr.csv, rate_per_s: 50}\n", "arrivals.rate_per_s: a trace replays its own"),
    ("arrivals: {process: trace, file: tr.csv}\nprompt_tokens: {dist: fixed, value: 99999}\n",
     "prompt_tokens: a trace replays its own token counts"),
])
def test_a_trace_traffic_refuses_the_rates_and_lengths_it_would_ignore(tmp_path, extra, words):
    (tmp_path / "tr.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,100,5\n0.5,200,5\n")
    (tmp_path / "t.yaml").write_text("schema_version: 1\n" + extra)
    err = one_line_error(runner.invoke(app, [*QUICK, "--traffic", str(tmp_path / "t.yaml")]))
    assert words in err


def test_a_trace_token_count_past_any_context_is_named_by_its_line_not_an_overflowed_value(tmp_path):
    (tmp_path / "tr.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,100,5\n0,1e30,5\n")
    (tmp_path / "t.yaml").write_text("schema_version: 1\narrivals: {process: trace, file: tr.csv}\n")
    err = one_line_error(runner.invoke(app, [*QUICK, "--traffic", str(tmp_path / "t.yaml")]))
    assert "tr.csv: line 3, column prompt_tokens: expected a whole number of tokens in [1, 1,000,000,000]" in err
    assert "got '1e30'" in err and "-9223372036854775808" not in err


def test_the_api_refuses_a_length_distribution_beyond_any_context_window():
    from simulator import SimulatorError
    from simulator.specs.traffic import LengthDist

    with pytest.raises(SimulatorError, match="LengthDist.high: expected a number <= 1e"):
        LengthDist("uniform", low=1, high=1e30)
    with pytest.raises(SimulatorError, match="LengthDist.low/high: expected whole token counts"):
        LengthDist("uniform", low=1.2, high=1.8)


def test_check_slo_without_an_slo_is_refused_before_the_run_writes_anything(tmp_path):
    out, trace = tmp_path / "out", tmp_path / "trace.json"
    r = runner.invoke(app, [*QUICK, "--rate", "4", "--requests", "20", "--check-slo", "--out", str(out),
                            "--trace", str(trace)])
    err = one_line_error(r)
    assert "--check-slo needs an SLO" in err
    assert not out.exists() and not trace.exists() and "TTFT" not in r.stdout  # no run, no summary, no files


@pytest.mark.parametrize("args,words", [
    (["--price", "1e308"], "--price '1e308': expected at most 10,000 USD per device-hour"),
    (["--price", "2", "--price", "3"], "a bare price is the price of every device, so it comes alone"),
    (["--rate", "1e12/s"], "--rate': expected a rate of at most 1e7/s"),
])
def test_prices_and_rates_no_fleet_has_are_refused_before_they_overflow(args, words):
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "2",
                            "--isl", "1024", "--osl", "256", "--rate", "5/s", *args])
    assert words in one_line_error(r)


def test_a_mistyped_model_path_is_a_missing_file_not_the_catalogue_spec_of_that_name():
    r = runner.invoke(app, [*QUICK, "--model", "../nonexistent/llama-3.1-8b", "--rate", "1", "--requests", "5"])
    assert "../nonexistent/llama-3.1-8b: cannot read file" in one_line_error(r)
    ok = runner.invoke(app, [*QUICK, "--model", "meta-llama/Llama-3.1-8B-Instruct", "--rate", "1", "--requests", "5"])
    assert ok.exit_code == 0, ok.output  # (a Hugging Face name still resolves: it is not written as a path)


def test_two_plots_aimed_at_one_file_are_refused(tmp_path, monkeypatch):
    """One file named two ways (relative and absolute): the second plot would overwrite the first."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--plot", "r.png",
                            "--breakdown-plot", str(tmp_path / "r.png")])
    assert "--breakdown-plot" in one_line_error(r) and not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("args,words", [
    (["--kv-precision", "fp4"], "--kv-precision': expected one of fp32, bf16, fp16, fp8, int8, got 'fp4'"),
    (["--tp", "2"], "--tp 2 does not divide the 1 devices"),
    (["--scheduler-recv-interval", "4"], "--scheduler-recv-interval: an SGLang server flag; the quick run serves vllm"),
    (["--engine", "sglang", "--scheduler-recv-interval", "2000"],  # (a prefill step counts 1000 toward it)
     "'--scheduler-recv-interval': expected an integer <= 1000, got 2000"),
])
def test_quick_run_errors_name_the_flag_not_an_internal_field(args, words):
    err = one_line_error(runner.invoke(app, [*QUICK, "--rate", "1", "--requests", "5", *args]))
    assert words in err and "PlanOptions" not in err


@pytest.mark.parametrize("command", ["simulate", "whatif"])
def test_a_dp_that_does_not_divide_the_devices_is_named(command):
    """With no --tp, tp is derived as devices / dp: the error names --dp, not the derived tp (1 // 2 = 0)."""
    args = [command, "--model", "llama-3.1-8b", "--devices", "1", "--dp", "2"]
    if command == "simulate":
        args += ["--rate", "1", "--requests", "5"]
    err = one_line_error(runner.invoke(app, args))
    assert err == "error: --dp 2 does not divide --devices 1"


def test_a_deployment_run_names_the_speculative_flag_as_it_is_spelt():
    err = one_line_error(runner.invoke(app, ["simulate", "dbrx-8xh100", "--spec-tokens", "2", "--rate", "1"]))
    assert err.startswith("error: --spec-tokens cannot be combined with a deployment file")


def test_a_stray_word_read_as_the_deployment_is_named_as_such():
    """"--ttft-slo 1 s" leaves "s" as simulate's positional DEPLOYMENT: the error names that word and says how it was
    read, instead of saying the quick-run flags conflict with a deployment the user never gave. A real deployment
    beside quick-run flags is still the conflict."""
    err = one_line_error(runner.invoke(app, [*QUICK, "--rate", "1", "--requests", "5", "--ttft-slo", "1", "s"]))
    assert err.startswith("error: s: no deployment with this id") and "read as the DEPLOYMENT argument" in err
    assert "a unit after a space" in err and "cannot be combined" not in err
    err = one_line_error(runner.invoke(app, ["simulate", "dbrx-8xh100", "--model", "llama-3.1-8b"]))
    assert err.startswith("error: --model cannot be combined with a deployment file")


def _measurements(tmp_path: Path, hardware_of_row_2: str | None = None) -> Path:
    rows = list(csv.reader((ROOT / "reports/validation/cpu-host-quick.csv").open()))
    if hardware_of_row_2:
        rows[2][rows[0].index("hardware")] = hardware_of_row_2
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_calibrate_refuses_a_hardware_name_spelt_like_a_profile_but_sets_other_devices_aside(tmp_path):
    """A typo in the hardware column used to drop the row from the fit without a word; a device of the user's own
    (a name like no profile) is still set aside, as other devices' rows are."""
    out = tmp_path / "cal.yaml"
    r = runner.invoke(app, ["calibrate", "--measurements", str(_measurements(tmp_path, "cpu-hsot")), "--hardware",
                            "cpu-host", "--out", str(out)])
    assert "m.csv: line 3, column 'hardware': 'cpu-hsot' names no hardware profile; a typo for 'cpu-host'?" in \
        one_line_error(r)
    assert not out.exists()
    r = runner.invoke(app, ["calibrate", "--measurements", str(_measurements(tmp_path, "my-npu-v7")), "--hardware",
                            "cpu-host", "--out", str(out)])
    assert r.exit_code == 0 and out.exists(), r.output


def test_calibrate_refuses_a_split_that_leaves_no_kernel_class_enough_rows_to_fit(tmp_path):
    out = tmp_path / "cal.yaml"
    r = runner.invoke(app, ["calibrate", "--measurements", str(_measurements(tmp_path)), "--hardware", "cpu-host",
                            "--out", str(out), "--test-fraction", "0.99"])
    assert "no kernel class has the 3 it needs to be fitted" in one_line_error(r) and not out.exists()


def _hardware_copy(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROOT / "hardware/h20.yaml").read_text()
    assert old in text
    path = tmp_path / "h20.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old,new,words", [
    # a unit slip the reader took: TPOTs of 1e28 s
    ("    value: 4.0 TB/s", "    value: 1e-30 TB/s", "memory.bandwidth: expected a device figure in"),
    ("name: ", "name: ''\nxname: ", "name: expected the device's name"),
    # a misspelt required key is named as the likely typo, not only as missing
    ("  bandwidth:\n", "  bandwith:\n", "memory.bandwidth: required key is missing (the mapping has 'bandwith': a "
                                       "typo?)"),
])
def test_a_hardware_profile_with_an_implausible_figure_or_a_typo_is_refused_by_key(tmp_path, old, new, words):
    path = _hardware_copy(tmp_path, old, new)
    err = one_line_error(runner.invoke(app, ["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--hardware",
                                             str(path)]))
    assert words in err


def test_an_empty_spec_file_is_called_empty(tmp_path):
    (tmp_path / "t.yaml").write_text("# nothing yet\n")
    err = one_line_error(runner.invoke(app, [*QUICK, "--traffic", str(tmp_path / "t.yaml")]))
    assert "t.yaml: the file is empty (or only comments)" in err


def test_names_are_taken_case_insensitively_across_commands():
    """whatif took --precision FP8 while sweep refused "fp8,FP8" and simulate --engine VLLM."""
    r = runner.invoke(app, [*QUICK, "--rate", "1", "--requests", "5", "--engine", "VLLM"])
    assert r.exit_code == 0 and "engines: pool vllm" in r.output
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1",
                            "--precision", "fp8,FP8", "--isl", "512", "--osl", "64", "--json"])
    assert r.exit_code == 0, r.output


def test_the_whatif_header_shows_attention_data_parallelism_when_there_is_some():
    r = runner.invoke(app, ["whatif", "--model", "llama-3.1-8b", "--devices", "8", "--tp", "4", "--batch", "8"])
    assert r.exit_code == 0 and "(tp 4, dp 2, pp 1, ep 1," in r.output and "(tp 4, dp 2, ep 1," in r.output


def test_an_output_folder_holding_a_folder_named_like_our_file_says_folder(tmp_path):
    out = tmp_path / "out"
    (out / "steps.csv").mkdir(parents=True)
    err = one_line_error(runner.invoke(app, [*QUICK, "--rate", "1", "--requests", "5", "--out", str(out)]))
    assert "holds files or folders this run would not write (steps.csv/)" in err


@pytest.mark.parametrize("old,new,words", [
    (None, "kv_transfer: {bandwidth: 1 GB/s}\n", "kv_transfer: applies to prefill/decode pools"),
    ("    max_seqs: 128\n", "    max_seqs: 128\n    moe_imbalance: 2\n", "moe_imbalance: applies to MoE models; "
                                                                        "llama-3.1-405b is dense"),
])
def test_deployment_keys_that_cannot_apply_are_refused_not_ignored(tmp_path, old, new, words):
    text = (ROOT / "workloads/deployments/llama-3.1-405b-fp8-8xh100.yaml").read_text()
    if old is None:
        text += new
    else:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "d.yaml"
    path.write_text(text)
    err = one_line_error(runner.invoke(app, ["simulate", str(path), "--rate", "1", "--requests", "5"]))
    assert words in err


def test_a_traffic_files_percentile_applies_to_targets_given_as_flags(tmp_path):
    """slo: {percentile: 99} alone in the file, the targets on the command line: a documented combination (the
    percentile defaults to the traffic file's), run at p99."""
    path = _traffic(tmp_path, POISSON + OUTPUT + "prompt_tokens: {dist: fixed, value: 64}\nslo: {percentile: 99}\n")
    r = runner.invoke(app, [*QUICK, "--traffic", path, "--ttft-slo", "2s", "--json"])
    assert r.exit_code == 0, r.output
    import json

    assert json.loads(r.stdout)["goodput"]["slo"]["percentile"] == 99


def test_a_traffic_files_percentile_with_no_target_anywhere_is_refused(tmp_path):
    """The same file with no target on the command line either: the percentile qualifies nothing, refused as
    --slo-percentile alone is (it read "goodput n/a" without a word)."""
    path = _traffic(tmp_path, POISSON + OUTPUT + "prompt_tokens: {dist: fixed, value: 64}\nslo: {percentile: 99}\n")
    err = one_line_error(runner.invoke(app, [*QUICK, "--traffic", path]))
    assert err == (f"error: {path}: slo.percentile: qualifies an SLO, and none is set: give slo.ttft and/or slo.tpot "
                   "in the file, or --ttft-slo and/or --tpot-slo")


def test_a_vllm_step_budget_below_its_batch_cap_is_refused_as_vllm_refuses_it():
    err = one_line_error(runner.invoke(app, [*QUICK, "--rate", "1", "--requests", "5", "--max-batch-tokens", "512",
                                             "--max-seqs", "1024"]))
    assert "max_batch_tokens: 512 is below max_seqs 1024, which vLLM refuses at startup" in err
    ok = runner.invoke(app, [*QUICK, "--rate", "1", "--requests", "5", "--max-batch-tokens", "512",
                             "--max-seqs", "1024", "--engine", "sglang"])
    assert ok.exit_code == 0, ok.output  # (SGLang's budget is a prefill one: no such rule)


def test_compare_refuses_one_deployment_given_twice():
    err = one_line_error(runner.invoke(app, ["compare", "dbrx-8xh100", "workloads/deployments/dbrx-8xh100.yaml",
                                             "--traffic", "chat"]))
    assert "is 'dbrx-8xh100' again; compare different deployments" in err


def test_the_api_refuses_a_closed_loops_fields_on_an_open_traffic():
    """replace(traffic, concurrency=7) on Poisson arrivals, or a trace on them, used to be ignored without a word."""
    import dataclasses

    import pandas as pd

    from simulator import SimulatorError, read_traffic

    chat = read_traffic(ROOT / "workloads/traffic/chat.yaml")
    with pytest.raises(SimulatorError, match="Traffic.concurrency: applies to closed arrivals, not to poisson"):
        dataclasses.replace(chat, concurrency=7)
    trace = pd.DataFrame({"arrival_s": [0.0], "prompt_tokens": [10], "output_tokens": [5]})
    with pytest.raises(SimulatorError, match="Traffic.trace: replayed by arrival='trace' only"):
        dataclasses.replace(chat, trace=trace)


def _hf_config(tmp_path: Path, family: str = "llama", **changes) -> Path:
    import json

    cfg = json.loads((ROOT / "tests/data/hf" / f"{family}.json").read_text())
    cfg.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("family,changes,words", [
    # values the importer used to convert with int() (an internal ValueError) or pass through (a list)
    ("llama", {"max_position_embeddings": "abc"}, "max_position_embeddings: expected a non-negative integer"),
    ("llama", {"hidden_size": [4096]}, "hidden_size: expected a non-negative integer"),
    ("llama", {"sliding_window": "abc"}, "sliding_window: expected a non-negative integer"),
    ("llama", {"quantization_config": {"quant_method": "gptq", "bits": "x"}}, "quantization_config.bits: expected"),
    ("llama", {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": [1, 2]}},
     "quantization_config: unsupported quantisation compressed-tensors whose config_groups is not a mapping"),
    # nonsense it used to accept: a context of 1e30, a list as the type, sizes rounded or dropped
    ("llama", {"max_position_embeddings": 10 ** 30}, "max_position_embeddings: expected at most 1,000,000,000"),
    ("llama", {"vocab_size": 10 ** 12}, "vocab_size: expected at most 1,000,000,000"),
    ("llama", {"model_type": ["llama"]}, "model_type: expected a string"),
    ("llama", {"hidden_size": 4000, "num_attention_heads": 30, "num_key_value_heads": 30},
     "num_attention_heads: 30 heads do not divide hidden_size 4000"),
    ("qwen3_moe", {"moe_intermediate_size": 0}, "moe_intermediate_size: expected an integer >= 1 with num_experts"),
    ("qwen3_moe", {"mlp_only_layers": "abc"}, "mlp_only_layers: expected a list of distinct layer indices"),
    ("deepseek_v3", {"kv_lora_rank": 0}, "kv_lora_rank: expected an integer >= 1 for MLA attention"),
    ("dbrx", {"attn_config": "x"}, "attn_config: expected an object"),
    ("llama", {"quantization_config": {"quant_method": "fp8", "weight_block_size": 128}},
     "quantization_config.weight_block_size: expected two positive whole numbers"),
])
def test_model_import_refuses_a_malformed_config_by_its_own_key(tmp_path, family, changes, words):
    cfg = _hf_config(tmp_path, family, **changes)
    out = str(tmp_path / "x.yaml")
    err = one_line_error(runner.invoke(app, ["model", "import", str(cfg), "--id", "x", "--out", out]))
    assert err.startswith(f"error: {cfg}: ") and words in err and "internal error" not in err
    assert not (tmp_path / "x.yaml").exists()


def test_model_import_names_the_config_when_the_converted_spec_fails_its_check(tmp_path):
    cfg = _hf_config(tmp_path, "qwen3_moe", num_experts_per_tok=0)
    err = one_line_error(runner.invoke(app, ["model", "import", str(cfg), "--id", "x"]))
    assert err.startswith(f"error: {cfg}: the spec converted from it fails its check at architecture.moe.top_k")


def test_model_import_does_not_overwrite_a_spec_it_did_not_write(tmp_path):
    spec = tmp_path / "dbrx.yaml"
    spec.write_text((ROOT / "workloads/models/dbrx.yaml").read_text())
    err = one_line_error(runner.invoke(app, ["model", "import", str(_hf_config(tmp_path)), "--id", "dbrx", "--out",
                                             str(spec)]))
    assert "exists and was not written by `quadrant model import`" in err
    assert spec.read_text() == (ROOT / "workloads/models/dbrx.yaml").read_text()
    mine = tmp_path / "mine.yaml"  # an earlier import is replaced
    assert runner.invoke(app, ["model", "import", str(_hf_config(tmp_path)), "--id", "mine", "--out",
                               str(mine)]).exit_code == 0
    assert runner.invoke(app, ["model", "import", str(_hf_config(tmp_path)), "--id", "mine", "--out",
                               str(mine)]).exit_code == 0


@pytest.mark.parametrize("kwargs,words", [
    ({"frontend_latency_s": -1.0}, "Pool 'pool'.frontend_latency_s: expected a number >= 0"),  # (an IndexError)
    ({"max_batch_tokens": float("nan")}, "Pool 'pool'.max_batch_tokens: expected an integer"),  # (a numpy error)
    ({"max_seqs": 0}, "Pool 'pool'.max_seqs: expected an integer >= 1"),  # (every request was rejected)
    ({"replicas": 2.5}, "Pool 'pool'.replicas: expected an integer"),
    ({"memory_fraction": 1.5}, "Pool 'pool'.memory_fraction: expected a number <= 1"),
    ({"engine": "foo"}, "Pool 'pool'.engine: expected one of vllm, sglang, trtllm"),
])
def test_quick_deployment_refuses_what_a_deployment_file_would(kwargs, words):
    from simulator import PlanOptions, SimulatorError
    from simulator.build import quick_deployment

    with pytest.raises(SimulatorError) as exc:
        quick_deployment(PlanOptions(model="llama-3.1-8b", devices=1), **kwargs)
    assert words in str(exc.value)


def test_a_frontend_latency_past_an_hour_is_refused_by_its_flag():
    err = one_line_error(runner.invoke(app, [*QUICK, "--rate", "1", "--requests", "5", "--frontend-latency", "2h"]))
    assert err.startswith("error: --frontend-latency: expected at most 3600 s")


def test_a_serving_plan_built_in_code_is_checked():
    """whatif on ServingPlan(decode_replicas=-1) reported -994 output tokens/s; a model id string crashed deep in."""
    from simulator import SimulatorError, load_hardware, load_model
    from simulator.plan import ServingPlan, simple_phase

    m = load_model("llama-3.1-8b")
    ph = simple_phase(load_hardware("h100-sxm"), m, 1)
    with pytest.raises(SimulatorError, match="ServingPlan.decode_replicas: expected an integer >= 1"):
        ServingPlan(m, ph, ph, decode_replicas=-1)
    with pytest.raises(SimulatorError, match="ServingPlan.kv_scale_tokens: expected an integer >= 1"):
        ServingPlan(m, ph, ph, kv_precision="fp8", kv_scale_tokens=0)
    with pytest.raises(SimulatorError, match="ServingPlan: expected a ModelSpec"):
        ServingPlan("llama-3.1-8b", ph, ph)


def test_model_import_takes_whole_floats_and_says_a_huge_integer_is_one(tmp_path):
    """4096.0 is 4096 (as YAML counts are read); a 401-digit context is refused by its size, not an OverflowError."""
    ok = runner.invoke(app, ["model", "import", str(_hf_config(tmp_path, max_position_embeddings=131072.0)), "--id",
                             "x"])
    assert ok.exit_code == 0 and "context_tokens: 131072" in ok.stdout
    err = one_line_error(runner.invoke(app, ["model", "import", str(_hf_config(tmp_path,
                                                                              max_position_embeddings=10 ** 400)),
                                             "--id", "x"]))
    assert "max_position_embeddings: expected at most 1,000,000,000, got a 401-digit integer" in err


def test_model_import_reads_deepseek_style_moe_fields_under_gqa_and_refuses_an_moe_without_expert_width(tmp_path):
    """GLM-4.5-style configs (GQA attention, n_routed_experts) imported as dense models; OLMoE-style ones (num_experts
    but no moe_intermediate_size) too."""
    from simulator.specs.model import model_from_hf_config

    glm = _hf_config(tmp_path, model_type="glm4_moe", n_routed_experts=64, num_experts_per_tok=4,
                     moe_intermediate_size=1024, n_shared_experts=1, first_k_dense_replace=1)
    spec = model_from_hf_config(glm, "glm")
    assert spec.is_moe and spec.moe.num_experts == 64 and spec.moe.top_k == 4 and spec.moe.dense_layers == 1
    olmoe = _hf_config(tmp_path, num_experts=64, num_experts_per_tok=8)
    err = one_line_error(runner.invoke(app, ["model", "import", str(olmoe), "--id", "x"]))
    assert "num_experts: an MoE config without moe_intermediate_size" in err


def test_plan_names_its_own_frontend_latency_flag(tmp_path):
    err = one_line_error(runner.invoke(app, ["plan", "--model", "llama-3.1-8b", "--traffic", "chat", "--rate", "2",
                                             "--hardware", "h100-sxm", "--frontend-latency", "2h", "--out",
                                             str(tmp_path / "p")]))
    assert err.startswith("error: --frontend-latency: expected at most 3600 s")


def test_plan_names_its_modes_flag(tmp_path):
    err = one_line_error(runner.invoke(app, ["plan", "--model", "llama-3.1-8b", "--traffic", "chat", "--hardware",
                                             "h100-sxm", "--modes", "agg,xyz", "--out", str(tmp_path / "p")]))
    assert err == "error: --modes: expected a comma-separated list of agg, pd, afd, got 'agg,xyz'"
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("kwargs,words", [
    ({"preemption": "bogus"}, "Pool 'p'.preemption: expected one of recompute, swap, none"),
    ({"serves": "prefilldecode"}, "Pool 'p'.serves: expected ('prefill',), ('decode',) or ('prefill', 'decode')"),
    ({"prompt_range": (10, 5)}, "Pool 'p'.prompt_range: expected (low, high) with 0 <= low <= high"),
])
def test_a_pool_refuses_a_preemption_role_or_route_that_cannot_be(kwargs, words):
    import dataclasses

    from simulator import SimulatorError, read_deployment

    pool = dataclasses.replace(read_deployment("dbrx-8xh100").pools[0], name="p")
    with pytest.raises(SimulatorError) as exc:
        dataclasses.replace(pool, **kwargs)
    assert words in str(exc.value)


def test_a_latency_miss_reads_as_a_percentage_then_as_a_factor():
    from simulator.planning.verify import latency_miss

    assert latency_miss("TPOT", 0.0487, 0.040, 90) == "p90 TPOT 48.7 ms vs 40.0 ms (+22%)"
    assert latency_miss("TPOT", 0.0402, 0.040, None).endswith("(+0.5%)")  # (a near miss does not read +0%)
    assert latency_miss("TPOT", 0.0039, 1e-12, None).endswith("(3.9e+09x the target)")  # (was +390000000000%)


def test_the_api_calls_that_take_a_timing_model_refuse_a_spec_string():
    """whatif, sweep and predict raised AttributeError on timing="roofline" (simulate already refused it)."""
    from simulator import PlanOptions, SimulatorError, plan_from_options, whatif
    from simulator.planning.sweep import sweep

    plan = plan_from_options(PlanOptions(model="llama-3.1-8b", devices=1))
    with pytest.raises(SimulatorError, match="whatif: timing must be a TimingModel"):
        whatif(plan, batch=8, isl=512, osl=64, timing="roofline")
    with pytest.raises(SimulatorError, match="sweep: timing must be a TimingModel"):
        sweep("llama-3.1-8b", ["h100-sxm"], 1, isl=512, osl=64, timing="roofline")


def test_plan_and_compare_api_arguments_of_the_wrong_kind_are_named():
    """modes="agg" was split into letters ("unknown mode 'a'"); one Deployment instead of a list, or traffic given as
    an id, were TypeError / AttributeError."""
    import dataclasses

    from simulator import SimulatorError, read_deployment, read_traffic
    from simulator.planning.plan import PlanRequest, compare_deployments

    chat = read_traffic(ROOT / "workloads/traffic/chat.yaml")
    with pytest.raises(SimulatorError, match="PlanRequest.modes: expected a non-empty tuple of agg, pd, afd"):
        PlanRequest(model="llama-3.1-8b", traffic=chat, hardware=["h100-sxm"], modes="agg")
    dep = read_deployment("dbrx-8xh100")
    with pytest.raises(SimulatorError, match="compare: expected a non-empty list of Deployments"):
        compare_deployments(dep, chat, None)
    with pytest.raises(SimulatorError, match="compare: traffic: expected a Traffic"):
        compare_deployments([dep], "chat", None)
    ok = PlanRequest(model="llama-3.1-8b", traffic=chat, hardware=["h100-sxm"])
    assert dataclasses.replace(ok, modes=("agg",)).modes == ("agg",)


def test_a_step_shape_refuses_negative_nan_or_non_numeric_sizes():
    """StepShape is the op builders' API input: a negative sequence count or a NaN context used to build ops with
    negative or NaN times; a string a numpy error deep inside."""
    from simulator.ops.build import StepShape

    for kw in ({"prefill_seqs": -1}, {"prefill_ctx": float("nan")}, {"decode_kv": "a"}, {"decode_seqs": [4, -1]}):
        with pytest.raises(SimulatorError, match=f"StepShape.{next(iter(kw))}: expected finite numbers >= 0"):
            StepShape(**kw)
    assert StepShape(prefill_seqs=np.array([0.0, 2.0]), prefill_len=128).tokens.tolist() == [0.0, 256.0]


def test_pareto_front_leaves_out_rows_it_cannot_compare_and_names_a_missing_column():
    from simulator.planning.sweep import pareto_front

    df = pd.DataFrame({"tpot_s": [0.02, np.nan, 0.03, 0.01], "output_tokens_per_s_per_device": [50.0, 900.0, 40.0,
                                                                                                np.nan]})
    assert pareto_front(df).index.tolist() == [0]  # (the NaN rows used to join the front)
    with pytest.raises(SimulatorError, match="pareto_front: no column 'tpot_s'"):
        pareto_front(pd.DataFrame({"a": [1]}))
    with pytest.raises(SimulatorError, match="expected a DataFrame"):
        pareto_front("sweep.csv")


@pytest.mark.parametrize("args,words", [
    (["--batch-wait-timeout-iters", "40", "--batch-wait-max-tokens-ratio", "0.8"],
     "--batch-wait-timeout-iters / --batch-wait-max-tokens-ratio: TensorRT-LLM's batch waiting; the quick run serves "
     "vllm (give --engine trtllm)"),
    (["--engine", "trtllm", "--batch-wait-timeout-iters", "40"],
     "--batch-wait-timeout-iters and --batch-wait-max-tokens-ratio work together"),
    (["--engine", "trtllm", "--batch-wait-timeout-iters", "40", "--batch-wait-max-tokens-ratio", "1.5"],
     "'--batch-wait-max-tokens-ratio'"),
])
def test_batch_waiting_flags_are_trtllm_only_and_go_together(args, words):
    err = one_line_error(runner.invoke(app, [*QUICK, "--rate", "1", "--requests", "5", *args]))
    assert words in err


def _pool_yaml(tmp_path: Path, engine: str, extra: str) -> str:
    path = tmp_path / "d.yaml"
    path.write_text(f"""schema_version: 1
model: llama-3.1-8b
pools:
  - name: node
    serves: [prefill, decode]
    hardware: h100-sxm
    devices: 1
    engine: {engine}
    attention: {{tp: 1}}
{extra}""")
    return str(path)


@pytest.mark.parametrize("engine,extra,words", [
    ("vllm", "    batch_wait_timeout_iters: 40\n    batch_wait_max_tokens_ratio: 0.8\n",
     "d.yaml: pools[0].batch_wait_timeout_iters: TensorRT-LLM's batch waiting; vllm has none"),
    ("trtllm", "    batch_wait_timeout_iters: 40\n",
     "d.yaml: pools[0].batch_wait_timeout_iters: TensorRT-LLM's batch waiting needs both"),
    ("trtllm", "    batch_wait_max_tokens_ratio: 0.5\n", "pools[0].batch_wait_max_tokens_ratio: TensorRT-LLM's"),
    ("trtllm", "    batch_wait_timeout_iters: 40\n    batch_wait_max_tokens_ratio: 2\n",
     "pools[0].batch_wait_max_tokens_ratio"),
])
def test_a_pools_batch_waiting_is_refused_where_tensorrt_llm_would_not_run_it(tmp_path, engine, extra, words):
    err = one_line_error(runner.invoke(app, ["simulate", _pool_yaml(tmp_path, engine, extra), "--rate", "1",
                                             "--requests", "5"]))
    assert words in err


def test_a_trtllm_pools_batch_waiting_runs_and_is_reported(tmp_path):
    import json

    def run(extra: str) -> dict:
        r = runner.invoke(app, ["simulate", _pool_yaml(tmp_path, "trtllm", extra), "--rate", "4", "--requests", "40",
                                "--json", "--format", "vllm"])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    waited = run("    batch_wait_timeout_iters: 40\n    batch_wait_max_tokens_ratio: 0.8\n")
    assert (waited.get("batch_wait_timeout_iters"), waited.get("batch_wait_max_tokens_ratio")) == (40, 0.8)
    assert waited["mean_ttft_ms"] > run("")["mean_ttft_ms"]  # prompts arriving beside decodes were held back


def test_a_trace_given_as_the_traffic_file_says_how_to_replay_it():
    """A trace CSV passed to --traffic (which takes a traffic YAML) is refused with the YAML that replays it, not
    with a YAML parser's complaint about the CSV."""
    err = one_line_error(runner.invoke(app, ["simulate", "dbrx-8xh100", "--traffic",
                                             "workloads/traffic/trace-sample.csv"]))
    assert "trace-sample.csv" in err and "process: trace, file: trace-sample.csv" in err


def test_ramp_up_on_an_open_loop_names_the_arrivals_not_an_internal_id():
    err = one_line_error(runner.invoke(app, [*QUICK, "--rate", "4", "--ramp-up", "2s"]))
    assert err.endswith("this run's arrivals (--rate) are poisson") and "cli" not in err
    err = one_line_error(runner.invoke(app, ["simulate", "dbrx-8xh100", "--traffic", "chat", "--ramp-up", "2s"]))
    assert err.endswith("chat.yaml has process: poisson")
