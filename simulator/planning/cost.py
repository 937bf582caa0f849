"""What a device-hour costs: rental prices (sourced in the hardware profiles, overridable) or total
cost of ownership from a YAML file (capex amortised + power + hosting).

TCO per device-hour = capex / (amortisation years x 8760 h) + hosting per year / 8760 h
                      + TDP x utilisation x PUE x electricity price.
Utilisation comes from the DES (busy fraction of the pool) once a candidate is simulated; screening
assumes 1.0 (the upper bound), so screened TCO costs are never optimistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SimulatorError
from ..specs._reader import Reader, load_yaml
from ..specs.hardware import HardwareSpec

HOURS_PER_YEAR = 8760.0
# A price per device-hour above this is a typo (rented accelerators cost a few USD an hour, and a TCO-derived rate a
# few more); refused, so that fleet costs stay finite numbers a report can print.
MAX_PRICE_USD_PER_HOUR = 1e4


@dataclass(frozen=True)
class DeviceTCO:
    capex_usd: float
    hosting_usd_per_year: float


@dataclass(frozen=True)
class TCO:
    years: float
    pue: float
    electricity_usd_per_kwh: float
    devices: dict[str, DeviceTCO]
    source: str
    file: str

    def usd_per_hour(self, hw: HardwareSpec, utilisation: float = 1.0) -> float:
        d = self.devices.get(hw.id)
        if d is None:
            raise SimulatorError(f"{self.file}: devices: no entry for {hw.id} (add capex and hosting_per_year)")
        power_kw = hw.tdp_w / 1e3 * max(min(utilisation, 1.0), 0.0) * self.pue
        return d.capex_usd / (self.years * HOURS_PER_YEAR) + d.hosting_usd_per_year / HOURS_PER_YEAR \
            + power_kw * self.electricity_usd_per_kwh


def read_tco(path: str | Path) -> TCO:
    """``{schema_version: 1, source: TEXT, years: 4, pue: 1.3, electricity_usd_per_kwh: 0.10,
    devices: {h100-sxm: {capex: 30000 USD, hosting_per_year: 2500 USD}}}``"""
    r = Reader(path, load_yaml(path))
    r.schema_version()
    source = r.str("source")
    years = r.number("years", minimum=0.1)
    pue = r.number("pue", 1.0, minimum=1.0)
    kwh = r.number("electricity_usd_per_kwh", minimum=0.0)
    devs = {}
    node = r.child("devices")
    for hw_id in list(node.data):
        c = node.child(hw_id)
        devs[hw_id] = DeviceTCO(c.quantity("capex", "usd", positive=True), c.quantity("hosting_per_year", "usd", 0.0))
        c.done()
    node.done()
    r.done()
    if not devs:
        raise SimulatorError(f"{path}: devices: list at least one device with its capex")
    return TCO(years, pue, kwh, devs, source, str(path))


@dataclass
class PriceBook:
    """Price per device-hour for every hardware profile the plan uses, with where it came from."""

    specs: dict[str, HardwareSpec]
    overrides: dict[str, float] = field(default_factory=dict)
    tco: TCO | None = None

    def __post_init__(self):
        unknown = sorted(set(self.overrides) - set(self.specs))
        if unknown:
            raise SimulatorError(f"--price {unknown[0]}: that device is not among --hardware "
                                 f"({', '.join(self.specs)})")
        if self.tco is None:
            for hw_id, hw in self.specs.items():
                if hw_id not in self.overrides and not math.isfinite(hw.price_usd_per_s):
                    raise SimulatorError(f"no rental price for {hw_id}: its profile has no sourced price; pass "
                                         f"--price {hw_id}=USD_PER_HOUR (or --tco FILE)")
        for hw_id in self.specs:
            if self.tco is not None:
                self.tco.usd_per_hour(self.specs[hw_id])  # raises if the TCO file lacks the device

    def usd_per_hour(self, hw_id: str, utilisation: float = 1.0) -> float:
        if self.tco is not None:
            return self.tco.usd_per_hour(self.specs[hw_id], utilisation)
        if hw_id in self.overrides:
            return self.overrides[hw_id]
        return self.specs[hw_id].price_usd_per_hour

    def note(self, hw_id: str) -> str:
        """'profile' when the price is the profile's own sourced figure."""
        if self.tco is not None:
            return f"TCO ({self.tco.file})"
        return "--price (user assumption)" if hw_id in self.overrides else "profile"

    def priced_specs(self) -> dict[str, HardwareSpec]:
        """Hardware specs carrying the prices in force (so the DES and the YAML agree with the plan)."""
        out = {}
        for hw_id, hw in self.specs.items():
            note = self.note(hw_id)
            out[hw_id] = hw if note == "profile" else hw.with_price(self.usd_per_hour(hw_id), note)
        return out

    def table(self) -> list[dict]:
        """One row per device: price, source and date, TDP (for the report's assumptions section)."""
        rows = []
        for hw_id, hw in self.specs.items():
            note = self.note(hw_id)
            if note == "profile":
                src = hw.price_note
                text = hw.sources.get(src, "")
                date = price_date(hw)
                source = f"{src}: {text}" if text else src
            elif self.tco is not None:
                source, date = (f"TCO file {self.tco.file}: {self.tco.source} (this price has power at full load; "
                                "a simulated fleet pays power at its measured busy share)"), ""
            else:
                source, date = "--price on the command line (user assumption, unsourced)", ""
            rows.append({"hardware": hw_id, "usd_per_device_hour": self.usd_per_hour(hw_id), "source": source,
                         "date": date, "tdp_w": hw.tdp_w})
        return rows


