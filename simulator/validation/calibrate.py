"""Fit a hardware profile's kernel-family and collective parameters to measured kernels.

The model is the default mechanism-level roofline (timing/roofline.py) on the same op records the
simulator emits; only the parameters of the ``efficiency`` block move. Each family is fitted on its
own rows (GEMM, 8-bit GEMM, grouped GEMM, prefill attention and decode attention apart, each
collective kind apart) by coordinate descent in log space on a robust loss (soft-L1 of
log(predicted / measured)), so microsecond kernels count as much as large ones and a few outliers
do not drag the fit. Fractions stay in (0, 1], times and sizes non-negative.

The error reported is on held-out rows the fit never saw. A family whose held-out error gets worse, at the
median or at the 90th percentile, keeps the profile's values (and says so); an overlay that would make the
held-out rows worse as a whole is refused. The fitted values go to an overlay file; datasheet figures are never
changed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import CalibrationError
from ..ops.kinds import OpTable
from ..precision import PRECISIONS
from ..specs.hardware import (
    COLLECTIVE_FAMILIES,
    COLLECTIVE_PARAMS,
    KERNEL_FAMILIES,
    KERNEL_PARAMS,
    CollectiveFamily,
    Efficiency,
    HardwareSpec,
    KernelFamily,
)
from ..timing.roofline import RooflineModel
from .measurements import holdout_mask
from .validate import ops_from_measurements, predict, score

MIN_ROWS = 3
# held-out rows a family needs before its p90 can veto a fit: with fewer, the 90th percentile is about the single
# worst row, and one noisy timing would decide (the median check still applies)
MIN_TAIL_ROWS = 5
DELTA = 0.1  # soft-L1 scale in log space (~10 %)
# parameters each family's rows can identify
# (most identifiable first: a family with few rows fits only the first len(rows) // 3 of them)
FIT = {
    "gemm": ("compute_fraction", "memory_fraction", "floor_s", "size_half"),
    "gemm_fp8": ("compute_fraction", "memory_fraction", "floor_s", "size_half"),
    "grouped_gemm": ("compute_fraction", "memory_fraction", "floor_s", "size_half"),
    "attn_prefill": ("compute_fraction", "size_half", "floor_s"),
    "attn_decode": ("memory_fraction", "floor_s", "block_s"),
    "elementwise": ("memory_fraction", "floor_s"),
    "all_reduce": ("latency_s", "latency_per_rank_s", "bandwidth_fraction", "half_bytes"),
    "all_gather": ("latency_s", "latency_per_rank_s", "bandwidth_fraction", "half_bytes"),
    "all_to_all": ("latency_s", "latency_per_rank_s", "bandwidth_fraction", "half_bytes"),
    "p2p": ("latency_s", "bandwidth_fraction", "half_bytes"),
}
_FRACTIONS = {"compute_fraction", "memory_fraction", "bandwidth_fraction", "overlap"}


def family_of(df: pd.DataFrame) -> np.ndarray:
    """The parameter family each measurement row calibrates."""
    eight = df["dtype"].map(lambda d: d in PRECISIONS and PRECISIONS[d].act_bytes < 2.0).to_numpy()
    op = df["op"].to_numpy()
    fam = np.select([(op == "gemm") & eight, op == "gemm", op == "moe", op == "memcpy"],
                    ["gemm_fp8", "gemm", "grouped_gemm", "elementwise"], default=op)
    return fam


def _with_param(eff: Efficiency, family: str, param: str, value: float) -> Efficiency:
    if family in KERNEL_FAMILIES:
        kernels = dict(eff.kernels)
        kernels[family] = replace(kernels[family], **{param: value})
        return replace(eff, kernels=kernels)
    colls = dict(eff.collectives)
    colls[family] = replace(colls[family], **{param: value})
    return replace(eff, collectives=colls)


def _get(eff: Efficiency, family: str, param: str) -> float:
    fam = eff.kernels.get(family) or eff.collectives[family]
    return float(getattr(fam, param))


def _loss(pred: np.ndarray, meas: np.ndarray) -> float:
    r = np.log(np.maximum(pred, 1e-15) / meas) / DELTA
    return float(np.mean(2.0 * (np.sqrt(1.0 + r * r) - 1.0)))


class _Problem:
    """Rows of one family on one or more devices, with their op records built once."""

    def __init__(self, rows: pd.DataFrame, specs: dict[str, HardwareSpec]):
        self.rows = rows.reset_index(drop=True)
        self.ops = ops_from_measurements(self.rows, specs)
        self.meas = self.rows["latency_us"].to_numpy() * 1e-6
        self.ids = [d.id for d in self.ops.devices]

    def predict(self, effs: dict[str, Efficiency]) -> np.ndarray:
        devices = tuple(replace(d, efficiency=effs.get(d.id, d.efficiency)) for d in self.ops.devices)
        ops = OpTable(self.ops.names, self.ops.quadrant, self.ops.kind, self.ops.arrays, self.ops.n, devices,
                      served=self.ops.served)
        return RooflineModel().evaluate(ops).per_row()[: len(self.rows)]


def fit_family(problem: _Problem, effs: dict[str, Efficiency], family: str, rounds: int = 6) -> dict[str, Efficiency]:
    """Coordinate descent in log space over the family's parameters, shared by the problem's devices."""
    params = FIT[family][: max(len(problem.rows) // 3, 1)]
    base = next(iter(effs.values()))
    current = {p: _get(base, family, p) for p in params}

    def evaluate(values: dict) -> float:
        return _loss(problem.predict(_apply(effs, problem.ids, family, values)), problem.meas)

    best = evaluate(current)
    for r in range(rounds):
        improved = False
        shrink = 0.6 ** r  # the search window narrows round by round around the current best
        for p in params:
            x0 = current[p]
            if p in _FRACTIONS:
                grid = np.clip(x0 * np.exp(np.linspace(-1.2, 1.2, 25) * shrink), 0.02, 1.0)
            else:
                scale = x0 if x0 > 0 else {"size_half": 256.0, "half_bytes": 2.0 ** 20}.get(p, 5e-6)
                grid = np.concatenate([[0.0], scale * np.exp(np.linspace(-2.5, 2.5, 25) * shrink)])
            for x in np.unique(grid):
                trial = dict(current, **{p: float(x)})
                loss = evaluate(trial)
                if loss < best - 1e-12:
                    best, current, improved = loss, trial, True
        if not improved and shrink < 0.2:
            break
    return _apply(effs, problem.ids, family, current)


def _apply(effs: dict[str, Efficiency], ids, family: str, values: dict) -> dict[str, Efficiency]:
    """The efficiency blocks with ``values`` set on ``family`` for the devices ``ids``."""
    out = dict(effs)
    for hid in ids:
        e = out[hid]
        for p, v in values.items():
            e = _with_param(e, family, p, v)
        out[hid] = e
    return out


def _median_ape(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.median(np.abs(pred / meas - 1.0))) if len(meas) else float("nan")


def _ape_quantile(pred: np.ndarray, meas: np.ndarray, q: float) -> float:
    return float(np.quantile(np.abs(pred / meas - 1.0), q)) if len(meas) else float("nan")


def calibrate(df: pd.DataFrame, hw: HardwareSpec, *, test_fraction: float = 0.5, seed: int = 0,
              measurements_file: str = "") -> tuple[HardwareSpec, dict]:
    """Fit ``hw``'s efficiency parameters on a train split of its rows; report held-out error."""
    from ..checks import real, whole
    from ..errors import SimulatorError
    from .measurements import check_frame

    check_frame(df, "calibrate: df")
    if not isinstance(hw, HardwareSpec):
        raise CalibrationError(f"calibrate: hw: expected a HardwareSpec (load_hardware(...)), got {type(hw).__name__}")
    try:
        real("calibrate: test_fraction", test_fraction, 0, 1, above=True)
        whole("calibrate: seed", seed, 0, 2**32 - 1)
    except SimulatorError as exc:
        raise CalibrationError(str(exc)) from None
    rows = df[df["hardware"] == hw.id].reset_index(drop=True)
    if len(rows) < 2 * MIN_ROWS:
        raise CalibrationError(f"{measurements_file or 'measurements'}: {len(rows)} row(s) for {hw.id}; need at "
                               f"least {2 * MIN_ROWS} to fit and hold out")
    test = holdout_mask(len(rows), test_fraction, seed)
    if test.all() or not test.any():
        raise CalibrationError(f"--test-fraction {test_fraction:g} holds out {int(test.sum())} of the {len(rows)} "
                               f"rows for {hw.id}, leaving {'nothing to fit' if test.all() else 'nothing to check'}: "
                               "choose a fraction that leaves rows on both sides")
    train, held = rows[~test].reset_index(drop=True), rows[test].reset_index(drop=True)
    fam_train, fam_held = family_of(train), family_of(held)
    if not (pd.Series(fam_train).value_counts() >= MIN_ROWS).any():  # an overlay that could not change anything
        raise CalibrationError(f"--test-fraction {test_fraction:g} leaves {len(train)} training row(s) for {hw.id}, "
                               f"and no kernel class has the {MIN_ROWS} it needs to be fitted: hold out fewer rows "
                               "(a smaller --test-fraction) or measure more kernels")
    specs = {hw.id: hw}
    effs = {hw.id: hw.efficiency}
    fitted, notes = [], {}
    for family in KERNEL_FAMILIES + COLLECTIVE_FAMILIES:
        tr = train[fam_train == family]
        if len(tr) < MIN_ROWS:
            if len(tr):
                notes[family] = [f"kept from the profile ({len(tr)} train row(s) < {MIN_ROWS})"]
            continue
        new = fit_family(_Problem(tr, specs), effs, family)
        te = held[fam_held == family]
        if len(te):
            # kept only where its held-out rows get no worse at the median nor in the tail (p90, given enough rows
            # to have one): a fit that helps the typical kernel while doubling the worst ones' error is not one to
            # ship
            p = _Problem(te, specs)
            pb, pa = p.predict(effs), p.predict(new)
            before, after = _median_ape(pb, p.meas), _median_ape(pa, p.meas)
            tail_b, tail_a = _ape_quantile(pb, p.meas, 0.9), _ape_quantile(pa, p.meas, 0.9)
            if after > before:
                notes[family] = [f"fit refused: held-out median APE {before:.1%} -> {after:.1%}; profile kept"]
                continue
            if len(te) >= MIN_TAIL_ROWS and tail_a > tail_b + 1e-9:
                notes[family] = [f"fit refused: held-out p90 APE {tail_b:.1%} -> {tail_a:.1%} (median {before:.1%} "
                                 f"-> {after:.1%}); profile kept"]
                continue
        effs = new
        fitted.append(family)
    sources = dict(hw.efficiency.sources)
    for family in fitted:
        for p in FIT[family]:
            sources[f"{family}.{p}"] = f"fit:{measurements_file}"
    cal = hw.with_efficiency(replace(effs[hw.id], sources=sources))
    whole = {hw.id: hw}
    before = score(predict(held, whole))["overall"] if len(held) else None
    after = score(predict(held, {hw.id: cal}))["overall"] if len(held) else None
    if before and after and after["median_ape"] > before["median_ape"] + 1e-9:
        raise CalibrationError(f"calibration of {hw.id} would make the held-out rows worse (median APE "
                               f"{before['median_ape']:.1%} -> {after['median_ape']:.1%}); no overlay written")
    report = {"hardware": hw.id, "rows": int(len(rows)), "train_rows": int(len(train)), "test_rows": int(len(held)),
              "test_fraction": test_fraction, "seed": seed, "heldout_before": before, "heldout_after": after,
              "train_after": score(predict(train, {hw.id: cal}))["overall"], "fitted_classes": fitted,
              "notes": notes}
    return cal, report



