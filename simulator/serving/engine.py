"""The discrete-event serving engine (simpy).

Processes: arrivals, a router per phase, one scheduler per replica, and KV-transfer links for
prefill/decode disaggregation. The simulation owns only time: each replica schedules one event
per batch step (never per token or per request), and per-request state lives in numpy arrays
updated a batch at a time. Batching decisions (admission, KV reservation, prefill/decode mixing
and chunking under the token budget) belong to the replica's ``BatchPolicy`` (``policies/``); the
replica keeps only the bookkeeping. Pure-decode stretches between events run as one event.
Step and event records are kept column by column in typed arrays (``StepLog``, ``EventLog``), so
a million-request run holds tens of bytes per record instead of a tuple of Python objects.

Requests are routed to the least-loaded replica of their role whose ``context_range`` holds their
prompt length (a long/short split). On a replica whose cost model times attention-DP ranks
(``wants_ranks``) each request is placed on a rank as it arrives (round robin) and every step passes
the decoding sequences' per-rank totals (``DecodeRanks``) to the model.

Every request ends either ``finished`` or ``rejected`` with a reason.
"""

from __future__ import annotations

import collections
import collections.abc
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import simpy

from .policies import BatchPolicy, VLLMPolicy
from .stepcost import DecodeRanks, StepCostModel

BLOCK_TOKENS = 16  # paged KV-cache block size
MAX_STRETCH = 64  # decode steps computed per event; a longer stretch simply continues in the next one
# _GROW[j - 1, a] = floor((a + j) / B): blocks a sequence whose reservation ends at offset a in its last block
# gains after j more tokens (tabulated once for every stretch length)
_GROW = (np.arange(BLOCK_TOKENS)[None, :] + np.arange(1, MAX_STRETCH + 1)[:, None]) // BLOCK_TOKENS