def price_date(hw: HardwareSpec) -> str:
    """The date of a profile's sourced price (its YAML's price.per_device_hour.date), "" if none."""
    try:
        import yaml

        doc = yaml.safe_load(Path(hw.file).read_text())
        return str(((doc.get("price") or {}).get("per_device_hour") or {}).get("date", ""))
    except (OSError, AttributeError, ValueError):
        return ""


def _usd(text: str) -> float:
    try:
        return float(text.strip().removesuffix("USD/h").strip())
    except ValueError:
        return math.nan


def parse_price_flags(values: list[str] | None, bare: bool = False) -> dict[str, float]:
    """``--price ID=USD_PER_HOUR`` (repeatable), the one grammar of every command that prices devices.
    With ``bare``, a lone number is also taken, as the price of every device of the run (key ``"*"``)."""
    out: dict[str, float] = {}
    for v in values or []:
        hw_id, sep, usd = v.partition("=")
        if sep and hw_id.strip() in out:
            raise SimulatorError(f"--price {v!r}: {hw_id.strip()} is priced twice")
        if bare and not sep and len(values) == 1:
            hw_id, usd, sep = "*", v, "="
        if bare and not sep and len(values) > 1 and _usd(v) == _usd(v):
            raise SimulatorError(f"--price {v!r}: a bare price is the price of every device, so it comes alone; "
                                 "price devices apart as ID=USD_PER_HOUR, e.g. --price h100=2.5 --price h20=1.2")
        price = _usd(usd) if sep else math.nan
        if not sep or not hw_id.strip() or not math.isfinite(price) or price <= 0:
            alt = " (or one bare USD_PER_HOUR for every device)" if bare else ""
            raise SimulatorError(f"--price {v!r}: expected ID=USD_PER_HOUR with a price > 0{alt}, "
                                 "e.g. --price h20=1.20")
        if price > MAX_PRICE_USD_PER_HOUR:
            raise SimulatorError(f"--price {v!r}: expected at most {MAX_PRICE_USD_PER_HOUR:,.0f} USD per device-hour "
                                 "(a typo? prices are per device and hour, e.g. 2.5)")
        out[hw_id.strip()] = price
    return out


def prices_for(prices: dict[str, float], device_ids: list[str]) -> dict[str, float]:
    """``--price`` keys resolved to the run's profile ids (a key may be any name the profile goes by; ``"*"``:
    every device); a key naming no device of the run is refused rather than ignored."""
    from ..specs.catalog import load_hardware

    out = {d: prices["*"] for d in device_ids} if "*" in prices else {}
    for key, usd in prices.items():
        if key == "*":
            continue
        try:
            hw_id = load_hardware(key).id
        except SimulatorError:
            hw_id = key
        if hw_id not in device_ids:
            raise SimulatorError(f"--price {key}={usd:g}: {key} is not a device of this run "
                                 f"({', '.join(dict.fromkeys(device_ids))})")
        if hw_id in out:
            raise SimulatorError(f"--price {key}={usd:g}: {hw_id} is priced twice (under two of its names)")
        out[hw_id] = usd
    return out
