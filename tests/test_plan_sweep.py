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
    """The largest batch under the target that the deployment can run: one more sequence breaks the target or
    memory, or is past the decode pool's max_seqs (the P/D file caps its H20 decode pool at 256, which still meets
    30 ms there)."""
    for dep, cap in (("doubao-class-afd", None), ("dbrx-h100-prefill-h20-decode", 256)):
        d = _batch(dep, "30ms")
        assert {"batch", "tpot_s", "tpot_served_s", "decode_tokens_per_s_per_device"} <= set(d)
        assert d["tpot_served_s"] <= 0.030
        plan = read_deployment(resolve_workload(dep, "deployments", "deployment")).serving_plan()
        nxt = whatif(plan, batch=d["batch"] + 1, isl=1024, osl=256)
        if cap is None:
            assert nxt.tpot_served_s > 0.030 or not nxt.fits  # one more sequence breaks the target (or memory)
            assert d["limited_by"] in ("tpot", "memory")
        else:
            assert d["batch"] == cap and nxt.fits and nxt.tpot_served_s <= 0.030
            assert d["limited_by"] == "max_batch" and d["limit_note"] == f"the decode pool's max_seqs ({cap})"
        assert d["decode_tokens_per_s_per_device"] > 0


def test_the_largest_batch_holds_the_tpot_a_colocated_pool_serves():
    """A colocated pool also prefills: in the throughput's cycle (osl - 1 decode steps and the batch's prefills)
    a request's TTFT and its osl - 1 gaps span the cycle, so the TPOT it sees is the step plus the other prefills
    over its gaps. The largest batch is held to that TPOT, as ``sweep --model`` holds its rows: DBRX on 8 H100s
    under 30 ms stops where that gap reaches 30 ms, well below the 256 sequences whose bare step (~22 ms) passed.
    On a P/D deployment the decode pool prefills nothing and the two TPOTs agree."""
    import pytest

    plan = read_deployment(resolve_workload("dbrx-8xh100", "deployments", "deployment")).serving_plan()
    d = _batch("dbrx-8xh100", "30ms")
    r = whatif(plan, batch=d["batch"], isl=1024, osl=256)
    cycle = d["batch"] * 256 / r.output_tokens_per_s
    assert r.ttft_s + 255 * r.tpot_served_s == pytest.approx(cycle, rel=1e-9)
    assert d["tpot_served_s"] <= 0.030 < whatif(plan, batch=d["batch"] + 1, isl=1024, osl=256).tpot_served_s
    assert d["limited_by"] == "tpot" and d["tpot_s"] < 0.8 * d["tpot_served_s"]
    assert whatif(plan, batch=256, isl=1024, osl=256).tpot_s <= 0.030  # (what the bare step let through)
    pd_ = _batch("dbrx-h100-prefill-h20-decode", "30ms")
    assert pd_["tpot_served_s"] == pd_["tpot_s"]


def test_the_largest_batch_search_reaches_a_cap_that_is_not_a_power_of_two():
    """Doubling from 1 probes 1, 2, 4, ... and then the cap itself: a cap of 200 with a loose target answers 200
    (before, the doubling stopped at 128); a cap of 1 answers 1 without a second probe."""
    from simulator.planning.sweep import largest_batch_under_tpot

    plan = read_deployment(resolve_workload("dbrx-8xh100", "deployments", "deployment")).serving_plan()
    assert largest_batch_under_tpot(plan, 1.0, isl=1024, osl=256, max_batch=200)["batch"] == 200
    one = largest_batch_under_tpot(plan, 1.0, isl=1024, osl=256, max_batch=1)
    assert one["batch"] == 1 and one["limited_by"] == "max_batch"