def leave_one_device_out(df: pd.DataFrame, specs: dict[str, HardwareSpec]) -> list[dict]:
    """For every device: fit each family's parameters on the *other* devices' rows (shared across them),
    apply them to this device, and score its rows. Says how well the efficiency curves transfer."""
    out = []
    fam_all = family_of(df)
    for hid in sorted(specs):
        mine = df["hardware"] == hid
        others = df[~mine]
        if others.empty or not mine.any():
            continue
        effs = {h: s.efficiency for h, s in specs.items()}
        fam_o = fam_all[~mine.to_numpy()]
        for family in KERNEL_FAMILIES + COLLECTIVE_FAMILIES:
            tr = others[fam_o == family]
            if len(tr) < MIN_ROWS or family not in set(fam_all[mine.to_numpy()]):
                continue
            sub = {h: specs[h] for h in set(tr["hardware"])}
            shared = fit_family(_Problem(tr, sub), {h: effs[h] for h in sub}, family)
            donor = next(iter(shared.values()))
            for p in FIT[family]:
                effs[hid] = _with_param(effs[hid], family, p, _get(donor, family, p))
        rows = df[mine].reset_index(drop=True)
        pred = predict(rows, {hid: specs[hid].with_efficiency(effs[hid])})
        out.append({"hardware": hid, **score(pred)["overall"]})
    return out


