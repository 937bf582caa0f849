"""The published fused-MoE kernel set (reports/validation/published/engine-moe/) and its check.

The set backs a claim in ``serving/engines.yaml``: vLLM's ``moe_memory_fraction`` is a serving-level figure, not the
engines' kernel bandwidth, because their own fused-MoE benchmarks run at about the device profile's rate. These
tests hold the data to its README (every row cited, whole batches, positive times, one format) and the claim to
the data, loosely: a device profile change that moved it would have to rewrite the yaml's source too."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "reports/validation/published/engine-moe/fused-moe-kernels.csv"


def _script():
    spec = importlib.util.spec_from_file_location("engine_kernels", ROOT / "reports/scripts/engine_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_published_row_is_cited_and_well_formed():
    d = pd.read_csv(DATA)
    assert d["id"].is_unique
    assert d["url"].str.match(r"https://github\.com/(vllm-project/vllm|sgl-project/sglang)/(pull|issues)/\d+$").all()
    assert (d["url"].str.extract(r"/(\d+)$")[0].astype(int) == d["pr"]).all()  # the id's PR is the cited one
    assert (d["kernel_us"] > 0).all() and np.isfinite(d["kernel_us"]).all()
    assert (d["m"] >= 1).all() and (d["m"] == d["m"].round()).all()
    assert d["dtype"].isin(["fp8_w8a8", "bf16"]).all()
    assert d["what_is_timed"].notna().all()


def test_the_engines_fp8_moe_kernels_run_near_the_device_profile_rate_at_decode_sizes():
    """At M <= 512 tokens the device profile alone times the published FP8 fused-MoE kernels within a third of
    their time at the median, and vLLM's moe_memory_fraction puts them well above it: what the yaml's source says."""
    from simulator.serving.profiles import engine_profile
    from simulator.timing.engine_moe import EngineMoEKernels
    from simulator.timing.roofline import RooflineModel

    mod = _script()
    df, d = mod.contract_rows(pd.read_csv(DATA))
    fp8 = (df["dtype"] == "fp8").to_numpy() & (d["m"] <= 512).to_numpy()
    assert fp8.sum() >= 50
    sub = df[fp8].reset_index(drop=True)
    device = np.median(mod.times_us(sub, RooflineModel()) / sub["latency_us"])
    vllm = np.median(mod.times_us(sub, EngineMoEKernels(RooflineModel(), dict(engine_profile("vllm")
                                                                              .moe_memory_fraction)))
                     / sub["latency_us"])
    assert 0.75 < device < 1.33
    assert vllm > 1.4 * device


# -- block-scaled FP8 GEMMs (timing.engine_gemm, engines.yaml block_fp8_gemm_factor) ------------------------------

GEMMS = ROOT / "reports/validation/published/engine-gemm/block-fp8-gemms.csv"


def _gemm_table(ms, devices, dtype="fp8", w_bytes=1.0, served=False):
    """One FP8 GEMM (N 7168, K 16384) vectorised over configurations: token count ``ms[i]`` on device profile
    ``devices[i]``."""
    from simulator.ops.kinds import GEMM, OpTableBuilder
    from simulator.specs.catalog import load_hardware

    b = OpTableBuilder(n=len(ms))
    specs = {d: load_hardware(d) for d in dict.fromkeys(devices)}
    hw = np.array([b.device(specs[d]) for d in devices], dtype=float)
    b.add("o_proj", "prefill_attention", GEMM, hw=hw, dtype=dtype, m=np.asarray(ms, dtype=float), n=7168.0,
          k=16384.0, w_bytes=w_bytes, a_bytes=1.0 if dtype == "fp8" else 2.0, o_bytes=2.0)
    return b.finish(served=served)


def test_block_fp8_gemms_slow_compute_bound_gemms_on_the_measured_devices_only():
    """Over a table vectorised across devices and batch sizes: a prefill-sized FP8 GEMM on a Hopper profile takes
    close to the factor x the device profile's time, a decode-sized one (memory-bound) and any GEMM on a device the
    factor was not measured on (B200) keep theirs, as do BF16 and W4A8 GEMMs; and each configuration gets what it
    gets alone (no mixing across the vectorised axis)."""
    from simulator.timing.engine_gemm import EngineBlockFp8Gemms
    from simulator.timing.roofline import RooflineModel

    ms, devs = [1, 16384, 16384, 1, 16384], ["h100-sxm", "h100-sxm", "b200-sxm", "h200-sxm", "h200-sxm"]
    roof, eng = RooflineModel(), EngineBlockFp8Gemms(RooflineModel(), 1.9, ("h100-sxm", "h200-sxm"))
    base, got = roof.evaluate(_gemm_table(ms, devs)).time_s[0], eng.evaluate(_gemm_table(ms, devs)).time_s[0]
    ratio = got / base
    assert 1.7 < ratio[1] <= 1.9 and 1.7 < ratio[4] <= 1.9  # prefill on Hopper: the factor, less the fixed floor
    assert ratio[0] == ratio[2] == ratio[3] == 1.0  # decode-sized; and B200, not measured
    for i in range(len(ms)):
        assert eng.evaluate(_gemm_table([ms[i]], [devs[i]])).time_s[0, 0] == pytest.approx(got[i], rel=1e-12)
    for kw in ({"dtype": "bf16", "w_bytes": 2.0}, {"dtype": "fp8", "w_bytes": 0.5}):  # other kernels
        t = _gemm_table([16384], ["h100-sxm"], **kw)
        assert eng.evaluate(t).time_s[0, 0] == roof.evaluate(t).time_s[0, 0]
    with pytest.raises(ValueError, match="factor >= 1"):
        EngineBlockFp8Gemms(roof, 0.5, ("h100-sxm",))


def test_block_fp8_factor_counts_from_the_benchmark_clock_not_the_served_one():
    """The factor is read off kernel benchmarks, which run at the sustained clock: a served step, which the device
    profile already slows by its served fraction, takes factor x the benchmark-basis time, not factor x its own."""
    from simulator.specs.catalog import load_hardware
    from simulator.timing.engine_gemm import EngineBlockFp8Gemms
    from simulator.timing.roofline import RooflineModel

    served = load_hardware("h100-sxm").efficiency.served_compute_fraction
    assert served is not None and served < 1.0  # (the premise)
    eng = EngineBlockFp8Gemms(RooflineModel(), 1.9, ("h100-sxm",))
    bench = eng.evaluate(_gemm_table([16384], ["h100-sxm"])).time_s[0, 0]
    step = eng.evaluate(_gemm_table([16384], ["h100-sxm"], served=True)).time_s[0, 0]
    assert step == pytest.approx(bench, rel=1e-9)


def test_the_block_fp8_rows_are_cited_and_the_profiles_factor_is_their_median():
    """Every row carries its pull request and, where it was published as a rate, the formula it was converted by;
    vLLM's factor in engines.yaml is the median the report script computes from them (to its rounding)."""
    from simulator.serving.profiles import engine_profile

    d = pd.read_csv(GEMMS)
    assert d["id"].is_unique
    assert d["url"].str.match(r"https://github\.com/(vllm-project/vllm|sgl-project/sglang)/pull/\d+$").all()
    rate = d["derived"].str.extract(r"/ ([0-9.]+) TFLOP/s")[0].astype(float)
    conv = rate.notna()
    assert conv.sum() == 8
    c = d[conv]
    assert np.allclose(c["latency_us"], 2 * c.m * c.n * c.k / (rate[conv] * 1e12) * 1e6, atol=0.06)
    factor, _ = _script().block_fp8_factor(d)
    assert abs(engine_profile("vllm").block_fp8_gemm_factor - factor) < 0.05


