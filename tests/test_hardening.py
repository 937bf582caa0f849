"""The CLI's contract with users and tools: one-line errors and exit codes, strict JSON with metadata,
output files (mode, symlinks, devices, whole folders), --version, catalogue listings, model import."""

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simulator.cli import app
from simulator.units import format_ms

from .conftest import DATA, one_line_error

runner = CliRunner()
QUICK = ["simulate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--tp", "1",
         "--isl", "256", "--osl", "16", "--requests", "20", "--rate", "5/s"]
WHATIF = ["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--batch", "8", "--isl", "512", "--osl", "64"]


@pytest.mark.parametrize("flag,value", [
    ("--batch", "0"), ("--batch", "-3"), ("--isl", "0"), ("--osl", "nan"), ("--devices", "1.5"),
    ("--chunk", "0"), ("--kv-scale-tokens", "-1"), ("--expert-tp", "0"), ("--spec-draft", "-1"),
    ("--spec-accept", "1.5"), ("--spec-draft-cost", "inf"), ("--price", "-2"), ("--price", "0"), ("--tp", "x"),
])
def test_whatif_flags_are_range_checked(flag, value):
    err = one_line_error(runner.invoke(app, [*WHATIF, flag, value]))
    assert flag in err


@pytest.mark.parametrize("flag,value", [
    ("--requests", "0"), ("--requests", "-5"), ("--rate", "-1"), ("--rate", "0/s"), ("--rate", "nan"),
    ("--rate", "5/fortnight"), ("--horizon", "-1s"), ("--horizon", "0"), ("--replicas", "0"), ("--seed", "-1"),
    ("--concurrency", "0"), ("--max-seqs", "0"),
])
def test_simulate_flags_are_range_checked(flag, value):
    args = [a for a in QUICK]
    if flag in args:
        i = args.index(flag)
        args[i + 1] = value
    else:
        args += [flag, value]
    err = one_line_error(runner.invoke(app, args))
    assert flag in err


