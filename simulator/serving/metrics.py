"""Metrics of a finished simulation, as the engines' own benchmark tools define them.

``vllm bench serve`` definitions: TTFT = first token at the client - arrival; TPOT = (E2E - TTFT) /
(output tokens - 1) per request (requests with one output token have none); ITL = the gaps between a
request's successive token deliveries; E2E = last token - arrival. Percentiles over the requests of
the measurement window (closed loops skip warm-up and drain; see ``measurement_window``). Goodput is
the rate of requests meeting both SLOs, over the same span as the throughput beside it (so never above it),
and is ``None`` (not applicable) when no SLO is given. A request a horizon stopped mid-service is judged,
target by target, on what the horizon already settles (its TTFT once it has a first token or has waited past
the target, a TPOT miss once certain whatever its finish) and otherwise left out of the SLO figures.
Utilisation is busy time per pool and quadrant over the run.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..specs.deployment import Deployment
from ..specs.traffic import Traffic
from .engine import NOT_ARRIVED, UNFINISHED, Simulation

PERCENTILES = (50, 90, 99)


def _stats(x: pd.Series) -> dict:
    v = x.dropna().to_numpy(dtype=float)
    if not len(v):
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    out = {"mean": float(v.mean())}
    out.update({f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES})
    return out


def weighted_stats(values: np.ndarray, weights: np.ndarray) -> dict:
    """Mean and percentiles of ``values`` each repeated ``weights`` (whole numbers) times (inverted-CDF percentiles)."""
    keep = weights > 0
    v, w = values[keep], weights[keep].astype(float)
    if not len(v):
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    out = {"mean": float((v * w).sum() / w.sum())}
    out.update({f"p{p}": x for p, x in zip(PERCENTILES, weighted_percentiles(v, w, PERCENTILES))})
    return out


SELECT_BINS = 4096  # bins per selection pass of ``weighted_percentiles``
SORT_BELOW = 1 << 14  # candidates it sorts outright


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, percentiles) -> list[float]:
    """The inverted-CDF ``percentiles`` of ``values`` each repeated ``weights`` (positive whole numbers)
    times: for p, the first value, in ascending order, at which the running weight reaches p% of the total.

    By selection rather than a full sort (a long run has ~1M inter-token gaps): a monotone map cuts the values
    into ``SELECT_BINS`` bins by value, so every value in one bin is <= every value in a later one and equal
    values share a bin; the bins' weights say which bin holds the target, and only that bin is cut again, until
    fewer than ``SORT_BELOW`` candidates are left to sort. The same value as sorting everything: the running
    weight is exact (whole numbers below 2**53 sum exactly in floats) and ties are equal whatever their order.
    Other weights (fractions, or a total past 2**53) are sorted outright, the running weight in sorted order."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    if not len(v) or v.shape != w.shape:
        raise ValueError(f"weighted_percentiles: expected values and weights of one length > 0, got {v.shape} and "
                         f"{w.shape}")
    total = float(w.sum())
    if len(v) <= SORT_BELOW or not (total <= 2.0 ** 53 and np.array_equal(w, np.floor(w))):
        order = np.argsort(v)
        cum = np.cumsum(w[order])
        last = len(v) - 1
        return [float(v[order[min(int(np.searchsorted(cum, p / 100 * cum[-1], side="left")), last)]])
                for p in percentiles]
    targets = [p / 100 * total for p in percentiles]
    first = _bins(v, w)  # one pass over everything, shared by the percentiles
    return [_select(v, w, t, first) for t in targets]


def _bins(v: np.ndarray, w: np.ndarray):
    """Bin of each value (a monotone map of it) and the running weight over the bins; None where the values
    cannot be cut (all equal, a spread too small to scale, or not all finite)."""
    lo, hi = float(v.min()), float(v.max())
    spread = hi - lo  # (inf or NaN where the values are not all finite, or span more than the float range)
    scale = SELECT_BINS / spread if math.isfinite(spread) and spread > 0 else 0.0
    if not (math.isfinite(scale) and scale > 0):  # sorted outright
        return None
    idx = ((v - lo) * scale).astype(np.intp)  # rounding and truncation keep the order: v1 <= v2 -> idx1 <= idx2
    np.minimum(idx, SELECT_BINS - 1, out=idx)
    return idx, np.cumsum(np.bincount(idx, weights=w, minlength=SELECT_BINS))


