"""`quadrant sweep` extensions: --deployment with --tpot-slo, $/Mtok at the requested rate, strict JSON."""

import json

from typer.testing import CliRunner

from simulator.analysis.whatif import whatif
from simulator.cli import app
from simulator.specs.catalog import resolve_workload
from simulator.specs.deployment import read_deployment

runner = CliRunner()


def _strict(text):
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def _batch(dep, slo):
    r = runner.invoke(app, ["sweep", "--deployment", dep, "--tpot-slo", slo, "--isl", "1024", "--osl", "256", "--json"])
    assert r.exit_code == 0, r.output
    return _strict(r.output)


def test_largest_batch_under_tpot_is_the_largest():
    for dep in ("doubao-class-afd", "dbrx-h100-prefill-h20-decode"):
        d = _batch(dep, "30ms")
        assert {"batch", "tpot_s", "decode_tokens_per_s_per_device"} <= set(d)
        assert d["tpot_s"] <= 0.030
        plan = read_deployment(resolve_workload(dep, "deployments", "deployment")).serving_plan()
        nxt = whatif(plan, batch=d["batch"] + 1, isl=1024, osl=256)
        assert nxt.tpot_s > 0.030 or not nxt.fits  # one more sequence breaks the target (or memory)
        assert d["decode_tokens_per_s_per_device"] > 0


def test_tighter_tpot_never_allows_a_larger_batch():
    loose, tight = _batch("doubao-class-afd", "60ms"), _batch("doubao-class-afd", "20ms")
    assert tight["batch"] <= loose["batch"]


def test_sweep_json_is_strict_and_cost_follows_the_rate():
    base = ["sweep", "--model", "llama-3.1-8b", "--hardware", "h100-sxm,h20", "--devices", "1", "--isl", "512",
            "--osl", "128", "--batches", "8,64", "--json"]
    slow = _strict(runner.invoke(app, [*base, "--rate", "0.05"]).output)["front"]  # h20 has no price: null
    fast = _strict(runner.invoke(app, [*base, "--rate", "50/s"]).output)["front"]
    key = lambda d: {(r["hardware"], r["precision"], r["batch"]): r for r in d}  # noqa: E731
    s, f = key(slow), key(fast)
    for k, row in s.items():
        if row["cost_usd_per_mtok"] is None:
            assert k[0] == "h20"
            continue
        if k in f:  # a nearly idle fleet costs more per token than a busy one
            assert row["cost_usd_per_mtok"] >= f[k]["cost_usd_per_mtok"]


def test_deployment_needs_a_tpot_target():
    r = runner.invoke(app, ["sweep", "--deployment", "doubao-class-afd"])
    assert r.exit_code == 2 and "--tpot-slo" in r.stderr


def test_sweep_lists_only_launchable_layouts_and_refuses_over_long_requests():
    """DBRX has 48 query heads and 8 KV heads: on 6 devices TP 6 splits the query heads but neither splits nor
    replicates the KV heads evenly (nor does TP 3), which vLLM and SGLang refuse, so the sweep scores TP 1 and 2; whatif
    names the KV heads. A prompt over DBRX's 32,768-token context window is refused as whatif refuses it."""
    from simulator.planning.sweep import sweep

    df = sweep("dbrx", ["h100-sxm"], 6, isl=1024, osl=128, batches=(1,), precisions=("fp8",))
    assert sorted(set(df.tp)) == [1, 2]
    r = runner.invoke(app, ["whatif", "--model", "dbrx", "--devices", "6", "--tp", "6", "--precision", "fp8"])
    assert r.exit_code == 2 and "8 KV heads" in r.output
    r = runner.invoke(app, ["sweep", "--model", "dbrx", "--isl", "40000"])
    assert r.exit_code == 2 and "context window of 32768" in r.output and "Traceback" not in r.output
    # a --model beside a deployment file (which names its own) is a contradiction, not a silent choice
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--deployment", "dbrx-8xh100", "--tpot-slo", "50ms"])
    assert r.exit_code == 2 and "--model and --deployment" in r.output
    # a device or precision named twice is scored once
    one = sweep("dbrx", ["h100-sxm"], 8, isl=1024, osl=128, batches=(1,), precisions=("fp8",))
    r = runner.invoke(app, ["sweep", "--model", "dbrx", "--hardware", "h100-sxm,h100-sxm", "--precision", "fp8,fp8",
                            "--batches", "1", "--isl", "1024", "--osl", "128"])
    assert r.exit_code == 0 and f"{len(one)} configurations scored" in r.output


