"""The discrete-event serving engine.

Owns time and bookkeeping only. Arrivals, step ends, decode-stretch ends and KV-transfer ends are
callbacks on simpy's event calendar (``Clock``); there is no process per replica and no event per
token or per request-step. Batching decisions (admission, KV reservation, prefill/decode mixing and
chunking under the token budget) belong to the replica's ``BatchPolicy`` (``policies/``).

How a replica stays cheap per step:

- per-request state lives in Python lists on the ``Simulation`` (index = request id), written
  back to the numpy ``Requests`` arrays when the run ends;
- the decoding sequences advance together: a replica counts its decode *ticks* ``S`` and stores
  each decoding request's KV as ``kv - S``, so a tick updates no request at all. The KV sum, the
  block count (a 16-bin histogram of KV residues says how many sequences open a new block on the
  next tick) and the next finish (a heap of finish ticks) are running totals;
- a stretch of pure-decode steps that nothing but an arrival can change runs as one event; an
  arrival cuts it at the end of the step in progress, exactly where step-by-step scheduling
  would admit the request. (Events due at the very same instant, which constant test costs make
  common and real step costs make rare, may be taken in another order than step by step: a
  stretch's end is on the calendar before events created during it.)

A stretch's steps are costed by the cost model's ``decode_ends`` (each step's end: the start plus the step
times one by one, exactly the float additions of stepping; a model without it is costed through
``decode_stretch`` or step by step). ``Clock.run`` is simpy's loop over simpy's own queue and order, with
this engine's calls dispatched inline.

Step and event records are packed binary records (``StepLog``, ``EventLog`` in ``records.py``): one ``struct``
conversion per record, unpacked into columns when the frames are built.
``tests/serving_reference.py`` holds the slow step-by-step scheduler this engine must reproduce.

Requests are routed to the least-loaded replica of their role whose ``context_range`` holds their
prompt length (a long/short split). On a replica whose cost model times attention-DP ranks
(``wants_ranks``) each request is placed on a rank as it arrives (round robin) and every step passes
the decoding sequences' per-rank totals (``DecodeRanks``, also running totals) to the model.

Every request ends either ``finished`` or ``rejected`` with a reason.
"""

from __future__ import annotations

import collections
import collections.abc
import heapq
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, cycle, islice

import numpy as np
import pandas as pd
import simpy

from ..specs.deployment import ROUTE_MAX_TOKENS
from .kvmemory import BLOCK_TOKENS
from .policies import BatchPolicy, VLLMPolicy
from .records import EventLog, StepLog
from .stepcost import DecodeRanks, StepCostModel, decode_stretch_costs

# SGLang's receive skipper counts a decode (or verify) step 1 and any other step 1000 (its _DEFAULT_WEIGHT,
# python/sglang/srt/managers/scheduler_recv_skipper.py): an interval up to 1000 receives right after a prefill
PREFILL_RECV_WEIGHT = 1000
MAX_STRETCH = 64  # decode steps per stretch; a longer one simply continues in the next stretch
FIRST_CHUNK = 32  # steps costed when a stretch starts with no submission foreseen (then 4x more per chunk)

# event codes (``EventLog.WHAT``)
ARRIVE, FINISH, REJECT, KV_TRANSFERRED = range(4)

# request status codes
PENDING, WAITING, RUNNING, FINISHED, REJECTED = 0, 1, 2, 3, 4
STATUS = {PENDING: "pending", WAITING: "waiting", RUNNING: "running", FINISHED: "finished", REJECTED: "rejected"}
_STATUS_NAMES = np.array([STATUS.get(c, "") for c in range(max(STATUS) + 1)], dtype=object)  # by code

# replica states
IDLE, KICKED, STEP, STRETCH, DECIDING = range(5)


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
    # swap: the KV of a swapped request crosses each device's own host link, both ways, on the step after the
    # preemption (out) and on the step that re-admits it (in); per device: one device's share of the KV, its link and
    # its host swap space (with attention DP, the request's rank's devices: ranks swap side by side, each into its own
    # space). A request that would overflow the swap space is preempted by recompute instead
    swap_bytes_per_s: float = 64e9  # one device's host link: PCIe Gen5 x16, ~64 GB/s a direction (PCI-SIG)
    kv_bytes_per_token: float = 0.0  # one device's share (all its layers), for the swap cost and swap space
    swap_space_bytes: float = math.inf  # host swap space, per device
    policy: BatchPolicy = field(default_factory=VLLMPolicy)  # the engine's batching decisions
    context_range: tuple[int, int] = (0, ROUTE_MAX_TOKENS)  # prompt lengths (inclusive) taken here (long/short split)
    frontend_s: float = 0.0  # a request reaches the scheduler this long after its client sends it (off the GPU path)
    recv_interval: int = 1  # SGLang --scheduler-recv-interval: a busy scheduler takes new requests every N decode steps
    # TensorRT-LLM's batch waiting (llm_args batch_wait_timeout_iters / batch_wait_max_tokens_ratio, PyExecutor
    # ``_waiting_requests``): a step that would run prompts beside decodes runs the decodes alone while fewer than
    # ``batch_wait_tokens_ratio`` x max_batch_tokens tokens are scheduled (its prompts counted whole, a token for each
    # decoding request), for up to ``batch_wait_iters`` steps in a row, so that prompts gather into fuller prefills;
    # 0: off (TensorRT-LLM's default). Not under attention DP (the engine skips it there)
    batch_wait_iters: int = 0
    batch_wait_tokens_ratio: float = 0.0
    max_chunk_tokens: int = 0  # one request's prompt tokens per step at most (attention DP: one rank's budget); 0: any
    max_model_len: int = 0  # the model's context window: longer requests (prompt + output) are rejected; 0: no limit
    pp: int = 1  # pipeline stages (a prefill pool's micro-batches cross the later stages in order)

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.index}"


@dataclass
class Requests:
    """Per-request inputs and results as arrays (index = request id). The engine keeps its working
    state and the results it writes in Python lists while it runs, and copies them back here when it ends."""

    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    status: np.ndarray = None
    prefilled: np.ndarray = None  # prompt tokens whose KV exists
    target_prefill: np.ndarray = None  # prompt (+ generated, after a recompute preemption)
    generated: np.ndarray = None
    admitted_s: np.ndarray = None
    received_s: np.ndarray = None  # the scheduler has it after the engine's frontend (NaN: no frontend time)
    first_token_s: np.ndarray = None  # the first token reaches the client (P/D: once its KV is on the decode side)
    prefill_done_s: np.ndarray = None  # the prompt is prefilled and its first token sampled
    decode_start_s: np.ndarray = None  # it joins a replica's decode batch (P/D: admitted on the decode side)
    finish_s: np.ndarray = None
    preemptions: np.ndarray = None
    prefill_replica: np.ndarray = None
    decode_replica: np.ndarray = None
    swapped: np.ndarray = None
    offset: np.ndarray = None  # tokens generated before a recompute preemption (now part of the prompt)
    dp_rank: np.ndarray = None  # attention-DP rank on the replica holding it (-1: none; see ``Replica.submit``)
    reason: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.arrival_s)
        self.status = np.zeros(n, np.int8)
        self.prefilled = np.zeros(n, np.int64)
        self.target_prefill = self.prompt.astype(np.int64).copy()
        self.generated = np.zeros(n, np.int64)
        for name in ("admitted_s", "received_s", "first_token_s", "prefill_done_s", "decode_start_s", "finish_s"):
            setattr(self, name, np.full(n, np.nan))
        self.preemptions = np.zeros(n, np.int64)
        self.prefill_replica = np.full(n, -1, np.int64)
        self.decode_replica = np.full(n, -1, np.int64)
        self.swapped = np.zeros(n, bool)
        self.offset = np.zeros(n, np.int64)
        self.dp_rank = np.full(n, -1, np.int64)


