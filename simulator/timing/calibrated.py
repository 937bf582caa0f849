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
    if data.get("kind") != "calibration":
        raise r.error("kind", "not a calibration overlay (expected `kind: calibration`, as `quadrant calibrate` "
                              "writes; a hardware profile is not an overlay)")
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


class CalibratedModel:
    """The roofline evaluated with fitted parameters: each op on a device that an overlay was fitted
    for uses the overlay's efficiency block; other devices keep their profile's."""

    name = "calibrated"

    def __init__(self, paths):
        from .roofline import RooflineModel

        self.paths = [Path(p) for p in paths]
        self.overlays = {}
        for p in self.paths:
            hw_id, _, eff = read_overlay(p)
            self.overlays[hw_id] = eff
        self._inner = RooflineModel()

    def evaluate(self, ops):
        from ..ops.kinds import OpTable

        devices = tuple(replace(d, efficiency=self.overlays[d.id]) if d.id in self.overlays else d
                        for d in ops.devices)
        swapped = OpTable(ops.names, ops.quadrant, ops.kind, ops.arrays, ops.n, devices)
        t = self._inner.evaluate(swapped)
        return replace(t, ops=ops)


def resolve_timing(spec: str | None, calibration: str | Path | None = None):
    """The one place a timing-model choice is read: ``roofline`` (default), ``calibrated:PATH[,PATH]``
    (overlays from ``quadrant calibrate``) or ``measured:PATH`` (a measurement CSV; falls back to the
    roofline outside its coverage, or to ``measured:CSV+calibrated:YAML``'s calibrated model). A bare
    ``--calibration PATH`` is read by its extension: ``.csv`` = measured, YAML = calibrated."""
    from ..errors import SimulatorError
    from .roofline import RooflineModel

    if calibration:
        c = str(calibration)
        spec = f"measured:{c}" if c.lower().endswith(".csv") else f"calibrated:{c}"
    if spec is None or spec == "roofline":
        return RooflineModel()
    parts = spec.split("+")
    fallback = None
    measured = None
    for part in parts:
        kind, _, arg = part.partition(":")
        if kind == "calibrated" and arg:
            fallback = CalibratedModel([a for a in arg.split(",") if a])
        elif kind == "measured" and arg:
            measured = arg
        elif kind != "roofline":
            raise SimulatorError(f"--timing {spec!r}: expected roofline, calibrated:PATH or measured:PATH")
    if measured:
        from ..validation.measurements import read_measurements
        from .measured import MeasuredModel

        return MeasuredModel(read_measurements(measured), fallback, source=measured)
    return fallback or RooflineModel()