def test_vllm_applies_its_block_fp8_kernels_to_a_release_before_deepgemm_only():
    """A DeepSeek-V3 FP8 prefill step under vLLM 0.8.4 is slower than with the device profile's GEMMs; under 0.11.0
    (DeepGEMM by default) or with no release named (the current one) it is not, nor is a decode step, a per-tensor
    FP8 model (Llama), SGLang, or a device the factor was not measured on (B200)."""
    from simulator.build import PlanOptions, plan_from_options
    from simulator.serving.profiles import engine_profile, engine_timing
    from simulator.serving.stepcost import AnalyticStepCost

    def step(model="deepseek-v3", engine="vllm", version="0.8.4", decode=False, hardware="h200-sxm") -> float:
        sp = plan_from_options(PlanOptions(model=model, hardware=hardware, devices=8, tp=8, precision="fp8"))
        cost = AnalyticStepCost(sp.model, sp.prefill, engine_timing(None, engine_profile(engine), sp.model, version))
        return (cost.cost(0, 0, 0, 32, 1, 32 * 2048) if decode else cost.cost(1, 8192, 0, 0, 1, 0)).time_s

    current = step(version=None)
    assert step() > 1.05 * current
    assert step(version="0.11.0") == step(version="1.0") == current
    assert step(decode=True) == pytest.approx(step(decode=True, version=None), rel=0.01)
    for kw in ({"model": "llama-3.1-70b"}, {"engine": "sglang"}, {"hardware": "b200-sxm"}):
        assert step(**kw) == step(**kw, version=None)


