"""Fit a hardware profile's efficiency and overhead parameters to measured kernels.

Per op class the roofline model is ``t = L + max(cr + F/(cf*P), mr + B/(mf*BW))``. Rows are split
between the compute and memory branches, each branch is a weighted least-squares line in its
ideal time (weights 1/t^2, i.e. relative error, so microsecond kernels count as much as large
ones), rows are reassigned to whichever branch predicts more, and that repeats until stable. The
fixed launch overhead ``L`` is the smallest fitted intercept; the rest of each intercept is that
branch's ramp. Fractions are clamped to (0, 1]. Classes with too few rows keep the profile's
values, and the overlay says so.

The fitted values go to an overlay file; the profile's datasheet figures are never changed. The
error reported is on held-out rows the fit never saw.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import CalibrationError
from ..specs.hardware import OP_CLASSES, Efficiency, HardwareSpec, OpClassEfficiency
from .measurements import holdout_mask
from .validate import OP_CLASS, op_table, predict, score

MIN_ROWS = 3


def _wls(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Weighted least squares of t = a + s*x with weights 1/t^2; returns (a, s) with s >= 1, a >= 0."""
    w = 1.0 / t ** 2
    sw, sx, sy = w.sum(), (w * x).sum(), (w * t).sum()
    sxx, sxy = (w * x * x).sum(), (w * x * t).sum()
    den = sw * sxx - sx * sx
    if len(x) < 2 or den <= 0:
        s = max(float(np.median(t / np.maximum(x, 1e-30))), 1.0) if len(x) else 1.0
        return 0.0, s
    s = (sw * sxy - sx * sy) / den
    a = (sy - s * sx) / sw
    if s < 1.0:  # faster than the datasheet peak is impossible: pin the slope and refit the intercept
        s = 1.0
        a = float(((t - x) * w).sum() / sw)
    if a < 0.0:
        a = 0.0
        s = max(float((w * x * t).sum() / max((w * x * x).sum(), 1e-300)), 1.0)
    return float(a), float(s)


def fit_class(xc: np.ndarray, xm: np.ndarray, t: np.ndarray, init: OpClassEfficiency, launch: float,
              iterations: int = 20) -> tuple[dict, list[str]]:
    """Fit one class; returns intercepts/slopes per branch and notes about what was kept."""
    comp = xc / init.compute_fraction + init.compute_ramp_s >= xm / init.memory_fraction + init.memory_ramp_s
    notes = []
    ac, sc = launch + init.compute_ramp_s, 1.0 / init.compute_fraction
    am, sm = launch + init.memory_ramp_s, 1.0 / init.memory_fraction
    for _ in range(iterations):
        if comp.sum() >= MIN_ROWS:
            ac, sc = _wls(xc[comp], t[comp])
        if (~comp).sum() >= MIN_ROWS:
            am, sm = _wls(xm[~comp], t[~comp])
        new = ac + sc * xc >= am + sm * xm
        if np.array_equal(new, comp):
            break
        comp = new
    if comp.sum() < MIN_ROWS:
        notes.append("compute branch kept from the profile (fewer than 3 compute-bound rows)")
    if (~comp).sum() < MIN_ROWS:
        notes.append("memory branch kept from the profile (fewer than 3 memory-bound rows)")
    return {"ac": ac, "sc": sc, "am": am, "sm": sm, "n_compute": int(comp.sum()), "n_memory": int((~comp).sum())}, notes


