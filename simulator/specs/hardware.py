"""Hardware profiles: what a device *is* (datasheet figures, links, price) plus a separate block of
efficiency/overhead parameters that say how close real kernels get to the datasheet.

A profile is frozen data read from ``hardware/<id>.yaml``; nothing here computes performance.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ._reader import Reader, load_yaml

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
# kernel families with their own efficiency curve and fixed floor (see simulator/timing/roofline.py)
KERNEL_FAMILIES = ("gemm", "gemm_fp8", "grouped_gemm", "attn_prefill", "attn_decode", "elementwise")
COLLECTIVE_FAMILIES = ("all_reduce", "all_gather", "all_to_all", "p2p")
ATTACH = ("sxm", "pcie", "oam", "other")


@dataclass(frozen=True)
class Link:
    """One interconnect level. Bandwidth is per device, per direction."""

    bandwidth_bytes_per_s: float
    latency_s: float
    domain_size: int  # devices reachable at this level (1 = no such link)
    nvls: bool = False  # in-switch reduction (NVLink SHARP) for all-reduce / all-gather


@dataclass(frozen=True)
class KernelFamily:
    """How close one family of kernels gets to the datasheet, in closed form.

        t = floor + max(tc, tm) + overlap * min(tc, tm)
        tc = compute_ramp + FLOP / (compute_fraction * sustained peak * size efficiency)
        tm = memory_ramp + bytes / (memory_fraction * bandwidth)

    ``size_half`` is family-specific: for prefill attention the sequence length (tokens) at which
    FLOP efficiency is half of ``compute_fraction``; ``block_s`` is the cost of one work block (one
    sequence x KV head of decode attention, one expert of a grouped GEMM) per wave of SMs.
    """

    floor_s: float
    compute_fraction: float
    memory_fraction: float
    compute_ramp_s: float = 0.0
    memory_ramp_s: float = 0.0
    overlap: float = 0.0
    size_half: float = 0.0
    block_s: float = 0.0


KERNEL_PARAMS = {  # YAML key -> (field, dimension)
    "floor": ("floor_s", "s"), "compute_fraction": ("compute_fraction", "fraction"),
    "memory_fraction": ("memory_fraction", "fraction"), "compute_ramp": ("compute_ramp_s", "s"),
    "memory_ramp": ("memory_ramp_s", "s"), "overlap": ("overlap", "fraction0"),
    "size_half": ("size_half", "count"), "block": ("block_s", "s"),
}


@dataclass(frozen=True)
class CollectiveFamily:
    """Alpha-beta cost of one collective kind with its mechanisms:

        t = latency + latency_per_rank * (ranks - 1) + wire bytes / (bandwidth_fraction * link * S / (S + half))

    the per-rank term is the ring's extra hops (or the tree's) as groups grow, and ``half_size``
    the message at which half the asymptotic bandwidth is reached (protocol switch and pipelining
    make mid-size messages slower per byte than large ones)."""

    latency_s: float
    latency_per_rank_s: float
    bandwidth_fraction: float
    half_bytes: float


COLLECTIVE_PARAMS = {
    "latency": ("latency_s", "s"), "latency_per_rank": ("latency_per_rank_s", "s"),
    "bandwidth_fraction": ("bandwidth_fraction", "fraction"), "half_size": ("half_bytes", "bytes"),
}


@dataclass(frozen=True)
class Efficiency:
    memory_reserve_bytes: float
    kernels: dict[str, KernelFamily]
    collectives: dict[str, CollectiveFamily]
    sustained_clock_fraction: float = 1.0  # the tensor-core clock the kernel families are evaluated at / datasheet's
    # Tensor-core throughput a served step keeps under continuous load (the card at its power limit), over what the
    # same kernel reaches in a short benchmark (what the kernel families describe). Applies to served steps only
    # (``OpTable.served``), never to kernel benchmark rows. None: not given (1.0 in a profile; an overlay keeps the
    # profile's).
    served_compute_fraction: float | None = None
    sources: dict[str, str] = field(default_factory=dict)  # parameter -> where it comes from
    calibration: str | None = None  # provenance of a fitted overlay, if one was applied

    @property
    def launch_overhead_s(self) -> float:
        """The smallest fixed floor of any kernel family (what an empty step still pays per kernel)."""
        return min(k.floor_s for k in self.kernels.values())


@dataclass(frozen=True)
class HardwareSpec:
    id: str
    name: str
    vendor: str
    hypothetical: bool
    confidence: str
    peak_flop_per_s: dict[str, float]
    hbm_bytes: float  # as the device exposes it (nvidia-smi total), not the marketing figure
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
    compute_units: int = 0  # SMs / CUs (0 = not known: no wave quantisation)
    boost_clock_hz: float = 0.0  # the clock the datasheet peaks are quoted at
    attach: str = "sxm"  # pcie boards share host links for collectives without NVLink
    host_link_bytes_per_s: float = 0.0  # PCIe per direction (0 = not known)
    aliases: tuple[str, ...] = ()  # other names it goes by (nvidia-smi's name, short forms)

    def peak(self, dtype: str) -> float:
        return self.peak_flop_per_s.get(dtype, 0.0)

    @property
    def price_usd_per_hour(self) -> float:
        return self.price_usd_per_s * 3600.0

    def with_efficiency(self, efficiency: Efficiency) -> HardwareSpec:
        """The profile with another efficiency block (a calibration overlay): a block that does not give the served
        compute fraction keeps this profile's (kernel benchmarks, which overlays are fitted on, cannot measure it)."""
        if efficiency.served_compute_fraction is None and self.efficiency.served_compute_fraction is not None:
            efficiency = replace(efficiency, served_compute_fraction=self.efficiency.served_compute_fraction,
                                 sources={**efficiency.sources, "served_compute_fraction":
                                          self.efficiency.sources.get("served_compute_fraction", "PROFILE")})
        return replace(self, efficiency=efficiency)

    def with_price(self, usd_per_hour: float, note: str = "--price") -> HardwareSpec:
        """The profile at another price (``note`` says where it came from: ``--price``, a TCO file, ...)."""
        from ..checks import real
        from ..planning.cost import MAX_PRICE_USD_PER_HOUR

        real(f"{self.id}: price (USD per device-hour, from {note})", usd_per_hour, 0, MAX_PRICE_USD_PER_HOUR,
             above=True)
        return replace(self, price_usd_per_s=usd_per_hour / 3600.0, price_note=note)


