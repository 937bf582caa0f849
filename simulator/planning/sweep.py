"""Plan search: score many (hardware, precision, TP, EP, batch) configurations in one vectorised
pass per (hardware, precision), keep the feasible ones and find the Pareto front of throughput per
device against TPOT. Capacity planning: replicas and dollars per hour for a target request rate."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..analysis.whatif import check_context, time_phase
from ..checks import names, real, whole
from ..devices import DeviceArrays
from ..errors import InfeasibleError, SimulatorError
from ..ops.build import StepShape
from ..plan import attention_tp_problem, simple_phase
from ..specs.catalog import in_catalogue, load_hardware, load_model
from ..timing.base import checked_timing
from ..timing.memory import memory_fit
from ..timing.roofline import RooflineModel


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def sweep(model_id: str, hardware: Sequence[str], devices: int, *, isl: int, osl: int,
          batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256), precisions: Sequence[str] = ("bf16", "fp8"),
          kv_precision: str = "bf16", tps: Sequence[int] | None = None, eps: Sequence[int] | None = None,
          timing=None, prices_usd_per_hour: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per configuration (pp = 1, colocated), with TTFT, TPOT, throughput, memory fit and cost
    (``prices_usd_per_hour``: profile id -> USD per device-hour, over the profiles' own prices)."""
    hardware, precisions = names("sweep: hardware", hardware), names("sweep: precisions", precisions)
    devices = whole("sweep: devices", devices, 1)
    isl, osl = whole("sweep: isl", isl, 1), whole("sweep: osl", osl, 1)
    if isinstance(batches, (str, bytes)) or not len(batches):
        raise SimulatorError(f"sweep: batches: expected a non-empty list of batch sizes, got {batches!r}")
    batches = [whole("sweep: batches", b, 1) for b in batches]
    for name, v in (("tps", tps), ("eps", eps)):
        if v is not None:
            for x in v:
                whole(f"sweep: {name}", x, 1)
            if any(devices % int(x) for x in v):
                raise SimulatorError(f"sweep: {name}: every size must divide devices = {devices}, got {list(v)}")
    if prices_usd_per_hour is not None:  # every key a profile of the sweep (aliases resolved), every price > 0
        if not isinstance(prices_usd_per_hour, dict):
            raise SimulatorError(f"sweep: prices_usd_per_hour: expected a dict of profile id -> USD per device-hour, "
                                 f"got {type(prices_usd_per_hour).__name__}")
        swept = {load_hardware(h).id for h in hardware}
        priced = {}
        for key, usd in prices_usd_per_hour.items():
            hid = load_hardware(key).id
            if hid not in swept:
                raise SimulatorError(f"sweep: prices_usd_per_hour[{key!r}]: not a device of this sweep "
                                     f"({', '.join(sorted(swept))})")
            priced[hid] = real(f"sweep: prices_usd_per_hour[{key!r}]", usd, 0, above=True)
        prices_usd_per_hour = priced
    model = load_model(model_id)
    timing = checked_timing("sweep", timing) or RooflineModel()
    check_context(model, isl, osl)
    tps = list(tps or [t for t in _divisors(devices) if attention_tp_problem(model, t) is None])
    eps = list(eps or ([e for e in _divisors(devices) if model.moe.num_experts % e == 0] if model.moe else [1]))
    frames = []
    for hw_id, prec in itertools.product(hardware, precisions):
        hw = load_hardware(hw_id)
        if hw.id in (prices_usd_per_hour or {}):
            hw = hw.with_price(prices_usd_per_hour[hw.id])
        try:
            base = simple_phase(hw, model, devices, tp=tps[0], precision=prec)
        except InfeasibleError:
            continue  # e.g. fp8 on a device without fp8
        combos = np.array([(t, e, b) for t in tps for e in eps for b in batches], dtype=float)
        tp, ep, batch = combos.T
        dp = devices / tp
        etp = devices / ep  # the expert groups span the devices (attention DP without EP: TP-sharded experts)
        dev = DeviceArrays.of(hw)
        kw = dict(kv_precision=kv_precision, tp=tp, dp=dp, ep=ep, expert_tp=etp, attn_dev=dev, ffn_dev=dev)
        dec = time_phase(model, base, StepShape(decode_seqs=batch, decode_kv=isl + osl / 2), "decode", timing, **kw)
        # as whatif scores one plan: every attention-DP rank prefills its own prompt in the step (one request's
        # share of the prefill busy time is the step over dp), and a request's first token is its prefill's
        pre = time_phase(model, base, StepShape(prefill_seqs=dp, prefill_len=isl), "prefill", timing, **kw)
        tpot = dec.forward_s
        ttft = pre.forward_s
        out_tps = batch * osl / ((osl - 1) * tpot + batch * ttft / dp)
        # the TPOT a request sees in that cycle: its decode steps plus the other prefills the batch runs meanwhile
        # (batch / dp - 1 steps of ttft on its rank, stalled or chunked into the steps: the same time either way),
        # over its osl - 1 gaps; the decode step alone (tpot_s) where one token leaves no gap to stretch
        tpot_served = tpot + np.maximum(batch / dp - 1, 0) * ttft / max(osl - 1, 1) if osl > 1 else tpot
        kv_cap = np.empty(len(combos))
        weights = np.empty(len(combos))
        for (t, e), idx in pd.Series(range(len(combos))).groupby([tp, ep]):
            plan = simple_phase(hw, model, devices, tp=int(t), ep=int(e), precision=prec)
            m = memory_fit(model, plan, kv_tokens_per_replica=0, step_tokens=isl, kv_precision=kv_precision)[0]
            kv_cap[idx.to_numpy()] = m.kv_token_capacity * plan.attention.dp
            weights[idx.to_numpy()] = m.weights_bytes
        fits = kv_cap >= batch * (isl + osl)
        price = hw.price_usd_per_s * devices
        frames.append(pd.DataFrame({
            # (a profile outside the catalogue, e.g. an edited copy, is labelled by the file it was read from)
            "hardware": hw.id if in_catalogue(hw) else hw_id, "precision": prec, "tp": tp.astype(int),
            "ep": ep.astype(int),
            "dp": dp.astype(int), "batch": batch.astype(int), "ttft_s": ttft, "tpot_s": tpot,
            "tpot_served_s": tpot_served,
            "output_tokens_per_s": out_tps, "output_tokens_per_s_per_device": out_tps / devices,
            "weights_bytes_per_device": weights, "kv_token_capacity": kv_cap, "fits": fits,
            "usd_per_hour": price * 3600, "cost_usd_per_mtok": price / out_tps * 1e6,
        }))
    if not frames:
        raise SimulatorError("no configuration could be built (check --precision against the devices)")
    return pd.concat(frames, ignore_index=True)