def _select(v: np.ndarray, w: np.ndarray, target: float, binned) -> float:
    offset = 0.0  # the weight of every value below the candidates
    while binned is not None:
        idx, cum = binned
        b = min(int(np.searchsorted(offset + cum, target, side="left")), len(cum) - 1)
        if b:
            offset += float(cum[b - 1])
        m = idx == b
        v, w = v[m], w[m]
        if len(v) <= SORT_BELOW:
            break
        binned = _bins(v, w)
    return _sorted_pick(v, w, offset, target)


def _sorted_pick(v: np.ndarray, w: np.ndarray, offset: float, target: float) -> float:
    order = np.argsort(v)
    cum = offset + np.cumsum(w[order])
    return float(v[order[min(int(np.searchsorted(cum, target, side="left")), len(v) - 1)]])


def measurement_window(requests: pd.DataFrame, sim: Simulation, closed: int) -> dict:
    """The steady-state window the latency and throughput figures describe.

    Closed loop (as ``vllm bench serve --max-concurrency C`` measures it, but without its ramp and
    drain): warm-up ends when C requests have finished (every client slot has turned over once on
    average); the window ends at the last request's arrival, after which fewer than C are in flight.
    Requests that arrive inside the window are measured. Open loop: the whole run, whose request count is those that
    arrived (a horizon may stop the clock before the rest; they count neither way). ``steady`` says which rule held."""
    arr = requests.arrival_s.to_numpy(dtype=float)
    fin = np.sort(requests.finish_s.dropna().to_numpy(dtype=float))
    came = requests.reason.to_numpy(object) != NOT_ARRIVED  # (a horizon's cut-off ones keep their drawn times)
    t0 = float(np.nanmin(arr[came])) if np.isfinite(arr[came]).any() else 0.0
    t1 = float(fin[-1]) if len(fin) else t0
    if closed and len(fin) > closed:
        start, end = float(fin[closed - 1]), float(np.nanmax(arr))
        mask = (arr >= start) & (arr <= end)
        if end > start and mask.sum() >= max(closed, 10):
            return {"rule": f"closed loop: after {closed} requests finished, until the last arrival",
                    "start_s": start, "end_s": end, "requests": int(mask.sum()), "ramp_up_s": sim.ramp_s,
                    "mask": mask, "steady": True}
    arrived = int(came.sum())
    return {"rule": "whole run" + (" (too few requests for a steady-state window)" if closed else ""),
            "start_s": t0, "end_s": t1, "requests": arrived, "ramp_up_s": sim.ramp_s,
            "mask": np.ones(len(requests), bool), "steady": False}


# An open loop is reported as overloaded when, between halfway through its arrivals and the last arrival, the
# requests in the system (arrived, not yet finished or refused) grew by more than ``BACKLOG_GROWTH_FRACTION`` of the
# requests that arrived meanwhile (they finished at under 90% of the rate they came) and by more than three standard
# deviations of a stable backlog's wander (sqrt of its size, as a Poisson count's), and the mean age of the requests
# in the system (how long they have been in it) grew by ``BACKLOG_AGE_GROWTH``: a stable queue's backlog follows its
# arrival rate (a rising one raises it, with younger requests) and wanders, but its requests do not age with the run;
# an overloaded one's do, so its latencies depend on how many requests the run sends. A verdict needs
# ``BACKLOG_MIN_ARRIVALS`` in the second half, and a first half longer than the median time in service (admission
# to finish) of the requests that arrived in it (before that the system is still filling up, and its backlog grows
# whatever the load)
BACKLOG_GROWTH_FRACTION = 0.1
BACKLOG_AGE_GROWTH = 1.25
BACKLOG_MIN_ARRIVALS = 200


