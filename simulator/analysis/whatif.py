"""What-if analysis: one serving plan, one request shape -> per-quadrant breakdown, TTFT, TPOT,
throughput, memory fit and cost. Pure functions over the op builder and a TimingModel."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..checks import whole
from ..errors import SimulatorError
from ..ops.build import StepShape, build_ops
from ..ops.kinds import DTYPES, OpTable, is_collective
from ..plan import PhasePlan, ServingPlan, kv_link, kv_link_latency_s
from ..timing.base import BOUNDS, OpTimes, TimingModel, checked_timing
from ..timing.memory import MemoryFit, kv_bytes_per_token_model, memory_fit
from ..timing.roofline import RooflineModel

QUADRANTS = ("prefill_attention", "prefill_ffn", "decode_attention", "decode_ffn")


@dataclass(frozen=True)
class PhaseTiming:
    """One micro-batch step of one phase, costed."""

    ops: OpTable
    times: OpTimes
    plan: PhasePlan
    layer_stage_s: np.ndarray  # one pipeline stage's layer ops (what a device spends per micro-batch)
    head_s: np.ndarray  # embedding + LM head + sampling (once per forward)
    p2p_s: np.ndarray  # one pipeline hand-off
    forward_s: np.ndarray  # one micro-batch through every stage (latency)
    af_step_s: np.ndarray | None = None  # attention/FFN-disaggregated step (ping-pong pipeline)

    def quadrant_mask(self, quadrant: str) -> np.ndarray:
        return self.ops.mask(quadrant)


def time_phase(model, plan: PhasePlan, shape: StepShape, phase: str, timing: TimingModel, *,
               kv_precision: str = "bf16", kv_scale_tokens: int = 128, **sweep) -> PhaseTiming:
    ops = build_ops(model, plan, shape, phase, kv_precision=kv_precision, kv_scale_tokens=kv_scale_tokens, **sweep)
    times = timing.evaluate(ops)
    pp = np.asarray(sweep.get("pp", plan.pp), dtype=float)
    other = ops.mask(f"{phase}_other")
    p2p = np.array([n == "pp_send_recv" for n in ops.names])
    head = other & ~p2p
    a_mask, f_mask = ops.mask(f"{phase}_attention"), ops.mask(f"{phase}_ffn")
    overlap_a, overlap_f = plan.attention.overlap_comm, plan.ffn.overlap_comm
    layer_stage = times.total_s(a_mask, overlap_a) + times.total_s(f_mask, overlap_f)
    head_s = times.total_s(head)
    p2p_one = times.time_s[p2p].sum(axis=0)
    forward = pp * layer_stage + head_s + (pp - 1) * p2p_one
    af = None
    if plan.af_disaggregated:
        names = np.array(ops.names)
        xfer_a, xfer_f = names == "attn_to_ffn", names == "ffn_to_attn"
        per_layer = lambda m: (times.weighted(times.time_s)[m].sum(axis=0)  # noqa: E731
                               / max(model.num_layers / plan.pp, 1e-9))
        t_a = per_layer(a_mask & ~xfer_a)
        t_f = per_layer(f_mask & ~xfer_f)
        t_x = np.maximum(per_layer(xfer_a), per_layer(xfer_f))
        mb = plan.micro_batches
        # per layer, the ping-pong pipeline is limited by its busiest resource (attention pool, FFN pool or
        # the link, each serving mb micro-batches) or by one micro-batch's round trip, whichever is longer
        per_layer = np.maximum(mb * np.maximum(np.maximum(t_a, t_f), t_x), t_a + t_f + 2 * t_x)
        af = model.num_layers * per_layer + head_s
        forward = af
    return PhaseTiming(ops, times, plan, layer_stage, head_s, p2p_one, forward, af)


@dataclass(frozen=True)
class WhatIfResult:
    """What ``whatif`` returns: TTFT, TPOT, throughput, memory fit and cost of one plan, ``quadrants`` (a
    DataFrame: time, FLOP, bytes, communication and bound per quadrant) and notes."""

    model_id: str
    plan: ServingPlan
    batch: int
    isl: int
    osl: int
    prefill_batch: int
    quadrant_rows: list[dict]  # one per quadrant (+ other); ``quadrants`` is the DataFrame view
    ttft_s: float
    tpot_s: float
    output_tokens_per_s: float
    output_tokens_per_s_per_device: float
    devices: int
    memory: list[MemoryFit]
    cost_usd_per_mtok: float
    prefill: PhaseTiming = field(repr=False)
    decode: PhaseTiming = field(repr=False)
    notes: list[str] = field(default_factory=list)
    decode_tokens_per_s_per_device: float = 0.0  # what the decode devices alone sustain (all plans)
    kv_transfer_s: float = 0.0  # P/D: KV shipping time left after the prefill (in TTFT)
    moe: bool = False  # the model routes its FFN to experts (the plan's expert layout then matters)
    # the gap between tokens a request sees in the throughput's cycle: colocated, its decode step plus the other
    # prefills the batch runs meanwhile, spread over its osl - 1 gaps (TTFT + (osl - 1) x this spans the cycle);
    # P/D, the decode step (its pool runs no prefill)
    tpot_served_s: float = math.nan

    @property
    def fits(self) -> bool:
        return all(m.fits for m in self.memory)

    @property
    def quadrants(self):
        """Per-quadrant metrics as a pandas DataFrame (pandas is imported on first use)."""
        import pandas as pd

        return pd.DataFrame(self.quadrant_rows)

    def quadrant(self, name: str) -> dict:
        for r in self.quadrant_rows:
            if r["quadrant"] == name:
                return r
        raise SimulatorError(f"quadrant: expected one of {', '.join(r['quadrant'] for r in self.quadrant_rows)}, "
                             f"got {name!r}")

    def to_dict(self) -> dict:
        q = {}
        for row in self.quadrant_rows:
            q[row["quadrant"]] = {k: _clean(v) for k, v in row.items() if k != "quadrant"}
        return {
            "model": self.model_id,
            "devices": self.devices,
            "batch": self.batch, "isl": self.isl, "osl": self.osl, "prefill_batch": self.prefill_batch,
            "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
            "output_tokens_per_s": self.output_tokens_per_s,
            "output_tokens_per_s_per_device": self.output_tokens_per_s_per_device,
            "decode_tokens_per_s_per_device": self.decode_tokens_per_s_per_device,
            "tpot_served_s": self.tpot_served_s,
            "kv_transfer_s": self.kv_transfer_s,
            "cost_usd_per_mtok": _clean(self.cost_usd_per_mtok),
            "fits": self.fits,
            "memory": [{"role": m.role, "hardware": m.hardware, "weights_bytes": m.weights_bytes,
                        "kv_cache_bytes": m.kv_cache_bytes, "activation_bytes": m.activation_bytes,
                        "reserve_bytes": m.reserve_bytes, "capacity_bytes": m.capacity_bytes,
                        "headroom_bytes": m.headroom_bytes, "fits": m.fits} for m in self.memory],
            "quadrants": {k: v for k, v in q.items() if k in QUADRANTS},
            "other": {k: v for k, v in q.items() if k not in QUADRANTS},
            "notes": self.notes,
        }


def _clean(v):
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def quadrant_table(pt: PhaseTiming, phase: str, scale: float = 1.0) -> list[dict]:
    """Per-quadrant metrics of a costed phase (config 0), for ``scale`` micro-batch forwards."""
    t, ops = pt.times, pt.ops
    pp = pt.plan.pp
    rows = []
    attributed = t.attributed()
    for part in ("attention", "ffn", "other"):
        q = f"{phase}_{part}"
        m = ops.mask(q)
        if not m.any():
            continue
        # per device: a decode step runs pp micro-batches through each stage; a prompt passes each stage once
        mult = scale * (pp if part != "other" and phase == "decode" else 1.0)
        overlap = {"attention": pt.plan.attention.overlap_comm, "ffn": pt.plan.ffn.overlap_comm}.get(part, False)
        time_s = float(t.total_s(m, overlap)[0]) * mult
        cnt = ops["count"][m, 0]
        flop = float((cnt * ops["flop"][m, 0]).sum()) * mult
        byts = float((cnt * ops["bytes"][m, 0]).sum()) * mult
        comm = float((cnt * t.comm_s[m, 0]).sum()) * mult
        parts = {b: float((cnt * attributed[b][m, 0]).sum()) * mult for b in BOUNDS}
        bound = max(parts, key=parts.get) if time_s > 0 else "none"
        peak, bw = _quadrant_peaks(ops, m)
        rows.append({
            "quadrant": q, "time_s": time_s, "flop": flop, "bytes": byts, "comm_s": comm,
            "arithmetic_intensity": flop / byts if byts else float("nan"), "bound": bound,
            "achieved_flop_per_s": flop / time_s if time_s else 0.0,
            "flop_fraction_of_peak": flop / time_s / peak if time_s and peak == peak and peak else 0.0,
            "achieved_bytes_per_s": byts / time_s if time_s else 0.0,
            "bandwidth_fraction_of_peak": byts / time_s / bw if time_s and bw else 0.0,
            **{f"{b}_s": v for b, v in parts.items()},
        })
    return rows


def _quadrant_peaks(ops: OpTable, m: np.ndarray) -> tuple[float, float]:
    """The highest datasheet FLOP/s and bandwidth among the quadrant's compute ops (config 0)."""
    comp = m & ~is_collective(ops.kind)
    if not comp.any():
        return float("nan"), 0.0
    flop = ops["flop"][:, 0]
    hw, dt = ops["hw"][:, 0], ops["dtype"][:, 0]
    peaks = [ops.devices[hw[i]].peak(DTYPES[int(dt[i])]) for i in np.flatnonzero(comp & (flop > 0))]
    bws = [ops.devices[hw[i]].hbm_bytes_per_s for i in np.flatnonzero(comp)]
    return (max(peaks) if peaks else float("nan")), max(bws)