def test_the_sweep_tpot_is_what_a_request_sees_in_the_throughput_cycle():
    """The sweep's throughput runs a batch through a cycle of osl - 1 decode steps and its batch / dp prefill
    steps; a request's TTFT plus its osl - 1 TPOT gaps (the served TPOT) span that cycle, so --tpot-slo holds the
    gap that throughput implies, not one bare decode step (which passed 48 of 864 DBRX configurations whose
    cycle gave each sequence a token every 70-123 ms under a 50 ms target)."""
    import pytest

    from simulator.planning.sweep import sweep

    isl, osl = 2048, 512
    df = sweep("dbrx", ["h20"], 8, isl=isl, osl=osl, precisions=["bf16", "fp8"])
    full = df[df.batch >= df.dp]  # (fewer sequences than DP ranks: a request still waits out its own whole prefill)
    cycle = full.batch * osl / full.output_tokens_per_s
    assert len(full) > 200
    assert (full.ttft_s + (osl - 1) * full.tpot_served_s).to_numpy() == pytest.approx(cycle.to_numpy(), rel=1e-9)
    assert (df.tpot_served_s >= df.tpot_s).all() and (df.tpot_served_s > 2 * df.tpot_s).any()
    r = runner.invoke(app, ["sweep", "--model", "dbrx", "--hardware", "h20", "--devices", "8", "--tpot-slo", "50ms",
                            "--json"])
    front = _strict(r.output)["front"]
    assert front and all(row["tpot_served_s"] <= 0.050 for row in front)


def test_with_a_rate_the_sweep_names_the_cheapest_fleet_even_off_the_front():
    """The front ranks throughput per device, which a dearer device leads; at --rate the cheapest fleet meeting the
    SLOs is named whether or not it is on the front, and no configuration that fits and meets them costs less."""
    from simulator.commands import run_sweep

    df, front = run_sweep("dbrx", "h100-sxm,h200-sxm,h20", 8, 2048, 512, "bf16,fp8", "bf16",
                          "1,2,4,8,16,32,64,128,256", 0.05, None, 20.0, None, ["h20=0.30"])
    cheap = df.attrs["cheapest"]
    ok = df[df.fits & (df.tpot_served_s <= 0.05)]
    assert len(ok) == df.attrs["meet_slos"] and cheap["fleet_usd_per_hour"] == ok.fleet_usd_per_hour.min()
    assert cheap["hardware"] == "h20" and set(front.hardware) == {"h200-sxm"}
    from simulator.report.render import sweep_text

    text = sweep_text(df, front)
    assert "cheapest fleet at --rate (off the front" in text and "$7.20/h" in text


def test_the_cheapest_fleet_leaves_out_unpriced_devices_and_json_carries_it():
    """A device without a price has no fleet cost to rank: the cheapest fleet is the cheapest priced one, the
    unpriced configurations are counted (an H20 profile carries no sourced price), and with none priced the answer
    is n/a, never $nan. --json carries the counts and the cheapest fleet as the text gives them."""
    base = ["sweep", "--model", "llama-3.1-8b", "--devices", "1", "--isl", "512", "--osl", "128", "--batches",
            "8,64", "--tpot-slo", "50ms", "--rate", "20"]
    mixed = _strict(runner.invoke(app, [*base, "--hardware", "h100-sxm,h20", "--json"]).output)
    assert mixed["cheapest"]["hardware"] == "h100-sxm" and mixed["unpriced"] > 0
    assert mixed["configurations"] >= mixed["fit"] >= mixed["meet_slos"] > mixed["unpriced"]
    alone = runner.invoke(app, [*base, "--hardware", "h20"])
    assert alone.exit_code == 0 and "cheapest fleet at --rate: n/a" in alone.output and "nan" not in alone.output
    assert _strict(runner.invoke(app, [*base, "--hardware", "h20", "--json"]).output)["cheapest"] is None
    priced = _strict(runner.invoke(app, [*base, "--hardware", "h20", "--price", "h20=1.2", "--json"]).output)
    assert priced["cheapest"]["hardware"] == "h20" and priced["unpriced"] == 0


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