def open_loop_backlog(requests: pd.DataFrame) -> dict | None:
    """Whether an open loop's queue kept up: the requests in the system halfway through the arrivals and at the last
    arrival, the arrival and finish rates over the second half of the arrivals, and ``growing`` (see
    ``BACKLOG_GROWTH_FRACTION``; None where the run is too short or too small to tell). Requests a horizon cut short
    are still in the system; requests refused are not (they left as they came). None with fewer than two arrival
    times."""
    arr = requests.arrival_s.to_numpy(dtype=float)
    reason = requests.reason.to_numpy(object)
    came = np.isfinite(arr) & (reason != NOT_ARRIVED)
    arr, reason = arr[came], reason[came]
    if len(arr) < 2 or not arr.max() > arr.min():
        return None
    a0, a1 = float(arr.min()), float(arr.max())
    half = a0 + (a1 - a0) / 2
    fin = requests.finish_s.to_numpy(dtype=float)[came]
    refused = (requests.status.to_numpy(object)[came] == "rejected") & (reason != UNFINISHED)
    left = np.where(np.isfinite(fin), fin, np.where(refused, arr, np.inf))

    def inside(t: float) -> int:
        return int((arr <= t).sum() - (left <= t).sum())

    def age(t: float) -> float:  # how long the requests in the system at t have been in it, on average
        inn = (arr <= t) & (left > t)
        return float((t - arr[inn]).mean()) if inn.any() else 0.0

    at_half, at_end = inside(half), inside(a1)
    second = int(((arr > half) & (arr <= a1)).sum())
    adm = requests.admitted_s.to_numpy(dtype=float)[came] if "admitted_s" in requests else arr
    served = (left - np.where(np.isfinite(adm), adm, arr))[(arr <= half) & np.isfinite(left)]
    growing = None
    if second >= BACKLOG_MIN_ARRIVALS and len(served) and half - a0 >= float(np.median(served)):
        growth = at_end - at_half
        growing = bool(growth > BACKLOG_GROWTH_FRACTION * second and growth > 3.0 * math.sqrt(at_half + 1.0)
                       and age(a1) > BACKLOG_AGE_GROWTH * age(half))
    return {"in_system_halfway": at_half, "in_system_at_last_arrival": at_end,
            "arrivals_per_s": second / (a1 - half),
            "finished_per_s": float(((fin > half) & (fin <= a1)).sum()) / (a1 - half), "growing": growing}