def check_context(model, isl: int, osl: int) -> None:
    """Refuse a prompt + output longer than the model's context window (``whatif``, ``sweep``)."""
    if model.exceeds_context(isl + osl):
        raise SimulatorError(f"isl + osl = {isl + osl} tokens exceed {model.id}'s context window of "
                             f"{model.context_tokens}")


def whatif(plan: ServingPlan, *, batch: int, isl: int, osl: int, prefill_batch: int = 1,
           timing: TimingModel | None = None) -> WhatIfResult:
    """Score one plan: TTFT of a ``prefill_batch`` x ``isl`` prefill, TPOT at ``batch`` concurrent
    sequences (mean KV length isl + osl/2), steady-state throughput, memory and cost."""
    if not isinstance(plan, ServingPlan):
        raise SimulatorError(f"whatif: plan: expected a ServingPlan (plan_from_options(PlanOptions(...)) or "
                             f"read_deployment(...).serving_plan()), got {type(plan).__name__}")
    batch = whole("whatif: batch", batch, 1)
    isl, osl = whole("whatif: isl", isl, 1), whole("whatif: osl", osl, 1)
    prefill_batch = whole("whatif: prefill_batch", prefill_batch, 1)
    timing = checked_timing("whatif", timing) or RooflineModel()
    model = plan.model
    notes: list[str] = []
    kw = dict(kv_precision=plan.kv_precision, kv_scale_tokens=plan.kv_scale_tokens)

    # ---- prefill: chunks of the prompt through the pipeline ----------------------------------
    pre = plan.prefill
    chunk = pre.chunk_tokens if 0 < pre.chunk_tokens < isl else isl
    n_chunks = math.ceil(isl / chunk)
    avg_ctx = (n_chunks - 1) / 2 * chunk
    check_context(model, isl, osl)
    # every attention-DP rank prefills its own prompts at once: the step holds prefill_batch per rank
    dp_pre = pre.attention.dp if not pre.af_disaggregated else 1
    # A/F: the prompts ping-pong in micro-batches (the per-layer cost is for one micro-batch)
    # (never less than a whole prompt a micro-batch: a lone prompt is one micro-batch, nothing overlapping)
    mb_pre = min(pre.micro_batches, prefill_batch) if pre.af_disaggregated else 1
    p_shape = StepShape(prefill_seqs=prefill_batch * dp_pre / mb_pre, prefill_len=chunk, prefill_ctx=avg_ctx)
    pt = time_phase(model, replace(pre, micro_batches=mb_pre) if pre.af_disaggregated else pre, p_shape, "prefill",
                    timing, **kw)
    stage_and_hop = pt.layer_stage_s[0] + (pt.p2p_s[0] if pre.pp > 1 else 0.0)
    ttft = (n_chunks + pre.pp - 1) * stage_and_hop + pt.head_s[0] if not pre.af_disaggregated \
        else n_chunks * pt.forward_s[0]
    prefill_busy_per_req = ((n_chunks * stage_and_hop + pt.head_s[0]) if not pre.af_disaggregated
                            else n_chunks * pt.forward_s[0]) / (prefill_batch * dp_pre)
    if pre.pp > 1:  # the pipeline's fill and drain: pp - 1 stage times of TTFT do no chunk's work
        bubble = (pre.pp - 1) / (n_chunks + pre.pp - 1)
        notes.append(f"chunked pipeline prefill: {n_chunks} chunk(s) through {pre.pp} stages, the pipeline bubble "
                     f"(fill and drain) is {bubble:.0%} of TTFT"
                     + ("; use a smaller --chunk" if n_chunks < pre.pp else ""))

    # ---- decode: micro-batches through the pipeline -------------------------------------------
    dec = plan.decode
    spec = plan.speculative
    if dec.af_disaggregated:  # (never less than a whole sequence a micro-batch)
        dec = replace(dec, micro_batches=min(dec.micro_batches, batch))
    mb = dec.micro_batches if dec.af_disaggregated else dec.pp
    seqs_mb = batch / mb
    kv_mean = isl + osl / 2
    q_len = spec.draft_tokens + 1 if spec else 1
    d_shape = StepShape(decode_seqs=seqs_mb, decode_len=q_len, decode_kv=kv_mean)
    dt = time_phase(model, dec, d_shape, "decode", timing, **kw)
    if dec.af_disaggregated:
        step = dt.af_step_s[0]
    else:
        step = dec.pp * dt.layer_stage_s[0] + dt.head_s[0] + (dec.pp - 1) * dt.p2p_s[0]
    tokens_per_step = 1.0
    if spec:
        base = time_phase(model, dec, StepShape(decode_seqs=seqs_mb, decode_kv=kv_mean), "decode", timing, **kw)
        base_step = base.af_step_s[0] if dec.af_disaggregated else base.forward_s[0]
        step = step + spec.draft_tokens * spec.draft_cost_fraction * base_step
        tokens_per_step = spec.expected_tokens_per_step
    tpot = step / tokens_per_step

    # ---- P/D: the KV cache goes from the prefill pool to the decode pool ---------------------
    kv_transfer = 0.0
    if not plan.colocated:
        kv_bytes = isl * kv_bytes_per_token_model(model, plan.kv_precision, plan.kv_scale_tokens)
        # one request's KV sits on the tp x pp devices of one attention-DP group and lands on one decode rank's
        # (``plan.kv_link``, as simulate ships it); the prefill_batch prompts of that group share those links.
        # A deployment's kv_transfer block (its bandwidth, latency and streaming) where it gives one, as simulate
        # takes it; else the link's bandwidth, streamed
        level, link = kv_link(pre, dec)
        tr = plan.kv_transfer
        bandwidth = tr.bandwidth_bytes_per_s if tr is not None and tr.bandwidth_bytes_per_s else link
        latency = tr.latency_s if tr is not None and tr.latency_s is not None else kv_link_latency_s(pre, dec, level)
        ship_s = prefill_batch * kv_bytes / bandwidth
        if tr is None or tr.overlap_with_prefill:
            # streamed layer by layer while the prompt is prefilled: what does not fit under it shows (at least
            # the last layer's share)
            ship_s = max(ship_s - ttft * (1 - 1 / model.num_layers), ship_s / model.num_layers)
        kv_transfer = latency + ship_s
        ttft += kv_transfer
        over = ("the deployment's kv_transfer link" if tr is not None and tr.bandwidth_bytes_per_s
                else "NVLink (one scale-up domain)" if level == "scale_up" else "the scale-out link")
        how = "streamed per layer" if tr is None or tr.overlap_with_prefill else "sent after the prefill"
        notes.append(f"P/D KV transfer: {kv_bytes / 1e6:.1f} MB per request over {over}, "
                     f"{kv_transfer * 1e3:.2f} ms of it after the prefill ({how})")

    # ---- throughput and cost ------------------------------------------------------------------
    r_pre, r_dec = plan.prefill_replicas, plan.decode_replicas
    # a request's first token comes from its prefill, the other osl - 1 from decode steps
    tpot_served = tpot
    if plan.colocated:
        cycle = (osl - 1) * tpot + batch * prefill_busy_per_req
        out_tps = batch * osl / cycle * r_dec
        if osl > 1:  # (fewer sequences than the prefill fills a step with: its own prefill is all it waits out)
            tpot_served = max(tpot, (cycle - ttft) / (osl - 1))
        devices = plan.devices * r_dec
        price = _pool_price(plan.decode) * r_dec  # (an A/F pool's FFN devices at their own price)
        decode_devices = devices
    else:
        decode_rps = batch / tpot * r_dec / (osl - 1) if osl > 1 else math.inf
        prefill_rps = r_pre / prefill_busy_per_req
        out_tps = min(decode_rps, prefill_rps) * osl
        if prefill_rps < decode_rps:
            notes.append(f"prefill pool limits throughput ({prefill_rps:.2f} req/s); add prefill devices")
        devices = plan.prefill.devices * r_pre + plan.decode.devices * r_dec
        price = _pool_price(plan.prefill) * r_pre + _pool_price(plan.decode) * r_dec
        decode_devices = plan.decode.devices * r_dec
    cost = price / out_tps * 1e6 if out_tps > 0 else float("inf")
    if not math.isfinite(price):
        notes.append("no rental price in a hardware profile: cost is n/a (pass --price USD/h)")

    # ---- memory -------------------------------------------------------------------------------
    # ``batch`` counts the sequences of one model replica (all of its attention-DP ranks)
    mem = memory_fit(model, dec, kv_tokens_per_replica=batch * (isl + osl),
                     step_tokens=max(batch * q_len, prefill_batch * chunk if plan.colocated else 0), **kw)
    if not plan.colocated:
        mem += memory_fit(model, pre, kv_tokens_per_replica=prefill_batch * isl,
                          step_tokens=prefill_batch * chunk, **kw)

    if not all(m.fits for m in mem):  # the figures above assume the batch fits: say so where a result is read
        notes.append("the batch does not fit in memory (see memory): latency, throughput and cost assume it did")
    q = quadrant_table(pt, "prefill", n_chunks) + quadrant_table(dt, "decode", 1.0)
    if dec.af_disaggregated:
        notes.append(f"decode attention and FFN on separate pools with {dec.micro_batches} micro-batches: "
                     "quadrant times are each pool's busy time per step; TPOT follows the ping-pong pipeline")
    dec_tps = batch / tpot * r_dec if not plan.colocated else out_tps
    return WhatIfResult(model.id, plan, batch, isl, osl, prefill_batch, q, float(ttft), float(tpot),
                        float(out_tps), float(out_tps / devices), int(devices), mem, float(cost), pt, dt, notes,
                        decode_tokens_per_s_per_device=float(dec_tps / decode_devices),
                        tpot_served_s=float(tpot_served),
                        kv_transfer_s=float(kv_transfer), moe=model.is_moe)


def _pool_price(p: PhasePlan) -> float:
    a = p.attention.hardware.price_usd_per_s * p.attention.devices_per_stage * p.pp
    if p.af_disaggregated:
        a += p.ffn.hardware.price_usd_per_s * p.ffn.devices * p.pp
    return a

