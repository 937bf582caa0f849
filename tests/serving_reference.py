"""The slow reference stepper for the serving engine's tests.

This is the straightforward scheduler the fast engine (``simulator.serving.engine``) must reproduce:
one simpy process per replica that runs one batch step per event, with every request's state in
numpy arrays updated a step at a time and the KV blocks recounted from scratch after every step.
It shares ``ReplicaConfig``, ``Requests``, the batching policies and the step records with the
engine, and nothing else: no decode stretches, no running totals, no lazy bookkeeping. Keep it
simple and slow; it is the definition the fast path is checked against.
"""

from __future__ import annotations

import collections
import collections.abc
import math
from collections.abc import Callable

import numpy as np
import simpy

from simulator.serving.engine import (
    PREFILL_RECV_WEIGHT,
    ReplicaConfig,
    Requests,
    Simulation,
    unfinished_reason,
)
from simulator.serving.records import EventLog, StepLog
from simulator.serving.stepcost import DecodeRanks

BLOCK_TOKENS = 16  # paged KV-cache block size
PENDING, WAITING, RUNNING, FINISHED, REJECTED = 0, 1, 2, 3, 4


class Replica:
    """One model replica: a waiting queue, the admitted requests, a KV-block budget, and a
    scheduler process that runs one batch step at a time."""

    def __init__(self, sim: ReferenceSimulation, cfg: ReplicaConfig, uid: int, rng: np.random.Generator):
        self.sim, self.cfg, self.uid, self.rng = sim, cfg, uid, rng
        self.name = cfg.name
        self.waiting: collections.deque[int] = collections.deque()
        self.active = np.empty(0, np.int64)  # admitted requests in admission order
        self.blocks_total = cfg.kv_capacity_tokens // BLOCK_TOKENS
        self.used_blocks = 0  # blocks reserved by ``active`` (kept current after every change)
        self.swaps = self.recomputes = 0  # preemptions by swap and by recompute (for the tests)
        self.batch_waited = 0  # steps in a row that batch waiting held the prompts back
        self.exact_blocks = True  # used_blocks == _blocks(active) (False after an admission, until _fit_kv)
        self.wake = sim.env.event()
        self.inbound = 0  # requests whose KV is on its way here (counted as load by the router)
        self.busy_s = 0.0
        self.quadrant_s = np.zeros(4)
        self.next_rank = 0
        # SGLang's receive skipper: requests that reached a busy scheduler wait in ``inbox`` until it receives
        self.inbox: collections.deque[int] = collections.deque()
        self.recv_count = 0
        self.idle = True  # waiting on ``wake`` (an idle scheduler receives at once)
        self.dp = int(cfg.cost.attention_dp) if getattr(cfg.cost, "wants_ranks", False) else 1
        # per attention-DP rank: swapped-out KV on the host (per device) and the swap time pending (out, then in)
        self.swap_held_bytes = [0.0] * self.dp
        self.swap_rank_s = [0.0] * self.dp
        self.shipping_blocks = 0  # blocks of handed-off requests whose KV has not left yet
        self.stage_free = [0.0] * max(cfg.pp - 1, 1) if cfg.role == "prefill" else []  # stages 2..pp: next free
        sim.env.process(self.run())

    def free_shipped(self, blocks: int) -> None:
        """A handed-off request's KV has left: its blocks are free (an idle scheduler with requests waiting wakes)."""
        self.shipping_blocks -= blocks
        self.used_blocks -= blocks
        if self.waiting and not self.wake.triggered:
            self.wake.succeed()

    # -- load for the router -----------------------------------------------------------------
    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.inbox) + len(self.active) + self.inbound

    def refusal(self, rid: int) -> str | None:
        """Why this replica could never serve ``rid``: over the context window, or more KV than it holds."""
        r = self.sim.req
        total = int(r.prompt[rid] + r.output[rid])
        if self.cfg.max_model_len and total > self.cfg.max_model_len:
            return f"prompt + output = {total} tokens exceed the model's context window of {self.cfg.max_model_len}"
        need = math.ceil(total / BLOCK_TOKENS)
        dp = int(self.cfg.cost.attention_dp) if getattr(self.cfg.cost, "wants_ranks", False) else 1
        if need > self.blocks_total // dp:  # one request lives on one attention-DP rank's share of the cache
            return (f"needs {need * BLOCK_TOKENS} KV tokens, replica {self.cfg.name} holds "
                    f"{self.blocks_total // dp * BLOCK_TOKENS}" + (" per attention-DP rank" if dp > 1 else ""))
        return None

    def submit(self, rid: int) -> None:
        r = self.sim.req
        why = self.refusal(rid)
        if why is None and self.cfg.role == "prefill":  # no decode replica could ever hold it: refused up front
            n = int(r.prompt[rid])
            pool = [rep for rep in self.sim.by_role["decode"]
                    if rep.cfg.context_range[0] <= n <= rep.cfg.context_range[1]]
            reasons = [rep.refusal(rid) for rep in pool]
            if not pool:
                why = f"no decode replica takes prompts of {n} tokens (pool routes)"
            elif all(reasons):
                why = reasons[0]
        if why is not None:
            self.sim.reject(rid, why)
            return
        r.status[rid] = WAITING
        if getattr(self.cfg.cost, "wants_ranks", False):  # round robin over attention-DP ranks on arrival
            rank = self.sim.pre_rank.pop(rid, None)  # (a P/D request got its decode rank at hand-off)
            if rank is None:
                rank = self.next_rank
                self.next_rank = (self.next_rank + 1) % int(self.cfg.cost.attention_dp)
            r.dp_rank[rid] = rank
        if self.cfg.recv_interval > 1 and not self.idle:
            self.inbox.append(rid)
            return
        self.waiting.append(rid)
        if not self.wake.triggered:
            self.wake.succeed()

    # -- batching policy (pure given the state) ----------------------------------------------
    def _reserved(self, ids: np.ndarray) -> np.ndarray:
        r = self.sim.req
        return self.cfg.policy.reserved_tokens(r.target_prefill[ids], r.generated[ids], r.output[ids], r.offset[ids])

    def _blocks(self, ids: np.ndarray) -> int:
        return int(np.add.reduce(-(-self._reserved(ids) // BLOCK_TOKENS))) if len(ids) else 0

    def _admit(self) -> None:
        """FCFS admission while KV blocks and sequence slots allow; a swapped request's swap-in joins its rank's
        pending swap time."""
        r, cfg = self.sim.req, self.cfg
        used = self.used_blocks
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
                kv_bytes = float(kv_tokens(r, np.array([rid]))[0]) * cfg.kv_bytes_per_token
                k = int(r.dp_rank[rid]) if self.dp > 1 else 0
                self.swap_rank_s[k] += kv_bytes / cfg.swap_bytes_per_s
                self.swap_held_bytes[k] -= kv_bytes
                r.swapped[rid] = False
        if admitted:
            self.exact_blocks = False  # admission reserves by ``admit_tokens``
            ids = np.asarray(admitted, np.int64)
            r.home[ids] = self.uid
            self.active = np.concatenate((self.active, ids))
        self.used_blocks = used

    def _plan_step(self):
        """The policy picks the step's decodes and prompt chunks under the token budget."""
        r, cfg = self.sim.req, self.cfg
        ids = self.active
        is_dec = r.prefilled[ids] >= r.target_prefill[ids]
        q_len = 1 + cfg.spec_draft_tokens
        decoding, prefilling = ids[is_dec], ids[~is_dec]
        remaining = r.target_prefill[prefilling] - r.prefilled[prefilling]
        if cfg.max_chunk_tokens:  # each attention-DP rank chunks its own prompts under its own budget
            remaining = np.minimum(remaining, cfg.max_chunk_tokens)
        run_dec, chunks = cfg.policy.plan(len(decoding), remaining.tolist(), cfg.max_batch_tokens, q_len)
        chunks = np.asarray(chunks, np.int64).reshape(-1)
        take = chunks > 0
        decoding, prefilling, chunks = (decoding if run_dec else decoding[:0]), prefilling[take], chunks[take]
        # TensorRT-LLM's batch waiting: prompts beside decodes wait while the step schedules too few tokens
        wait = cfg.batch_wait_iters if not getattr(cfg.cost, "wants_ranks", False) else 0
        if wait and len(prefilling) and len(decoding):
            if (self.batch_waited < wait
                    and int(r.target_prefill[prefilling].sum()) + len(decoding) * q_len
                    < cfg.batch_wait_tokens_ratio * cfg.max_batch_tokens):  # (prompts counted whole)
                self.batch_waited += 1
                prefilling, chunks = prefilling[:0], chunks[:0]
            else:
                self.batch_waited = 0
        return decoding, prefilling, chunks, q_len

    # -- the scheduler process ---------------------------------------------------------------
    def run(self):
        env, r, cfg = self.sim.env, self.sim.req, self.cfg
        n = cfg.recv_interval
        self.idle = False  # running (requests submitted before this first loop found it idle and went to waiting)
        while True:
            if n > 1 and self.recv_count >= n:  # the scheduler receives every n decode steps (or after a prefill)
                self._receive()
            self._admit()
            swap_s = max(self.swap_rank_s)  # swap-out of the last preempted, swap-in of the admitted: slowest rank
            self.swap_rank_s = [0.0] * self.dp
            decoding, pre_ids, chunks, q_len = self._plan_step()
            if not len(decoding) and not len(pre_ids):
                if self.inbox:  # nothing to run: the idle scheduler receives at once
                    self._receive()
                    continue
                self.wake = env.event()
                self.idle = True
                yield self.wake
                self.idle = False
                self.recv_count = 0
                continue
            ctx = r.prefilled[pre_ids]
            kv = kv_tokens(r, decoding)
            rk = {}
            if getattr(cfg.cost, "wants_ranks", False) and len(decoding):
                dp = int(cfg.cost.attention_dp)
                rk["ranks"] = DecodeRanks(tuple(np.bincount(r.dp_rank[decoding], minlength=dp).tolist()),
                                          tuple(np.bincount(r.dp_rank[decoding], weights=kv, minlength=dp)
                                                .astype(np.int64).tolist()))
            cost = cfg.cost.cost(len(pre_ids), int(chunks.sum()), int(ctx.sum()), len(decoding),
                                 q_len, int(kv.sum()), **rk)
            start = env.now
            dt = cost.time_s + swap_s
            if cost.drain_s and cfg.role != "prefill" and (ctx + chunks >= r.target_prefill[pre_ids]).any():
                dt += cost.drain_s  # a colocated pipeline waits for the prompts it completes to leave the last stage
            yield env.timeout(dt)
            self.busy_s += dt
            self.quadrant_s += (cost.prefill_attention_s, cost.prefill_ffn_s, cost.decode_attention_s,
                                cost.decode_ffn_s)
            self.recv_count += PREFILL_RECV_WEIGHT if len(pre_ids) else 1
            out_tokens = self._apply(decoding, pre_ids, chunks, cost.drain_s if cfg.role == "prefill" else 0.0)
            preempted = self._fit_kv()
            self.sim.record_step(self, start, env.now, len(pre_ids), int(chunks.sum()), len(decoding),
                                 out_tokens, preempted)

    def _receive(self) -> None:
        self.recv_count = 0
        self.waiting.extend(self.inbox)
        self.inbox.clear()

    def _apply(self, decoding: np.ndarray, pre_ids: np.ndarray, chunks: np.ndarray, drain_s: float = 0.0) -> int:
        """Apply a step's tokens; ``drain_s``: how long after the step the prompts it completes leave the pipeline
        (a prefill pool's pipeline parallelism)."""
        r, cfg, now = self.sim.req, self.cfg, self.sim.env.now
        ready = now
        if drain_s and self.stage_free:  # the step's micro-batch crosses the later stages after the one before it
            for k in range(len(self.stage_free)):
                ready = max(ready, self.stage_free[k]) + drain_s / len(self.stage_free)
                self.stage_free[k] = ready
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
        held = {}
        if len(pre_ids):
            r.prefilled[pre_ids] += chunks
            done = pre_ids[r.prefilled[pre_ids] >= r.target_prefill[pre_ids]]
            held = dict(zip(done.tolist(), (-(-self._reserved(done) // BLOCK_TOKENS)).tolist()))  # (before its token)
            fresh = done[r.generated[done] == 0]  # a recomputed request already has its first token
            r.prefill_done_s[fresh] = ready
            r.generated[fresh] = 1
            r.prefill_replica[fresh] = self.uid
            out += len(fresh)
            complete = r.generated[done] >= r.output[done]
            # the client sees the first token now, unless it travels on with the KV to a decode replica
            shown = fresh if cfg.role != "prefill" else fresh[r.generated[fresh] >= r.output[fresh]]
            r.first_token_s[shown] = ready
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
                    if finished and ready > now and rid in held:  # a drained prompt with its only token
                        self.sim.env.process(self._finish_at(rid, ready - now))
                    elif finished:
                        self.sim.finish(rid, self)
                    else:  # its KV stays here until the transfer lands
                        self.shipping_blocks += held[rid]
                        self.used_blocks = self._blocks(self.active) + self.shipping_blocks
                        self.sim.hand_off(self, rid, held[rid], ready)
        return out

    def _finish_at(self, rid: int, delay_s: float):
        yield self.sim.env.timeout(delay_s)
        self.sim.finish(rid, self)

    def _fit_kv(self) -> int:
        """Preempt the most recently admitted requests until the KV cache fits again."""
        r = self.sim.req
        preempted = 0
        self.used_blocks = self._blocks(self.active) + self.shipping_blocks
        self.exact_blocks = True
        while len(self.active) and self.used_blocks > self.blocks_total:
            rid = int(self.active[-1])
            self.active = self.active[:-1]
            r.home[rid] = -1
            self.used_blocks -= math.ceil(int(self._reserved(np.array([rid]))[0]) / BLOCK_TOKENS)
            r.preemptions[rid] += 1
            preempted += 1
            r.status[rid] = WAITING
            kv_bytes = float(kv_tokens(r, np.array([rid]))[0]) * self.cfg.kv_bytes_per_token
            k = int(r.dp_rank[rid]) if self.dp > 1 else 0
            if self.cfg.preemption == "swap" and self.swap_held_bytes[k] + kv_bytes <= self.cfg.swap_space_bytes:
                r.swapped[rid] = True
                self.swap_held_bytes[k] += kv_bytes
                self.swap_rank_s[k] += kv_bytes / self.cfg.swap_bytes_per_s
                self.swaps += 1
            else:  # recompute: drop the KV; the prompt plus what was generated is prefilled again
                self.recomputes += 1
                r.target_prefill[rid] = r.prompt[rid] + r.generated[rid]
                r.offset[rid] = r.generated[rid]
                r.prefilled[rid] = 0
            self.waiting.appendleft(rid)
        return preempted


def kv_tokens(r: Requests, ids: np.ndarray) -> np.ndarray:
    """Tokens whose KV is cached now."""
    return r.prefilled[ids] + r.generated[ids] - r.offset[ids]


class ReferenceSimulation:
    """Wires arrivals, routers, replicas and KV-transfer links together and collects records."""

    def __init__(self, requests: Requests, replicas: list[ReplicaConfig], *, seed: int = 0,
                 closed_concurrency: int = 0,
                 kv_transfer_s: Callable[[int, int, int], tuple[float, float, int]] | None = None,
                 horizon_s: float = math.inf, closed_starts_s: np.ndarray | None = None):
        self.env = simpy.Environment()
        self.req = requests
        requests.home = np.full(len(requests.prompt), -1, np.int64)  # replica holding each request as active
        self.seed = seed
        self.replicas = [Replica(self, c, i, np.random.default_rng([seed, i])) for i, c in enumerate(replicas)]
        self.by_role = collections.defaultdict(list)
        for rep in self.replicas:
            self.by_role[rep.cfg.role].append(rep)
        self.kv_transfer_s = kv_transfer_s or (lambda rid, src, dst: (0.0, 0.0, 0))
        # KV lanes: when each of a prefill replica's sending ports and a decode replica's receiving ports is next
        # free, one per attention-DP rank
        self.sending = {rep.uid: [0.0] * rep.dp for rep in self.by_role["prefill"]}
        self.receiving = {rep.uid: [0.0] * rep.dp for rep in self.by_role["decode"]}
        self.pre_rank: dict[int, int] = {}  # a handed-off request's decode rank, chosen at hand-off
        self.steps = StepLog()
        self.events = EventLog()  # (time, what, request id) tuples, for exact-log tests and traces
        self.closed = closed_concurrency
        self.closed_starts_s = closed_starts_s  # closed loop: when each client sends its first request
        self.ramp_s = 0.0
        self.engine_override: str | None = None
        self.engine_versions: dict[str, str] = {}
        self.next_closed = 0
        self.horizon_s = horizon_s
        self.done_count = 0
        self.on_done: Callable[[int], None] | None = None  # progress callback (requests ended so far)

    # -- routing -----------------------------------------------------------------------------
    def _route(self, role: str, rid: int) -> Replica | None:
        n = int(self.req.prompt[rid])
        pool = [rep for rep in self.by_role[role] if rep.cfg.context_range[0] <= n <= rep.cfg.context_range[1]]
        if not pool:
            self.reject(rid, f"no {role} replica takes prompts of {n} tokens (pool routes)")
            return None
        able = [rep for rep in pool if rep.refusal(rid) is None]  # where any replica could hold the whole request
        return min(able or pool, key=lambda rep: (rep.load, rep.uid))

    def arrive(self, rid: int) -> None:
        self.req.arrival_s[rid] = self.env.now
        self.events.append((self.env.now, "arrive", rid))
        role = "colocated" if self.by_role["colocated"] else "prefill"
        dst = self._route(role, rid)
        if dst is None:
            return
        if dst.cfg.frontend_s > 0:  # the engine's frontend holds it first (counted as the replica's load meanwhile)
            dst.inbound += 1
            self.env.process(self._through_frontend(dst, rid))
        else:
            dst.submit(rid)

    def _through_frontend(self, dst: Replica, rid: int):
        yield self.env.timeout(dst.cfg.frontend_s)
        self.req.received_s[rid] = self.env.now
        dst.inbound -= 1
        dst.submit(rid)

    def hand_off(self, src: Replica, rid: int, blocks: int, ready_s: float) -> None:
        self.env.process(self._transfer(src, rid, blocks, ready_s))

    def _transfer(self, src: Replica, rid: int, blocks: int, ready_s: float):
        """The KV (``blocks`` held on ``src`` until it lands) holds a sending and a receiving lane for its link
        time, from when both are free and, streamed, its first layer is prefilled; then the latency."""
        dst = self._route("decode", rid)  # the destination decides the link and is known before shipping
        if dst is None:
            src.free_shipped(blocks)
            return
        self.req.decode_replica[rid] = dst.uid
        dst.inbound += 1
        r = self.req
        ship, latency, layers = self.kv_transfer_s(rid, src.uid, dst.uid)
        if dst.dp > 1:  # the decode rank is chosen now; the KV ships to its devices
            self.pre_rank[rid] = dst.next_rank
            dst.next_rank = (dst.next_rank + 1) % dst.dp
        now = ready_s  # (its KV is whole once its prefill has left the pipeline)
        end = now
        if ship > 0:
            out, inp = self.sending[src.uid], self.receiving[dst.uid]
            o = int(r.dp_rank[rid]) if src.dp > 1 else 0
            i = self.pre_rank[rid] if dst.dp > 1 else 0
            adm = float(r.admitted_s[rid])
            if layers:
                end = max(max(adm + (now - adm) / layers, out[o], inp[i]) + ship, now + ship / layers)
            else:
                end = max(now, out[o], inp[i]) + ship
            out[o] = inp[i] = end
        end += latency
        if end > self.env.now:
            yield self.env.timeout(end - self.env.now)
        src.free_shipped(blocks)
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
                    len(rep.active), rep.used_blocks, max(rep.blocks_total, 1), preempted)

    def record(self, rep: Replica, start, end, n_prefill, prefill_tokens, n_decode, out_tokens, queued, running,
               kv_blocks, blocks_total, preempted):
        """Record one step (the layout lives in ``StepLog``)."""
        self.steps.add(rep.uid, start, end, n_prefill, prefill_tokens, n_decode, out_tokens, queued, running,
                       kv_blocks, blocks_total, preempted)

    # -- driving -----------------------------------------------------------------------------
    def _arrivals(self, times: np.ndarray):
        """Each request arrives at its time, requests due at the same time together (a relative timeout can land
        an ulp short of the time it aims at, 0.2 + (0.9 - 0.2) < 0.9: the next request due then does not wait)."""
        last = None
        for rid, t in enumerate(times):
            if t != last and t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            last = t
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
        if len(open_) and math.isfinite(self.horizon_s):  # (a drained prefill's stamps past the horizon)
            for col in (self.req.prefill_done_s, self.req.first_token_s):
                col[open_[col[open_] > self.horizon_s]] = np.nan
        for rid in open_:
            self.req.status[rid] = REJECTED
            self.req.reason[int(rid)] = unfinished_reason(self.req.arrival_s[rid], self.horizon_s)

    # -- records: the engine's own frames (the same arrays, the same layout) ---------------------
    request_frame = Simulation.request_frame
    step_frame = Simulation.step_frame