NOT_ARRIVED = "not arrived before the simulation horizon"  # (not served, not refused: outside the SLO figures)
UNFINISHED = "unfinished at the simulation horizon"  # (being served when the clock stopped: judged on what it had)


def unfinished_reason(arrival_s: float, horizon_s: float) -> str:
    """Why a request the run left unfinished ends ``rejected``: a horizon stopped the clock before it arrived
    (NOT_ARRIVED) or while it was being served; without a horizon, the scheduler never ran it."""
    if not math.isfinite(horizon_s):
        return "never scheduled (deadlock)"
    return UNFINISHED if arrival_s <= horizon_s else NOT_ARRIVED


class Clock(simpy.Environment):
    """simpy's environment plus ``call_at``: run ``fn(arg)`` at absolute time ``t`` (after the entries
    already due then), without a process, an event object or a closure.

    ``run`` keeps simpy's calendar and its order (time, priority, insertion) and its ``until`` rule, and runs
    the engine's calls inline instead of through ``Environment.step``; any other simpy event on the calendar is
    handed to ``Environment.step`` itself. A call's entry is ``(t, priority, id, fn, arg)``, one longer than
    simpy's ``(t, priority, id, event)``: the length tells them apart."""

    def call_at(self, t: float, fn, arg=None) -> None:
        heapq.heappush(self._queue, (t, 1, next(self._eid), fn, arg))  # 1: simpy's NORMAL priority

    def run(self, until: float | None = None) -> None:
        """Process the calendar until it is empty or, with ``until``, until simulated time ``until``: as simpy
        does, the stop is an urgent entry at that time (scheduled as ``now + (until - now)``), so entries due
        then at normal priority stay on the calendar, and the clock ends at the stop."""
        queue, pop, push = self._queue, heapq.heappop, heapq.heappush
        stop = None
        if until is not None:
            at = float(until)
            if not at > self._now:
                raise ValueError(f"until ({at}) must be greater than the current simulation time")
            stop = object()
            push(queue, (self._now + (at - self._now), simpy.events.URGENT, next(self._eid), stop))
        while queue:
            entry = pop(queue)
            if len(entry) == 5:
                self._now, _, _, fn, arg = entry
                fn(arg)
            elif entry[3] is stop:
                self._now = entry[0]
                return
            else:  # another simpy event: back where it was, for simpy's own step to process
                push(queue, entry)
                self.step()


@dataclass(slots=True)
class _Stretch:
    """A stretch of pure-decode steps in flight on one replica."""

    bounds: list  # start of the first step, then every step's end (costed so far)
    attn: list | float  # decode-attention seconds per costed step (a float: each step's duration less it)
    ffn: list | float  # decode-FFN seconds per costed step (a float: every step's)
    n: int  # decoding requests
    kv0: int  # their KV tokens at the first step
    ends: Callable  # (n, kv0, k, start) -> per-step ends (from start), attention, FFN (``decode_ends``; see
    # ``TabulatedStepCost.decode_ends`` for the float form of the last two)
    k: int  # steps at most (the k-th finishes a request or fills the KV cache)
    queued: int  # waiting requests throughout (an arrival cuts the stretch)
    running: int  # admitted requests throughout
    end: int = 0  # the stretch ends after this many steps (costed so far, or cut)
    booked: int = 0  # steps already accounted (``_book_stretch``)
    chunk: int = 0  # the next chunk's length, when extendable
    extendable: bool = False  # no submission foreseen nor arrived: reaching ``end`` costs another chunk
    c0: int = 0  # the scheduler's receive counter at the first step (``recv_interval`` > 1)


def _ends_of(stretch: Callable) -> Callable:
    """A ``decode_ends`` built on a ``decode_stretch``-like ``(n, kv0, k) -> (times, attention, FFN)``."""

    def ends(n: int, kv0: int, k: int, start: float) -> tuple[list, list, list]:
        t, a, f = stretch(n, kv0, k)
        e = list(accumulate(t, initial=start))
        del e[0]
        return e, a, f

    return ends