def calibrate(df: pd.DataFrame, hw: HardwareSpec, *, test_fraction: float = 0.5, seed: int = 0,
              measurements_file: str = "") -> tuple[HardwareSpec, dict]:
    """Fit ``hw``'s efficiencies on the training rows of ``df`` (rows of other hardware are ignored).
    Returns the calibrated spec and a report (fit, held-out error before and after)."""
    rows = df[df["hardware"] == hw.id].reset_index(drop=True)
    if len(rows) < 2 * MIN_ROWS:
        where = f"{measurements_file}: " if measurements_file else ""
        raise CalibrationError(f"{where}only {len(rows)} rows for hardware {hw.id!r}; need at least {2 * MIN_ROWS}")
    test = holdout_mask(len(rows), test_fraction, seed)
    train = rows[~test].reset_index(drop=True)
    ops = op_table(train, {hw.id: hw})
    F, B, P, BW = (ops[c][:, 0] for c in ("flop", "bytes", "peak", "bw"))
    xc = np.where(F > 0, F / np.maximum(P, 1e-30), 0.0)
    xm = np.where(B > 0, B / BW, 0.0)
    t = train["latency_us"].to_numpy() * 1e-6
    cls = np.array([OP_CLASS[o] for o in train["op"]])
    e = hw.efficiency
    fits, notes = {}, {}
    for c in OP_CLASSES:
        m = cls == c
        if m.sum() < MIN_ROWS:
            notes[c] = [f"not fitted: {int(m.sum())} training rows"]
            continue
        fits[c], notes[c] = fit_class(xc[m], xm[m], t[m], e.classes[c], e.launch_overhead_s)
    if not fits:
        raise CalibrationError(f"{measurements_file or hw.id}: no op class of {hw.id} has {MIN_ROWS}+ training rows")
    launch = max(min(min(f["ac"], f["am"]) for f in fits.values()), 0.0)
    classes = dict(e.classes)
    for c, f in fits.items():
        base = e.classes[c]
        kept_c = any("compute branch kept" in n for n in notes[c])
        kept_m = any("memory branch kept" in n for n in notes[c])
        classes[c] = OpClassEfficiency(
            compute_fraction=base.compute_fraction if kept_c else min(1.0, 1.0 / f["sc"]),
            compute_ramp_s=base.compute_ramp_s if kept_c else max(f["ac"] - launch, 0.0),
            memory_fraction=base.memory_fraction if kept_m else min(1.0, 1.0 / f["sm"]),
            memory_ramp_s=base.memory_ramp_s if kept_m else max(f["am"] - launch, 0.0))
    coll = e.collective_bandwidth_fraction
    comm = cls == "comm"
    if comm.sum() >= MIN_ROWS:  # bandwidth fraction from the slope over the ideal collective time
        from ..timing.roofline import pure_roofline_s

        ideal = pure_roofline_s(ops)[comm, 0]
        a, s = _wls(ideal, t[comm])
        coll = min(1.0, 1.0 / s)
    sources = {k: f"fit:{measurements_file}" for k in e.sources}
    fitted = Efficiency(launch, e.memory_reserve_bytes, coll, classes, sources)
    cal = hw.with_efficiency(fitted)
    held = rows[test].reset_index(drop=True)
    before = score(predict(held, {hw.id: hw}))["overall"] if len(held) else None
    after = score(predict(held, {hw.id: cal}))["overall"] if len(held) else None
    train_after = score(predict(train, {hw.id: cal}))["overall"]
    report = {"hardware": hw.id, "rows": int(len(rows)), "train_rows": int((~test).sum()),
              "test_rows": int(test.sum()), "test_fraction": test_fraction, "seed": seed,
              "heldout_before": before, "heldout_after": after, "train_after": train_after,
              "fitted_classes": sorted(fits), "notes": {k: v for k, v in notes.items() if v},
              "fits": fits}
    return cal, report


def _q(seconds: float) -> str:
    return f"{seconds * 1e6:.6g} us"


def overlay_yaml(cal: HardwareSpec, base: HardwareSpec, report: dict, measurements: str | Path) -> str:
    """The overlay file: efficiency block (profile format) + provenance, kept apart from the datasheet."""
    path = Path(measurements)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else ""
    fit_src = "FIT"
    keep_src = "PROFILE"
    e, b = cal.efficiency, base.efficiency
    fitted = set(report["fitted_classes"])

    def val(v, dim, fitted_here):
        return {"value": _q(v) if dim == "s" else round(float(v), 6), "source": fit_src if fitted_here else keep_src}

    per_op = {}
    for c in OP_CLASSES:
        ce, kept = e.classes[c], c not in fitted
        per_op[c] = {"compute_fraction": val(ce.compute_fraction, "f", not kept),
                     "compute_ramp": val(ce.compute_ramp_s, "s", not kept),
                     "memory_fraction": val(ce.memory_fraction, "f", not kept),
                     "memory_ramp": val(ce.memory_ramp_s, "s", not kept)}
    d0 = b.classes["gemm"]
    doc = {
        "schema_version": 1, "kind": "calibration", "hardware": base.id,
        "provenance": {
            "measurements": str(measurements), "sha256_16": digest,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "method": "per-class weighted least squares on relative error (simulator/calibrate.py)",
            "train_rows": report["train_rows"], "test_rows": report["test_rows"],
            "split": {"test_fraction": report["test_fraction"], "seed": report["seed"]},
            "heldout_error_before": report["heldout_before"], "heldout_error_after": report["heldout_after"],
            "train_error_after": report["train_after"], "notes": report["notes"],
        },
        "sources": {fit_src: f"fitted by quadrant calibrate to {measurements} (sha256 {digest})",
                    keep_src: f"kept from hardware/{base.id}.yaml (see its sources)"},
        "efficiency": {
            "launch_overhead": val(e.launch_overhead_s, "s", True),
            "memory_reserve": {"value": f"{b.memory_reserve_bytes / 2**30:.6g} GiB", "source": keep_src},
            "collective_bandwidth_fraction": val(e.collective_bandwidth_fraction, "f",
                                                 e.collective_bandwidth_fraction != b.collective_bandwidth_fraction),
            "default": {"compute_fraction": val(d0.compute_fraction, "f", False),
                        "compute_ramp": val(d0.compute_ramp_s, "s", False),
                        "memory_fraction": val(d0.memory_fraction, "f", False),
                        "memory_ramp": val(d0.memory_ramp_s, "s", False)},
            "per_op": per_op,
        },
    }
    return ("# Calibration overlay written by `quadrant calibrate`. It replaces only the efficiency block of\n"
            f"# hardware/{base.id}.yaml; datasheet figures stay as they are. Use with --calibration.\n"
            + yaml.safe_dump(doc, sort_keys=False, width=110))


def heldout_rows(df: pd.DataFrame, hw_id: str, test_fraction: float, seed: int) -> pd.DataFrame:
    rows = df[df["hardware"] == hw_id].reset_index(drop=True)
    return rows[holdout_mask(len(rows), test_fraction, seed)].reset_index(drop=True)


__all__ = ["calibrate", "heldout_rows", "overlay_yaml"]
