import json

import pytest
import yaml
from typer.testing import CliRunner

from simulator.cli import app

from .conftest import DATA, one_line_error

runner = CliRunner()
BASE = ["whatif", "--model", "dbrx", "--hardware", "h100-sxm", "--devices", "8", "--batch", "64", "--isl", "2048",
        "--osl", "512"]


def test_whatif_table():
    r = runner.invoke(app, BASE)
    assert r.exit_code == 0, r.output
    for word in ("prefill_attention", "prefill_ffn", "decode_attention", "decode_ffn", "TTFT", "TPOT",
                 "cost per 1M output tokens", "headroom"):
        assert word in r.output


def test_whatif_json_contract():
    r = runner.invoke(app, [*BASE, "--json", "--tp", "8", "--pp", "1", "--ep", "1", "--precision", "fp8",
                            "--kv-precision", "fp8"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in ("ttft_s", "tpot_s", "output_tokens_per_s", "fits", "quadrants"):
        assert key in d
    assert d["fits"] is True
    assert set(d["quadrants"]) == {"prefill_attention", "prefill_ffn", "decode_attention", "decode_ffn"}
    for v in d["quadrants"].values():
        assert v["time_s"] > 0 and v["bound"] in ("compute", "memory", "communication", "overhead")


def test_whatif_plot(tmp_path):
    out = tmp_path / "roofline.png"
    r = runner.invoke(app, [*BASE, "--plot", str(out)])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_plan_that_does_not_fit_exits_nonzero_with_one_line():
    r = runner.invoke(app, ["whatif", "--model", "llama-3.1-405b", "--hardware", "h100-sxm", "--devices", "8",
                            "--precision", "bf16", "--batch", "8"])
    assert r.exit_code == 1
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "does not fit" in err[0] and "short by" in err[0]


def test_bad_flag_value_is_one_line_error():
    r = runner.invoke(app, [*BASE, "--precision", "fp7"])
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error:") and "fp7" in r.stderr and "Traceback" not in r.stderr


def test_bad_deployment_yaml_names_file_and_key(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump({"schema_version": 1, "model": "dbrx",
                                 "pools": [{"name": "a", "serves": ["prefill", "decode"], "hardware": "h100-sxm",
                                            "devices": 8, "atention": {"tp": 8}}]}))
    r = runner.invoke(app, ["whatif", "--deployment", str(p)])
    assert r.exit_code == 2
    assert str(p) in r.stderr and "pools[0].atention" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", [["hw", "list", "--json"], ["model", "list", "--json"]])
def test_list_json_has_ids(cmd):
    r = runner.invoke(app, cmd)
    assert r.exit_code == 0
    items = json.loads(r.output)
    assert isinstance(items, list) and all("id" in i for i in items)


def test_hw_and_model_show():
    r = runner.invoke(app, ["hw", "show", "h100-sxm"])
    assert r.exit_code == 0
    doc = yaml.safe_load(r.output)  # plain YAML: it parses, with no anchors or aliases
    assert doc["peak_flop_per_s"]["bf16"] == pytest.approx(989.4e12, rel=1e-3)
    assert not any(ln.lstrip().startswith(("&", "*")) or " &id" in ln or " *id" in ln for ln in r.output.splitlines())
    r = runner.invoke(app, ["model", "show", "deepseek-v3", "--json"])
    assert json.loads(r.output)["derived"]["total_params"] > 670e9


def test_model_import_roundtrip(tmp_path):
    out = tmp_path / "my-mixtral.yaml"
    r = runner.invoke(app, ["model", "import", str(DATA / "hf" / "mixtral.json"), "--id", "my-mixtral",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["whatif", "--model", str(out), "--devices", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["model"] == "my-mixtral"


def test_debug_shows_traceback():
    r = runner.invoke(app, ["--debug", *BASE, "--precision", "fp7"])
    assert r.exit_code == 2 and "Traceback" in r.stderr


@pytest.mark.parametrize("args", [["whatif", "--model", "nosuch", "--debug"], ["hw", "show", "nosuch", "--debug"]])
def test_debug_is_taken_after_the_command_too(args):
    """`quadrant whatif ... --debug` read "No such option: --debug" (the flag is the root command's)."""
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "Traceback" in r.stderr and "No such option" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_simulate_quick_json_contract():
    r = runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1",
                            "--tp", "1", "--precision", "bf16", "--kv-precision", "fp8", "--rate", "4", "--isl", "512",
                            "--osl", "64", "--requests", "100", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in ("requests_completed", "requests_rejected", "input_tokens_per_s", "output_tokens_per_s",
                "cost_usd_per_mtok"):
        assert key in d
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(d[key]) >= {"mean", "p50", "p90", "p99"}
    assert d["requests_completed"] == 100


def test_simulate_deployment_with_traffic_and_outputs(tmp_path):
    r = runner.invoke(app, ["simulate", "dbrx-8xh100", "--traffic", "chat", "--requests", "50",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "TTFT" in r.output and "goodput" in r.output
    for f in ("requests.csv", "steps.csv", "latency_cdf.png", "timeseries.png", "timeline.png"):
        assert (tmp_path / f).stat().st_size > 0


def test_simulate_needs_rate_or_concurrency():
    r = runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1"])
    assert r.exit_code == 2 and "--rate" in r.stderr


def test_help_paragraphs_wrap_to_the_terminal_not_the_source():
    # a docstring's source line breaks inside a paragraph are joined; examples and list items keep their own lines
    from simulator.cli._common import reflow_help
    text = ("First line\nof a paragraph.\n\n- one\n- two\n  continued\n\n"
            "Examples:\n\n  quadrant a --x 1\n  --y 2\n  quadrant b")
    assert reflow_help(text) == ("First line of a paragraph.\n\n- one\n- two continued\n\nExamples:\n\n"
                                 "quadrant a --x 1 --y 2\nquadrant b")
    r = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    # (a phrase across a source line break of the docstring)
    assert "its per-step overheads and its own kernels (one-shot all-reduce; vLLM's fused MoE), with the" in r.output


def test_roofline_places_the_moe_expert_gemms_and_attention(tmp_path, monkeypatch):
    """The roofline plots every compute op, not only plain GEMMs: for DBRX the routed experts' grouped GEMMs
    (most of its FFN time) and the decode attention core are placed and named, and the title says the batch."""
    import matplotlib.axes

    named, titles = [], []
    real_annotate, real_title = matplotlib.axes.Axes.annotate, matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate",
                        lambda self, text, *a, **k: named.append(text) or real_annotate(self, text, *a, **k))
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, text, *a, **k: titles.append(text) or real_title(self, text, *a, **k))
    r = runner.invoke(app, ["whatif", "--model", "dbrx", "--devices", "8", "--batch", "64", "--isl", "2048",
                            "--osl", "512", "--plot", str(tmp_path / "roofline.png")])
    assert r.exit_code == 0, r.output
    assert any("experts_gate_up" in n for n in named) and any("attn_core_decode" in n for n in named)
    assert any("batch 64" in t for t in titles)


def test_every_option_of_every_command_says_what_it_does():
    """The help reads like a manual: no option is listed without a description."""
    import typer.main

    def missing(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from missing(sub, [*path, name])
            return
        for p in cmd.params:
            if p.param_type_name == "option" and not p.help and "--help" not in p.opts:
                yield f"{' '.join(path)} {'/'.join(p.opts)}"

    assert list(missing(typer.main.get_command(app), ["quadrant"])) == []


def test_every_flag_shows_whole_in_an_80_column_terminal():
    """At 80 columns each command's help prints every flag name in full: Rich squeezes a panel's flag column
    to an ellipsis when the panel's other columns need the width (why `simulate` groups its options into panels
    and gives its long engine flags short metavars)."""
    import typer.main

    def commands(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from commands(sub, [*path, name])
        else:
            yield path, cmd

    for path, cmd in commands(typer.main.get_command(app), []):
        r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert r.exit_code == 0, (path, r.output)
        assert max(len(line) for line in r.output.splitlines()) <= 80, path
        for p in cmd.params:
            for flag in [*p.opts, *p.secondary_opts]:
                if flag.startswith("--"):
                    assert flag in r.output, f"quadrant {' '.join(path)}: {flag} is cut short in its help"

@pytest.mark.parametrize("args,words", [
    # a stage holds at least one layer: 64 stages of a 32-layer model are refused, not scored faster
    (["--model", "llama-3.1-8b", "--devices", "64", "--pp", "64", "--tp", "1", "--chunk", "64"],
     ["pp=64", "32 layers"]),
    # a measured table and an overlay as two flags: one would be dropped silently
    (["--model", "llama-3.1-8b", "--hardware", "h200-sxm", "--devices", "1",
      "--timing", "measured:reports/validation/published/kernels.csv",
      "--calibration", "reports/validation/h200-sxm/calibration.yaml"], ["--calibration", "--timing", "join them"]),
    (["--deployment", "workloads/deployments/dbrx-8xh100.yaml", "--precision", "bogus"], ["--precision", "bogus"]),
])
def test_whatif_refuses_what_it_would_otherwise_score_wrongly(args, words):
    line = one_line_error(runner.invoke(app, ["whatif", *args]))
    for w in words:
        assert w in line, line


def test_whatif_on_a_deployment_takes_the_engines_precision_spellings():
    """--precision FP8 (the engines' spelling) over a deployment file, as without one."""
    base = ["whatif", "--deployment", "workloads/deployments/dbrx-8xh100.yaml", "--batch", "8", "--json"]
    a, b = (runner.invoke(app, [*base, "--precision", p]) for p in ("FP8", "fp8"))
    assert a.exit_code == 0 and b.exit_code == 0, a.output
    assert json.loads(a.stdout)["tpot_s"] == json.loads(b.stdout)["tpot_s"]


def test_outputs_are_checked_writable_before_any_work(tmp_path):
    """A later output that cannot be written is refused when the flags are read, so the earlier ones are not
    left behind (here a folder that takes no new files: /proc)."""
    import os

    if not os.path.isdir("/proc"):
        pytest.skip("no /proc")
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--out", str(tmp_path / "s.csv"), "--plot",
                            "/proc/x.png"])
    assert r.exit_code == 2 and "cannot write into folder '/proc'" in r.output
    r = runner.invoke(app, ["simulate", "--model", "llama-3.1-8b", "--devices", "1", "--tp", "1", "--rate", "4",
                            "--requests", "20", "--out", str(tmp_path / "sim"), "--trace", "/proc/t.json"])
    assert r.exit_code == 2 and "'--trace'" in r.output
    assert list(tmp_path.iterdir()) == []


def test_pool_layout_flags_need_a_split():
    for flag in ("--prefill-tp", "--prefill-pp", "--decode-tp", "--decode-ep"):
        r = runner.invoke(app, ["whatif", "--model", "llama-3.1-8b", "--devices", "8", flag, "2"])
        assert r.exit_code == 2 and f"{flag}: a prefill or decode pool's own layout" in r.output
    r = runner.invoke(app, ["whatif", "--model", "llama-3.1-8b", "--devices", "8", "--expert-tp", "2"])
    assert r.exit_code == 2 and "--expert-tp: llama-3.1-8b is dense" in r.output
    r = runner.invoke(app, ["whatif", "--model", "llama-3.1-70b", "--prefill-devices", "4", "--decode-devices", "4",
                            "--prefill-tp", "2", "--prefill-pp", "2", "--json"])
    assert r.exit_code == 0, r.output


def test_speculative_flags_take_either_spelling():
    """whatif and simulate take the draft flags under both names (--spec-draft / --spec-tokens, --spec-accept /
    --spec-acceptance), with the same result."""
    base = ["whatif", "--model", "dbrx", "--devices", "8", "--json"]
    a = runner.invoke(app, base + ["--spec-draft", "2", "--spec-accept", "0.8"])
    b = runner.invoke(app, base + ["--spec-tokens", "2", "--spec-acceptance", "0.8"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert json.loads(a.output)["tpot_s"] == json.loads(b.output)["tpot_s"]


def test_the_writability_probe_follows_a_symlinked_output(tmp_path):
    """An output path that is a symlink is written through the link, so its target's folder is the one probed."""
    import os

    if not os.path.isdir("/proc"):
        pytest.skip("no /proc")
    (tmp_path / "bad.csv").symlink_to("/proc/t.csv")
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--out", str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "cannot write into folder '/proc'" in r.output
    (tmp_path / "sub").mkdir()
    (tmp_path / "good.csv").symlink_to(tmp_path / "sub" / "target.csv")
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--out",
                            str(tmp_path / "good.csv")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "sub" / "target.csv").is_file()


def test_the_cli_and_the_core_share_their_bounds():
    from simulator import build
    from simulator.cli import _params
    from simulator.specs import traffic

    assert _params.MAX_DRAFT_TOKENS == build.MAX_DRAFT_TOKENS and _params.MAX_REQUESTS == traffic.MAX_REQUESTS


@pytest.mark.parametrize("command", ["simulate", "sweep", "plan"])
@pytest.mark.parametrize("given, refused", [("50", True), ("1.5", True), ("50ms", False), ("0.05", False),
                                            ("2s", False)])
def test_a_bare_tpot_slo_above_a_second_is_refused(command, given, refused, tmp_path):
    # a bare number is seconds, so "--tpot-slo 50" would be a 50 s TPOT target: all but surely meant as 50 ms, and
    # refused (as the traffic YAML refuses any bare number) rather than planned for; a bare fraction of a second and
    # a number with its unit (even 2 s) are taken as given
    args = {"simulate": ["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--tp", "1",
                         "--rate", "4", "--isl", "256", "--osl", "16", "--requests", "20", "--json"],
            "sweep": ["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--devices", "1", "--json"],
            "plan": ["--model", "llama-3.1-8b", "--traffic", "chat", "--hardware", "h100-sxm", "--max-devices", "1",
                     "--verify-max", "1", "--bisect-steps", "0", "--requests", "50", "--workers", "1",
                     "--out", str(tmp_path / "plan"), "--json"]}[command]
    r = runner.invoke(app, [command, *args, "--tpot-slo", given])
    if refused:
        line = one_line_error(r)
        assert "--tpot-slo" in line and f"{given}ms" in line and f"{given}s" in line, line
    else:
        assert r.exit_code in (0, 1), r.output  # (plan and sweep may find no fleet for a 50 ms target: exit 1)
        assert "no unit" not in r.output