def test_sweep_csv_carries_the_fleet_at_the_rate_and_the_one_replica_cost(tmp_path):
    """With --rate every CSV row says what the screen prints: replicas, fleet $/h and $/1M output tokens at that
    rate, with one replica's cost at full throughput beside it under its own name; the fleet is paid for whole
    replicas, so it never costs less per token than one replica running full."""
    import pandas as pd

    csv = tmp_path / "sweep.csv"
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-8b", "--devices", "2", "--isl", "1024", "--osl", "256",
                            "--rate", "30", "--out", str(csv), "--json"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(csv)
    assert {"replicas", "fleet_usd_per_hour", "cost_usd_per_mtok_at_capacity", "cost_usd_per_mtok"} <= set(df)
    priced = df[df.usd_per_hour.notna()]
    assert len(priced) and (priced.cost_usd_per_mtok >= priced.cost_usd_per_mtok_at_capacity * (1 - 1e-12)).all()
    for row in _strict(r.output)["front"]:
        same = df[(df.hardware == row["hardware"]) & (df.precision == row["precision"]) & (df.tp == row["tp"])
                  & (df.ep == row["ep"]) & (df.batch == row["batch"])]
        assert same.cost_usd_per_mtok.iloc[0] == row["cost_usd_per_mtok"]


def test_every_sweep_row_is_what_whatif_says_of_that_plan():
    """The sweep scores many plans at once; each row's TTFT, TPOT, throughput and cost are whatif's for the same
    plan (one replica, pp 1), with attention DP too: every DP rank prefills its own prompt in the step, so a
    request's share of the prefill is the step over dp (before, the sweep gave dp > 1 a third of the throughput)."""
    import pytest

    from simulator.build import PlanOptions, plan_from_options
    from simulator.planning.sweep import sweep

    for model, batches in (("llama-3.1-8b", [64, 512]), ("qwen3-30b-a3b", [8, 256])):
        df = sweep(model, ["h100-sxm"], 8, isl=1024, osl=256, batches=batches, precisions=["bf16"])
        assert (df.dp > 1).any() and len(df) >= 6
        for r in df.itertuples():
            plan = plan_from_options(PlanOptions(model=model, hardware="h100-sxm", devices=8, tp=int(r.tp),
                                                 dp=int(r.dp), ep=int(r.ep), precision="bf16"))
            w = whatif(plan, batch=int(r.batch), isl=1024, osl=256)
            got = (r.ttft_s, r.tpot_s, r.output_tokens_per_s, r.cost_usd_per_mtok)
            assert got == pytest.approx((w.ttft_s, w.tpot_s, w.output_tokens_per_s, w.cost_usd_per_mtok), rel=1e-9), r


def test_a_sweep_with_nothing_feasible_names_its_closest_configuration():
    """As plan does when nothing meets the SLOs: the one error line names the closest configuration and what it
    misses by how much (the latency over its target, or the memory it is short of)."""
    base = ["sweep", "--model", "llama-3.1-8b", "--devices", "1", "--batches", "1,8", "--precision", "fp8"]
    r = runner.invoke(app, [*base, "--tpot-slo", "1ms", "--price", "2"])
    assert r.exit_code == 1, r.output
    line = r.stderr.strip()
    assert line.startswith("error: no configuration that fits meets the SLOs; closest: h100-sxm fp8, tp 1, ep 1, "
                           "batch 1 ($2.00/h) misses by TPOT "), line
    assert "vs 1.0 ms (+" in line and "TTFT" not in line and "\n" not in line
    r = runner.invoke(app, ["sweep", "--model", "llama-3.1-405b", "--devices", "1", "--batches", "1,8",
                            "--precision", "fp8"])
    assert r.exit_code == 1, r.output
    line = r.stderr.strip()
    assert line.startswith("error: no configuration fits in memory; closest: h100-sxm fp8, tp 1, ep 1, batch 1: "
                           "needs "), line
    assert "short by" in line and "weights" in line