@pytest.mark.parametrize("value,words", [
    (0.1, "expected a release number such as '0.8.4' or '1.2.0rc1', got 0.1 (YAML reads 0.10 as the number 0.1"),
    ("latest", "expected a release number such as '0.8.4'"),
])
def test_a_pools_engine_version_is_a_quoted_release(tmp_path, value, words):
    """``engine_version: 0.10`` in YAML is the number 0.1: refused with the hint to quote it, as is a word; a
    quoted release is read and reaches the run's summary and its text."""
    import yaml
    from typer.testing import CliRunner

    from simulator.cli import app

    doc = yaml.safe_load((ROOT / "workloads/deployments/dbrx-8xh100.yaml").read_text())
    doc["pools"][0]["engine_version"] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(app, ["simulate", str(bad), "--concurrency", "2", "--isl", "64", "--osl", "8",
                                 "--requests", "4"])
    assert r.exit_code != 0 and "engine_version" in r.output and words in r.output, r.output
    doc["pools"][0]["engine_version"] = "0.8.4"
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(app, ["simulate", str(good), "--concurrency", "2", "--isl", "64", "--osl", "8",
                                 "--requests", "4", "--json"])
    assert r.exit_code == 0, r.output
    summary = __import__("json").loads(r.output)
    assert summary["engine_versions"] == {doc["pools"][0]["name"]: "0.8.4"}
    r = CliRunner().invoke(app, ["simulate", str(good), "--concurrency", "2", "--isl", "64", "--osl", "8",
                                 "--requests", "4", "--engine-version", "v0.x"])
    assert r.exit_code != 0 and "--engine-version: expected a release number" in r.output


def test_a_block_fp8_entry_without_its_scope_or_below_one_is_refused(monkeypatch):
    from simulator.errors import SpecError
    from simulator.serving import profiles

    good = dict(profiles._table()["vllm"]["block_fp8_gemm_factor"])
    for bad, words in (({**good, "value": 0.5}, "block_fp8_gemm_factor.value: expected a factor >= 1"),
                       ({k: v for k, v in good.items() if k != "hardware"}, "block_fp8_gemm_factor: expected {"),
                       ({**good, "before_version": "soon"},
                        "block_fp8_gemm_factor.before_version: expected a release")):
        table = {k: dict(v) for k, v in profiles._table().items()}
        table["vllm"]["block_fp8_gemm_factor"] = bad
        monkeypatch.setattr(profiles, "_table", lambda t=table: t)
        with pytest.raises(SpecError) as exc:
            profiles.engine_profile("vllm")
        assert f"engines.vllm.{words}" in str(exc.value)


