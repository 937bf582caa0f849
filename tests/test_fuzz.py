"""Fuzz every command's options with bad values: each must end with exit 2 (or 1 where a plan is infeasible)
and one line on stderr that starts with ``error:``, never a traceback or a hang. The options are discovered
from the command tree, so a new option is fuzzed without editing this file."""

import json

import pytest
import typer
import typer.testing
from typer.testing import CliRunner

from simulator.cli import app

runner = CliRunner()

BAD = ["-1", "nan", "", "abc", "/nonexistent-folder/x.png"]  # 0, inf, 1e999: tests/test_hardening_props.py
# Options whose value is free text or an override that the base command does not use: any value may pass.
FREE = {("model", "import", "--source"), ("simulate", "--out"), ("demo", "--out"),
        ("model", "import", "--id"), ("validate", "--model"), ("validate", "--precision"),
        ("validate", "--kv-precision"), ("validate", "--hardware")}
# Values that are legitimately valid for an option (e.g. a seed of 0, no warm-up, no speculative drafts).
VALID = {("--seed", "0"), ("--warmup", "0"), ("--spec-draft", "0"), ("--spec-accept", "0"),
         ("--spec-draft-cost", "0")}


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_temp_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an output path like "abc" is a valid name: keep it out of the checkout
    command = typer.main.get_command(app)  # build the click tree once per test, not once per invocation
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command, raising=False)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    r = runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--isl", "64",
                            "--osl", "4", "--requests", "3", "--rate", "2", "--json", "--format", "vllm"])
    assert r.exit_code == 0, r.output
    vllm = tmp / "run.json"
    vllm.write_text(r.stdout)
    meas = tmp / "m.csv"
    meas.write_text("op,hardware,dtype,m,n,k,latency_us\n" + "".join(
        f"gemm,h100-sxm,bf16,{m},4096,4096,{10 + m / 10}\n" for m in (1, 8, 64, 512, 4096, 8192)))
    return {
        ("whatif",): ["whatif", "--model", "llama-3.1-8b", "--devices", "1", "--batch", "4", "--isl", "128",
                      "--osl", "16"],
        ("simulate",): ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--isl", "64",
                        "--osl", "4", "--requests", "3", "--rate", "2", "--no-plots"],
        ("sweep",): ["sweep", "--model", "llama-3.1-8b", "--devices", "1", "--batches", "1", "--precision", "bf16"],
        ("validate",): ["validate", "--serving", str(vllm), "--requests", "3"],
        ("calibrate",): ["calibrate", "--measurements", str(meas), "--hardware", "h100-sxm",
                         "--out", str(tmp / "h100-sxm.cal.yaml")],
        ("bench", "run"): ["bench", "run", "--suite", "tiny", "--out", str(tmp / "b.csv")],
        ("hw", "list"): ["hw", "list"], ("hw", "show"): ["hw", "show", "h20"],
        ("model", "list"): ["model", "list"], ("model", "show"): ["model", "show", "llama-3.1-8b"],
        ("model", "import"): ["model", "import", str(ROOT / "tests/data/hf/llama.json"), "--id", "x"],
        ("demo",): None,  # runs for seconds; only its --out is fuzzed, with values that fail before the run
    }


def _commands():
    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*path, name))
        else:
            out.append((path, cmd))

    walk(root, ())
    return out


def _cases():
    cases = []
    for path, cmd in _commands():
        for p in cmd.params:
            if getattr(p, "is_flag", False) or p.param_type_name != "option" or p.name in ("help",):
                continue
            cases.append((path, max(p.opts, key=len)))
    return cases


def _run(bases, path, args):
    r = runner.invoke(app, args)
    if r.exit_code != 0:
        err = r.stderr.strip()
        assert "Traceback" not in r.output and "Traceback" not in err, (args, err)
        assert err.startswith("error:") and "\n" not in err, (args, r.stderr)
        assert r.exit_code in (1, 2), (args, r.exit_code, err)
    return r


def test_every_option_is_fuzzed():
    flags = set(_cases())
    assert {(("whatif",), "--spec-draft-cost"), (("simulate",), "--horizon"), (("sweep",), "--batches"),
            (("validate",), "--serving"), (("bench", "run"), "--reps")} <= flags


@pytest.mark.parametrize("path,flag", _cases(), ids=lambda x: x if isinstance(x, str) else "-".join(x))
def test_bad_option_values_end_in_one_line_errors(bases, path, flag):
    for value in BAD:
        _check(bases, path, flag, value)


def _check(bases, path, flag, value):
    base = bases.get(path)
    if base is None:
        if value in ("", "/nonexistent-folder/x.png"):  # demo: fails on the path before running
            r = _run(bases, path, [*path, flag, value])
            assert r.exit_code == 2
        return
    args = list(base)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    r = _run(bases, path, args)
    if (*path, flag) in FREE or (flag, value) in VALID:
        return
    if path == ("bench", "run") or value == "abc" and flag in ("--hardware", "--model", "--traffic"):
        assert r.exit_code == 2
        return
    assert r.exit_code != 0, (args, r.output[:300])


@pytest.mark.parametrize("args", [
    ["whatif", "--model", "llama-3.1-8b", "--devices"],  # missing value
    ["whatif", "--no-such-flag"],
    ["no-such-command"],
    ["hw", "show"],
    ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--rate", "1", "--concurrency", "2"],
    ["simulate", "--format", "csv", "--model", "llama-3.1-8b", "--rate", "1"],
    ["validate"],
])
def test_usage_errors_are_one_line(args):
    r = _run(None, None, args)
    assert r.exit_code == 2


def test_json_stays_strict_under_fuzzed_specs(tmp_path):
    from simulator.cli._common import dumps

    text = dumps({"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": {"d": None}}