def _link(r: Reader, name: str, default_domain: int | None) -> Link:
    node = r.child(name)
    bw, _ = node.sourced("bandwidth_per_direction", "bytes_per_s")
    lat, _ = node.sourced("latency", "s")
    if default_domain is None:
        dom, _ = node.sourced("domain_size", "count")
        dom = _whole(node, "domain_size", dom, minimum=1)
    else:
        dom = default_domain
    nvls = node.sourced_flag("nvls", False)
    node.done()
    return Link(bw, lat, dom, nvls)


def _whole(node: Reader, key: str, value: float, minimum: int) -> int:
    """A count read as a quantity: a whole number >= ``minimum``."""
    if value != int(value) or value < minimum:
        raise node.error(f"{key}.value", f"expected a whole number >= {minimum}, got {value:g}")
    return int(value)


def _check(node: Reader, key: str, dim: str, value: float) -> None:
    """The range of a sourced efficiency value (read with ``minimum=None`` for fractions, so that a negative one is
    told the same range as 0 or 1.5), named at ``KEY.value`` as the reader names the value's other errors."""
    if dim == "fraction" and not 0 < value <= 1:
        raise node.error(f"{key}.value", f"expected a fraction in (0, 1], got {value:g}")
    if dim == "fraction0" and not 0 <= value <= 1:
        raise node.error(f"{key}.value", f"expected a fraction in [0, 1], got {value:g}")
    if dim in ("s", "bytes", "count") and value < 0:
        raise node.error(f"{key}.value", f"expected a non-negative value, got {value:g}")


def _family(node: Reader, base, params: dict, cls, sources: dict, prefix: str):
    values = {}
    for key, (fld, dim) in params.items():
        fraction = dim in ("fraction", "fraction0")
        got = node.sourced(key, "fraction" if fraction else dim, None, minimum=None if fraction else 0.0)
        if got is None:
            if base is None:
                if fld in ("floor_s", "compute_fraction", "memory_fraction", "latency_s", "latency_per_rank_s",
                           "bandwidth_fraction", "half_bytes"):
                    raise node.error(key, "required key is missing" + node.typo_hint(key))
                continue
            values[fld] = getattr(base, fld)
        else:
            _check(node, key, dim, got[0])
            values[fld] = got[0]
            sources[f"{prefix}{key}"] = got[1]
    node.done()
    return cls(**values)


