"""Golden summaries of three shipped scenarios, as the CLI prints them with --json (metadata left out).

They catch any change in what users see: a timing, scheduling or reporting change shows up here first.
When a change is intended, rewrite them on purpose and review the diff of tests/golden/*.json:

    QUADRANT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app

GOLDEN = Path(__file__).parent / "golden"
runner = CliRunner()

SCENARIOS = {
    "whatif-dbrx-8xh100": ["whatif", "--model", "dbrx", "--hardware", "h100-sxm", "--devices", "8", "--batch", "64",
                           "--isl", "2048", "--osl", "512", "--json"],
    "simulate-dbrx-8xh100-chat": ["simulate", "dbrx-8xh100", "--traffic", "chat", "--requests", "100", "--json"],
    "simulate-dbrx-pd-h100-h20-chat": ["simulate", "dbrx-h100-prefill-h20-decode", "--traffic", "chat",
                                       "--requests", "100", "--json"],
}


def _close(got, want, path="") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        diffs = [f"{path}.{k}: missing" for k in want if k not in got]
        diffs += [f"{path}.{k}: new key" for k in got if k not in want]
        for k in want.keys() & got.keys():
            diffs += _close(got[k], want[k], f"{path}.{k}")
        return diffs
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{path}: {len(got)} items, golden has {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _close(g, w, f"{path}[{i}]")]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-15) else [f"{path}: {got!r} != {want!r}"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_golden_summary(name):
    r = runner.invoke(app, SCENARIOS[name])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    got.pop("metadata")
    path = GOLDEN / f"{name}.json"
    if os.environ.get("QUADRANT_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    diffs = _close(got, want)
    assert not diffs, f"{name} differs from {path} (rewrite on purpose: see the module docstring):\n" + "\n".join(
        diffs[:20])