def test_durations_and_rates_take_units():
    r = runner.invoke(app, [*QUICK[:-2], "--rate", "300/min", "--horizon", "1min", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["requests_completed"] == 20
    assert d["metadata"]["command"][-5:] == ["--rate", "300/min", "--horizon", "1min", "--json"]


def test_every_request_rejected_exits_1_with_one_line(tmp_path):
    r = runner.invoke(app, [*QUICK, "--horizon", "1us"])
    err = one_line_error(r, code=1)
    assert "no request finished" in err and "20" in err
    # the summary printed before it blames neither a missing price nor reads a makespan of a microsecond
    assert "has no price" not in r.output and "no output token finished" in r.output
    assert "makespan n/a (nothing finished)" in r.output


def test_json_is_strict_and_carries_metadata(tmp_path):
    r = runner.invoke(app, [*WHATIF, "--json", "--hardware", "h20"])  # H20 has no price: cost is unknown
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert d["cost_usd_per_mtok"] is None
    meta = d["metadata"]
    assert meta["version"] and meta["timing_model"].startswith("roofline") and meta["command"][1] == "whatif"
    assert len(meta["inputs"]["model"]["sha256"]) == 64 and meta["inputs"]["hardware"]["file"].endswith("h20.yaml")
    for cmd in (["hw", "list", "--json"], ["model", "list", "--json"]):
        json.loads(runner.invoke(app, cmd).stdout, parse_constant=lambda c: pytest.fail(c))


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("quadrant-sim ")


@pytest.mark.parametrize("path,what", [("out.txt", "extension"), ("missing/out.png", "does not exist"),
                                       (".", "folder")])
def test_bad_output_paths_are_one_line_errors(tmp_path, path, what):
    target = tmp_path / path if path != "." else tmp_path
    err = one_line_error(runner.invoke(app, [*WHATIF, "--plot", str(target)]))
    assert what in err


def test_output_files_respect_the_umask_and_write_through_symlinks(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "model.yaml"
        r = runner.invoke(app, ["model", "import", str(DATA / "hf" / "llama.json"), "--id", "model", "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        real = tmp_path / "real.csv"
        real.write_text("old")
        link = tmp_path / "link.csv"
        link.symlink_to(real)
        r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--devices", "1", "--batches", "1,8",
                                "--precision", "bf16", "--out", str(link)])
        assert r.exit_code == 0, r.output
        assert link.is_symlink() and real.read_text().startswith("hardware,")
    finally:
        os.umask(old)


def test_writing_to_a_device_node_writes_into_it():
    from simulator.io import atomic_write_text

    atomic_write_text("/dev/null", "hello")  # replacing /dev/null would need root and break the system
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_out_folder_is_written_whole_and_refuses_foreign_files(tmp_path):
    out = tmp_path / "sim"
    r = runner.invoke(app, [*QUICK, "--out", str(out), "--no-plots"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["requests.csv", "steps.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    (out / "notes.txt").write_text("mine")
    err = one_line_error(runner.invoke(app, [*QUICK, "--out", str(out), "--no-plots"]))
    assert "notes.txt" in err and (out / "notes.txt").read_text() == "mine"


def test_debug_shows_the_traceback_of_a_usage_error():
    r = runner.invoke(app, ["--debug", *WHATIF, "--batch", "0"])
    assert r.exit_code == 2 and "Traceback" in r.stderr


def test_hw_list_fits_100_columns_and_shows_unknown_prices_as_a_dash():
    r = runner.invoke(app, ["hw", "list"])
    assert r.exit_code == 0
    lines = r.stdout.rstrip("\n").splitlines()
    assert max(len(ln.rstrip()) for ln in lines) <= 100
    assert max(len(ln.rstrip()) for ln in runner.invoke(app, ["model", "list"]).stdout.splitlines()) <= 100
    h20 = next(ln for ln in lines if ln.startswith("h20 "))
    assert "—" in h20 and "nan" not in r.stdout


def test_model_import_checks_the_id_and_writes_a_file_that_loads(tmp_path):
    src = DATA / "hf" / "mixtral.json"
    one_line_error(runner.invoke(app, ["model", "import", str(src), "--id", "Bad Id"]))
    err = one_line_error(runner.invoke(app, ["model", "import", str(src), "--id", "a",
                                             "--out", str(tmp_path / "b.yaml")]))
    assert "a.yaml" in err
    out = tmp_path / "mix.yaml"
    assert runner.invoke(app, ["model", "import", str(src), "--id", "mix", "--out", str(out)]).exit_code == 0
    r = runner.invoke(app, ["model", "show", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == "mix"


def _hf(tmp_path, **cfg):
    base = json.loads((DATA / "hf" / "llama.json").read_text())
    base.update(cfg)
    base = {k: v for k, v in base.items() if v is not None}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(base))
    return p


def test_hf_import_follows_transformers_conventions(tmp_path):
    from simulator.specs.model import model_from_hf_config

    # tie_word_embeddings: LlamaConfig defaults to False; PretrainedConfig (e.g. an unknown type) to True
    assert not model_from_hf_config(_hf(tmp_path, tie_word_embeddings=None), "x").tie_word_embeddings
    assert model_from_hf_config(_hf(tmp_path, tie_word_embeddings=None, model_type="newarch"), "x").tie_word_embeddings
    # a multimodal wrapper: the language model is text_config
    text = json.loads((DATA / "hf" / "llama.json").read_text())
    p = tmp_path / "mm.json"
    p.write_text(json.dumps({"model_type": "llava", "text_config": text, "vision_config": {"hidden_size": 1024}}))
    mm = model_from_hf_config(p, "x")
    assert mm.hidden_size == text["hidden_size"] and mm.num_layers == text["num_hidden_layers"]
    # sliding windows: Qwen2-style flag off -> none; Mistral-style -> every layer; layer_types -> counted
    assert model_from_hf_config(_hf(tmp_path, model_type="qwen2", sliding_window=4096, use_sliding_window=False),
                                "x").attention.sliding_window == 0
    sw = model_from_hf_config(_hf(tmp_path, model_type="mistral", sliding_window=4096), "x").attention
    assert (sw.sliding_window, sw.sliding_window_layers) == (4096, text["num_hidden_layers"])
    types = ["sliding_attention", "full_attention"] * (text["num_hidden_layers"] // 2)
    lt = model_from_hf_config(_hf(tmp_path, sliding_window=512, layer_types=types), "x").attention
    assert lt.sliding_window_layers == text["num_hidden_layers"] // 2
    # quantization_config -> the released precision
    for q, want in (({"quant_method": "fp8"}, "fp8"), ({"quant_method": "awq", "bits": 4}, "w4a16"),
                    ({"quant_method": "gptq", "bits": 8}, "int8")):
        assert model_from_hf_config(_hf(tmp_path, quantization_config=q), "x").native_precision == want
    # FP8 with 2-D weight blocks (DeepSeek-V3, Qwen3-*-FP8) -> block-scaled; per-tensor FP8 or another format is not
    block = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    assert model_from_hf_config(_hf(tmp_path, quantization_config=block), "x").fp8_block_scaled
    assert not model_from_hf_config(_hf(tmp_path, quantization_config={"quant_method": "fp8"}), "x").fp8_block_scaled
    assert not model_from_hf_config(_hf(tmp_path, quantization_config={"quant_method": "awq", "bits": 4,
                                                                        "weight_block_size": [128, 128]}),
                                    "x").fp8_block_scaled
    # llm-compressor's FP8 block scheme: a compressed-tensors weight group with strategy block; channel is not
    for strategy, want in (("block", True), ("channel", False)):
        ct = {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
            "weights": {"num_bits": 8, "type": "float", "strategy": strategy, "block_structure": [128, 128]},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128}}}}
        got = model_from_hf_config(_hf(tmp_path, quantization_config=ct), "x")
        assert (got.native_precision, got.fp8_block_scaled) == ("fp8", want)


@pytest.mark.parametrize("name,profile", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA H100 NVL", None),
    ("NVIDIA H200", "h200-sxm"), ("NVIDIA H20", "h20"), ("NVIDIA H800", "h800-sxm"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm"), ("NVIDIA A100-PCIE-40GB", None), ("NVIDIA B200", "b200-sxm"),
    ("NVIDIA B300 SXM6 AC", "b300-sxm"), ("NVIDIA GB300", None),
    ("NVIDIA L40S", "l40s"), ("NVIDIA L20", "l20"), ("AMD Instinct MI300X", "mi300x"),
    ("NVIDIA GeForce RTX 4090", None), ("Tesla T4", None),
])
def test_bench_names_the_measured_device(name, profile):
    from simulator.validation.bench.devices import profile_for_device_name

    assert profile_for_device_name(name) == profile


def test_plots_have_titles_and_the_timeline_is_not_capped(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd

    from simulator.report import plots

    n = 1000
    steps = pd.DataFrame({"pool": "p", "replica_id": "p/0", "start_s": range(n), "end_s": [i + 0.5 for i in range(n)],
                          "kind": "decode"})
    seen = {}
    real_save = plots._save

    def spy(fig, path):
        seen["titles"] = [ax.get_title() for ax in fig.axes]
        seen["bars"] = sum(len(c.get_paths()) for ax in fig.axes for c in ax.collections)
        return real_save(fig, path)

    plots._save = spy
    try:
        plots.step_timeline(steps, tmp_path / "t.png")
    finally:
        plots._save = real_save
        plt.close("all")
    assert seen["titles"][0] and seen["bars"] == n


def test_yaml_specs_print_as_plain_yaml():
    from simulator.cli._common import as_yaml

    shared = {"a": 1}
    text = as_yaml({"x": shared, "y": shared, "z": float("nan")})
    assert "&" not in text and "*" not in text and yaml.safe_load(text) == {"x": {"a": 1}, "y": {"a": 1}, "z": None}


def test_whatif_path_imports_no_heavy_modules():
    """The fast start (tests/benchmarks/test_startup.py times it): whatif's text output needs neither pandas,
    matplotlib nor pydantic (which typer would import to coerce options)."""
    import subprocess
    import sys

    code = ("import sys, io, contextlib\n"
            "sys.argv = ['quadrant', 'whatif', '--model', 'llama-3.1-8b', '--devices', '1']\n"
            "from simulator.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main()\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('pandas', 'matplotlib', 'pydantic', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=DATA.parents[1], check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_check_slo_exits_1_when_the_slo_is_missed(tmp_path):
    doc = yaml.safe_load((DATA.parents[1] / "workloads" / "traffic" / "chat.yaml").read_text())
    doc["slo"] = {"ttft": "1us", "tpot": "1us", "percentile": 90}
    p = tmp_path / "strict.yaml"
    p.write_text(yaml.safe_dump(doc))
    base = ["simulate", "dbrx-8xh100", "--traffic", str(p), "--requests", "20"]
    assert runner.invoke(app, base).exit_code == 0  # not asked: the report says NOT met, the run succeeds
    r = runner.invoke(app, [*base, "--check-slo", "--json"])
    err = one_line_error(r, code=1)
    assert "SLO not met: p90 TTFT <= 0.001 ms and p90 TPOT <= 0.001 ms asked" in err  # (in ms, as plan's report)
    # with what the run gave at that percentile, the figures the summary holds the targets to
    at = json.loads(r.stdout)["goodput"]["at_percentile"]
    assert f"p90 TTFT {format_ms(at['ttft_s'])} and TPOT {format_ms(at['tpot_s'])} simulated" in err
    assert at["ttft_s"] > 1e-6 and at["tpot_s"] > 1e-6


def test_output_flags_take_device_nodes():
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--devices", "1", "--batches", "1,8",
                            "--precision", "bf16", "--out", "/dev/null", "--plot", "/dev/null"])
    assert r.exit_code == 0, r.output
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("flags,where", [(["--format", "vllm"], "--format"), (["--parquet"], "--parquet")])
def test_output_flags_that_need_another_are_refused_not_ignored(flags, where):
    """``--format`` lays out the --json document and ``--parquet`` the tables under --out: alone, each would be
    silently ignored, so each is refused, naming the flag it needs."""
    r = runner.invoke(app, [*QUICK, *flags])
    err = one_line_error(r, code=2)
    assert where in err and ("--json" in err or "--out" in err)


@pytest.mark.parametrize("args,where,needs", [
    (["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--spec-accept", "0.8"], "--spec-accept", "--spec-draft"),
    (["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--spec-draft-cost", "0.1"], "--spec-draft-cost",
     "--spec-draft"),
    ([*QUICK, "--spec-acceptance", "0.8"], "--spec-acceptance", "--spec-tokens"),
    ([*QUICK, "--spec-draft-cost", "0.1"], "--spec-draft-cost", "--spec-tokens")])
def test_draft_settings_without_a_draft_are_refused_not_ignored(args, where, needs):
    """The acceptance rate and draft cost describe a speculative draft; with no draft tokens nothing would read
    them, so a user who forgot the draft count is told which flag is missing instead of getting a plain run."""
    r = runner.invoke(app, args)
    err = one_line_error(r, code=2)
    assert where in err and needs in err


def test_draft_settings_with_a_draft_change_the_result():
    """The counterpart: with a draft, the acceptance rate is used (a higher rate, a shorter TPOT)."""
    base = ["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--spec-draft", "2", "--json"]
    lo = json.loads(runner.invoke(app, [*base, "--spec-accept", "0.3"]).stdout)
    hi = json.loads(runner.invoke(app, [*base, "--spec-accept", "0.9"]).stdout)
    assert hi["tpot_s"] < lo["tpot_s"]


H200_OVERLAY = str(Path(__file__).resolve().parents[1] / "reports/validation/h200-sxm/calibration.yaml")


@pytest.mark.parametrize("args,flag", [
    (["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--calibration", H200_OVERLAY], "--calibration"),
    ([*QUICK, "--timing", f"calibrated:{H200_OVERLAY}"], "--timing"),
    (["sweep", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--timing",
      f"calibrated:{H200_OVERLAY}"], "--timing")])
def test_an_overlay_for_a_device_the_run_does_not_use_is_refused(args, flag):
    """An H200 overlay on an H100 run would change nothing while the user believes the numbers calibrated."""
    r = runner.invoke(app, args)
    err = one_line_error(r, code=2)
    assert flag in err and "h200-sxm" in err and "h100-sxm" in err


def test_a_measured_table_for_a_device_the_run_does_not_use_is_refused():
    table = str(Path(H200_OVERLAY).parent / "full.csv")
    err = one_line_error(runner.invoke(app, [*WHATIF, "--timing", f"measured:{table}"]))
    assert "--timing" in err and "measured table" in err and "h200-sxm" in err and "h100-sxm" in err
    r = runner.invoke(app, [*WHATIF, "--hardware", "h200-sxm", "--timing", f"measured:{table}"])
    assert r.exit_code == 0 and "answered from measurements" in r.stdout


def test_an_overlay_for_the_device_in_use_is_taken():
    base = ["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--hardware", "h200-sxm", "--json"]
    plain, cal = (json.loads(runner.invoke(app, a).stdout) for a in (base, [*base, "--calibration", H200_OVERLAY]))
    assert cal["tpot_s"] != plain["tpot_s"]


def _cost(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_price_has_one_grammar_across_commands():
    """--price ID=USD_PER_HOUR works on whatif, sweep and plan alike (whatif also takes one bare price for every
    device); the cost scales with the price, and a price for a device the run does not use is refused."""
    w = lambda *p: _cost([*WHATIF, "--json", *p])["cost_usd_per_mtok"]  # noqa: E731
    assert w("--price", "h100-sxm=4") == pytest.approx(2 * w("--price", "2"), rel=1e-12)
    assert w("--price", "H100=4") == pytest.approx(w("--price", "h100-sxm=4"), rel=1e-12)  # a name it goes by
    sweep = ["sweep", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--json"]
    rows = lambda *p: _cost([*sweep, *p])["front"]  # noqa: E731
    cheap, dear = rows("--price", "h100-sxm=1"), rows("--price", "h100-sxm=3")
    assert [r["usd_per_hour"] for r in cheap] == [1.0] * len(cheap)
    assert [d["cost_usd_per_mtok"] / c["cost_usd_per_mtok"] for c, d in zip(cheap, dear)] == \
        pytest.approx([3.0] * len(cheap), rel=1e-12)
    for args in ([*WHATIF, "--price", "h20=1"], [*sweep, "--price", "h20=1"]):
        err = one_line_error(runner.invoke(app, args))
        assert "--price h20=1" in err and "not a device of this run" in err
    err = one_line_error(runner.invoke(app, [*sweep, "--price", "1.5", "--price", "2"]))  # two bare prices
    assert "ID=USD_PER_HOUR" in err


def test_price_reprices_a_deployment_run_too():
    """On simulate and whatif, --price also prices a deployment file's devices (the file's own price otherwise):
    doubling the decode devices' price raises the cost, by less than double since the prefill pool keeps its."""
    sim = ["simulate", "dbrx-h100-prefill-h20-decode", "--traffic", "chat", "--requests", "60", "--json"]
    cost = lambda *p: _cost([*sim, *p])["cost_usd_per_mtok"]  # noqa: E731
    base, dear = cost(), cost("--price", "h20=2.40")  # the file prices H20 at 1.20 USD/h
    assert base < dear < 2 * base
    w = ["whatif", "--deployment", "dbrx-h100-prefill-h20-decode", "--json"]
    wcost = lambda *p: _cost([*w, *p])["cost_usd_per_mtok"]  # noqa: E731
    assert wcost() < wcost("--price", "h20=2.40") < 2 * wcost()
    err = one_line_error(runner.invoke(app, [*sim, "--price", "b200=1"]))
    assert "--price b200=1" in err and "h20" in err


def test_price_names_and_repeats():
    """A --price key may be any name a profile goes by (on plan too); the same device priced twice is refused."""
    sweep = ["sweep", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--json"]
    one = _cost([*sweep, "--price", "2"])["front"]  # one bare price: every device of the sweep
    assert {r["usd_per_hour"] for r in one} == {2.0}
    for args in ([*sweep, "--price", "h100-sxm=2", "--price", "H100=3"], [*WHATIF, "--price", "h100-sxm=2",
                                                                         "--price", "h100-sxm=3"]):
        err = one_line_error(runner.invoke(app, args))
        assert "--price" in err and "priced twice" in err


def test_compare_takes_the_same_price_grammar():
    """compare prices the deployment files' devices like the other commands (a device none of them uses is
    refused before anything is simulated); repricing one device moves only its pools' cost."""
    from simulator.specs.catalog import resolve_workload
    from simulator.specs.deployment import read_deployment

    err = one_line_error(runner.invoke(app, ["compare", "dbrx-8xh100", "--traffic", "chat", "--price", "h20=2"]))
    assert "--price h20=2" in err and "not a device of this run (h100-sxm)" in err
    dep = read_deployment(resolve_workload("dbrx-h100-prefill-h20-decode", "deployments", "deployment"))
    h20 = [p for p in dep.pools if p.plan.attention.hardware.id == "h20"]
    dear = dep.repriced({"h20": 2.4})
    extra_usd_per_s = sum(p.devices for p in h20) * (2.4 - 1.2) / 3600  # the file prices H20 at 1.20 USD/h
    assert sum(p.price_usd_per_s for p in dear.pools) - sum(p.price_usd_per_s for p in dep.pools) == \
        pytest.approx(extra_usd_per_s, rel=1e-12)
    assert dep.device_ids == ["h100-sxm", "h20"] and dear.device_ids == dep.device_ids


def test_plan_and_compare_refuse_an_out_folder_holding_other_files(tmp_path):
    """A report folder replaces an earlier report of its kind, never someone's files: a folder holding other
    files, an existing file or a missing parent is refused before any planning, and nothing is touched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (tmp_path / "a-file").write_text("x")
    plan = ["plan", "--model", "llama-3.1-8b", "--traffic", "chat", "--hardware", "h100-sxm", "--modes", "agg",
            "--max-devices", "2", "--requests", "60", "--workers", "1", "--verify-max", "1"]
    compare = ["compare", "dbrx-8xh100", "--traffic", "chat", "--requests", "60", "--workers", "1"]
    for cmd in (plan, compare):
        err = one_line_error(runner.invoke(app, [*cmd, "--out", str(mine)]))
        assert "notes.txt" in err and (mine / "notes.txt").read_text() == "mine"
        assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
        one_line_error(runner.invoke(app, [*cmd, "--out", str(tmp_path / "a-file")]))
        assert (tmp_path / "a-file").read_text() == "x"
        assert "does not exist" in one_line_error(runner.invoke(app, [*cmd, "--out", str(tmp_path / "no" / "x")]))
    assert "--bisect-steps" in one_line_error(runner.invoke(app, [*compare, "--bisect-steps", "-1"]))
    assert "--bisect-steps" in one_line_error(runner.invoke(app, [*compare, "--bisect-steps", "21"]))
    assert "--workers" in one_line_error(runner.invoke(app, [*compare, "--workers", "100000"]))
    out = tmp_path / "plan"
    assert runner.invoke(app, [*plan, "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, [*plan, "--out", str(out)]).exit_code == 0  # an earlier plan is replaced
    assert "plan.json" in {p.name for p in out.iterdir()}


ONE_H100 = {"schema_version": 1, "model": "llama-3.1-8b", "pools": [
    {"name": "node", "serves": ["prefill", "decode"], "hardware": "h100-sxm", "devices": 1,
     "attention": {"tp": 1, "precision": "fp8"}, "max_seqs": 64}]}
SMALL = ["--traffic", str(DATA / "plan-small-traffic.yaml"), "--requests", "60", "--bisect-steps", "0",
         "--workers", "1"]


def _earlier_report(folder: Path, recommended: bool) -> None:
    """A folder laid out as an earlier report (file names only; the contents do not matter to the refusals)."""
    (folder / "figures").mkdir(parents=True)
    for name in ("plan.json", "report.md", "report.html", "figures/pareto.png", "figures/cost_per_pool.png"):
        (folder / name).write_text("earlier")
    if recommended:
        (folder / "recommended.yaml").write_text(yaml.safe_dump(ONE_H100))


def test_a_report_folder_with_a_user_file_in_figures_is_refused(tmp_path):
    """--out replaces figures/ whole: a file of the user's inside it (not one the report writes) is refused like one
    at the top, naming --out and the file, and nothing is touched."""
    dep = tmp_path / "one.yaml"
    dep.write_text(yaml.safe_dump(ONE_H100))
    out = tmp_path / "report"
    _earlier_report(out, recommended=False)
    (out / "figures" / "mine.png").write_text("mine")
    err = one_line_error(runner.invoke(app, ["compare", str(dep), *SMALL, "--out", str(out)]))
    assert "--out" in err and "figures/mine.png" in err
    assert (out / "figures" / "mine.png").read_text() == "mine" and (out / "plan.json").read_text() == "earlier"


def test_compare_never_replaces_a_plans_recommended_yaml(tmp_path):
    """compare writes no recommended.yaml, so a folder holding one (an earlier plan's) is refused, and an input that
    lies inside --out is named as such; the earlier plan stays whole."""
    dep = tmp_path / "one.yaml"
    dep.write_text(yaml.safe_dump(ONE_H100))
    plan = tmp_path / "plan"
    _earlier_report(plan, recommended=True)
    rec = plan / "recommended.yaml"
    err = one_line_error(runner.invoke(app, ["compare", str(rec), str(dep), *SMALL, "--out", str(plan)]))
    assert "--out" in err and "deployment" in err and str(rec) in err
    err = one_line_error(runner.invoke(app, ["compare", str(dep), *SMALL, "--out", str(plan)]))
    assert "--out" in err and "recommended.yaml" in err
    assert yaml.safe_load(rec.read_text()) == ONE_H100 and (plan / "plan.json").read_text() == "earlier"


@pytest.mark.parametrize("edit,where", [
    (lambda d: d.setdefault("slo", {}).update(ttft="0 s"), "slo.ttft"),
    (lambda d: d.setdefault("slo", {}).update(tpot="0 ms"), "slo.tpot"),
    (lambda d: d.setdefault("slo", {}).update(percentile=0), "slo.percentile"),
    (lambda d: d["arrivals"].update(ramp_up="2 s"), "arrivals.ramp_up"),
    (lambda d: d["arrivals"].update(concurrency=8), "arrivals.concurrency"),
    (lambda d: d.update(arrivals={"process": "closed", "concurrency": 8, "rate_per_s": 5}), "arrivals.rate_per_s"),
])
def test_traffic_file_nonsense_is_refused_with_its_key(tmp_path, edit, where):
    doc = yaml.safe_load((DATA.parents[1] / "workloads" / "traffic" / "chat.yaml").read_text())
    assert doc["arrivals"]["process"] == "poisson"
    edit(doc)
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(doc))
    err = one_line_error(runner.invoke(app, ["simulate", "dbrx-8xh100", "--traffic", str(p), "--requests", "20"]))
    assert f"t.yaml: {where}:" in err


@pytest.mark.parametrize("edit,where", [
    (lambda a: a["attention"].update(head_dim=0), "architecture.attention.head_dim"),
    (lambda a: a["attention"].update(num_kv_heads=5), "architecture.attention.num_kv_heads"),
    (lambda a: a.update(ffn_intermediate=0), "architecture.ffn_intermediate"),
])
def test_impossible_model_specs_are_refused(tmp_path, edit, where):
    doc = yaml.safe_load((DATA.parents[1] / "workloads" / "models" / "llama-3.1-8b.yaml").read_text())
    edit(doc["architecture"])
    p = tmp_path / "llama-3.1-8b.yaml"
    p.write_text(yaml.safe_dump(doc))
    err = one_line_error(runner.invoke(app, [*WHATIF[:2], str(p), *WHATIF[3:]]))
    assert where in err


def test_model_import_without_attention_heads_is_refused(tmp_path):
    err = one_line_error(runner.invoke(app, ["model", "import", str(_hf(tmp_path, num_attention_heads=0)), "--id", "x",
                                             "--out", str(tmp_path / "x.yaml")]))
    assert "num_attention_heads" in err and not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("key,value,expected", [("num_hidden_layers", 0, "expected an integer >= 1"),
                                                ("max_position_embeddings", -5, "expected a non-negative integer")])
def test_model_import_names_the_config_key(tmp_path, key, value, expected):
    """An imported config.json's bad value is named by the file and its own key (not the spec's field name, nor a
    temporary file)."""
    cfg = _hf(tmp_path, **{key: value})
    err = one_line_error(runner.invoke(app, ["model", "import", str(cfg), "--id", "x"]))
    assert err.startswith(f"error: {cfg}: {key}: {expected}")


@pytest.mark.parametrize("key,value", [("domain_size", 0), ("domain_size", 2.5)])
def test_hardware_counts_are_whole_and_positive(h100_yaml, write_hw, key, value):
    from simulator.errors import SpecError
    from simulator.specs.hardware import read_hardware

    h100_yaml["scale_up"][key]["value"] = value
    with pytest.raises(SpecError, match=f"scale_up.{key}.value: expected a whole number >= 1"):
        read_hardware(write_hw(h100_yaml))


def _deployment(tmp_path, name, edit):
    doc = yaml.safe_load((DATA.parents[1] / "workloads" / "deployments" / f"{name}.yaml").read_text())
    edit(doc)
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("name,edit,where", [
    ("dbrx-8xh100", lambda d: d["pools"][0].setdefault("ffn", {}).update(tp=4), "pools[0].ffn.tp"),
    ("doubao-class-afd", lambda d: d["pools"][1]["ffn"].update(tp=3), "pools[1].ffn.tp"),
    ("dbrx-8xh100", lambda d: d["pools"][0].update(micro_batches=4), "pools[0].micro_batches"),
    ("doubao-class-afd", lambda d: d["pools"][1].update(micro_batches=1_000_000), "pools[1].micro_batches"),
    ("dbrx-h100-prefill-h20-decode", lambda d: d["pools"][1].update(price_per_device_hour="0 USD/h"),
     "pools[1].price_per_device_hour"),
    ("dbrx-h100-prefill-h20-decode", lambda d: d["pools"][1].update(hardware="nosuch"), "pools[1].hardware"),
    ("dbrx-h100-prefill-h20-decode", lambda d: d["pools"][1].update(hardware=["h20"]), "pools[1].hardware"),
    # a path spelled with ./ is still the deployment's reference to report (not the missing file alone)
    ("dbrx-h100-prefill-h20-decode", lambda d: d["pools"][1].update(hardware="./nowhere/h20.yaml"),
     "pools[1].hardware"),
    ("dbrx-8xh100", lambda d: d.update(model="nosuch"), "model"),
])
def test_deployment_nonsense_is_refused_at_its_key(tmp_path, name, edit, where):
    p = _deployment(tmp_path, name, edit)
    err = one_line_error(runner.invoke(app, ["simulate", str(p), "--traffic", "chat", "--requests", "10"]))
    assert f"d.yaml: {where}:" in err


def test_kernel_measurements_refuse_infinite_times_and_fractional_shapes(tmp_path):
    src = (DATA.parents[1] / "reports" / "validation" / "h200-sxm" / "full.csv").read_text().splitlines()[:3]
    head = src[0].split(",")
    for col, value, why in (("latency_us", "inf", "finite"), ("m", "1.5", "whole number"),
                            ("hardware", "nosuch", "nosuch: no hardware profile")):
        row = src[2].split(",")
        row[head.index(col)] = value
        p = tmp_path / "m.csv"
        p.write_text("\n".join([src[0], src[1], ",".join(row)]) + "\n")
        err = one_line_error(runner.invoke(app, ["validate", "--measurements", str(p)]))
        assert "line 3" in err and col in err and why in err, err


def test_sweep_deployment_refuses_the_grid_flags_it_cannot_use():
    base = ["sweep", "--deployment", "dbrx-8xh100", "--tpot-slo", "50ms"]
    assert runner.invoke(app, base).exit_code == 0
    err = one_line_error(runner.invoke(app, [*base, "--rate", "5", "--batches", "1,2"]))
    assert "--batches, --rate with --deployment" in err


def test_plan_percentile_is_below_100_and_names_its_source(tmp_path):
    doc = yaml.safe_load((DATA.parents[1] / "workloads" / "traffic" / "chat.yaml").read_text())
    doc.setdefault("slo", {})["percentile"] = 100
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(doc))
    plan = ["plan", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--out", str(tmp_path / "o")]
    assert "t.yaml: slo.percentile" in one_line_error(runner.invoke(app, [*plan, "--traffic", str(p)]))
    assert "--slo-percentile" in one_line_error(runner.invoke(app, [*plan, "--traffic", "chat",
                                                                     "--slo-percentile", "100"]))


def test_lists_refuse_empty_entries_and_negative_durations_read_as_such():
    err = one_line_error(runner.invoke(app, ["sweep", "--model", "dbrx", "--hardware", "h100-sxm,,h20"]))
    assert "--hardware" in err and "empty entry" in err
    err = one_line_error(runner.invoke(app, [*QUICK, "--tpot-slo", "-5ms"]))
    assert "expected a duration > 0" in err


def test_model_import_flags_an_unknown_family(tmp_path):
    p = _hf(tmp_path, model_type="foo", architectures=["FooForCausalLM"])
    r = runner.invoke(app, ["model", "import", str(p), "--id", "foo"])
    assert r.exit_code == 0
    assert "model_type 'foo' is not a family" in yaml.safe_load(r.stdout.split("\n", 1)[1])["notes"]
    r = runner.invoke(app, ["model", "import", str(_hf(tmp_path)), "--id", "bar"])
    assert r.exit_code == 0 and "not a family" not in r.stdout


def test_out_refuses_the_current_folder_and_ramp_up_needs_a_closed_loop(tmp_path, monkeypatch):
    out = tmp_path / "sim"
    assert runner.invoke(app, [*QUICK, "--out", str(out), "--no-plots"]).exit_code == 0
    monkeypatch.chdir(out)
    err = one_line_error(runner.invoke(app, [*QUICK, "--out", ".", "--no-plots"]))
    assert "current folder" in err
    assert "--ramp-up" in one_line_error(runner.invoke(app, [*QUICK, "--ramp-up", "2s"]))


def test_a_trace_replays_at_most_its_rows():
    err = one_line_error(runner.invoke(app, ["simulate", "dbrx-8xh100", "--traffic", "trace-replay",
                                             "--requests", "100000"]))
    assert "--requests 100000" in err and "rows" in err


@pytest.mark.parametrize("key,value,words", [
    # the sustained clock is a fraction of the datasheet's in (0, 1]: above 1 would compute faster than the peak,
    # 0 never finishes
    ("sustained_clock_fraction", 1.5, "efficiency.sustained_clock_fraction.value: expected a fraction in (0, 1]"),
    ("sustained_clock_fraction", 0, "efficiency.sustained_clock_fraction.value: expected a fraction in (0, 1]"),
    # load can only slow a kernel from its benchmarked speed, and 0 never finishes
    ("served_compute_fraction", 1.2, "efficiency.served_compute_fraction.value: expected a fraction in (0, 1]"),
    ("served_compute_fraction", 0, "efficiency.served_compute_fraction.value: expected a fraction in (0, 1]"),
    ("served_compute_fraction", -0.2, "efficiency.served_compute_fraction.value: expected a fraction in (0, 1]"),
    # a reserve the size of the device leaves nothing to run in
    ("memory_reserve", "200 GiB", "efficiency.memory_reserve: expected less than the memory capacity"),
])
def test_efficiency_nonsense_is_refused_at_its_key(tmp_path, key, value, words):
    doc = yaml.safe_load((DATA.parents[1] / "hardware" / "h200-sxm.yaml").read_text())
    doc["efficiency"][key]["value"] = value
    folder = tmp_path / "hw"
    folder.mkdir()
    p = folder / "h200-sxm.yaml"
    p.write_text(yaml.safe_dump(doc))
    err = one_line_error(runner.invoke(app, ["whatif", "--model", "llama-3.1-8b", "--hardware", str(p),
                                             "--devices", "1"]))
    assert words in err


def test_calibrate_never_writes_over_a_hardware_profile(tmp_path):
    """--out may replace an earlier overlay, never another file (a hardware profile given by mistake)."""
    profile = tmp_path / "h200-sxm.yaml"
    text = (DATA.parents[1] / "hardware" / "h200-sxm.yaml").read_text()
    profile.write_text(text)
    full = str(DATA.parents[1] / "reports" / "validation" / "h200-sxm" / "full.csv")
    err = one_line_error(runner.invoke(app, ["calibrate", "--measurements", full, "--hardware", "h200-sxm",
                                             "--out", str(profile)]))
    assert "--out" in err and "not a calibration overlay" in err and profile.read_text() == text
    overlay = tmp_path / "cal.yaml"
    for _ in range(2):  # an overlay it wrote may be written again
        r = runner.invoke(app, ["calibrate", "--measurements", full, "--hardware", "h200-sxm", "--out", str(overlay)])
        assert r.exit_code == 0, r.output


def test_sweep_scores_one_device_named_twice_once():
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--hardware", "H100,h100-sxm", "--precision", "bf16",
                            "--batches", "8", "--devices", "1", "--json"])
    assert r.exit_code == 0, r.output
    import json

    front = json.loads(r.stdout)["front"]
    assert {x["hardware"] for x in front} == {"h100-sxm"} and len(front) == 1


def test_a_profile_given_as_a_file_is_that_file_in_sweep_validate_and_calibrate(tmp_path):
    """A hardware profile outside the catalogue (or an edited copy of one) given by path is read from that file:
    sweep scores it, and measurement rows naming the file are predicted with it, not with the catalogue's profile
    of the same id."""
    doc = yaml.safe_load((DATA.parents[1] / "hardware" / "h100-sxm.yaml").read_text())
    doc["id"] = "my-gpu"
    custom = tmp_path / "my-gpu.yaml"
    custom.write_text(yaml.safe_dump(doc))
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--hardware", str(custom), "--devices", "1",
                            "--batches", "8", "--precision", "bf16", "--json"])
    assert r.exit_code == 0, r.output
    import json

    assert {x["hardware"] for x in json.loads(r.stdout)["front"]} == {str(custom)}  # (labelled by its file)
    # an edited copy of h100-sxm at a tenth of the memory bandwidth: its rows read slower than the catalogue's
    doc = yaml.safe_load((DATA.parents[1] / "hardware" / "h100-sxm.yaml").read_text())
    doc["memory"]["bandwidth"]["value"] = "335 GB/s"
    (tmp_path / "x").mkdir()
    edited = tmp_path / "x" / "h100-sxm.yaml"
    edited.write_text(yaml.safe_dump(doc))
    rows = "op,hardware,dtype,kv_dtype,m,n,k,batch,q_len,kv_len,num_heads,num_kv_heads,head_dim,tokens,hidden," \
           "intermediate,num_experts,top_k,bytes,world,latency_us\n"
    for hw in ("h100-sxm", str(edited)):
        rows += f"gemm,{hw},bf16,,1,8192,8192,,,,,,,,,,,,,,100\n"
    m = tmp_path / "m.csv"
    m.write_text(rows)
    r = runner.invoke(app, ["validate", "--measurements", str(m), "--out", str(tmp_path / "p.csv"), "--no-lodo"])
    assert r.exit_code == 0, r.output
    import pandas as pd

    pred = pd.read_csv(tmp_path / "p.csv")
    assert pred.predicted_us.iloc[1] > 5 * pred.predicted_us.iloc[0]
    # the catalogue's profile and an edited copy of it are two devices in a sweep, each labelled as given
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--hardware", f"h100-sxm,{edited}", "--devices", "1",
                            "--batches", "8", "--precision", "bf16", "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 0, r.output
    sw = pd.read_csv(tmp_path / "s.csv").set_index("hardware")
    assert sw.loc[str(edited), "tpot_s"] > 5 * sw.loc["h100-sxm", "tpot_s"]
    # rows naming the file are that device for --hardware (however the path is spelled) and for calibrate
    full = pd.read_csv(DATA.parents[1] / "reports" / "validation" / "h200-sxm" / "full.csv", dtype=str,
                       keep_default_na=False)
    (tmp_path / "h2").mkdir()
    h200 = tmp_path / "h2" / "h200-sxm.yaml"
    h200.write_text((DATA.parents[1] / "hardware" / "h200-sxm.yaml").read_text())
    rows = tmp_path / "rows.csv"
    full.assign(hardware=str(h200)).to_csv(rows, index=False)
    spelled = str(tmp_path / "h2" / ".." / "h2" / "h200-sxm.yaml")
    assert runner.invoke(app, ["validate", "--measurements", str(rows), "--hardware", spelled]).exit_code == 0
    r = runner.invoke(app, ["calibrate", "--measurements", str(rows), "--hardware", str(h200), "--out",
                            str(tmp_path / "cal.yaml")])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("cmd", [
    ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--requests", "50"],
    ["plan", "--model", "llama-3.1-8b", "--traffic", "chat", "--hardware", "h100-sxm"],
    ["compare", "dbrx-8xh100", "--traffic", "chat"],
])
def test_a_rate_below_the_floor_is_refused_not_computed(cmd, tmp_path):
    """--rate 1e-300 spaced arrivals 1e300 s apart, past float seconds' resolution (every latency read 0)."""
    if cmd[0] == "plan":
        cmd = [*cmd, "--out", str(tmp_path / "p")]
    err = one_line_error(runner.invoke(app, [*cmd, "--rate", "1e-300"]))
    assert "--rate" in err and "at least 1e-6/s" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("rate", ["1e-300", "0", "-1", "'1e-7/s'"])
def test_a_traffic_file_rate_below_the_floor_is_refused_at_its_key(tmp_path, rate):
    t = tmp_path / "t.yaml"
    t.write_text(f"schema_version: 1\narrivals: {{process: poisson, rate_per_s: {rate}}}\nrequests: 10\n"
                 "prompt_tokens: {dist: fixed, value: 10}\noutput_tokens: {dist: fixed, value: 10}\n")
    err = one_line_error(runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1",
                                             "--traffic", str(t)]))
    # one range, stated once (no ">= 0" for a negative rate when 0 is refused too)
    assert "arrivals.rate_per_s: expected a rate of at least 1e-6/s" in err and ">= 0" not in err


def test_a_trace_arrival_past_the_ceiling_is_refused_by_line(tmp_path):
    (tmp_path / "tr.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1e300,100,10\n")
    t = tmp_path / "t.yaml"
    t.write_text("schema_version: 1\narrivals: {process: trace, file: tr.csv}\n")
    err = one_line_error(runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1",
                                             "--traffic", str(t)]))
    assert "tr.csv: line 3, column arrival_s" in err and "[0, 1e9] seconds" in err


def test_demo_refuses_an_out_folder_holding_other_files(tmp_path):
    """As simulate, plan and compare do: the demo never writes beside (or over) files it did not write."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "roofline.png").mkdir()  # a folder where the demo writes a file
    (mine / "notes.txt").write_text("mine")
    err = one_line_error(runner.invoke(app, ["demo", "--out", str(mine)]))
    assert err.startswith(f"error: --out {mine}") and "notes.txt" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "roofline.png"]
    assert (mine / "notes.txt").read_text() == "mine" and not list(tmp_path.glob(".quadrant-*"))


@pytest.mark.parametrize("content,words", [
    ("", "lens.txt: holds no token counts"),  # (numpy's loadtxt printed a UserWarning before the error)
    ("# lengths\n\n100\nabc\n", "lens.txt, line 4: expected one whole number of tokens in [1, 1,000,000,000] per "
                                 "line, got 'abc'"),
    ("100\n1.5\n", "lens.txt, line 2: expected one whole number"),  # as a trace refuses 100.5 tokens
    ("100\n0\n", "lens.txt, line 2: expected one whole number of tokens in [1, "),
    ("100\n2e9\n", "lens.txt, line 2: expected one whole number of tokens in [1, "),  # beyond any context window
])
def test_an_empirical_lengths_file_is_checked_by_its_own_line_numbers(tmp_path, content, words):
    (tmp_path / "lens.txt").write_text(content)
    t = tmp_path / "t.yaml"
    t.write_text("schema_version: 1\narrivals: {process: poisson, rate_per_s: 2}\nrequests: 10\n"
                 "prompt_tokens: {dist: empirical, file: lens.txt}\noutput_tokens: {dist: fixed, value: 10}\n")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be printed (with a source line) before the error
        r = runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1",
                                "--traffic", str(t)])
    err = one_line_error(r)
    assert "prompt_tokens.file: " in err and words in err


def test_a_rejection_reason_carries_a_real_token_count_not_N():
    """Reasons are grouped by kind without each request's own count, and the group keeps its largest one."""
    import pandas as pd

    from simulator.serving.metrics import _reasons_by_kind

    r = runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--requests", "3",
                            "--rate", "1", "--isl", "200000", "--osl", "10"])
    assert r.exit_code == 1
    assert "3 x prompt + output = 200010 tokens exceed the model's context window of 131072" in r.stderr
    window = "exceed the model's context window of 131072"
    got = _reasons_by_kind(pd.Series([f"prompt + output = 200010 tokens {window}",
                                      f"prompt + output = 300000 tokens {window}",
                                      "needs 5120 KV tokens, replica a holds 4096"]))
    assert got == {f"prompt + output = up to 300000 tokens {window}": 2,
                   "needs 5120 KV tokens, replica a holds 4096": 1}


@pytest.mark.parametrize("bandwidth", ["-1 GB/s", "0 GB/s"])
def test_a_kv_transfer_bandwidth_states_its_one_range(tmp_path, bandwidth):
    doc = yaml.safe_load((DATA.parents[1] / "workloads" / "deployments" / "dbrx-h100-prefill-h20-decode.yaml")
                         .read_text())
    doc["kv_transfer"]["bandwidth"] = bandwidth
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump(doc))
    err = one_line_error(runner.invoke(app, ["simulate", str(p), "--traffic", "chat", "--requests", "5"]))
    assert f"kv_transfer.bandwidth: expected a bandwidth > 0 such as '3.35 TB/s', got '{bandwidth}'" in err


@pytest.mark.parametrize("value", ["-1s", "0"])
def test_plan_slo_flags_state_their_one_range(tmp_path, value):
    err = one_line_error(runner.invoke(app, ["plan", "--model", "llama-3.1-8b", "--traffic", "chat", "--hardware",
                                             "h100-sxm", "--out", str(tmp_path / "p"), "--ttft-slo", value]))
    assert f"--ttft-slo: expected a duration > 0, got '{value}'" in err and "non-negative" not in err


@pytest.mark.parametrize("args,flag", [
    (["sweep", "--model", "llama-3.1-8b", "--batches", "1,,2"], "--batches"),
    (["sweep", "--model", "llama-3.1-8b", "--batches", "1,2,"], "--batches"),
    (["plan", "--model", "llama-3.1-8b", "--traffic", "chat", "--hardware", "h100-sxm", "--precisions",
      "bf16/bf16,,fp8/fp8"], "--precisions"),
    (["plan", "--model", "llama-3.1-8b", "--traffic", "chat", "--hardware", "h100-sxm", "--precisions", "fp8/"],
     "--precisions"),
    (["sweep", "--model", "llama-3.1-8b", "--precision", "bf16,,fp8"], "--precision"),
])
def test_every_comma_list_flag_refuses_an_empty_entry(tmp_path, args, flag):
    if args[0] == "plan":
        args = [*args, "--out", str(tmp_path / "p")]
    err = one_line_error(runner.invoke(app, args))
    assert flag in err and "an empty entry" in err
    assert not list(tmp_path.iterdir())


def test_a_timing_spec_refuses_an_empty_file_entry(tmp_path):
    from simulator.errors import SimulatorError
    from simulator.timing.calibrated import parse_timing_spec

    with pytest.raises(SimulatorError, match="--timing"):
        parse_timing_spec("calibrated:a.yaml,,b.yaml")


def test_an_slo_percentile_without_an_slo_is_refused_not_ignored():
    quick = ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--requests", "20", "--rate", "2"]
    err = one_line_error(runner.invoke(app, [*quick, "--slo-percentile", "95"]))
    assert err.startswith("error: --slo-percentile: qualifies an SLO") and "--ttft-slo" in err
    for extra in (["--tpot-slo", "50ms"], ["--traffic", "chat"]):  # an SLO by flag, or the traffic file's
        r = runner.invoke(app, [*quick, "--slo-percentile", "95", *extra, "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["goodput"]["slo"]["percentile"] == 95
