"""The TimingModel contract: every implementation (roofline, calibrated, measured) passes it.

Times are finite and non-negative, never below the pure roofline bound, grow with op size, an
empty table works, and evaluating many configurations at once equals evaluating them one by one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.ops.build import StepShape, build_ops
from simulator.ops.kinds import KINDS, OpTable
from simulator.plan import simple_phase
from simulator.specs.catalog import load_hardware, load_model
from simulator.timing.calibrated import CalibratedModel
from simulator.timing.measured import MeasuredModel
from simulator.timing.roofline import RooflineModel, pure_roofline_s
from simulator.validation.calibrate import _with_param, overlay_yaml
from simulator.validation.measurements import read_measurements

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "reports" / "validation" / "published" / "kernels.csv"


def _overlay(tmp_path_factory) -> Path:
    h100 = load_hardware("h100-sxm")
    eff = _with_param(h100.efficiency, "gemm", "compute_fraction", 0.6)
    eff = _with_param(eff, "attn_decode", "floor_s", 9e-6)
    cal = h100.with_efficiency(eff)
    report = {"fitted_classes": ["gemm", "attn_decode"], "train_rows": 0, "test_rows": 0, "test_fraction": 0.5,
              "seed": 0, "heldout_before": None, "heldout_after": None, "train_after": None, "notes": {}}
    path = tmp_path_factory.mktemp("overlay") / "h100.cal.yaml"
    path.write_text(overlay_yaml(cal, h100, report, "synthetic"))
    return path


@pytest.fixture(scope="module", params=["roofline", "calibrated", "measured"])
def model(request, tmp_path_factory):
    if request.param == "roofline":
        return RooflineModel()
    if request.param == "calibrated":
        return CalibratedModel([_overlay(tmp_path_factory)])
    return MeasuredModel(read_measurements(PUBLISHED), source=str(PUBLISHED))


def _ops(model_id="dbrx", hw="h100-sxm", devices=8, ep=8, n=1, **shape) -> OpTable:
    m = load_model(model_id)
    plan = simple_phase(load_hardware(hw), m, devices, ep=ep if m.moe else 1, precision="fp8")
    return build_ops(m, plan, StepShape(**shape), "mixed")


SCENARIOS = [
    dict(model_id="dbrx", prefill_seqs=1, prefill_len=2048, decode_seqs=np.array([1.0, 16, 128]), decode_kv=4096),
    dict(model_id="llama-3.1-70b", ep=1, decode_seqs=np.array([1.0, 64, 256]), decode_kv=np.array([512.0, 8192,
                                                                                                    32768])),
    dict(model_id="deepseek-v3", hw="h200-sxm", prefill_seqs=np.array([1.0, 2, 4]), prefill_len=1024,
         prefill_ctx=np.array([0.0, 4096, 16384])),
]


@pytest.mark.parametrize("scenario", range(len(SCENARIOS)))
def test_finite_non_negative_and_never_below_the_roofline(model, scenario):
    ops = _ops(**SCENARIOS[scenario])
    t = model.evaluate(ops)
    assert np.all(np.isfinite(t.time_s)) and np.all(t.time_s >= 0)
    assert np.all(t.time_s >= pure_roofline_s(ops) * (1 - 1e-9))
    parts = t.attributed()
    np.testing.assert_allclose(sum(parts.values()), t.time_s, rtol=1e-9, atol=1e-15)


def test_empty_table(model):
    ops = _ops(decode_seqs=4, decode_kv=100).select(np.zeros(1, dtype=int)[:0])
    t = model.evaluate(ops)
    assert t.time_s.shape == (0, 1)


@pytest.mark.parametrize("scenario", range(len(SCENARIOS)))
def test_vectorised_equals_one_by_one(model, scenario):
    ops = _ops(**SCENARIOS[scenario])
    whole = model.evaluate(ops).time_s
    for j in range(ops.n):
        one = OpTable(ops.names, ops.quadrant, ops.kind, {c: v[:, j:j + 1] for c, v in ops.arrays.items()}, 1,
                      ops.devices, served=ops.served)
        np.testing.assert_allclose(model.evaluate(one).time_s[:, 0], whole[:, j], rtol=1e-12, atol=0)


# the size dimension of each kind that must never make an op faster
GROW = {"gemm": "m", "grouped_gemm": "m", "attn_prefill": "kv_len", "attn_decode": "kv_len", "elementwise": "m",
        "all_reduce": "msg_bytes", "all_gather": "msg_bytes", "all_to_all": "m", "p2p": "msg_bytes"}


def test_time_is_monotone_in_size(model):
    """Growing each op's main size dimension over four octaves never makes it faster. The measured model
    interpolates measured points, whose noise may dip; it gets 5 % slack."""
    ops = _ops(model_id="dbrx", prefill_seqs=1, prefill_len=512, prefill_ctx=256, decode_seqs=8, decode_kv=1024)
    slack = 0.05 if model.name == "measured" else 1e-9
    factors = 2.0 ** np.arange(0, 4.01, 0.25)
    arrays = {c: np.repeat(v, len(factors), axis=1) for c, v in ops.arrays.items()}
    for i, kind in enumerate(ops.kind):
        col = GROW[KINDS[kind]]
        arrays[col][i] = ops.arrays[col][i, 0] * factors
        if KINDS[kind] == "attn_prefill":  # keys grow with the chunk
            arrays["q_len"][i] = ops.arrays["q_len"][i, 0] * factors
    grown = OpTable(ops.names, ops.quadrant, ops.kind, arrays, len(factors), ops.devices)
    t = model.evaluate(grown).time_s
    active = t[:, 0] > 0
    assert np.all(np.diff(t[active], axis=1) >= -slack * t[active][:, :-1]), \
        [n for n, a, row in zip(ops.names, active, t) if a and np.any(np.diff(row) < -slack * row[:-1])]


def test_timing_models_are_recognised_by_isinstance():
    from simulator import RooflineModel, TimingModel

    assert isinstance(RooflineModel(), TimingModel) and not isinstance("roofline", TimingModel)
