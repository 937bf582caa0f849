"""The published fused-MoE kernel set (reports/validation/published/engine-moe/) and its check.

The set backs a claim in ``serving/engines.yaml``: vLLM's ``moe_memory_fraction`` is a serving-level figure, not the
engines' kernel bandwidth, because their own fused-MoE benchmarks run at about the device profile's rate. These
tests hold the data to its README (every row cited, whole batches, positive times, one format) and the claim to
the data, loosely: a device profile change that moved it would have to rewrite the yaml's source too."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "reports/validation/published/engine-moe/fused-moe-kernels.csv"


def _script():
    spec = importlib.util.spec_from_file_location("engine_moe_kernels", ROOT / "reports/scripts/engine_moe_kernels.py")
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