def _val(v: float, param: str, source: str) -> dict:
    if param.endswith("_s"):
        return {"value": f"{v * 1e6:.6g} us", "source": source}
    if param == "half_bytes":
        return {"value": f"{v:.6g} B", "source": source}
    return {"value": round(float(v), 6), "source": source}


def overlay_yaml(cal: HardwareSpec, base: HardwareSpec, report: dict, measurements: str | Path) -> str:
    """The overlay file: efficiency block (profile format) + provenance, kept apart from the datasheet."""
    path = Path(measurements)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else ""
    e = cal.efficiency
    fitted = set(report["fitted_classes"])
    key = {f: k for k, (f, _) in KERNEL_PARAMS.items()}
    ckey = {f: k for k, (f, _) in COLLECTIVE_PARAMS.items()}
    src = lambda fam: "FIT" if fam in fitted else "PROFILE"  # noqa: E731
    # every family is written out below, so "default" only mirrors the base profile (never a fitted value)
    kernels = {"default": {key[f.name]: _val(getattr(base.efficiency.kernels["gemm"], f.name), f.name, "PROFILE")
                           for f in fields(KernelFamily)}}
    for fam in KERNEL_FAMILIES:
        kernels[fam] = {key[f.name]: _val(getattr(e.kernels[fam], f.name), f.name, src(fam))
                        for f in fields(KernelFamily)}
    colls = {"default": {ckey[f.name]: _val(getattr(base.efficiency.collectives["all_reduce"], f.name), f.name,
                                            "PROFILE")
                         for f in fields(CollectiveFamily)}}
    for fam in COLLECTIVE_FAMILIES:
        colls[fam] = {ckey[f.name]: _val(getattr(e.collectives[fam], f.name), f.name, src(fam))
                      for f in fields(CollectiveFamily)}
    doc = {
        "schema_version": 1, "kind": "calibration", "hardware": base.id,
        "provenance": {
            "measurements": str(measurements), "sha256_16": digest,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "method": "per-family robust (soft-L1, log space) coordinate descent (simulator/validation/calibrate.py)",
            "train_rows": report["train_rows"], "test_rows": report["test_rows"],
            "split": {"test_fraction": report["test_fraction"], "seed": report["seed"]},
            "heldout_error_before": report["heldout_before"], "heldout_error_after": report["heldout_after"],
            "train_error_after": report["train_after"], "notes": report["notes"],
        },
        "sources": {"FIT": f"fitted by quadrant calibrate to {measurements} (sha256 {digest})",
                    "PROFILE": f"kept from hardware/{base.id}.yaml (see its sources)"},
        "efficiency": {
            "memory_reserve": {"value": f"{e.memory_reserve_bytes / 2**30:.6g} GiB", "source": "PROFILE"},
            "sustained_clock_fraction": {"value": e.sustained_clock_fraction, "source": "PROFILE"},
            **({"served_compute_fraction": {"value": e.served_compute_fraction, "source": "PROFILE"}}
               if e.served_compute_fraction is not None else {}),
            "kernels": kernels, "collectives": colls,
        },
    }
    return ("# Calibration overlay written by `quadrant calibrate`. It replaces only the efficiency block of\n"
            f"# hardware/{base.id}.yaml; datasheet figures stay as they are. Use with --timing calibrated:PATH\n"
            "# (or --calibration PATH).\n" + yaml.safe_dump(doc, sort_keys=False, width=110))


def heldout_rows(df: pd.DataFrame, hw_id: str, test_fraction: float, seed: int) -> pd.DataFrame:
    rows = df[df["hardware"] == hw_id].reset_index(drop=True)
    return rows[holdout_mask(len(rows), test_fraction, seed)].reset_index(drop=True)


__all__ = ["calibrate", "family_of", "heldout_rows", "leave_one_device_out", "overlay_yaml"]