def read_efficiency(r: Reader) -> Efficiency:
    """Read an ``efficiency`` block (also the format of a calibration overlay)."""
    sources: dict[str, str] = {}
    reserve, sources["memory_reserve"] = r.sourced("memory_reserve", "bytes")
    clock = r.sourced("sustained_clock_fraction", "fraction", None, minimum=None)
    if clock is not None:  # (the clock a loaded card holds: at most the datasheet peak's)
        _check(r, "sustained_clock_fraction", "fraction", clock[0])
        sources["sustained_clock_fraction"] = clock[1]
    served = r.sourced("served_compute_fraction", "fraction", None, minimum=None)
    if served is not None:  # (continuous load can only slow a kernel down from its benchmarked speed)
        _check(r, "served_compute_fraction", "fraction", served[0])
        sources["served_compute_fraction"] = served[1]
    kn = r.child("kernels")
    default = _family(kn.child("default"), None, KERNEL_PARAMS, KernelFamily, sources, "default.")
    kernels = {f: _family(kn.child(f), default, KERNEL_PARAMS, KernelFamily, sources, f"{f}.")
               if kn.has(f) else default for f in KERNEL_FAMILIES}
    kn.done()
    cn = r.child("collectives")
    cdefault = _family(cn.child("default"), None, COLLECTIVE_PARAMS, CollectiveFamily, sources, "collectives.")
    colls = {f: _family(cn.child(f), cdefault, COLLECTIVE_PARAMS, CollectiveFamily, sources, f"{f}.")
             if cn.has(f) else cdefault for f in COLLECTIVE_FAMILIES}
    cn.done()
    r.done()
    return Efficiency(reserve, kernels, colls, clock[0] if clock else 1.0, served[0] if served else None, sources)


def _efficiency_within(r: Reader, capacity_bytes: float) -> Efficiency:
    """The efficiency block, whose memory reserve must leave some of the device's memory to use."""
    eff = read_efficiency(r)
    if eff.memory_reserve_bytes >= capacity_bytes:
        raise r.error("memory_reserve", f"expected less than the memory capacity ({capacity_bytes / 2**30:.4g} GiB), "
                                        f"got {eff.memory_reserve_bytes / 2**30:.4g} GiB")
    return eff


def _named(r: Reader) -> str:
    name = r.str("name").strip()
    if not name:
        raise r.error("name", "expected the device's name (e.g. NVIDIA H100 SXM5 80GB), got an empty string")
    return name


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
    # one device's figures within what any accelerator or host has, and then some: outside, a unit slip (TB/s
    # written as PB/s, GiB as TiB) that would compute TPOTs of 1e28 s. The upper ends clear a wafer-scale chip's
    # 21 PB/s of on-chip SRAM bandwidth (Cerebras WSE-3, cerebras.ai/chip) and a GB300 NVL72 rack taken as one
    # device, 1.08 EFLOP/s FP4 dense and 20 TB of HBM (verda.com/blog/gb300-nvl72-architecture, rack aggregate);
    # the lower ends a small host CPU (the cpu-host profile: 50 GB/s, 1 TFLOP/s)
    for block, key, value, lo, hi, unit in [(compute, d, v, 1e9, 1e19, "FLOP/s") for d, v in peaks.items()] + [
            (mem, "capacity", cap, 1e8, 1e14, "B"), (mem, "bandwidth", bw, 1e9, 1e17, "B/s")]:
        if not lo <= value <= hi:
            raise block.error(key, f"expected a device figure in [{lo:g}, {hi:g}] {unit}, got {value:g} {unit} "
                                   "(a unit slip?)")
    mem.done()
    dev = r.child("device", {})
    units = _whole(dev, "compute_units", dev.sourced("compute_units", "count", (0.0, ""))[0], minimum=0)
    boost = dev.sourced("boost_clock", "Hz", (0.0, ""))[0]
    attach = dev.str("attach", "sxm", choices=ATTACH)
    host = dev.sourced("host_link", "bytes_per_s", (0.0, ""))[0]
    dev.done()
    scale_up = _link(r, "scale_up", None)
    scale_out = _link(r, "scale_out", 1 << 30)
    power = r.child("power")
    tdp, _ = power.sourced("tdp", "W")
    power.done()
    price = r.child("price", {})
    usd_per_s, price_src = price.sourced("per_device_hour", "usd_per_s", (float("nan"), "no sourced price"))
    from ..planning.cost import MAX_PRICE_USD_PER_HOUR

    if usd_per_s * 3600 > MAX_PRICE_USD_PER_HOUR:  # (NaN, no price, passes)
        raise price.error("per_device_hour", f"expected at most {MAX_PRICE_USD_PER_HOUR:,.0f} USD per device-hour "
                                             f"(a typo?), got {usd_per_s * 3600:g}")
    price.done()
    hw = HardwareSpec(
        id=hw_id,
        name=_named(r),
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
        efficiency=_efficiency_within(r.child("efficiency"), cap),
        sources=dict(r.sources),
        notes=r.str("notes", ""),
        file=str(path),
        compute_units=int(units),
        boost_clock_hz=boost,
        attach=attach,
        host_link_bytes_per_s=host,
        aliases=r.names("aliases"),
    )
    r.done()
    return hw
