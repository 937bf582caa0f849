"""Calibration overlays: fitted efficiency/overhead parameters kept apart from datasheet values.

An overlay file (written by ``quadrant calibrate``) names the profile it was fitted for, records
its provenance (measurement file, date, fit error on held-out rows) and carries an ``efficiency``
block in the same format as a hardware profile. Applying it swaps the profile's efficiency block;
the datasheet figures are untouched. The calibrated timing model is the roofline evaluated with
fitted parameters, so it honours the same interface and the same lower bound.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import SpecError
from ..specs._reader import Reader, load_yaml
from ..specs.hardware import HardwareSpec, read_efficiency


def read_overlay(path: str | Path) -> tuple[str, dict, object]:
    """Return (hardware id, provenance dict, Efficiency)."""
    data = load_yaml(path)
    r = Reader(path, data)
    r.schema_version()
    hw_id = r.str("hardware")
    r.str("kind", "calibration", choices=("calibration",))
    prov = r.raw("provenance", {})
    if not isinstance(prov, dict):
        raise r.error("provenance", "expected a mapping")
    sources = r.raw("sources")
    if not isinstance(sources, dict):
        raise r.error("sources", "expected a mapping")
    eff_reader = Reader(path, r.raw("efficiency"), "efficiency", {str(k): v for k, v in sources.items()})
    eff = read_efficiency(eff_reader)
    r.done()
    return hw_id, prov, replace(eff, calibration=str(path))


def apply_calibration(hw: HardwareSpec, path: str | Path) -> HardwareSpec:
    hw_id, _, eff = read_overlay(path)
    if hw_id != hw.id:
        raise SpecError(str(path), "hardware", f"overlay was fitted for {hw_id!r}, not {hw.id!r}")
    return hw.with_efficiency(eff)