def decode_stretch_costs(cost, n: int, kv0: int, k: int, ranks: DecodeRanks | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Times and quadrant split of ``k`` consecutive pure-decode steps of ``n`` sequences holding
    ``kv0`` cached tokens at the first step (each step adds one token per sequence); ``ranks``: their
    spread over attention-DP ranks at the first step (None: even)."""
    kw = {} if ranks is None else {"ranks": ranks}
    fast = getattr(cost, "decode_stretch", None)
    if fast is not None:
        return fast(n, kv0, k, **kw)
    times = np.empty(k)
    quad = np.empty((4, k))
    for i in range(k):
        c = cost.cost(0, 0, 0, n, 1, kv0 + i * n, **({} if ranks is None else {"ranks": ranks.grown(i)}))
        times[i] = c.time_s
        quad[:, i] = (c.prefill_attention_s, c.prefill_ffn_s, c.decode_attention_s, c.decode_ffn_s)
    return times, quad

_NO_TOKENS = np.zeros(0, np.int64)
_NO_TOKENS.flags.writeable = False

# request status codes
PENDING, WAITING, RUNNING, FINISHED, REJECTED = 0, 1, 2, 3, 4
STATUS = {PENDING: "pending", WAITING: "waiting", RUNNING: "running", FINISHED: "finished", REJECTED: "rejected"}


@dataclass
class ReplicaConfig:
    pool: str
    index: int  # replica index within the pool
    role: str  # "colocated" | "prefill" | "decode"
    cost: StepCostModel
    kv_capacity_tokens: int
    max_batch_tokens: int
    max_seqs: int
    devices: int
    spec_draft_tokens: int = 0
    spec_acceptance: float = 0.0
    preemption: str = "recompute"  # or "swap"
    swap_bytes_per_s: float = 64e9
    kv_bytes_per_token: float = 0.0  # all layers, for swap cost
    policy: BatchPolicy = field(default_factory=VLLMPolicy)  # the engine's batching decisions
    context_range: tuple[int, int] = (0, 2 ** 62)  # prompt lengths (inclusive) this replica takes (long/short split)

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.index}"


@dataclass
class Requests:
    """Per-request state as arrays (index = request id)."""

    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    status: np.ndarray = None
    prefilled: np.ndarray = None  # prompt tokens whose KV exists
    target_prefill: np.ndarray = None  # prompt (+ generated, after a recompute preemption)
    generated: np.ndarray = None
    admitted_s: np.ndarray = None
    first_token_s: np.ndarray = None  # the first token reaches the client (P/D: once its KV is on the decode side)
    prefill_done_s: np.ndarray = None  # the prompt is prefilled and its first token sampled
    finish_s: np.ndarray = None
    preemptions: np.ndarray = None
    prefill_replica: np.ndarray = None
    decode_replica: np.ndarray = None
    swapped: np.ndarray = None
    offset: np.ndarray = None  # tokens generated before a recompute preemption (now part of the prompt)
    home: np.ndarray = None  # uid of the replica holding the request as active (-1: none)
    dp_rank: np.ndarray = None  # attention-DP rank of the replica holding it (-1: none; see ``decode_ranks``)
    reason: dict = field(default_factory=dict)

    def kv_tokens(self, ids: np.ndarray) -> np.ndarray:
        """Tokens whose KV is cached now."""
        return self.prefilled[ids] + self.generated[ids] - self.offset[ids]

    def reserved_tokens(self, ids: np.ndarray) -> np.ndarray:
        """Tokens of KV a request holds blocks for (its whole prompt is reserved on admission)."""
        return self.target_prefill[ids] + self.generated[ids] - self.offset[ids]

    def __post_init__(self):
        n = len(self.arrival_s)
        self.status = np.zeros(n, np.int8)
        self.prefilled = np.zeros(n, np.int64)
        self.target_prefill = self.prompt.astype(np.int64).copy()
        self.generated = np.zeros(n, np.int64)
        for name in ("admitted_s", "first_token_s", "prefill_done_s", "finish_s"):
            setattr(self, name, np.full(n, np.nan))
        self.preemptions = np.zeros(n, np.int64)
        self.prefill_replica = np.full(n, -1, np.int64)
        self.decode_replica = np.full(n, -1, np.int64)
        self.swapped = np.zeros(n, bool)
        self.offset = np.zeros(n, np.int64)
        self.home = np.full(n, -1, np.int64)
        self.dp_rank = np.full(n, -1, np.int64)


class Replica:
    """One model replica: a waiting queue, the admitted requests, a KV-block budget, and a
    scheduler process that runs one batch step at a time."""

    def __init__(self, sim: Simulation, cfg: ReplicaConfig, uid: int, rng: np.random.Generator):
        self.sim, self.cfg, self.uid, self.rng = sim, cfg, uid, rng
        self.name = cfg.name
        self.waiting: collections.deque[int] = collections.deque()
        self.active = np.empty(0, np.int64)  # admitted requests in admission order
        self.blocks_total = cfg.kv_capacity_tokens // BLOCK_TOKENS
        self.used_blocks = 0  # blocks reserved by ``active`` (kept current after every change)
        self.exact_blocks = True  # used_blocks == _blocks(active) (False after an admission, until _fit_kv)
        self.wake = sim.env.event()
        self.inbound = 0  # requests whose KV is on its way here (counted as load by the router)
        self.busy_s = 0.0
        self.quadrant_s = np.zeros(4)
        # attention-DP ranks: only a cost model that times ranks (``wants_ranks``) is given them
        self.wants_ranks = bool(getattr(cfg.cost, "wants_ranks", False))
        self.attention_dp = int(getattr(cfg.cost, "attention_dp", 1))
        self.next_rank = 0
        sim.env.process(self.run())

    # -- load for the router -----------------------------------------------------------------
    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.active) + self.inbound

    def submit(self, rid: int) -> None:
        r = self.sim.req
        need = math.ceil((r.prompt[rid] + r.output[rid]) / BLOCK_TOKENS)
        if need > self.blocks_total:
            self.sim.reject(rid, f"needs {need * BLOCK_TOKENS} KV tokens, replica {self.cfg.name} holds "
                                 f"{self.blocks_total * BLOCK_TOKENS}")
            return
        r.status[rid] = WAITING
        if self.wants_ranks:
            assign_dp_rank(self, rid)
        self.waiting.append(rid)
        if not self.wake.triggered:
            self.wake.succeed()

    # -- batching policy (pure given the state) ----------------------------------------------
    def _reserved(self, ids: np.ndarray) -> np.ndarray:
        r = self.sim.req
        return self.cfg.policy.reserved_tokens(r.target_prefill[ids], r.generated[ids], r.output[ids], r.offset[ids])

    def _blocks(self, ids: np.ndarray) -> int:
        return int(np.add.reduce(-(-self._reserved(ids) // BLOCK_TOKENS))) if len(ids) else 0

    def _admit(self) -> float:
        """FCFS admission while KV blocks and sequence slots allow; returns swap-in seconds."""
        r, cfg = self.sim.req, self.cfg
        used = self.used_blocks
        swap_s = 0.0
        admitted = []
        while self.waiting and len(self.active) + len(admitted) < cfg.max_seqs:
            rid = self.waiting[0]
            tokens = cfg.policy.admit_tokens(int(r.target_prefill[rid]), int(r.generated[rid] - r.offset[rid]),
                                             int(r.output[rid] - r.generated[rid]))
            need = -(-tokens // BLOCK_TOKENS)
            if used + need > self.blocks_total:
                break
            self.waiting.popleft()
            used += need
            admitted.append(rid)
            r.status[rid] = RUNNING
            if np.isnan(r.admitted_s[rid]):
                r.admitted_s[rid] = self.sim.env.now
            if r.swapped[rid]:
                swap_s += float(r.kv_tokens(np.array([rid]))[0]) * cfg.kv_bytes_per_token / cfg.swap_bytes_per_s
                r.swapped[rid] = False
        if admitted:
            self.exact_blocks = False  # admission reserves by ``admit_tokens``
            ids = np.asarray(admitted, np.int64)
            r.home[ids] = self.uid
            self.active = np.concatenate((self.active, ids))
        self.used_blocks = used
        return swap_s

    def _plan_step(self):
        """The policy picks the step's decodes and prompt chunks under the token budget."""
        r, cfg = self.sim.req, self.cfg
        ids = self.active
        is_dec = r.prefilled[ids] >= r.target_prefill[ids]
        q_len = 1 + cfg.spec_draft_tokens
        if is_dec.all():  # the common case: every admitted request is decoding
            decoding, prefilling, remaining = ids, ids[:0], _NO_TOKENS
        else:
            decoding, prefilling = ids[is_dec], ids[~is_dec]
            remaining = r.target_prefill[prefilling] - r.prefilled[prefilling]
        dec, pre, chunks = cfg.policy.plan(decoding, prefilling, remaining, cfg.max_batch_tokens, q_len)
        return dec, pre, np.asarray(chunks, np.int64), q_len

    # -- the scheduler process ---------------------------------------------------------------
    def run(self):
        env, r, cfg = self.sim.env, self.sim.req, self.cfg
        while True:
            swap_s = self._admit()
            decoding, pre_ids, chunks, q_len = self._plan_step()
            if not len(decoding) and not len(pre_ids):
                self.wake = env.event()
                yield self.wake
                continue
            if self.sim.coalesce and not len(pre_ids) and not cfg.spec_draft_tokens and not swap_s:
                k = int(np.minimum.reduce(r.output[decoding] - r.generated[decoding]))
                if k >= 2:
                    done = yield from self._decode_stretch(decoding, k)
                    if done:
                        continue
            ctx = r.prefilled[pre_ids]
            kv = r.kv_tokens(decoding)
            rk = {"ranks": decode_ranks(self, decoding, kv)} if self.wants_ranks and len(decoding) else {}
            cost = cfg.cost.cost(len(pre_ids), int(chunks.sum()), int(ctx.sum()), len(decoding),
                                 q_len, int(kv.sum()), **rk)
            start = env.now
            dt = cost.time_s + swap_s
            yield env.timeout(dt)
            self.busy_s += dt
            self.quadrant_s += (cost.prefill_attention_s, cost.prefill_ffn_s, cost.decode_attention_s,
                                cost.decode_ffn_s)
            out_tokens = self._apply(decoding, pre_ids, chunks)
            preempted = self._fit_kv()
            self.sim.record_step(self, start, env.now, len(pre_ids), int(chunks.sum()), len(decoding),
                                 out_tokens, preempted)

    def _decode_stretch(self, decoding: np.ndarray, k: int):
        """Run up to ``k`` pure-decode steps as one event. Nothing but an arrival can change the batch
        before the k-th step (which finishes a request), so the steps are computed together; an
        arrival interrupts the stretch at the end of the step in progress, exactly where the
        step-by-step scheduler would admit it. Returns the number of steps run (0: not possible)."""
        env, r, cfg = self.sim.env, self.sim.req, self.cfg
        k = min(k, MAX_STRETCH)
        n = len(decoding)
        if not cfg.policy.grows:  # the whole request was reserved at admission
            blocks = np.full(k, self.used_blocks)
        else:
            res0 = self._reserved(decoding)
            blocks0 = -(-res0 // BLOCK_TOKENS)
            others = self.used_blocks - int(blocks0.sum())
            # blocks after j more tokens each: sum_i ceil((res_i + j) / B) = sum_i blocks_i + floor((a_i + j) / B)
            # with a_i = (res_i - 1) mod B, computed over a 16-bin histogram of a_i instead of every sequence
            hist = np.bincount((res0 - 1) % BLOCK_TOKENS, minlength=BLOCK_TOKENS)
            blocks = others + int(blocks0.sum()) + _GROW[:k] @ hist
        if blocks[-1] > self.blocks_total:  # stop before the step that would need a preemption
            k = int(np.searchsorted(blocks, self.blocks_total, side="right"))  # blocks never shrink
            if k < 2:
                return 0
            blocks = blocks[:k]
        kv = r.kv_tokens(decoding)
        ranks = decode_ranks(self, decoding, kv) if self.wants_ranks else None
        times, quad = decode_stretch_costs(cfg.cost, n, int(np.add.reduce(kv)), k, ranks)
        start = env.now
        bounds = np.cumsum(np.concatenate(([start], times)))  # the same float additions as step by step
        queued = len(self.waiting)  # constant until an arrival ends the stretch
        self.wake = env.event()
        end = env.timeout(np.add.reduce(times))  # == times.sum()
        yield env.any_of([end, self.wake])
        if end.processed:
            steps = k
        else:  # an arrival: finish the step in progress, then hand back to the scheduler
            steps = int(np.searchsorted(bounds[1:], env.now, side="left")) + 1
            steps = min(steps, k)
            yield env.timeout(bounds[steps] - env.now)
        self.busy_s += float(bounds[steps] - start)
        self.quadrant_s += quad[:, :steps].sum(axis=1)
        r.generated[decoding] += steps
        if steps > 1:  # the stretch's steps but the last, as rows in one go (same layout as ``record``)
            b = bounds[:steps].tolist()
            occ = (blocks[:steps - 1] / max(self.blocks_total, 1)).tolist()
            self.sim.steps.add_decodes(self.uid, b, occ, n, queued)
        fin = decoding[r.generated[decoding] >= r.output[decoding]]
        if len(fin):
            r.home[fin] = -1
            self.active = self.active[r.home[self.active] == self.uid]
            for rid in fin.tolist():
                self.sim.finish(rid, self)
        if self.exact_blocks:  # blocks[steps - 1] counts every active request now; the finished ones leave
            self.used_blocks = int(blocks[steps - 1]) - (self._blocks(fin) if len(fin) else 0)
            preempted = 0  # the stretch stopped before the KV cache would overflow
        else:
            preempted = self._fit_kv()
        self.sim.record_step(self, float(bounds[steps - 1]), float(bounds[steps]), 0, 0, n, n, preempted)
        return steps

    def _apply(self, decoding: np.ndarray, pre_ids: np.ndarray, chunks: np.ndarray) -> int:
        r, cfg, now = self.sim.req, self.cfg, self.sim.env.now
        out = 0
        leaving = []  # (ids, finished?) groups that leave this replica
        if len(decoding):
            if cfg.spec_draft_tokens:
                ok = self.rng.random((len(decoding), cfg.spec_draft_tokens)) < cfg.spec_acceptance
                gain = 1 + np.cumprod(ok, axis=1).sum(axis=1)
            else:
                gain = 1
            new = np.minimum(r.generated[decoding] + gain, r.output[decoding])
            out += int((new - r.generated[decoding]).sum())
            r.generated[decoding] = new
            leaving.append((decoding[new >= r.output[decoding]], True))
        if len(pre_ids):
            r.prefilled[pre_ids] += chunks
            done = pre_ids[r.prefilled[pre_ids] >= r.target_prefill[pre_ids]]
            fresh = done[r.generated[done] == 0]  # a recomputed request already has its first token
            r.prefill_done_s[fresh] = now
            r.generated[fresh] = 1
            r.prefill_replica[fresh] = self.uid
            out += len(fresh)
            complete = r.generated[done] >= r.output[done]
            # the client sees the first token now, unless it travels on with the KV to a decode replica
            shown = fresh if cfg.role != "prefill" else fresh[r.generated[fresh] >= r.output[fresh]]
            r.first_token_s[shown] = now
            leaving.append((done[complete], True))
            if cfg.role == "prefill":
                leaving.append((done[~complete], False))
        gone = [ids for ids, _ in leaving if len(ids)]
        if gone:
            for ids in gone:
                r.home[ids] = -1
            self.active = self.active[r.home[self.active] == self.uid]
            for ids, finished in leaving:
                for rid in ids.tolist():
                    self.sim.finish(rid, self) if finished else self.sim.hand_off(self, rid)
        return out

    def _fit_kv(self) -> int:
        """Preempt the most recently admitted requests until the KV cache fits again."""
        r = self.sim.req
        preempted = 0
        self.used_blocks = self._blocks(self.active)
        self.exact_blocks = True
        while len(self.active) and self.used_blocks > self.blocks_total:
            rid = int(self.active[-1])
            self.active = self.active[:-1]
            r.home[rid] = -1
            self.used_blocks -= math.ceil(int(self._reserved(np.array([rid]))[0]) / BLOCK_TOKENS)
            r.preemptions[rid] += 1
            preempted += 1
            r.status[rid] = WAITING
            if self.cfg.preemption == "swap":
                r.swapped[rid] = True
            else:  # recompute: drop the KV; the prompt plus what was generated is prefilled again
                r.target_prefill[rid] = r.prompt[rid] + r.generated[rid]
                r.offset[rid] = r.generated[rid]
                r.prefilled[rid] = 0
            self.waiting.appendleft(rid)
        return preempted


class Simulation:
    """Wires arrivals, routers, replicas and KV-transfer links together and collects records."""

    def __init__(self, requests: Requests, replicas: list[ReplicaConfig], *, seed: int = 0,
                 closed_concurrency: int = 0, kv_transfer_s: Callable[[int, int], float] | None = None,
                 horizon_s: float = math.inf, coalesce: bool = True, closed_starts_s: np.ndarray | None = None):
        self.env = simpy.Environment()
        self.coalesce = coalesce  # run pure-decode stretches as one event (same results, far fewer events)
        self.req = requests
        self.seed = seed
        self.replicas = [Replica(self, c, i, np.random.default_rng([seed, i])) for i, c in enumerate(replicas)]
        self.by_role = collections.defaultdict(list)
        for rep in self.replicas:
            self.by_role[rep.cfg.role].append(rep)
        self.kv_transfer_s = kv_transfer_s or (lambda rid, src: 0.0)
        self.links = {rep.uid: simpy.Resource(self.env, capacity=1) for rep in self.by_role["prefill"]}
        self.steps = StepLog()
        self.events = EventLog()  # (time, what, request id) tuples, for exact-log tests and traces
        self.closed = closed_concurrency
        self.closed_starts_s = closed_starts_s  # closed loop: when each client sends its first request
        self.ramp_s = 0.0
        self.engine_override: str | None = None
        self.next_closed = 0
        self.horizon_s = horizon_s
        self.done_count = 0
        self.on_done: Callable[[int], None] | None = None  # progress callback (requests ended so far)

    # -- routing -----------------------------------------------------------------------------
    def _route(self, role: str, rid: int) -> Replica | None:
        """The least-loaded replica of ``role`` whose context range holds the request's prompt length
        (None, and the request rejected, if none does)."""
        n = int(self.req.prompt[rid])
        pool = [rep for rep in self.by_role[role] if rep.cfg.context_range[0] <= n <= rep.cfg.context_range[1]]
        if not pool:
            self.reject(rid, f"no {role} replica takes prompts of {n} tokens (pool routes)")
            return None
        return min(pool, key=lambda rep: (rep.load, rep.uid))

    def arrive(self, rid: int) -> None:
        self.req.arrival_s[rid] = self.env.now
        self.events.append((self.env.now, "arrive", rid))
        role = "colocated" if self.by_role["colocated"] else "prefill"
        dst = self._route(role, rid)
        if dst is not None:
            dst.submit(rid)

    def hand_off(self, src: Replica, rid: int) -> None:
        self.env.process(self._transfer(src, rid))

    def _transfer(self, src: Replica, rid: int):
        dst = self._route("decode", rid)  # the destination decides the link and is known before shipping
        if dst is None:
            return
        self.req.decode_replica[rid] = dst.uid
        dst.inbound += 1
        with self.links[src.uid].request() as slot:
            yield slot
            t = self.kv_transfer_s(rid, src.uid)
            if t > 0:
                yield self.env.timeout(t)
        self.events.append((self.env.now, "kv_transferred", rid))
        # the decode side streams the prefill's token once it holds the request (TTFT includes the transfer)
        self.req.first_token_s[rid] = self.env.now
        dst.inbound -= 1
        dst.submit(rid)

    def finish(self, rid: int, rep: Replica) -> None:
        self.req.status[rid] = FINISHED
        self.req.finish_s[rid] = self.env.now
        if self.req.decode_replica[rid] < 0:
            self.req.decode_replica[rid] = rep.uid
        self.events.append((self.env.now, "finish", rid))
        self._closed_next()

    def reject(self, rid: int, reason: str) -> None:
        self.req.status[rid] = REJECTED
        self.req.reason[rid] = reason
        self.events.append((self.env.now, "reject", rid))
        self._closed_next()

    def _closed_next(self) -> None:
        self.done_count += 1
        if self.on_done is not None:
            self.on_done(self.done_count)
        if self.closed and self.next_closed < len(self.req.prompt):
            rid = self.next_closed
            self.next_closed += 1
            self.arrive(rid)

    def record_step(self, rep: Replica, start, end, n_prefill, prefill_tokens, n_decode, out_tokens, preempted):
        """Record a step that just ended, with the replica's queue and KV state now."""
        self.record(rep, start, end, n_prefill, prefill_tokens, n_decode, out_tokens, len(rep.waiting),
                    len(rep.active), rep.used_blocks / max(rep.blocks_total, 1), preempted)

    def record(self, rep: Replica, start, end, n_prefill, prefill_tokens, n_decode, out_tokens, queued, running,
               kv_occupancy, preempted):
        """Record one step (the layout lives in ``StepLog``)."""
        self.steps.add(rep.uid, start, end, n_prefill, prefill_tokens, n_decode, out_tokens, queued, running,
                       kv_occupancy, preempted)

    # -- driving -----------------------------------------------------------------------------
    def _arrivals(self, times: np.ndarray):
        for rid, t in enumerate(times):
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            self.arrive(rid)

    def run(self) -> None:
        n = len(self.req.prompt)
        if self.closed:
            first = min(self.closed, n)
            self.next_closed = first
            starts = self.closed_starts_s
            if starts is None or not np.any(starts[:first] > 0):
                for rid in range(first):
                    self.arrive(rid)
            else:
                self.env.process(self._arrivals(np.asarray(starts[:first], float)))
        else:
            self.env.process(self._arrivals(self.req.arrival_s.copy()))
        self.env.run(until=self.horizon_s if math.isfinite(self.horizon_s) else None)
        open_ = np.flatnonzero((self.req.status != FINISHED) & (self.req.status != REJECTED))
        for rid in open_:
            self.req.status[rid] = REJECTED
            self.req.reason[int(rid)] = ("simulation horizon reached" if math.isfinite(self.horizon_s)
                                         else "never scheduled (deadlock)")

    # -- records -----------------------------------------------------------------------------
    def request_frame(self) -> pd.DataFrame:
        r = self.req
        out = r.output.astype(float)
        df = pd.DataFrame({
            "request_id": np.arange(len(r.prompt)), "arrival_s": r.arrival_s, "prompt_tokens": r.prompt,
            "output_tokens": r.output, "status": [STATUS[s] for s in r.status],
            "reason": [r.reason.get(i, "") for i in range(len(r.prompt))],
            "admitted_s": r.admitted_s, "prefill_done_s": r.prefill_done_s, "first_token_s": r.first_token_s,
            "finish_s": r.finish_s,
            "preemptions": r.preemptions,
            "prefill_replica": [self.replicas[i].cfg.name if i >= 0 else "" for i in r.prefill_replica],
            "decode_replica": [self.replicas[i].cfg.name if i >= 0 else "" for i in r.decode_replica],
        })
        df["queue_s"] = df["admitted_s"] - df["arrival_s"]
        df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
        df["e2e_s"] = df["finish_s"] - df["arrival_s"]
        df["tpot_s"] = np.where(out > 1, (df["finish_s"] - df["first_token_s"]) / np.maximum(out - 1, 1), np.nan)
        return df

    def step_frame(self) -> pd.DataFrame:
        return self.steps.frame([rep.cfg.pool for rep in self.replicas], [rep.name for rep in self.replicas])


# -- attention-DP ranks (a minimal stand-in until the engine rewrite places requests on ranks itself) --------
def assign_dp_rank(rep: Replica, rid: int) -> None:
    """Place a request on one of the replica's attention-DP ranks as it reaches the replica, round robin:
    SGLang's data-parallel controller dispatches requests this way by default (``load_balance_method =
    "round_robin"`` in ServerArgs, sgl-project/sglang python/sglang/srt/server_args.py). A preempted
    request keeps its rank (it waits on the same replica)."""
    rep.sim.req.dp_rank[rid] = rep.next_rank
    rep.next_rank = (rep.next_rank + 1) % rep.attention_dp


def decode_ranks(rep: Replica, decoding: np.ndarray, kv: np.ndarray) -> DecodeRanks:
    """The decode sequences and their cached KV tokens per attention-DP rank of ``rep``."""
    ranks = rep.sim.req.dp_rank[decoding]
    dp = rep.attention_dp
    seqs = np.bincount(ranks, minlength=dp)
    tokens = np.bincount(ranks, weights=kv, minlength=dp)
    return DecodeRanks(tuple(seqs.tolist()), tuple(int(t) for t in tokens.tolist()))


class EventLog(collections.abc.Sequence):
    """The event log: a read-only sequence of ``(time_s, what, request_id)`` tuples (equal to a list of
    them), stored as three typed arrays (17 bytes an event instead of ~120 for a tuple of objects)."""

    WHAT = ("arrive", "finish", "reject", "kv_transferred")
    _CODE = {w: i for i, w in enumerate(WHAT)}
    __hash__ = None

    def __init__(self):
        self.time_s, self.what, self.request = array("d"), array("b"), array("q")

    def append(self, event: tuple) -> None:
        t, what, rid = event
        self.time_s.append(t)
        self.what.append(self._CODE[what])
        self.request.append(rid)

    def __len__(self) -> int:
        return len(self.time_s)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return (self.time_s[i], self.WHAT[self.what[i]], self.request[i])

    def __iter__(self):
        what = self.WHAT
        return zip(self.time_s, (what[c] for c in self.what), self.request)

    def __eq__(self, other) -> bool:
        if isinstance(other, EventLog | list | tuple):
            return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return repr(list(self))


class StepLog:
    """The step records, one row per batch step, kept column by column in typed arrays (about 60 bytes a
    row instead of a tuple of Python objects, so a million-request run stays small); ``frame`` turns
    them into the steps DataFrame."""

    COLUMNS = ("pool", "replica_id", "start_s", "end_s", "kind", "prefill_seqs", "prefill_tokens", "decode_seqs",
               "output_tokens", "queued", "running", "kv_occupancy", "preempted")
    KINDS = ("decode", "prefill", "mixed")
    COUNTS = ("prefill_seqs", "prefill_tokens", "decode_seqs", "output_tokens", "queued", "running", "preempted")

    def __init__(self):
        self.replica, self.kind = array("i"), array("b")
        self.start_s, self.end_s, self.kv_occupancy = array("d"), array("d"), array("d")
        self.counts = {c: array("q") for c in self.COUNTS}
        self._frame: pd.DataFrame | None = None  # set (and the arrays released) by the first ``frame``

    def __len__(self) -> int:
        return len(self._frame) if self._frame is not None else len(self.start_s)

    def add(self, uid, start, end, n_prefill, prefill_tokens, n_decode, out_tokens, queued, running, kv_occupancy,
            preempted) -> None:
        self.replica.append(uid)
        self.kind.append(2 if n_prefill and n_decode else (1 if n_prefill else 0))
        self.start_s.append(start)
        self.end_s.append(end)
        self.kv_occupancy.append(kv_occupancy)
        c = self.counts
        for name, v in (("prefill_seqs", n_prefill), ("prefill_tokens", prefill_tokens), ("decode_seqs", n_decode),
                        ("output_tokens", out_tokens), ("queued", queued), ("running", running),
                        ("preempted", preempted)):
            c[name].append(v)

    def add_decodes(self, uid: int, bounds: list, kv_occupancy: list, n: int, queued: int) -> None:
        """``len(bounds) - 1`` consecutive pure-decode steps of ``n`` sequences (``bounds``: their start and end
        times), nothing preempted, ``queued`` waiting throughout."""
        k = len(bounds) - 1
        self.replica.extend(array("i", [uid]) * k)
        self.kind.extend(array("b", [0]) * k)
        self.start_s.extend(bounds[:-1])
        self.end_s.extend(bounds[1:])
        self.kv_occupancy.extend(kv_occupancy)
        c = self.counts
        for name, v in (("prefill_seqs", 0), ("prefill_tokens", 0), ("decode_seqs", n), ("output_tokens", n),
                        ("queued", queued), ("running", n), ("preempted", 0)):
            c[name].extend(array("q", [v]) * k)

    def frame(self, pools: list[str], names: list[str]) -> pd.DataFrame:
        """The steps DataFrame. The first call builds it column by column, releasing each array as it
        goes (the records are complete once the run ends), so the peak holds one copy of the records,
        not two; later calls return copies of that frame."""
        if self._frame is not None:
            return self._frame.copy()
        if not len(self):
            return pd.DataFrame([], columns=list(self.COLUMNS))
        rep = np.frombuffer(self.replica, np.int32)
        df = pd.DataFrame({"pool": np.array(pools, dtype=object)[rep]})
        df["replica_id"] = np.array(names, dtype=object)[rep]
        del rep
        self.replica = None
        for c in ("start_s", "end_s"):
            df[c] = np.array(getattr(self, c), float)
            setattr(self, c, None)
        df["kind"] = np.array(self.KINDS, dtype=object)[np.frombuffer(self.kind, np.int8)]
        self.kind = None
        for c in self.COUNTS[:6]:
            df[c] = np.array(self.counts[c], np.int64)
            self.counts[c] = None
        df["kv_occupancy"] = np.array(self.kv_occupancy, float)
        self.kv_occupancy = None
        df["preempted"] = np.array(self.counts["preempted"], np.int64)
        self.counts["preempted"] = None
        self._frame = df
        return df