def test_the_catalogue_marks_the_block_scaled_fp8_releases_and_import_writes_the_flag(tmp_path):
    """DeepSeek-V3 and the Qwen3 FP8 releases are block-scaled, Llama's FP8 releases are not; an imported config
    with 2-D weight blocks writes the flag into the spec, which reads back with it."""
    import json

    from typer.testing import CliRunner

    from simulator.cli import app
    from simulator.specs.catalog import load_model
    from simulator.specs.model import read_model

    assert {m: load_model(m).fp8_block_scaled for m in ("deepseek-v3", "qwen3-235b-a22b", "qwen3-32b",
                                                         "llama-3.1-70b")} == \
        {"deepseek-v3": True, "qwen3-235b-a22b": True, "qwen3-32b": True, "llama-3.1-70b": False}
    cfg = json.loads((ROOT / "tests/data/hf/deepseek_v3.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "dsv3.yaml"
    res = CliRunner().invoke(app, ["model", "import", str(tmp_path / "config.json"), "--id", "dsv3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "fp8_block_scaled: true" in out.read_text() and read_model(out).fp8_block_scaled


def test_which_release_each_pool_serves():
    """The run's --engine-version wins for every pool whose engine has release-dependent constants; a pool's own
    release holds unless --engine switches the pool to another engine; the flag over engines without such constants
    is refused rather than carried as a label."""
    from dataclasses import replace

    from simulator.build import PlanOptions, quick_deployment
    from simulator.errors import SimulatorError
    from simulator.serving.profiles import engine_release, pool_release
    from simulator.serving.runner import simulate
    from simulator.specs.traffic import simple_traffic

    dep = quick_deployment(PlanOptions(model="qwen3-30b-a3b", hardware="h100-sxm", devices=1, precision="fp8"),
                           engine_version="0.10.2")
    pool = dep.pools[0]
    assert pool_release(pool, None, None) == "0.10.2" and pool_release(pool, "vllm", None) == "0.10.2"
    assert pool_release(pool, None, "0.17.0") == "0.17.0"
    assert pool_release(pool, "sglang", None) is None and pool_release(pool, "sglang", "0.8.4") is None
    assert pool_release(replace(pool, engine_version=None), None, None) is None
    t = simple_traffic(rate=None, concurrency=2, isl=2048, osl=8, requests=4, seed=0)
    with pytest.raises(SimulatorError, match="--engine-version 0.8.4: names a release of vllm"):
        simulate(dep, t, engine="sglang", engine_version="0.8.4")
    with pytest.raises(SimulatorError, match="this pool runs sglang"):
        replace(pool, engine="sglang")
    for bad in ("0.8.4\n", "\u0663.\u0664", "0.8.4 "):  # a trailing newline, Arabic-Indic digits, a space
        with pytest.raises(SimulatorError, match="expected a release number"):
            engine_release(bad, "engine_version")
    assert engine_release("0.11.0rc1", "x") == engine_release("0.11.0.dev12+gabc", "x") == (0, 11, 0)


def test_a_deployment_whose_pools_name_different_releases_round_trips(tmp_path):
    """A prefill pool at the current release and a decode pool at vLLM 0.8.4: the vLLM-format result records the
    decode pool's release beside its engine (no flag overrode either), and `validate --serving` re-runs the file as
    written, each pool at its own release, reproducing its own TTFT (it used to re-run both at 0.8.4)."""
    import json

    import yaml
    from typer.testing import CliRunner

    from simulator.cli import app

    pool = {"hardware": "h100-sxm", "devices": 1, "attention": {"tp": 1, "precision": "fp8"}}
    doc = {"schema_version": 1, "model": "qwen3-30b-a3b",
           "pools": [{"name": "pre", "serves": ["prefill"], **pool},
                     {"name": "dec", "serves": ["decode"], "engine_version": "0.8.4", **pool}]}
    path = tmp_path / "pd.yaml"
    path.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    r = runner.invoke(app, ["simulate", str(path), "--concurrency", "4", "--isl", "4096", "--osl", "16",
                            "--requests", "16", "--json", "--format", "vllm"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["engine_version"] == "0.8.4" and "engine_version_override" not in d
    run = tmp_path / "run.json"
    run.write_text(r.stdout)
    row = json.loads(runner.invoke(app, ["validate", "--serving", str(run), "--json"]).stdout)["rows"][0]
    assert row["ttft_s_simulated"] == pytest.approx(row["ttft_s_measured"], rel=1e-9)
    doc["pools"][1]["engine"] = "sglang"
    path.write_text(yaml.safe_dump(doc))
    r = runner.invoke(app, ["simulate", str(path), "--concurrency", "4", "--isl", "64", "--osl", "8"])
    assert r.exit_code != 0 and "pools[1].engine_version: a release matters for vllm only" in r.output, r.output