def inter_token_samples(steps: pd.DataFrame, start_s: float = -math.inf, end_s: float = math.inf,
                        requests: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inter-token latencies (s) as ``vllm bench serve`` reports them, the gaps between successive token
    arrivals of a request, with their weights (sequences), for gaps ending in [``start_s``, ``end_s``].

    A decoding sequence gets its next token(s) at the end of each step that decodes it (several at once with
    speculative decoding: one streamed chunk, one gap), so every decode-bearing step contributes
    ``decode_seqs`` gaps equal to the time since that replica's previous decode-bearing step ended; a
    prefill-only step in between, as SGLang runs them, lengthens the gap. A gap across a spell in which the
    replica ran nothing is not an inter-token gap (the sequences before it had all finished), so it is left
    out. With ``requests`` (its ``first_token_s``, ``decode_start_s``, ``output_tokens``, ``decode_replica`` and
    ``prefill_replica``), a request's first gap is measured from its own first token to the end of the first
    decode-bearing step that starts after it joined its decode replica's batch (the first to decode it), in place
    of one of that step's batch gaps: under SGLang's prefill-first scheduling, or a KV landing (P/D) that waits
    for a slot, the batch's gap starts before the request's first token, or in another busy spell; without
    ``requests`` it is taken as its batch's. A
    preempted request's wait until it decodes again is not a gap here (``vllm bench serve`` counts it as one);
    TPOT, from the request's own first token and finish, includes it."""
    if not len(steps):
        return np.zeros(0), np.zeros(0)
    codes, replicas = _codes(steps.replica_id)
    start = steps.start_s.to_numpy(float)
    end = steps.end_s.to_numpy(float)
    # per replica, in time order: a new busy spell starts wherever a step starts after the previous one ended.
    # The engine records each replica's steps in time order, so a stable sort by replica (a radix sort on the
    # small codes) is usually that order already; a frame in any other order is sorted by end time too.
    order = np.argsort(codes, kind="stable")
    c, en = codes[order], end[order]
    if (np.diff(en)[c[1:] == c[:-1]] < 0).any():
        order = np.lexsort((end, codes))  # stable: ties keep their row order
        c, en = codes[order], end[order]
    st = start[order]
    del codes, start, end
    new_spell = np.ones(len(c), bool)
    new_spell[1:] = (c[1:] != c[:-1]) | (st[1:] > en[:-1])
    spell = np.cumsum(new_spell, dtype=np.int32)
    del new_spell
    seqs = steps.decode_seqs.to_numpy()[order]
    del order
    dec = np.flatnonzero(seqs > 0)  # the decode-bearing steps, in replica then time order
    if not len(dec):
        return np.zeros(0), np.zeros(0)
    # (large runs: every array below is as long as the decode steps, so each is freed as soon as it is used)
    has_gap = np.zeros(len(dec), bool)  # step i's batch gap (i > 0) is from step i - 1's end, in one busy spell
    sp = spell[dec]
    del spell
    np.equal(sp[1:], sp[:-1], out=has_gap[1:])
    del sp
    en = en[dec]
    w = seqs[dec]
    del seqs
    own_gap = own_end = np.zeros(0)
    if requests is not None and len(requests):
        dst = st[dec]
        del st
        own_gap, own_end, first = _first_gaps(requests, replicas, c[dec], dst, en)
        del dst, c
        # each such request's first gap replaces one of its first decode step's batch gaps (left as they are
        # where that step's batch had none: the first of a busy spell)
        np.subtract.at(w, first[has_gap[first]], 1)
        del first
    else:
        del st, c
    del dec
    keep = has_gap
    keep &= w > 0
    if start_s > -math.inf:
        keep &= en >= start_s
    if end_s < math.inf:
        keep &= en <= end_s
    idx = np.flatnonzero(keep)
    del keep
    gap = en[idx]
    gap -= en[idx - 1]
    w = w[idx]
    del en, idx
    inside = (own_end >= start_s) & (own_end <= end_s)
    if not len(own_gap):
        return gap, w
    return (np.concatenate([gap, own_gap[inside]]), np.concatenate([w, np.ones(int(inside.sum()), w.dtype)]))


def _first_gaps(requests: pd.DataFrame, replicas: list, codes: np.ndarray, starts: np.ndarray,
                ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each request's first inter-token gap (``inter_token_samples``): from its first token to the end of the first
    decode-bearing step (``codes``, ``starts``, ``ends``: those steps' replica codes into ``replicas``, starts and
    ends, by replica then time) that starts at or after it joined the decode batch (``decode_start_s``) on its
    decode replica (a colocated request's before it finished: its prefill replica). Returns the gaps, their ends,
    and the indices of those steps."""
    ft = requests.first_token_s.to_numpy(float)
    # the first step that decodes it starts at or after it joined the decode batch (P/D: a landed request may wait
    # for a slot on the decode replica); a frame without that column: its first token
    joined = requests.decode_start_s.to_numpy(float) if "decode_start_s" in requests else ft
    name = requests.decode_replica.to_numpy(object)
    name = np.where(name == "", requests.prefill_replica.to_numpy(object), name)
    rep = pd.Index(replicas).get_indexer(name).astype(np.int64)  # -1: no replica (or one without steps)
    take = np.isfinite(ft) & np.isfinite(joined) & (requests.output_tokens.to_numpy() >= 2) & (rep >= 0)
    ft, joined, rep = ft[take], joined[take], rep[take]
    # the decode-bearing steps of replica k are the block [bounds[k], bounds[k + 1]) of the replica-then-time
    # order; within a block, starts ascend (a replica's steps follow one another): one search per replica
    bounds = np.searchsorted(codes, np.arange(len(replicas) + 1), side="left")
    first = np.empty(len(ft), np.int64)
    for k, m in _groups(rep, range(len(replicas))).items():
        a, b = int(bounds[k]), int(bounds[k + 1])
        first[m] = a + np.searchsorted(starts[a:b], joined[m], side="left")
    found = first < bounds[rep + 1]  # (none starts after it on that replica: no decode step to end the gap)
    first = first[found]
    return ends[first] - ft[found], ends[first], first


def inter_token_latencies(steps: pd.DataFrame, start_s: float, end_s: float,
                          requests: pd.DataFrame | None = None) -> dict:
    """{mean, p50, p90, p99} of ``inter_token_samples`` for gaps ending in [``start_s``, ``end_s``]."""
    return weighted_stats(*inter_token_samples(steps, start_s, end_s, requests))


_OWN_FIGURE = r"(?:(?<=needs )|(?<== ))\d[\d,]*"  # a request's own token count in a rejection reason


def _reasons_by_kind(reasons: pd.Series) -> dict[str, int]:
    """Rejection reasons counted by kind, most frequent first: a request's own token count ("needs 5120 KV tokens",
    "prompt + output = 200010 tokens") is left out of the grouping, so one cause on one replica is one entry, and
    the entry carries the largest count of its group ("up to 200010" where they differ)."""
    if reasons.empty:
        return {}
    kinds = reasons.str.replace(_OWN_FIGURE, "\x00", regex=True)
    figures = pd.to_numeric(reasons.str.extract(f"({_OWN_FIGURE})")[0].str.replace(",", ""), errors="coerce")
    out = {}
    for kind, n in kinds.value_counts().items():
        mine = figures[kinds == kind].dropna()
        if not mine.empty:
            top = int(mine.max())
            kind = kind.replace("\x00", f"{top}" if mine.min() == top else f"up to {top}", 1)
        out[kind] = int(n)
    return out


def summarise(requests: pd.DataFrame, steps: pd.DataFrame, sim: Simulation, dep: Deployment, traffic: Traffic) -> dict:
    closed = traffic.concurrency if traffic.arrival == "closed" else 0
    win = measurement_window(requests, sim, closed)
    # the filtered views below carry only the columns the figures read (a million-request run copies less)
    req = requests[["status", "reason", "arrival_s", "finish_s", "prompt_tokens", "output_tokens", "ttft_s",
                    "tpot_s", "e2e_s", "queue_s", "frontend_s", "prefill_done_s"]]
    mask, steady = win.pop("mask"), win.pop("steady")
    measured = req if mask.all() else req[mask]  # (an open loop measures every request)
    finished = (req.status == "finished").to_numpy()
    done_all = req if finished.all() else req[finished]  # (no copy when every request finished)
    done = done_all if measured is req else measured[(measured.status == "finished").to_numpy()]
    rejected = req[(req.status == "rejected").to_numpy()]
    t0 = float(requests.arrival_s.min()) if len(requests) else 0.0
    t1 = float(np.nanmax(requests.finish_s.to_numpy())) if len(done_all) else t0
    if len(steps):  # the clock ran at least until the last step ended (also when nothing finished)
        t1 = max(t1, float(steps.end_s.max()))
    makespan = max(t1 - t0, 1e-12)
    busy_span = t1 - t0  # utilisation is busy time over this; 0 when nothing ran
    span = max(win["end_s"] - win["start_s"], 1e-12)
    if steady and win["requests"] < len(requests):
        # token rates inside the window: output from the steps that ended in it, input from the prompts whose
        # prefill completed in it (each prompt once: a recompute preemption prefills it again)
        inside = (steps.end_s > win["start_s"]) & (steps.end_s <= win["end_s"]) if len(steps) else []
        out_tok = float(steps.output_tokens[inside].sum()) if len(steps) else 0.0
        pf = req.prefill_done_s.to_numpy(float)
        in_tok = float(req.prompt_tokens.to_numpy()[(pf > win["start_s"]) & (pf <= win["end_s"])].sum())
        rate_span = span
    else:
        in_tok, out_tok = float(done_all.prompt_tokens.sum()), float(done_all.output_tokens.sum())
        rate_span = makespan
    devices = dep.devices
    slo = traffic.slo
    has_slo = math.isfinite(slo.ttft_s) or math.isfinite(slo.tpot_s)
    ttft_ok, tpot_ok = meets_slo(done.ttft_s.to_numpy(float), done.tpot_s.to_numpy(float), slo)
    ok = ttft_ok & tpot_ok
    # a refused request misses every SLO: the attainment and the percentile test count it, as an infinite latency.
    # One a horizon stopped mid-service is judged on what the horizon already settles, each target on its own: its
    # TTFT when it has a first token (or a miss when it has none by arrival + target), its TPOT only where a miss
    # is certain whatever its finish; what is not settled is left out (right-censored)
    rej = (measured.status == "rejected").to_numpy()
    reason = measured.reason.to_numpy(object)
    cut = rej & (reason == UNFINISHED)
    refused = int((rej & ~cut & (reason != NOT_ARRIVED)).sum())
    ttft_cut = measured.ttft_s.to_numpy(float)[cut]
    waited = sim.horizon_s - measured.arrival_s.to_numpy(float)[cut]
    known = np.isfinite(ttft_cut)
    ttft_late = np.where(known, ttft_cut > slo.ttft_s, waited > slo.ttft_s)
    # its TPOT, (finish - first token) / (output - 1), is at least (horizon - first token) / (output - 1)
    since = waited - ttft_cut  # (NaN without a first token)
    gaps = measured.output_tokens.to_numpy(float)[cut] - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_late = np.isfinite(since) & (gaps > 0) & (since / np.maximum(gaps, 1) > slo.tpot_s)
    cut_ttft = pd.Series(ttft_cut[known])  # settled TTFTs of cut requests (met or missed)
    ttft_missing = refused + int((~known & ttft_late).sum())  # no first token, target passed: infinitely late
    tpot_missing = refused + int(tpot_late.sum())
    both_missing = refused + int((ttft_late | tpot_late).sum())
    n_ttft = max(len(done) + len(cut_ttft) + ttft_missing, 1)
    n_tpot = max(len(done) + tpot_missing, 1)
    n_meas = max(len(done) + both_missing, 1)
    price_s = sum(p.price_usd_per_s for p in dep.pools)
    itl = inter_token_latencies(steps, win["start_s"], win["end_s"], requests)
    util = {}
    for rep in sim.replicas:
        u = util.setdefault(rep.cfg.pool, {"replicas": 0, "busy": 0.0, "prefill_attention": 0.0, "prefill_ffn": 0.0,
                                           "decode_attention": 0.0, "decode_ffn": 0.0, "other": 0.0})
        u["replicas"] += 1
        inv = 1.0 / busy_span if busy_span > 0 else 0.0
        u["busy"] += rep.busy_s * inv
        for k, v in zip(("prefill_attention", "prefill_ffn", "decode_attention", "decode_ffn"), rep.quadrant_s):
            u[k] += float(v) * inv
        # busy time outside the four quadrants (engine overheads, LM head, pipeline hand-offs); with A/F
        # ping-pong the two pools overlap, so their quadrant times may sum past the step and this reads 0
        u["other"] += max(rep.busy_s - float(rep.quadrant_s.sum()), 0.0) * inv
    for u in util.values():
        for k in u:
            if k != "replicas":
                u[k] /= u["replicas"]
    kv = {}
    if len(steps):  # per pool, over index arrays (no per-pool copies of the frame)
        dt = (steps.end_s - steps.start_s).to_numpy(float)
        seqs = {rep.cfg.pool: rep.cfg.max_seqs for rep in sim.replicas}  # the limits the run used
        codes, pools = _codes(steps.pool)
        fill = steps.running.to_numpy(float) / np.array([seqs[p] for p in pools], float)[codes]
        occ = steps.kv_occupancy.to_numpy(float)
        groups = _groups(codes, pools)
        for pool, idx in groups.items():
            w = dt[idx].sum()
            util[pool]["batch_fill"] = float((fill[idx] * dt[idx]).sum() / w) if w > 0 else 0.0
        for pool in sorted(groups):
            idx = groups[pool]
            kv[pool] = {"mean": float((occ[idx] * dt[idx]).sum() / max(dt[idx].sum(), 1e-12)),
                        "max": float(occ[idx].max())}
        del dt, fill, occ, groups
    for pool, u in util.items():  # a pool that ran no step (e.g. a long-context pool no request was routed to)
        u.setdefault("batch_fill", 0.0)
        kv.setdefault(pool, {"mean": 0.0, "max": 0.0})
    kv = dict(sorted(kv.items()))
    lam = len(done_all) / makespan
    W = float(done_all.e2e_s.mean()) if len(done_all) else 0.0
    L = float(done_all.e2e_s.sum()) / makespan
    p = slo.percentile
    at_p = ((_pct(pd.concat([done.ttft_s, cut_ttft]), p, ttft_missing), _pct(done.tpot_s, p, tpot_missing))
            if has_slo and len(done) else (math.nan, math.nan))
    summary = {
        "requests_total": int(len(requests)),
        "requests_completed": int(len(done_all)),
        "requests_rejected": int(len(rejected)),  # (status rejected, as in requests.csv: not-arrived ones included)
        "requests_not_arrived": int((rejected.reason == NOT_ARRIVED).sum()),  # cut off by a horizon before arriving
        # by kind: a request's own token count is left out of its reason, so one cause on one replica is one entry
        "rejection_reasons": _reasons_by_kind(rejected.reason),
        "makespan_s": makespan,
        "ttft_s": _stats(done.ttft_s), "tpot_s": _stats(done.tpot_s), "e2e_s": _stats(done.e2e_s),
        "itl_s": itl,
        "queue_s": _stats(done.queue_s),  # at the scheduler, until admission
        "frontend_s": _stats(done.frontend_s),  # in the engine's frontend before the scheduler has it (in TTFT)
        # the batch limits each pool ran with (the engine server's defaults where the deployment set none)
        "batch_limits": {rep.cfg.pool: {"max_seqs": rep.cfg.max_seqs, "max_batch_tokens": rep.cfg.max_batch_tokens}
                         for rep in sim.replicas},
        "input_tokens_per_s": in_tok / rate_span,
        "output_tokens_per_s": out_tok / rate_span,
        "input_tokens_per_s_per_device": in_tok / rate_span / devices,
        "output_tokens_per_s_per_device": out_tok / rate_span / devices,
        "devices": devices,
        "engines": {p_.name: p_.engine for p_ in dep.pools} if not sim.engine_override else
                   {p_.name: sim.engine_override for p_ in dep.pools},
        **({"engine_versions": dict(sim.engine_versions)} if sim.engine_versions else {}),
        **({"engine_version_override": sim.engine_version_override} if sim.engine_version_override else {}),
        "window": win,
        "goodput": {"slo": {"ttft_s": _finite(slo.ttft_s), "tpot_s": _finite(slo.tpot_s), "percentile": p},
                    "fraction_of_requests": float(ok.sum()) / n_meas if has_slo and len(done) + both_missing
                    else None,
                    # where a horizon cut requests short: how many the fraction is of (the unsettled are left out)
                    **({"requests_judged": len(done) + both_missing} if has_slo and cut.any() else {}),
                    # over the throughput's own span, the share of it that met both SLOs (never above it)
                    "requests_per_s": float(ok.sum()) / rate_span if has_slo else None,
                    "output_tokens_per_s": (out_tok / rate_span * float(done.output_tokens[ok].sum())
                                            / max(float(done.output_tokens.sum()), 1.0)) if has_slo else None,
                    "slo_met": (bool(len(done) and at_p[0] <= slo.ttft_s and at_p[1] <= slo.tpot_s)
                                if has_slo else None),
                    # the p-th percentile latencies the targets were held to (None: none finished, or refused
                    # requests reach the percentile)
                    "at_percentile": ({"ttft_s": _finite(at_p[0]), "tpot_s": _finite(at_p[1])}
                                      if has_slo and len(done) else None)},
        "slo_attainment": ({"ttft": float(ttft_ok.sum() + (cut_ttft <= slo.ttft_s).sum()) / n_ttft,
                            "tpot": float(tpot_ok.sum()) / n_tpot, "both": float(ok.sum()) / n_meas}
                           if has_slo else None),
        "utilisation": util,
        "preemptions": int(requests.preemptions.sum()),
        "kv_occupancy": kv,
        "steps": int(len(steps)),
        "cost_usd_per_mtok": _finite(price_s * rate_span / out_tok * 1e6) if out_tok else None,
        "cost_usd_per_hour": _finite(price_s * 3600),
        "littles_law": {"arrival_rate_per_s": lam, "mean_time_in_system_s": W, "mean_in_system": L},
        "backlog": None if closed else open_loop_backlog(requests),  # (a closed loop's clients wait: no backlog)
    }
    summary["sustained"] = None if closed else sustained_figures(
        requests, traffic, summary["backlog"], int(ok.sum()) if has_slo else None, price_s)
    return summary


def sustained_figures(requests: pd.DataFrame, traffic: Traffic, backlog: dict | None, met_slo: int | None,
                      price_usd_per_s: float) -> dict | None:
    """An open loop's figures at its offered rate, as a fleet serving that traffic for good delivers them: the run's
    own throughput, goodput and cost average over its whole makespan (as ``vllm bench serve`` does), the drain after
    the last arrival included, when the fleet still costs but no new work comes, so a short run reads them low (and
    the cost high) against a capacity plan at the same rate. Here each is the rate x what an arrived request brought
    on average: output and input tokens of the finished ones, ``met_slo`` of them meeting both SLOs (None: no SLO).
    The rate is the traffic's (Poisson, gamma: the offer a plan quotes, not this sample's realised rate, which a finite
    run draws a few per cent either side), else a trace's arrivals over its span. None unless the backlog says the
    fleet kept up (``backlog['growing']`` False): not where it grew, nor where the run was too short or too bunched to
    tell (a burst of arrivals has no rate to sustain), nor where a horizon cut the run (what it left is not a sample
    of the load)."""
    if backlog is None or backlog["growing"] is not False:
        return None
    reason = requests.reason.to_numpy(object)
    if ((reason == UNFINISHED) | (reason == NOT_ARRIVED)).any():
        return None
    arr = requests.arrival_s.to_numpy(float)
    n = len(arr)
    if traffic.arrival in ("poisson", "gamma"):
        rate = float(traffic.rate_per_s)
    else:  # a trace: n arrivals, n - 1 gaps over its span
        rate = (n - 1) / float(arr.max() - arr.min())
    fin = (requests.status == "finished").to_numpy()
    out_tok = float(requests.output_tokens.to_numpy()[fin].sum()) / n
    in_tok = float(requests.prompt_tokens.to_numpy()[fin].sum()) / n
    return {"rate_per_s": rate, "input_tokens_per_s": rate * in_tok, "output_tokens_per_s": rate * out_tok,
            "goodput_requests_per_s": rate * met_slo / n if met_slo is not None else None,
            "cost_usd_per_mtok": _finite(price_usd_per_s / (rate * out_tok) * 1e6) if out_tok else None}


def meets_slo(ttft_s: np.ndarray, tpot_s: np.ndarray, slo) -> tuple[np.ndarray, np.ndarray]:
    """Per request, whether its TTFT and its TPOT are within the targets (one output token: no TPOT to miss)."""
    return ttft_s <= slo.ttft_s, (tpot_s <= slo.tpot_s) | np.isnan(tpot_s)


def _codes(col: pd.Series) -> tuple[np.ndarray, list]:
    """Each row's code and the values they stand for (a categorical's own codes, else factorised)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(), list(col.cat.categories)
    codes, values = pd.factorize(col.to_numpy())
    return codes, list(values)


def _groups(codes: np.ndarray, values: list) -> dict:
    """``DataFrame.groupby(col).indices`` from ``_codes``: each value present, its rows in ascending order."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(values))
    ends = np.cumsum(counts)
    return {values[c]: order[ends[c] - counts[c]:ends[c]] for c in range(len(values)) if counts[c]}


def _pct(x: pd.Series, p: float, missing: int = 0) -> float:
    """The ``p``-th percentile of ``x`` (NaN dropped) with ``missing`` more values at +inf (rejected requests:
    an infinite or undefined result when they reach the percentile); 0 when there is nothing."""
    v = x.dropna().to_numpy(dtype=float)
    if missing:
        v = np.concatenate([v, np.full(missing, np.inf)])
    if not len(v):
        return 0.0
    with np.errstate(invalid="ignore"):
        q = float(np.percentile(v, p))
    return math.inf if q != q else q  # (inf - inf between two rejected entries: still a miss)


def _finite(x: float):
    return float(x) if x is not None and math.isfinite(x) else None
