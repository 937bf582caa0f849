"""Golden what-if summaries for three reference scenarios. They change only when the timing model
changes on purpose: regenerate with ``QUADRANT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_whatif.py``
and say why in the commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from simulator.analysis.whatif import whatif
from simulator.build import PlanOptions, plan_from_options

GOLDEN = Path(__file__).parent / "golden"
SCENARIOS = {
    "llama-3.1-70b-bf16-8xh100": (dict(model="llama-3.1-70b", hardware="h100-sxm", devices=8, precision="bf16"),
                                  dict(batch=64, isl=2048, osl=512)),
    "dbrx-8xh100": (dict(model="dbrx", hardware="h100-sxm", devices=8, ep=8), dict(batch=64, isl=2048, osl=512)),
    "deepseek-v3-fp8-8xh200": (dict(model="deepseek-v3", hardware="h200-sxm", devices=8, ep=8, precision="fp8",
                                    kv_precision="fp8"), dict(batch=128, isl=4096, osl=1024)),
}
KEYS = ("ttft_s", "tpot_s", "output_tokens_per_s", "decode_tokens_per_s_per_device", "fits")


def summary(name: str) -> dict:
    opts, shape = SCENARIOS[name]
    r = whatif(plan_from_options(PlanOptions(**opts)), **shape).to_dict()
    out = {k: r[k] for k in KEYS}
    out["quadrants"] = {q: {k: v[k] for k in ("time_s", "flop", "bytes", "comm_s", "bound")}
                        for q, v in r["quadrants"].items()}
    return out


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6), path
    else:
        assert a == b, path


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_summary(name):
    path = GOLDEN / f"timing-{name}.json"
    got = summary(name)
    if os.environ.get("QUADRANT_UPDATE_GOLDEN") or not path.exists():
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
        if not os.environ.get("QUADRANT_UPDATE_GOLDEN"):
            pytest.fail(f"{path.name} did not exist; written now - review and commit it")
    _close(got, json.loads(path.read_text()))
