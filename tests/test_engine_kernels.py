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

def _gemm_ops(m: float, dtype: str = "fp8", w_bytes: float = 1.0):
    from simulator.ops.kinds import GEMM, OpTableBuilder
    from simulator.specs.catalog import load_hardware

    b = OpTableBuilder(n=1)
    hw = b.device(load_hardware("h100-sxm"))
    b.add("o_proj", "prefill_attention", GEMM, hw=hw, dtype=dtype, m=m, n=7168.0, k=16384.0, w_bytes=w_bytes,
          a_bytes=min(w_bytes, 2.0) if dtype != "fp8" else 1.0, o_bytes=2.0)
    return b.finish()


def test_block_fp8_gemms_take_the_factor_on_compute_and_keep_memory_bound_times():
    """A compute-bound FP8 GEMM (prefill) takes factor x its compute time on top of its floor; a decode-sized one
    (memory-bound) and a BF16 or W4A8 one (other kernels) keep the wrapped model's time."""
    from simulator.timing.engine_gemm import EngineBlockFp8Gemms
    from simulator.timing.roofline import RooflineModel

    roof, eng = RooflineModel(), EngineBlockFp8Gemms(RooflineModel(), 1.8)
    big = roof.evaluate(_gemm_ops(8192.0))
    assert big.compute_s[0, 0] > big.memory_s[0, 0]  # (the premise: compute binds)
    got = eng.evaluate(_gemm_ops(8192.0)).time_s[0, 0]
    assert got == pytest.approx(big.overhead_s[0, 0] + 1.8 * big.compute_s[0, 0], rel=1e-12)
    for ops in (_gemm_ops(1.0), _gemm_ops(8192.0, "bf16", 2.0), _gemm_ops(8192.0, "fp8", 0.5)):
        assert eng.evaluate(ops).time_s[0, 0] == roof.evaluate(ops).time_s[0, 0]
    with pytest.raises(ValueError, match="factor >= 1"):
        EngineBlockFp8Gemms(roof, 0.5)


def test_vllm_times_a_block_scaled_fp8_models_prefill_with_its_block_fp8_kernels_only():
    """Under vLLM a DeepSeek-V3 FP8 prefill step is slower than with the device profile's GEMMs, its decode step is
    not (memory-bound), and neither a per-tensor FP8 model (Llama) nor an engine without the factor (SGLang) moves."""
    from dataclasses import replace

    from simulator.build import PlanOptions, plan_from_options
    from simulator.serving.profiles import engine_profile, engine_timing
    from simulator.serving.stepcost import AnalyticStepCost

    def step(model: str, engine: str, factor: float | None, decode: bool) -> float:
        sp = plan_from_options(PlanOptions(model=model, hardware="h200-sxm", devices=8, tp=8, precision="fp8"))
        p = engine_profile(engine)
        if factor is not None:
            p = replace(p, block_fp8_gemm_factor=factor)
        cost = AnalyticStepCost(sp.model, sp.prefill, engine_timing(None, p, sp.model))
        return (cost.cost(0, 0, 0, 32, 1, 32 * 2048) if decode else cost.cost(1, 8192, 0, 0, 1, 0)).time_s

    assert engine_profile("vllm").block_fp8_gemm_factor > 1.0 and engine_profile("sglang").block_fp8_gemm_factor == 1
    assert step("deepseek-v3", "vllm", None, False) > 1.05 * step("deepseek-v3", "vllm", 1.0, False)
    assert step("deepseek-v3", "vllm", None, True) == pytest.approx(step("deepseek-v3", "vllm", 1.0, True), rel=0.01)
    assert step("llama-3.1-70b", "vllm", None, False) == step("llama-3.1-70b", "vllm", 1.0, False)
    assert step("deepseek-v3", "sglang", None, False) == step("deepseek-v3", "sglang", 1.0, False)


def test_a_block_fp8_factor_below_one_or_without_a_source_is_refused(monkeypatch):
    from simulator.errors import SpecError
    from simulator.serving import profiles

    for bad, words in (({"value": 0.5, "source": "x"}, "block_fp8_gemm_factor.value: expected a factor >= 1"),
                       ({"value": 1.8}, "block_fp8_gemm_factor: expected {value: ..., source: ...}")):
        table = {k: dict(v) for k, v in profiles._table().items()}
        table["vllm"]["block_fp8_gemm_factor"] = bad
        monkeypatch.setattr(profiles, "_table", lambda t=table: t)
        with pytest.raises(SpecError, match=words.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
            profiles.engine_profile("vllm")


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