class Replica:
    """One model replica: a waiting queue, the admitted requests, a KV-block budget, and the
    scheduler that starts one batch step (or one stretch of pure-decode steps) at a time."""

    def __init__(self, sim: Simulation, cfg: ReplicaConfig, uid: int, rng: np.random.Generator):
        self.sim, self.cfg, self.uid, self.rng = sim, cfg, uid, rng
        self.name = cfg.name
        self.waiting: collections.deque[int] = collections.deque()
        self.active: dict[int, None] = {}  # admitted requests, in admission order
        self.prefilling: list[int] = []  # admitted requests with prompt left to prefill (admission order)
        self.decoding: set[int] = set()  # admitted requests whose prompt is cached
        self.blocks_total = cfg.kv_capacity_tokens // BLOCK_TOKENS
        self.used_blocks = 0  # blocks reserved by ``active``, exact at every decision (a stretch books its own)
        self._occ_div = max(self.blocks_total, 1)  # KV occupancy = used_blocks / this
        self.grows = cfg.policy.grows  # reservations grow with every decoded token
        self._reserve = cfg.policy.reserved_tokens
        self.ticks = 0  # decode ticks so far: each decoding request's KV is ``kvb[rid] + ticks``
        self.kvb_sum = 0  # sum of ``kvb`` over ``decoding``
        self.residues = [0] * BLOCK_TOKENS  # decoding requests by kvb mod 16 (who opens a block on a tick)
        self.finishing: list[tuple[int, int, int]] = []  # heap of (finish tick, admission number, rid)
        self.admitted = 0  # admissions so far (orders the finish heap like the admission order)
        self.inbound = 0  # requests on their way here (KV in transfer, or in the frontend): load for the router
        self.inbound_at: list[float] = []  # heap of the times they arrive
        self.frontend_s = cfg.frontend_s
        # SGLang's receive skipper (--scheduler-recv-interval N): while busy, the scheduler takes the requests that
        # reached it (``inbox``) only when its counter reaches N: +1 per decode step, +PREFILL_RECV_WEIGHT per step
        # with a prefill
        self.recv_n = cfg.recv_interval
        self.inbox: collections.deque[int] = collections.deque()
        self.recv_count = 0
        self.busy_s = 0.0
        self._quad = [0.0, 0.0, 0.0, 0.0]  # busy seconds per quadrant (see ``quadrant_s``)
        self.state = IDLE  # IDLE until a submit schedules a kick
        self.pending = 0  # the number of the calendar entry that ends the current stretch (a cut makes a new one)
        self.stretch: _Stretch | None = None  # the stretch of pure-decode steps in flight
        self.q_len = 1 + cfg.spec_draft_tokens
        self.spec = cfg.spec_draft_tokens > 0
        self.pf_role = cfg.role == "prefill"
        self._takes_arrivals = cfg.role != "decode"  # (the next arrival bounds how far a stretch is costed)
        self._stretches = sim.coalesce and not self.spec  # pure-decode steps run as stretches
        self._stretch_ends = None  # the cost model's ``decode_ends`` (or one built on its step costs), once needed
        self._pace_s = 0.0  # the last decode step's duration (sizes the next stretch's first chunk)
        self._step = None  # (start, duration, cost, decodes, prefill plan, prefill tokens) of the step in flight
        # attention-DP ranks: only a cost model that times ranks (``wants_ranks``) is given them
        self.wants_ranks = bool(getattr(cfg.cost, "wants_ranks", False))
        self.attention_dp = int(getattr(cfg.cost, "attention_dp", 1)) if self.wants_ranks else 1
        self.next_rank = 0
        # a request lives on one attention-DP rank, whose KV pool is its share of the replica's (each DP rank of
        # vLLM and SGLang is a scheduler with its own cache): the longest request it can hold
        self.rank_blocks = self.blocks_total // self.attention_dp
        # the longest request (prompt + output) ``refusal`` lets through; a prefill replica also asks the decode
        # pool (``Simulation.decode_refusal``, above ``Simulation.decode_fits_tokens``)
        kv = self.rank_blocks * BLOCK_TOKENS
        self.fits_tokens = min(kv, cfg.max_model_len) if cfg.max_model_len > 0 else kv
        # a prefill pool's pipeline: when each stage after the first is next free (its micro-batches leave in order)
        self.stage_free_s = [0.0] * max(cfg.pp - 1, 1) if self.pf_role else []
        self.rank_n = [0] * self.attention_dp  # decoding requests per rank
        self.rank_kvb = [0] * self.attention_dp  # their kvb per rank (KV tokens = rank_kvb + rank_n * ticks)
        # swap, per attention-DP rank (a request keeps its rank; each rank's devices have their own host links and
        # swap space): the swapped-out KV on the host, per device, and the transfer time the next step pays (swap-outs
        # of the last preemptions, then swap-ins of the admitted); the ranks move in parallel, the step waits for the
        # slowest. ``swap_due``: some rank has a transfer pending
        self.swap_held_bytes = [0.0] * self.attention_dp
        self.swap_rank_s = [0.0] * self.attention_dp
        self.swap_due = False
        self.batch_waited = 0  # steps in a row that batch waiting held the prompts back (``batch_wait_iters``)
        self.batch_wait = cfg.batch_wait_iters if not self.wants_ranks else 0

    @property
    def quadrant_s(self) -> np.ndarray:
        """Busy seconds per quadrant: prefill attention, prefill FFN, decode attention, decode FFN."""
        return np.array(self._quad)

    # -- load for the router -----------------------------------------------------------------
    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.inbox) + len(self.active) + self.inbound

    def received(self, rid: int) -> None:
        """``rid`` leaves the engine's frontend and reaches this replica."""
        sim = self.sim
        sim.received[rid] = sim.env._now
        self.inbound -= 1
        self.submit(rid)

    def deal_rank(self) -> int:
        """The attention-DP rank the round robin gives the next request to reach this replica."""
        r = self.next_rank
        self.next_rank = (r + 1) % self.attention_dp
        return r

    def release(self, blocks: int) -> None:
        """A handed-off request's KV has left: its ``blocks`` are free again (a scheduler idle for want of them
        plans again)."""
        self.used_blocks -= blocks
        if self.waiting and self.state == IDLE:
            self.state = KICKED
            self.sim.env.call_at(self.sim.env._now, self._kick)

    def transferred(self, rid: int) -> None:
        """``rid``'s KV has landed here from a prefill replica, which frees its copy."""
        sim = self.sim
        now = sim.env._now
        src, blocks = sim.shipping.pop(rid)
        src.release(blocks)
        sim.events.add(now, KV_TRANSFERRED, rid)
        # the decode side streams the prefill's token once it holds the request (TTFT includes the transfer)
        sim.first_token[rid] = now
        self.inbound -= 1
        self.submit(rid)

    def refusal(self, rid: int) -> str | None:
        """Why this replica could never serve ``rid`` (None: it can): over the model's context window, as vLLM's
        server refuses a request over max_model_len, or more KV than the replica (an attention-DP rank) holds."""
        sim = self.sim
        total = sim.prompt_l[rid] + sim.out_l[rid]
        if total > self.cfg.max_model_len > 0:
            return f"prompt + output = {total} tokens exceed the model's context window of {self.cfg.max_model_len}"
        need = -(-total // BLOCK_TOKENS)
        if need > self.rank_blocks:
            return (f"needs {need * BLOCK_TOKENS} KV tokens, replica {self.cfg.name} holds "
                    f"{self.rank_blocks * BLOCK_TOKENS}" + (" per attention-DP rank" if self.attention_dp > 1 else ""))
        return None

    def submit(self, rid: int) -> None:
        sim = self.sim
        total = sim.prompt_l[rid] + sim.out_l[rid]
        if total > self.fits_tokens or (self.pf_role and total > sim.decode_fits_tokens):  # (the fast test)
            why = self.refusal(rid)
            if why is None and self.pf_role:  # refused up front where no decode replica could hold it
                why = sim.decode_refusal(rid)
            if why is not None:
                sim.reject(rid, why)
                return
        sim.status[rid] = WAITING
        if self.wants_ranks:
            # round robin over the attention-DP ranks as a request reaches the replica: SGLang's data-parallel
            # controller dispatches this way by default (``load_balance_method = "round_robin"`` in ServerArgs,
            # sgl-project/sglang python/sglang/srt/server_args.py); a preempted request keeps its rank. A P/D request
            # was given its decode rank when it was handed off (its KV ships to that rank's devices)
            r = sim.pre_rank.pop(rid, None)
            sim.rank[rid] = self.deal_rank() if r is None else r
        state = self.state
        if self.recv_n > 1 and state != IDLE and state != KICKED:  # a busy scheduler takes it at its next receive
            self.inbox.append(rid)
            if state == STRETCH:
                self._cut_stretch()
            return
        self.waiting.append(rid)
        if state == IDLE:
            self.state = KICKED
            sim.env.call_at(sim.env._now, self._kick)
        elif state == STRETCH:
            self._cut_stretch()

    # -- KV bookkeeping ------------------------------------------------------------------------
    def _held_blocks(self, rid: int) -> int:
        """Blocks ``rid`` holds now, by the policy's reservation (a decoding request's generated count is
        materialised first)."""
        s = self.sim
        return -(-self._reserve(s.tgt[rid], s.gen[rid], s.out_l[rid], s.off[rid]) // BLOCK_TOKENS)

    def _start_decoding(self, rid: int) -> None:
        """``rid``'s prompt is cached: it joins the decode ticks (its ``gen`` is current)."""
        s = self.sim
        kvb = s.tgt[rid] - s.off[rid] + s.gen[rid] - self.ticks  # == prefilled + generated - offset - ticks
        s.kvb[rid] = kvb
        self.kvb_sum += kvb
        self.residues[kvb % BLOCK_TOKENS] += 1
        if self.wants_ranks:
            r = s.rank[rid]
            self.rank_n[r] += 1
            self.rank_kvb[r] += kvb
        self.decoding.add(rid)
        heapq.heappush(self.finishing, (s.out_l[rid] - s.gen[rid] + self.ticks, s.seq[rid], rid))
        if s.dec_start[rid] != s.dec_start[rid]:  # NaN: its first time in a decode batch
            s.dec_start[rid] = s.env._now

    def _stop_decoding(self, rid: int) -> None:
        """``rid`` leaves the decode ticks: materialise its generated count."""
        s = self.sim
        kvb = s.kvb[rid]
        s.gen[rid] = kvb + self.ticks - s.tgt[rid] + s.off[rid]
        self.kvb_sum -= kvb
        self.residues[kvb % BLOCK_TOKENS] -= 1
        self.decoding.discard(rid)
        if self.wants_ranks:
            r = s.rank[rid]
            self.rank_n[r] -= 1
            self.rank_kvb[r] -= kvb

    def _finish_tick(self, rid: int) -> int:
        s = self.sim
        return s.out_l[rid] + s.tgt[rid] - s.off[rid] - s.kvb[rid]

    def _due(self) -> list[int]:
        """Pop the decoding requests that have generated their whole output (admission order)."""
        heap, ticks, done = self.finishing, self.ticks, []
        if not heap or heap[0][0] > ticks:
            return done
        s, decoding, pop = self.sim, self.decoding, heapq.heappop
        out_l, tgt, off, kvb, seqs = s.out_l, s.tgt, s.off, s.kvb, s.seq
        while heap and heap[0][0] <= ticks:
            f, seq, rid = pop(heap)
            # a live entry: the request decodes here in the same residency (a preempted and readmitted request gets
            # a new admission number) and still finishes at tick f (speculative tokens move it earlier and push a
            # new entry); ``_finish_tick``, inlined
            if rid in decoding and seqs[rid] == seq and out_l[rid] + tgt[rid] - off[rid] - kvb[rid] == f:
                done.append(rid)
        return done

    def _next_finish(self) -> int:
        """Ticks until the first decoding request finishes (stale heap entries dropped)."""
        heap = self.finishing
        s, decoding = self.sim, self.decoding
        out_l, tgt, off, kvb, seqs = s.out_l, s.tgt, s.off, s.kvb, s.seq
        while heap:
            f, seq, rid = heap[0]
            if rid in decoding and seqs[rid] == seq and out_l[rid] + tgt[rid] - off[rid] - kvb[rid] == f:  # live
                return f - self.ticks
            heapq.heappop(heap)
        return 0

    def _ranks(self) -> DecodeRanks:
        """The decoding requests and their KV tokens per attention-DP rank, now."""
        t = self.ticks
        return DecodeRanks(tuple(self.rank_n), tuple(k + n * t for n, k in zip(self.rank_n, self.rank_kvb)))

    def _tick(self) -> None:
        """Every decoding request gains one token."""
        if self.grows:
            self.used_blocks += self.residues[-self.ticks % BLOCK_TOKENS]
        self.ticks += 1

    # -- admission -------------------------------------------------------------------------------
    def _admit(self) -> None:
        """FCFS admission while KV blocks and sequence slots allow; a re-admitted swapped request's swap-in is added
        to its rank's pending transfer time."""
        if not self.waiting:
            return
        s, cfg = self.sim, self.cfg
        status = s.status
        used = self.used_blocks  # admission counts each request by the policy's admit_tokens
        waiting, active = self.waiting, self.active
        policy, total = cfg.policy, self.blocks_total
        now = s.env._now
        while waiting and len(active) < cfg.max_seqs:
            rid = waiting[0]
            tgt, gen, off = s.tgt[rid], s.gen[rid], s.off[rid]
            need = -(-policy.admit_tokens(tgt, gen - off, s.out_l[rid] - gen) // BLOCK_TOKENS)
            if used + need > total:
                break
            waiting.popleft()
            used += need
            active[rid] = None
            self.admitted += 1
            s.seq[rid] = self.admitted
            status[rid] = RUNNING
            if s.adm[rid] != s.adm[rid]:  # NaN: first admission
                s.adm[rid] = now
            if s.swapped[rid]:
                kv_bytes = (s.pf[rid] + gen - off) * cfg.kv_bytes_per_token
                r = s.rank[rid] if self.wants_ranks else 0
                self.swap_rank_s[r] += kv_bytes / cfg.swap_bytes_per_s
                self.swap_held_bytes[r] -= kv_bytes
                self.swap_due = True
                s.swapped[rid] = False
            self.used_blocks += -(-self._reserve(tgt, gen, s.out_l[rid], off) // BLOCK_TOKENS)  # ``_held_blocks``
            if s.pf[rid] >= tgt:
                self._start_decoding(rid)
            else:
                self.prefilling.append(rid)

    def _head_fits(self) -> bool:
        """Whether the first waiting request would be admitted at the next step boundary: an admission pass counts
        each request it admits by ``admit_tokens`` (one token more than it then holds), so it can stop at a request
        that the exact count, taken again at the next boundary, admits. A stretch would skip that boundary."""
        if len(self.active) >= self.cfg.max_seqs:
            return False
        s = self.sim
        rid = self.waiting[0]
        tgt, gen = s.tgt[rid], s.gen[rid]
        need = -(-self.cfg.policy.admit_tokens(tgt, gen - s.off[rid], s.out_l[rid] - gen) // BLOCK_TOKENS)
        return self.used_blocks + need <= self.blocks_total

    # -- the scheduler -----------------------------------------------------------------------------
    def _kick(self, _ev=None) -> None:
        self.state = DECIDING
        self.recv_count = 0  # an idle scheduler polls at once and keeps polling
        self._next()

    def _receive(self) -> None:
        """The scheduler takes the requests that reached it, and its receive counter restarts."""
        self.recv_count = 0
        if self.inbox:
            self.waiting.extend(self.inbox)
            self.inbox.clear()

    def _nothing_to_run(self) -> None:
        """Nothing to run at a step boundary: an idle scheduler polls at once (requests waiting for its receive
        are taken and planned), else the replica idles until a submission kicks it."""
        if self.inbox:
            self._receive()
            self._next()
        else:
            self.state = IDLE

    def _next(self) -> None:
        """At a step boundary: admit, let the policy plan, and start a step or a decode stretch."""
        cfg, sim = self.cfg, self.sim
        if self.recv_count >= self.recv_n > 1:
            self._receive()
        if self.waiting:
            self._admit()
        swap_s = 0.0
        if self.swap_due:  # KV that the last preemptions swapped out leaves, and the re-admitted's comes back
            swap_s = max(self.swap_rank_s)
            self.swap_rank_s = [0.0] * self.attention_dp
            self.swap_due = False
        n_dec = len(self.decoding)
        pre = self.prefilling
        if pre:
            pf, tgt = sim.pf, sim.tgt
            left = [tgt[i] - pf[i] for i in pre]
            if cfg.max_chunk_tokens:  # each attention-DP rank chunks its own prompts under its own budget
                left = [min(x, cfg.max_chunk_tokens) for x in left]
            run_dec, chunks = cfg.policy.plan(n_dec, left, cfg.max_batch_tokens, self.q_len)
            plan = [(rid, c) for rid, c in zip(pre, chunks) if c > 0]
            n_d = n_dec if run_dec else 0
            if not n_d and not plan:
                return self._nothing_to_run()
            held = False
            if plan and n_d and self.batch_wait:  # TensorRT-LLM's batch waiting: hold the prompts back this step?
                # (it counts each prompt whole, ``len(get_tokens(0))``, not the chunk this step would run)
                if self.batch_waited < self.batch_wait and (sum(tgt[rid] for rid, _ in plan) + n_d * self.q_len
                                                            < cfg.batch_wait_tokens_ratio * cfg.max_batch_tokens):
                    self.batch_waited += 1
                    plan, held = [], True
                else:
                    self.batch_waited = 0
            if plan:
                ctx = sum(pf[rid] for rid, _ in plan)
                tokens = sum(c for _, c in plan)
            else:
                ctx = tokens = 0
        else:  # nothing to prefill: every policy runs the decodes (the contract in ``policies/base.py``)
            if not n_dec:
                return self._nothing_to_run()
            n_d, plan, ctx, tokens, held = n_dec, [], 0, 0, False
        # (a step that held prompts back runs on its own: the next one decides again)
        if not plan and not held and self._stretches and not swap_s and not (self.waiting and self._head_fits()):
            k = self._next_finish()
            if k >= 2 and self._start_stretch(n_d, k if k < MAX_STRETCH else MAX_STRETCH):
                return
        kv = self.kvb_sum + n_d * self.ticks if n_d else 0
        if self.wants_ranks and n_d:
            cost = cfg.cost.cost(len(plan), tokens, ctx, n_d, self.q_len, kv, ranks=self._ranks())
        else:
            cost = cfg.cost.cost(len(plan), tokens, ctx, n_d, self.q_len, kv)
        start = sim.env._now
        dt = cost.time_s + swap_s
        if cost.drain_s and not self.pf_role and plan:
            pf, tgt = sim.pf, sim.tgt
            if any(pf[rid] + c >= tgt[rid] for rid, c in plan):
                # a colocated pipeline waits for the prompts it completes to leave the last stage: their first
                # token (which their first decode step needs) comes out there
                dt += cost.drain_s
        self.state = STEP
        sim.env.call_at(start + dt, self._end_step)
        self._step = (start, dt, cost, n_d, plan, tokens)

    def _end_step(self, _ev) -> None:
        self.state = DECIDING
        start, dt, cost, n_d, plan, tokens = self._step
        sim = self.sim
        now = sim.env._now
        self.busy_s += dt
        q = self._quad
        q[0] += cost.prefill_attention_s
        q[1] += cost.prefill_ffn_s
        q[2] += cost.decode_attention_s
        q[3] += cost.decode_ffn_s
        if self.recv_n > 1:  # SGLang weighs a decode step 1 and any step with a prefill 1000
            self.recv_count += PREFILL_RECV_WEIGHT if plan else 1
        out_tokens = 0
        finished: list[int] = []
        if n_d:
            if self.spec:
                out_tokens += self._spec_tick()
            else:
                self._tick()
                out_tokens += n_d
            finished = self._due()
            for rid in finished:
                self._stop_decoding(rid)
        done_complete, handoff = [], []
        active = self.active
        # pipeline parallel: when the prompts this step completes leave the last stage (a prefill pool hands them off
        # then while its next step runs, its micro-batch crossing stages 2..pp after the one before it; a colocated
        # step waited for them, see ``_next``)
        ready = now
        if cost.drain_s and self.stage_free_s:
            stage_s = cost.drain_s / len(self.stage_free_s)
            free = self.stage_free_s
            for k, f in enumerate(free):
                ready = (ready if ready > f else f) + stage_s
                free[k] = ready
        if plan:
            s = sim
            pf_l, tgt, gen, out_l, off, reserve = s.pf, s.tgt, s.gen, s.out_l, s.off, self._reserve
            fresh_n = 0
            for rid, c in plan:
                pf = pf_l[rid] + c
                pf_l[rid] = pf
                if pf < tgt[rid]:
                    continue
                self.prefilling.remove(rid)
                before = -(-reserve(tgt[rid], gen[rid], out_l[rid], off[rid]) // BLOCK_TOKENS)  # ``_held_blocks``
                if gen[rid] == 0:  # fresh: its first token is sampled now (a recomputed one has it already)
                    gen[rid] = 1
                    s.prefill_done[rid] = ready
                    s.prefill_rep[rid] = self.uid
                    fresh_n += 1
                    # the client sees the first token now, unless it travels on with the KV to a decode replica
                    if not self.pf_role or out_l[rid] <= 1:
                        s.first_token[rid] = ready
                done = gen[rid] >= out_l[rid]
                if done:  # it leaves, releasing what it held through its prefill
                    del active[rid]
                    self.used_blocks -= before
                    done_complete.append(rid)
                elif self.pf_role:  # handed off to a decode replica: its KV stays here until the transfer lands
                    del active[rid]
                    handoff.append((rid, before))
                else:
                    self.used_blocks += -(-reserve(tgt[rid], gen[rid], out_l[rid], off[rid]) // BLOCK_TOKENS) - before
                    self._start_decoding(rid)
            out_tokens += fresh_n
        if finished:
            reserve, tgt, gen, out_l, off = self._reserve, sim.tgt, sim.gen, sim.out_l, sim.off
            for rid in finished:
                del active[rid]
                self.used_blocks -= -(-reserve(tgt[rid], gen[rid], out_l[rid], off[rid]) // BLOCK_TOKENS)
        for rid in finished:
            sim.finish(rid, self)
        for rid in done_complete:
            if ready > now:
                sim.env.call_at(ready, self._finish_drained, rid)
            else:
                sim.finish(rid, self)
        for rid, blocks in handoff:
            sim.hand_off(self, rid, blocks, ready)
        preempted = self._fit_kv() if self.used_blocks > self.blocks_total else 0
        sim.steps.add(self.uid, start, now, len(plan), tokens, n_d, out_tokens, len(self.waiting), len(active),
                      self.used_blocks, self._occ_div, preempted)
        self._next()

    def _finish_drained(self, rid: int) -> None:
        """A one-token request done by a pipelined prefill: it finishes as its last micro-batch leaves the pipeline."""
        self.sim.finish(rid, self)

    def _spec_tick(self) -> int:
        """A speculative step: every decoding request gains 1 + its accepted draft tokens (capped at its
        output); returns the tokens gained."""
        s, cfg = self.sim, self.cfg
        order = [rid for rid in self.active if rid in self.decoding]
        ok = self.rng.random((len(order), cfg.spec_draft_tokens)) < cfg.spec_acceptance
        gains = (1 + np.cumprod(ok, axis=1).sum(axis=1)).tolist()
        self._tick()
        total = 0
        for rid, g in zip(order, gains):
            left = s.out_l[rid] - (s.kvb[rid] + self.ticks - 1 - s.tgt[rid] + s.off[rid])
            g = min(g, left)
            total += g
            extra = g - 1
            if extra:
                kvb = s.kvb[rid]
                before = -(-(kvb + self.ticks) // BLOCK_TOKENS)
                self.residues[kvb % BLOCK_TOKENS] -= 1
                kvb += extra
                self.residues[kvb % BLOCK_TOKENS] += 1
                s.kvb[rid] = kvb
                self.kvb_sum += extra
                if self.wants_ranks:
                    self.rank_kvb[s.rank[rid]] += extra
                if self.grows:
                    self.used_blocks += -(-(kvb + self.ticks) // BLOCK_TOKENS) - before
                heapq.heappush(self.finishing, (self._finish_tick(rid), s.seq[rid], rid))
        return total

    def _fit_kv(self) -> int:
        """Preempt the most recently admitted requests until the KV cache fits again: by swap (their KV goes to the
        host, paid on the next step, while the swap space holds it) or by recompute."""
        s, cfg = self.sim, self.cfg
        preempted = 0
        while self.active and self.used_blocks > self.blocks_total:
            rid = next(reversed(self.active))
            del self.active[rid]
            if rid in self.decoding:
                self._stop_decoding(rid)
            else:
                self.prefilling.remove(rid)
            self.used_blocks -= self._held_blocks(rid)
            s.preempts[rid] += 1
            preempted += 1
            s.status[rid] = WAITING
            kv_bytes = (s.pf[rid] + s.gen[rid] - s.off[rid]) * cfg.kv_bytes_per_token if cfg.preemption == "swap" else 0
            r = s.rank[rid] if self.wants_ranks else 0
            if cfg.preemption == "swap" and self.swap_held_bytes[r] + kv_bytes <= cfg.swap_space_bytes:
                s.swapped[rid] = True
                self.swap_held_bytes[r] += kv_bytes
                self.swap_rank_s[r] += kv_bytes / cfg.swap_bytes_per_s
                self.swap_due = True
            else:  # recompute: drop the KV; the prompt plus what was generated is prefilled again
                s.tgt[rid] = s.prompt_l[rid] + s.gen[rid]
                s.off[rid] = s.gen[rid]
                s.pf[rid] = 0
            self.waiting.appendleft(rid)
        return preempted

    # -- decode stretches --------------------------------------------------------------------------
    def _start_stretch(self, n: int, k: int) -> bool:
        """Start up to ``k`` pure-decode steps of the ``n`` decoding requests as one event. Nothing but
        an arrival can change the batch before the k-th step (which finishes a request); an arrival
        cuts the stretch at the end of the step in progress. False: not possible (the KV cache would
        overflow within two steps, or requests waiting for the scheduler to receive them are due in one)."""
        if self.inbox:  # stop where the scheduler next receives (``recv_interval``)
            k = min(k, self.recv_n - self.recv_count)
            if k < 2:
                return False
        # KV blocks are constant when reservations were made whole at admission, and cannot overflow within k
        # steps when every sequence opening a block each 16 ticks still fits; else stop before the step that
        # would need a preemption (blocks never shrink)
        used, total = self.used_blocks, self.blocks_total
        if self.grows and used + n * ((k + BLOCK_TOKENS - 1) // BLOCK_TOKENS) > total:
            blocks = self._stretch_blocks(k)
            if blocks[-1] > total:
                k = bisect_right(blocks, total)
                if k < 2:
                    return False
        kv0 = self.kvb_sum + n * self.ticks
        if self.wants_ranks:  # each chunk starts from the ranks as they will be then
            cost, ranks0 = self.cfg.cost, self._ranks()
            ends = _ends_of(lambda n_, kv_, k_: decode_stretch_costs(cost, n_, kv_, k_, ranks0.grown((kv_ - kv0) // n)))
        else:
            ends = self._stretch_ends
            if ends is None:
                cost = self.cfg.cost
                ends = getattr(cost, "decode_ends", None) or _ends_of(
                    lambda n_, kv_, k_: decode_stretch_costs(cost, n_, kv_, k_))
                self._stretch_ends = ends
        env = self.sim.env
        now = env._now
        # Steps are costed in chunks and only up to the step in progress at the next submission this
        # replica can foresee (a known arrival or KV transfer): an unforeseen one cuts the stretch, and
        # ending a stretch early costs one more decision, never a different result. With none foreseen, a
        # first chunk whose end extends the stretch unless something cut it (``_end_stretch``).
        # The horizon: the earliest time a request is known to reach this replica (inf: none known), a KV
        # transfer or a request in the frontend landing, or (a replica that takes arrivals) the next arrival.
        at = self.inbound_at
        while at and at[0] < now:
            heapq.heappop(at)
        horizon = at[0] if at else math.inf
        if self._takes_arrivals:
            h = self.sim.next_arrival_s + self.frontend_s
            if h < horizon:
                horizon = h
        if horizon == math.inf:
            chunk = k if k < FIRST_CHUNK else FIRST_CHUNK
        elif self._pace_s <= 0:
            chunk = k
        else:  # the steps expected before the horizon at the last step's pace
            chunk = min(k, int((horizon - now) / self._pace_s) + 2)
        e, attn, ffn = ends(n, kv0, chunk, now)  # each step's end: the same float additions as step by step
        bounds = [now]
        bounds += e
        end = chunk
        while bounds[-1] < horizon < math.inf and end < k:  # a later horizon: cost on to it
            chunk *= 4
            m = min(chunk, k - end)
            e, a, f = ends(n, kv0 + n * end, m, bounds[-1])
            bounds += e
            if a.__class__ is list:
                attn += a
                ffn += f
            end += m
        if bounds[-1] >= horizon:
            end = bisect_left(bounds, horizon, 1)
        self.stretch = _Stretch(bounds, attn, ffn, n, kv0, ends, k, len(self.waiting), len(self.active),
                                end, 0, chunk * 4, horizon == math.inf and end < k, self.recv_count)
        self._pace_s = bounds[end] - bounds[end - 1]
        self.state = STRETCH
        self.pending += 1
        env.call_at(bounds[end], self._end_stretch, self.pending)
        return True

    def _cost_chunk(self, m: int) -> None:
        """Cost up to ``m`` more steps of the stretch in flight and move its end after them."""
        st = self.stretch
        done = st.end
        m = min(m, st.k - done)
        bounds = st.bounds
        e, a, f = st.ends(st.n, st.kv0 + st.n * done, m, bounds[-1])  # the same float additions as step by step
        bounds += e
        if a.__class__ is list:
            st.attn += a
            st.ffn += f
        st.end = done + m

    def _openings(self, k: int) -> list[int]:
        """Blocks the next ``min(k, 16)`` decode ticks open (no request joins or leaves; the pattern repeats every
        16 ticks): tick ``j`` opens one for each request whose KV residue is ``(-ticks - j) % 16``, that is
        ``twice[r - j]`` of the residue counts twice over with ``r = -ticks % 16 + 16``: a backward slice."""
        twice = self.residues * 2
        r = -self.ticks % BLOCK_TOKENS + BLOCK_TOKENS
        return twice[r:r - min(k, BLOCK_TOKENS):-1]

    def _stretch_blocks(self, k: int) -> list[int]:
        """KV blocks in use after each of the next ``k`` decode ticks (no request joins or leaves)."""
        out = list(accumulate(islice(cycle(self._openings(k)), k), initial=self.used_blocks))
        del out[0]
        return out

    def _cut_stretch(self) -> None:
        """An arrival: end the stretch with the step in progress (with a receive interval, at the first step end
        where the scheduler receives)."""
        st = self.stretch
        st.extendable = False
        env = self.sim.env
        steps = bisect_left(st.bounds, env._now, 1)
        if self.recv_n > 1:
            steps += -(st.c0 + steps) % self.recv_n
        if steps < st.end:
            st.end = steps
            self.pending += 1
            env.call_at(st.bounds[steps], self._end_stretch, self.pending)

    def _end_stretch(self, entry: int) -> None:
        if entry != self.pending:  # superseded by a cut
            return
        st = self.stretch
        if st.extendable:  # nothing cut the stretch: cost its next, longer chunk instead of deciding again
            self._cost_chunk(st.chunk)
            st.chunk *= 4
            st.extendable = st.end < st.k
            self.pending += 1
            self.sim.env.call_at(st.bounds[st.end], self._end_stretch, self.pending)
            return
        self.state = DECIDING
        steps, bounds, n = st.end, st.bounds, st.n
        blocks0, cyc = self._book_stretch(steps)
        self.stretch = None
        if self.recv_n > 1:  # the counter over the stretch (it restarted at every receive inside, with nothing to take)
            c = st.c0 + steps
            self.recv_count = c if c < self.recv_n else (c % self.recv_n or self.recv_n)
        sim = self.sim
        heap = self.finishing
        if heap and heap[0][0] <= self.ticks:
            finished = self._due()
            if finished:
                active, reserve = self.active, self._reserve
                tgt, gen, out_l, off = sim.tgt, sim.gen, sim.out_l, sim.off
                for rid in finished:
                    self._stop_decoding(rid)
                    del active[rid]
                    self.used_blocks -= -(-reserve(tgt[rid], gen[rid], out_l[rid], off[rid]) // BLOCK_TOKENS)
                for rid in finished:
                    sim.finish(rid, self)
        # (the last step's record follows the finishes)
        sim.steps.add_decodes(self.uid, bounds if len(bounds) == steps + 1 else bounds[:steps + 1], blocks0, cyc,
                              self.used_blocks, self._occ_div, n, st.queued, st.running, len(self.waiting),
                              len(self.active))
        self._next()

    def _book_stretch(self, steps: int) -> tuple[int, list[int]]:
        """Account the next ``steps`` (> 0) steps of the stretch in flight (from those already booked on): busy
        and quadrant time, decode ticks and KV blocks. Returns the KV blocks in use before them and the blocks
        their first ``min(steps, 16)`` ticks open (a new list; tick ``j`` opens the ``j % 16``-th again: the
        requests whose KV residue is ``(-ticks - j) % 16`` start a block), for the caller to record."""
        st = self.stretch
        bounds = st.bounds
        i = st.booked
        j = i + steps
        self.busy_s += bounds[j] - bounds[i]
        q = self._quad
        attn, ffn = st.attn, st.ffn
        if attn.__class__ is float:  # every step's attention is its duration less ``attn``; its FFN ``ffn``
            q[2] += (bounds[j] - bounds[i]) - steps * attn
            q[3] += steps * ffn
        elif i == 0 and j == len(attn):
            q[2] += sum(attn)
            q[3] += sum(ffn)
        else:
            q[2] += sum(attn[i:j])
            q[3] += sum(ffn[i:j])
        b0 = self.used_blocks
        if self.grows:
            cyc = self._openings(steps)
            whole, part = divmod(steps, BLOCK_TOKENS)  # every decoding request opens one block per 16 ticks
            self.used_blocks = b0 + whole * st.n + sum(cyc[:part])
        else:  # constant: reservations were made whole at admission
            cyc = [0] * min(steps, BLOCK_TOKENS)
        self.ticks += steps
        st.booked = j
        return b0, cyc

    def book_at_horizon(self, horizon_s: float) -> None:
        """The run stopped at ``horizon_s`` with a stretch in flight: book its steps that ended before."""
        if self.state != STRETCH:
            return
        st = self.stretch
        steps = bisect_left(st.bounds, horizon_s, 1) - 1
        if steps > 0:
            blocks0, cyc = self._book_stretch(steps)
            self.sim.steps.add_decodes(self.uid, st.bounds[:steps + 1], blocks0, cyc, self.used_blocks, self._occ_div,
                                       st.n, st.queued, st.running, st.queued, st.running)
        self.state = IDLE


def _as_list(a: np.ndarray) -> list:
    """``a.tolist()``, with one shared NaN object where a float column is all NaN (a fresh result column: a
    million distinct NaN floats would take ~24 MB)."""
    return [math.nan] * len(a) if a.dtype.kind == "f" and np.isnan(a).all() else a.tolist()


class Simulation:
    """Wires arrivals, routers, replicas and KV-transfer links together and collects records."""

    # the engine's per-request lists and the ``Requests`` arrays they start from and are copied back into
    _WRITTEN = (("tgt", "target_prefill"), ("pf", "prefilled"), ("gen", "generated"), ("off", "offset"),
                ("swapped", "swapped"), ("rank", "dp_rank"),  # attention-DP rank on its replica (-1: none)
                ("adm", "admitted_s"), ("status", "status"), ("arrival", "arrival_s"), ("received", "received_s"),
                ("first_token", "first_token_s"), ("prefill_done", "prefill_done_s"), ("dec_start", "decode_start_s"),
                ("finished_at", "finish_s"),
                ("preempts", "preemptions"), ("prefill_rep", "prefill_replica"), ("decode_rep", "decode_replica"))

    def __init__(self, requests: Requests, replicas: list[ReplicaConfig], *, seed: int = 0,
                 closed_concurrency: int = 0,
                 kv_transfer_s: Callable[[int, int, int], tuple[float, float, int]] | None = None,
                 horizon_s: float = math.inf, coalesce: bool = True, closed_starts_s: np.ndarray | None = None):
        self.env = Clock()
        self.coalesce = coalesce  # run pure-decode stretches as one event (same results, far fewer events)
        self.req = r = requests
        n = len(r.prompt)
        # the engine's working state and results per request, as Python lists (scalar access is what the inner
        # loop does): the inputs it reads, its own bookkeeping, and ``_WRITTEN`` (copied back by ``_write_back``)
        self.prompt_l = r.prompt.tolist()
        self.out_l = r.output.tolist()
        self.kvb = [0] * n  # decoding requests: KV tokens minus their replica's decode ticks
        self.seq = [0] * n  # admission number on the current replica
        for name, col in self._WRITTEN:
            setattr(self, name, _as_list(getattr(r, col)))
        self.seed = seed
        self.replicas = [Replica(self, c, i, np.random.default_rng([seed, i])) for i, c in enumerate(replicas)]
        self.by_role = collections.defaultdict(list)
        for rep in self.replicas:
            self.by_role[rep.cfg.role].append(rep)
        self._entry_role = "colocated" if self.by_role["colocated"] else "prefill"  # where arrivals go
        self.routed = any(rep.cfg.context_range != (0, ROUTE_MAX_TOKENS) for rep in self.replicas)  # a long/short split
        # roles whose replicas differ in the longest request (prompt + output) they can hold (``_route``)
        self._uneven_fit = {role: len({rep.fits_tokens for rep in reps}) > 1 for role, reps in self.by_role.items()}
        # ``kv_transfer_s(rid, src, dst)``: how request ``rid``'s KV travels from prefill replica ``src`` to decode
        # replica ``dst`` (uids): (seconds of link time, latency, layers it streams over; 0: after the prefill)
        self.kv_transfer_s = kv_transfer_s or (lambda rid, src, dst: (0.0, 0.0, 0))
        # when each KV lane is next free: a prefill replica's sending ports and a decode replica's receiving ones,
        # one lane per attention-DP rank (one request's KV sits on one rank's devices)
        self.link_free_s = {rep.uid: [0.0] * rep.attention_dp for rep in self.by_role["prefill"]}
        self.ingress_free_s = {rep.uid: [0.0] * rep.attention_dp for rep in self.by_role["decode"]}
        # one decode replica per kind of what it can hold (context range, context window, KV per rank)
        kinds = {}
        for rep in self.by_role["decode"]:
            kinds.setdefault((rep.cfg.context_range, rep.cfg.max_model_len, rep.rank_blocks), rep)
        self._decode_kinds = list(kinds.values())
        # no request up to this long (prompt + output) is refused by every decode replica: the fast test before
        # ``decode_refusal`` (every request, when a routed pool splits by prompt length)
        self.decode_fits_tokens = 0 if self.routed else min((r.fits_tokens for r in self._decode_kinds), default=0)
        self.shipping: dict[int, tuple[Replica, int]] = {}  # rid -> (its prefill replica, the blocks held there)
        self.pre_rank: dict[int, int] = {}  # rid -> its decode replica's attention-DP rank, chosen at hand-off
        self.steps = StepLog()
        self.events = EventLog()  # (time, what, request id) tuples, for exact-log tests and traces
        self.next_arrival_s = math.inf  # the next open-loop (or staggered closed-loop) arrival
        self.arrival_times: list[float] = []  # the open-loop arrivals (or staggered closed-loop first sends)
        self.closed = closed_concurrency
        self.closed_starts_s = closed_starts_s  # closed loop: when each client sends its first request
        self.ramp_s = 0.0
        self.engine_override: str | None = None
        self.engine_versions: dict[str, str] = {}  # pool name -> the engine release it serves, where one is named
        self.engine_version_override: str | None = None  # the run's --engine-version
        self.next_closed = 0
        self._owed, self._sending = 0, False  # closed-loop arrivals owed, and whether they are being sent
        self.horizon_s = horizon_s
        self.done_count = 0
        self.on_done: Callable[[int], None] | None = None  # progress callback (requests ended so far)

    # -- routing -----------------------------------------------------------------------------
    def _route(self, role: str, rid: int) -> Replica | None:
        """The least-loaded replica of ``role`` whose context range holds the request's prompt length, among those
        that can hold the whole request where any can (None, and the request rejected, if no context range holds
        it)."""
        pool = self.by_role[role]
        if self.routed:
            n = self.prompt_l[rid]
            pool = [rep for rep in pool if rep.cfg.context_range[0] <= n <= rep.cfg.context_range[1]]
            if not pool:
                self.reject(rid, f"no {role} replica takes prompts of {n} tokens (pool routes)")
                return None
        if len(pool) == 1:
            return pool[0]
        if self._uneven_fit[role]:
            # replicas of the role differ in the longest request they hold: one that could never hold this one is
            # passed over while another can (by load alone it would be refused there after its prefill)
            total = self.prompt_l[rid] + self.out_l[rid]
            able = [rep for rep in pool if total <= rep.fits_tokens]  # (``Replica.refusal`` is None)
            if able:
                pool = able
        best, low = None, 0  # the least load, the lowest uid among equals (pools are in uid order)
        for rep in pool:
            load = len(rep.waiting) + len(rep.inbox) + len(rep.active) + rep.inbound  # ``Replica.load``
            if best is None or load < low:
                best, low = rep, load
        return best

    def arrive(self, rid: int) -> None:
        now = self.env._now
        self.arrival[rid] = now
        self.events.add(now, ARRIVE, rid)
        dst = self._route(self._entry_role, rid)
        if dst is None:
            return
        if dst.frontend_s > 0:  # the engine's frontend holds it first (counted as the replica's load meanwhile)
            at = now + dst.frontend_s
            dst.inbound += 1
            heapq.heappush(dst.inbound_at, at)
            self.env.call_at(at, dst.received, rid)
        else:
            dst.submit(rid)

    def decode_refusal(self, rid: int) -> str | None:
        """Why no decode replica could ever serve ``rid`` (None: one can), asked as its prefill starts, so that a
        request the decode pool cannot hold is refused before it is prefilled, not after. Replicas alike in
        what they can hold are asked once."""
        n = self.prompt_l[rid]
        pool = [rep for rep in self._decode_kinds if rep.cfg.context_range[0] <= n <= rep.cfg.context_range[1]]
        if not pool:
            return f"no decode replica takes prompts of {n} tokens (pool routes)"
        first = None  # (the first kind's reason, as the reference stepper gives it)
        for rep in pool:
            why = rep.refusal(rid)
            if why is None:
                return None
            first = first or why
        return first

    def hand_off(self, src: Replica, rid: int, blocks: int, ready_s: float) -> None:
        """Ship ``rid``'s KV (``blocks`` KV blocks, held on ``src`` until it lands; whole at ``ready_s``) from prefill
        replica ``src`` to a decode replica. The sender's and the receiver's ports carry one transfer at a time each
        (a lane per attention-DP rank: the request's rank on ``src``, and the decode rank dealt to it now): a
        transfer holds both lanes for its whole link time, from when both are free and its first layer is ready.
        Streamed layer by layer, that is a layer's time into the prefill (so an idle link hides all but the last
        layer's share under it); else after the prefill."""
        dst = self._route("decode", rid)  # the destination decides the link and is known before shipping
        if dst is None:
            src.release(blocks)
            return
        self.decode_rep[rid] = dst.uid
        dst.inbound += 1
        self.shipping[rid] = (src, blocks)
        now = ready_s  # (its KV is whole once its prefill has drained)
        ship_s, latency_s, layers = self.kv_transfer_s(rid, src.uid, dst.uid)
        end = now
        if dst.wants_ranks:  # the decode rank is chosen as the request is dispatched to it, before its KV ships
            self.pre_rank[rid] = dst.deal_rank()
        if ship_s > 0:
            # the request's own rank's ports on each side
            out, inp = self.link_free_s[src.uid], self.ingress_free_s[dst.uid]
            o = self.rank[rid] if src.wants_ranks else 0
            i = self.pre_rank[rid] if dst.wants_ranks else 0
            if layers:
                adm = self.adm[rid]
                start = max(adm + (now - adm) / layers, out[o], inp[i])
                end = max(start + ship_s, now + ship_s / layers)
            else:
                end = max(now, out[o], inp[i]) + ship_s
            out[o] = inp[i] = end
        end += latency_s
        heapq.heappush(dst.inbound_at, end)
        self.env.call_at(end, dst.transferred, rid)

    def finish(self, rid: int, rep: Replica) -> None:
        now = self.env._now
        self.status[rid] = FINISHED
        self.finished_at[rid] = now
        if self.decode_rep[rid] < 0:
            self.decode_rep[rid] = rep.uid
        self.events.add(now, FINISH, rid)
        self._closed_next()

    def reject(self, rid: int, reason: str) -> None:
        self.status[rid] = REJECTED
        self.req.reason[rid] = reason
        self.events.add(self.env._now, REJECT, rid)
        self._closed_next()

    def _closed_next(self) -> None:
        """A request ended: in a closed loop its client sends the next one now. A rejection inside that
        arrival queues the following one here instead of recursing (a long run of rejections)."""
        self.done_count += 1
        if self.on_done is not None:
            self.on_done(self.done_count)
        if not self.closed:
            return
        self._owed += 1
        if self._sending:
            return
        self._sending = True
        try:
            while self._owed and self.next_closed < len(self.prompt_l):
                self._owed -= 1
                rid = self.next_closed
                self.next_closed += 1
                self.arrive(rid)
        finally:
            self._sending = False

    # -- driving -----------------------------------------------------------------------------
    def _arrivals_from(self, i: int) -> None:
        """Arrive every request due by now from ``arrival_times[i:]``, then wait for the next one."""
        times = self.arrival_times
        now, n = self.env._now, len(times)
        while i < n and times[i] <= now:
            self.arrive(i)
            i += 1
        if i < n:
            self.next_arrival_s = times[i]
            self.env.call_at(times[i], self._arrivals_from, i)
        else:
            self.next_arrival_s = math.inf

    def run(self) -> None:
        n = len(self.prompt_l)
        if self.closed:
            first = min(self.closed, n)
            self.next_closed = first
            starts = self.closed_starts_s
            if starts is None or not np.any(starts[:first] > 0):
                for rid in range(first):
                    self.arrive(rid)
            else:
                self.arrival_times = np.asarray(starts[:first], float).tolist()
                self.env.call_at(0.0, self._arrivals_from, 0)
        else:
            self.arrival_times = self.req.arrival_s.tolist()
            self.env.call_at(0.0, self._arrivals_from, 0)
        self.env.run(until=self.horizon_s if math.isfinite(self.horizon_s) else None)
        if math.isfinite(self.horizon_s):
            for rep in self.replicas:
                rep.book_at_horizon(self.horizon_s)
        self._write_back()
        r = self.req
        open_ = np.flatnonzero((r.status != FINISHED) & (r.status != REJECTED))
        if len(open_) and math.isfinite(self.horizon_s):
            # a pipelined prefill stamps its prompts' end ahead, at their drain: one past the horizon had not happened
            for col in (r.prefill_done_s, r.first_token_s):
                late = open_[col[open_] > self.horizon_s]
                col[late] = np.nan
        for rid in open_:
            r.status[rid] = REJECTED
            r.reason[int(rid)] = unfinished_reason(r.arrival_s[rid], self.horizon_s)

    def _write_back(self) -> None:
        """Copy the working lists into the ``Requests`` arrays (decoding requests' counts materialised)."""
        for rep in self.replicas:
            for rid in list(rep.decoding):
                rep._stop_decoding(rid)
        r = self.req
        for name, col in self._WRITTEN:
            getattr(r, col)[:] = getattr(self, name)
            setattr(self, name, None)
        # the run is over: release the working lists before the frames are built (a million-request run
        # holds ~250 MB in them)
        self.prompt_l = self.out_l = self.kvb = self.seq = None

    # -- records -----------------------------------------------------------------------------
    def request_frame(self) -> pd.DataFrame:
        r = self.req
        out = r.output.astype(float)
        # strings by lookup: replica names with "" last (index -1: none), each request's reason where it has one
        names = np.array([rep.cfg.name for rep in self.replicas] + [""], dtype=object)
        reason = np.full(len(r.prompt), "", dtype=object)
        if r.reason:
            reason[np.fromiter(r.reason.keys(), np.int64, len(r.reason))] = list(r.reason.values())
        df = pd.DataFrame({
            "request_id": np.arange(len(r.prompt)), "arrival_s": r.arrival_s, "prompt_tokens": r.prompt,
            "output_tokens": r.output, "status": _STATUS_NAMES[r.status],
            "reason": reason,
            "admitted_s": r.admitted_s, "prefill_done_s": r.prefill_done_s, "first_token_s": r.first_token_s,
            "decode_start_s": r.decode_start_s, "finish_s": r.finish_s,
            "preemptions": r.preemptions,
            "prefill_replica": names[r.prefill_replica],
            "decode_replica": names[r.decode_replica],
        })
        # time in the engine's frontend (off the GPU path), then queueing at the scheduler until admission
        received = np.where(np.isnan(r.received_s), r.arrival_s, r.received_s)
        df["frontend_s"] = received - r.arrival_s
        df["queue_s"] = df["admitted_s"] - received
        df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
        df["e2e_s"] = df["finish_s"] - df["arrival_s"]
        df["tpot_s"] = np.where(out > 1, (df["finish_s"] - df["first_token_s"]) / np.maximum(out - 1, 1), np.nan)
        return df

    def step_frame(self) -> pd.DataFrame:
        return self.steps.frame([rep.cfg.pool for rep in self.replicas], [rep.name for rep in self.replicas])