def _row_label(r) -> str:
    """One sweep configuration as the messages name it: ``h100-sxm fp8, tp 8, ep 1, batch 64``."""
    return f"{r.hardware} {r.precision}, tp {r.tp}, ep {r.ep}, batch {r.batch}"


def infeasible_reason(df: pd.DataFrame, model_id: str, devices: int, *, isl: int, osl: int,
                      kv_precision: str = "bf16", tpot_slo_s: float | None = None,
                      ttft_slo_s: float | None = None) -> str:
    """Why no row of a sweep is feasible, naming the closest configuration and by how much it misses: among the
    rows that fit, the one whose worse latency is nearest its target (every target it misses); where none fits,
    the one short of the least memory per device (what it needs and what the device has)."""
    fit = df[df.fits]
    if len(fit):
        targets = (("TTFT", "ttft_s", ttft_slo_s), ("TPOT", "tpot_served_s", tpot_slo_s))
        limits = [(name, col, lim) for name, col, lim in targets if lim]
        worst = np.max([fit[col].to_numpy() / lim for _, col, lim in limits], axis=0)
        best = fit.iloc[int(np.argmin(worst))]
        from .verify import latency_miss

        misses = [latency_miss(name, best[col], lim, None) for name, col, lim in limits if best[col] > lim]
        price = f" (${best.usd_per_hour:.2f}/h)" if np.isfinite(best.usd_per_hour) else ""
        return (f"no configuration that fits meets the SLOs; closest: {_row_label(best)}{price} misses by "
                f"{'; '.join(misses)}")
    model = load_model(model_id)
    short = []  # (memory fit, row) of each layout at its smallest batch (the least KV cache it needs)
    for _, g in df.groupby(["hardware", "precision", "tp", "ep"], sort=False):
        r = g.loc[g.batch.idxmin()]
        plan = simple_phase(load_hardware(r.hardware), model, devices, tp=int(r.tp), ep=int(r.ep),
                            precision=r.precision)
        m = memory_fit(model, plan, kv_tokens_per_replica=r.batch * (isl + osl), step_tokens=isl,
                       kv_precision=kv_precision)[0]
        short.append((m, r))
    m, r = max(short, key=lambda mr: mr[0].headroom_bytes)
    return f"no configuration fits in memory; closest: {_row_label(r)}: {m.explain()}"


