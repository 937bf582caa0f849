"""Hardware profiles: what a device *is* (datasheet figures, links, price) plus a separate block of
efficiency/overhead parameters that say how close real kernels get to the datasheet.

A profile is frozen data read from ``hardware/<id>.yaml``; nothing here computes performance.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ._reader import Reader, load_yaml

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
OP_CLASSES = ("gemm", "attention", "moe", "elementwise")
EFFICIENCY_PARAMS = ("compute_fraction", "compute_ramp_s", "memory_fraction", "memory_ramp_s")


@dataclass(frozen=True)
class Link:
    """One interconnect level. Bandwidth is per device, per direction."""

    bandwidth_bytes_per_s: float
    latency_s: float
    domain_size: int  # devices reachable at this level (1 = no such link)


@dataclass(frozen=True)
class OpClassEfficiency:
    """Achieved fraction of peak as a function of op size, in closed form.

    time = launch_overhead + max(compute_ramp_s + flop / (compute_fraction * peak),
                                 memory_ramp_s + bytes / (memory_fraction * bandwidth))
    i.e. the achieved fraction of peak FLOP/s is compute_fraction * F / (F + F_half) with
    F_half = compute_ramp_s * compute_fraction * peak (likewise for bytes): small ops reach a
    small fraction, large ops approach ``*_fraction``.
    """

    compute_fraction: float
    compute_ramp_s: float
    memory_fraction: float
    memory_ramp_s: float


@dataclass(frozen=True)
class Efficiency:
    launch_overhead_s: float
    memory_reserve_bytes: float
    collective_bandwidth_fraction: float
    classes: dict[str, OpClassEfficiency]
    sources: dict[str, str] = field(default_factory=dict)  # parameter -> where it comes from
    calibration: str | None = None  # provenance of a fitted overlay, if one was applied


@dataclass(frozen=True)
class HardwareSpec:
    id: str
    name: str
    vendor: str
    hypothetical: bool
    confidence: str
    peak_flop_per_s: dict[str, float]
    hbm_bytes: float
    hbm_bytes_per_s: float
    onchip_cache_bytes: float
    scale_up: Link
    scale_out: Link
    tdp_w: float
    price_usd_per_s: float
    price_note: str
    efficiency: Efficiency
    sources: dict[str, str]
    notes: str = ""
    file: str = ""

    def peak(self, dtype: str) -> float:
        return self.peak_flop_per_s.get(dtype, 0.0)

    @property
    def price_usd_per_hour(self) -> float:
        return self.price_usd_per_s * 3600.0

    def with_efficiency(self, efficiency: Efficiency) -> HardwareSpec:
        return replace(self, efficiency=efficiency)


def _link(r: Reader, name: str, default_domain: int | None) -> Link:
    node = r.child(name)
    bw, _ = node.sourced("bandwidth_per_direction", "bytes_per_s")
    lat, _ = node.sourced("latency", "s")
    if default_domain is None:
        dom, _ = node.sourced("domain_size", "count")
        dom = int(dom)
    else:
        dom = default_domain
    node.done()
    return Link(bw, lat, dom)


def _class_eff(node: Reader, base: OpClassEfficiency | None, sources: dict, prefix: str) -> OpClassEfficiency:
    values = {}
    for param in EFFICIENCY_PARAMS:
        key = param.removesuffix("_s")
        dim = "s" if param.endswith("_s") else "fraction"
        got = node.sourced(key, dim, None)
        if got is None:
            if base is None:
                raise node.error(key, "required key is missing")
            values[param] = getattr(base, param)
        else:
            values[param] = got[0]
            sources[f"{prefix}{key}"] = got[1]
        if dim == "fraction" and not 0 < values[param] <= 1:
            raise node.error(key, f"expected a fraction in (0, 1], got {values[param]}")
        if dim == "s" and values[param] < 0:
            raise node.error(key, "expected a non-negative time")
    node.done()
    return OpClassEfficiency(**values)


def read_efficiency(r: Reader) -> Efficiency:
    """Read an ``efficiency`` block (also the format of a calibration overlay)."""
    sources: dict[str, str] = {}
    launch, sources["launch_overhead"] = r.sourced("launch_overhead", "s")
    reserve, sources["memory_reserve"] = r.sourced("memory_reserve", "bytes")
    coll, sources["collective_bandwidth_fraction"] = r.sourced("collective_bandwidth_fraction", "fraction")
    default = _class_eff(r.child("default"), None, sources, "default.")
    classes = {}
    per_op = r.child("per_op", {})
    for cls in OP_CLASSES:
        classes[cls] = _class_eff(per_op.child(cls), default, sources, f"{cls}.") if per_op.has(cls) else default
    per_op.done()
    r.done()
    return Efficiency(launch, reserve, coll, classes, sources)


def read_hardware(path: str | Path) -> HardwareSpec:
    data = load_yaml(path)
    top = Reader(path, data)
    top.schema_version()
    sources = top.raw("sources")
    if not isinstance(sources, dict) or not sources:
        raise top.error("sources", "expected a mapping of source id -> citation")
    r = Reader(path, data, "", {str(k): v for k, v in sources.items()})
    r.raw("schema_version")
    r.raw("sources")
    hw_id = r.str("id")
    if Path(path).stem != hw_id:
        raise r.error("id", f"id {hw_id!r} must match the file name {Path(path).stem!r}")
    compute = r.child("compute")
    peaks = {}
    for dtype in DTYPES:
        got = compute.sourced(dtype, "flop_per_s", None)
        if got is not None:
            peaks[dtype] = got[0]
    compute.done()
    if "bf16" not in peaks and "fp16" not in peaks and "fp32" not in peaks:
        raise compute.error("bf16", "a profile needs at least one of fp32, bf16, fp16")
    mem = r.child("memory")
    cap, _ = mem.sourced("capacity", "bytes")
    bw, _ = mem.sourced("bandwidth", "bytes_per_s")
    cache = mem.sourced("onchip_cache", "bytes", (0.0, ""))[0]
    mem.done()
    scale_up = _link(r, "scale_up", None)
    scale_out = _link(r, "scale_out", 1 << 30)
    power = r.child("power")
    tdp, _ = power.sourced("tdp", "W")
    power.done()
    price = r.child("price", {})
    usd_per_s, price_src = price.sourced("per_device_hour", "usd_per_s", (float("nan"), "no sourced price"))
    price.done()
    hw = HardwareSpec(
        id=hw_id,
        name=r.str("name"),
        vendor=r.str("vendor"),
        hypothetical=r.bool("hypothetical", False),
        confidence=r.str("confidence", choices=("high", "medium", "low", "hypothetical")),
        peak_flop_per_s=peaks,
        hbm_bytes=cap,
        hbm_bytes_per_s=bw,
        onchip_cache_bytes=cache,
        scale_up=scale_up,
        scale_out=scale_out,
        tdp_w=tdp,
        price_usd_per_s=usd_per_s,
        price_note=f"{price_src}",
        efficiency=read_efficiency(r.child("efficiency")),
        sources=dict(r.sources),
        notes=r.str("notes", ""),
        file=str(path),
    )
    r.done()
    return hw
