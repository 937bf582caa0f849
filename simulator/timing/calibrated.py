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
    """``hw`` with the efficiency constants of a calibration overlay (``quadrant calibrate --out``) for that
    device; an overlay for another device is refused."""
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

        devices = tuple(d.with_efficiency(self.overlays[d.id]) if d.id in self.overlays else d for d in ops.devices)
        swapped = OpTable(ops.names, ops.quadrant, ops.kind, ops.arrays, ops.n, devices, served=ops.served)
        t = self._inner.evaluate(swapped)
        return replace(t, ops=ops)


def check_overlays_apply(timing, device_ids, flag: str = "--calibration") -> None:
    """Refuse a calibrated timing model none of whose overlays is for a device the run uses, and a measured
    table with no rows for one: either would change nothing, while the user believes the numbers calibrated
    or measured."""
    from ..errors import SimulatorError

    used = set(device_ids)
    table = getattr(timing, "device_ids", None)
    if isinstance(table, set) and not used & table:
        raise SimulatorError(f"{flag}: the measured table {getattr(timing, 'source', '')} has rows for "
                             f"{', '.join(sorted(table)) or 'no device'}, and this run uses {', '.join(sorted(used))}: "
                             "it would change nothing (measure the device you run, or drop the flag)")
    cal = timing if isinstance(timing, CalibratedModel) else getattr(timing, "fallback", None)
    if not isinstance(cal, CalibratedModel):
        return
    if not used & set(cal.overlays):
        raise SimulatorError(f"{flag}: the overlay(s) {', '.join(map(str, cal.paths))} were fitted for "
                             f"{', '.join(sorted(cal.overlays))}, and this run uses {', '.join(sorted(used))}: "
                             "they would change nothing (calibrate the device you run, or drop the flag)")


TIMING_KINDS = ("calibrated", "measured")


def timing_spec_of(spec: str | None, calibration: str | Path | None = None) -> str:
    """The --timing spec a command runs with: a bare ``--calibration PATH`` is read by its extension
    (``.csv`` = measured, YAML = calibrated); both at once are refused (one would be dropped), unless --timing is
    the default roofline; nothing given is ``roofline``."""
    if calibration and spec and str(spec).strip() != "roofline":
        from ..errors import SimulatorError

        raise SimulatorError(f"--calibration {calibration} with --timing {spec}: give one; to use both, join them "
                             "in one --timing spec (e.g. calibrated:OVERLAY.yaml+measured:KERNELS.csv)")
    if calibration:
        c = str(calibration)
        return f"measured:{c}" if c.lower().endswith(".csv") else f"calibrated:{c}"
    return spec or "roofline"


def parse_timing_spec(spec: str) -> dict[str, list[str]]:
    """``roofline`` | ``calibrated:OVERLAY.yaml[,MORE.yaml]`` | ``measured:KERNELS.csv``, joined with ``+``
    -> the files of each kind ({} for roofline). The one reader of that syntax."""
    from ..errors import SimulatorError

    text = str(spec).strip()
    if text == "roofline":
        return {}
    files: dict[str, list[str]] = {}
    for part in text.split("+"):
        kind, sep, arg = part.partition(":")
        paths = arg.split(",")
        if kind not in TIMING_KINDS or not sep or not all(p.strip() for p in paths):  # (no empty entry: "a,,b")
            raise SimulatorError(f"--timing {text!r}: expected roofline, calibrated:OVERLAY.yaml or "
                                 "measured:KERNELS.csv")
        files.setdefault(kind, []).extend(paths)
    return files


def resolve_timing(spec: str | None, calibration: str | Path | None = None):
    """The timing model of a --timing spec (see ``parse_timing_spec``): the roofline by default; a measured
    table falls back to the calibrated model when one is given with it, else to the roofline."""
    from .roofline import RooflineModel

    files = parse_timing_spec(timing_spec_of(spec, calibration))
    fallback = CalibratedModel(files["calibrated"]) if "calibrated" in files else None
    if "measured" in files:
        from ..validation.measurements import read_measurements
        from .measured import MeasuredModel

        measured = files["measured"][0]
        return MeasuredModel(read_measurements(measured), fallback, source=measured)
    return fallback or RooflineModel()