def pareto_front(df: pd.DataFrame, x: str | None = None, y: str = "output_tokens_per_s_per_device") -> pd.DataFrame:
    """Rows not dominated by another (lower-or-equal x and higher-or-equal y, one strictly). Rows without both
    figures (NaN: a configuration that does not fit) are not comparable and are left out. ``x`` defaults to the TPOT
    a request sees (``tpot_served_s``, what the sweep's throughput implies), or ``tpot_s`` in a frame without it."""
    if not isinstance(df, pd.DataFrame):
        raise SimulatorError(f"pareto_front: expected a DataFrame (sweep's result), got {type(df).__name__}")
    if x is None:
        x = "tpot_served_s" if "tpot_served_s" in df.columns else "tpot_s"
    missing = [c for c in (x, y) if c not in df.columns]
    if missing:
        raise SimulatorError(f"pareto_front: no column {', '.join(map(repr, missing))}; the frame has "
                             f"{', '.join(map(str, df.columns[:12]))}")
    d = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    best = -math.inf
    keep = []
    for i, val in zip(d.index, d[y]):
        if val > best:
            keep.append(i)
            best = val
    return d.loc[keep]


def plan_capacity(df: pd.DataFrame, *, rate_per_s: float, osl: int, devices: int) -> pd.DataFrame:
    """Replicas and fleet cost to serve ``rate_per_s`` requests per second with each configuration."""
    out = df.copy()
    need_tps = rate_per_s * osl
    if "cost_usd_per_mtok_at_capacity" not in out:  # one replica running full, kept beside the fleet's figure
        out.insert(out.columns.get_loc("cost_usd_per_mtok"), "cost_usd_per_mtok_at_capacity", out["cost_usd_per_mtok"])
    out["replicas"] = np.ceil(need_tps / out["output_tokens_per_s"]).astype(int)
    out["devices_total"] = out["replicas"] * devices
    out["fleet_usd_per_hour"] = out["replicas"] * out["usd_per_hour"]
    # dollars per million output tokens at the requested rate (the fleet is paid for whether or not it is full)
    out["cost_usd_per_mtok"] = out["fleet_usd_per_hour"] / 3600.0 / need_tps * 1e6
    return out


def largest_batch_under_tpot(plan, tpot_slo_s: float, *, isl: int, osl: int, max_batch: int = 8192,
                             timing=None) -> dict:
    """The largest decode batch (sequences per replica) whose TPOT meets ``tpot_slo_s`` and whose KV cache
    fits, for one serving plan (colocated, P/D or A/F); with the decode tokens/s per decode device. The TPOT held
    to the target is the one a request sees in the throughput's cycle (``WhatIfResult.tpot_served_s``: where the
    pool also prefills, the batch's other prefills stretch each gap, as ``sweep --model`` holds it), not the bare
    decode step (``tpot_s``, also returned). ``limited_by`` is ``tpot``, ``memory`` or ``max_batch``.

    TPOT grows with the batch (more KV to read, larger GEMMs, more prefills a cycle), so the answer is found by
    doubling then bisecting on integers (one what-if per probe)."""
    from ..analysis.whatif import whatif

    def probe(b: int):
        r = whatif(plan, batch=b, isl=isl, osl=osl, timing=timing)
        return r, r.fits and r.tpot_served_s <= tpot_slo_s

    first, ok = probe(1)
    if not ok:
        why = "does not fit in memory" if not first.fits else f"TPOT {first.tpot_served_s * 1e3:.2f} ms at batch 1"
        raise InfeasibleError(f"no batch meets TPOT <= {tpot_slo_s * 1e3:.3g} ms: {why}")
    lo, best, hi = 1, first, None
    b = min(2, max_batch)
    while b > lo:  # doubling, the last probe at max_batch itself
        r, ok = probe(b)
        if not ok:
            hi = b
            break
        lo, best = b, r
        b = min(b * 2, max_batch)
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            r, ok = probe(mid)
            if ok:
                lo, best = mid, r
            else:
                hi = mid
    nxt = whatif(plan, batch=lo + 1, isl=isl, osl=osl, timing=timing) if lo < max_batch else None
    limited = "max_batch" if nxt is None else ("memory" if not nxt.fits else "tpot")
    dec_devices = plan.decode.devices
    return {"batch": lo, "tpot_s": best.tpot_s, "tpot_served_s": best.tpot_served_s, "ttft_s": best.ttft_s,
            "limited_by": limited, "tpot_slo_s": tpot_slo_s, "decode_devices_per_replica": dec_devices,
            "decode_tokens_per_s_per_device": best.decode_tokens_per_s_per_device,
            "output_tokens_per_s": best.output_tokens_per_s, "isl": isl, "osl": osl}
