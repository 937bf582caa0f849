"""The serving engine's records: the event log and the step log, kept as packed binary records while a run
goes (one ``struct`` conversion per record, no Python object per event or per step) and unpacked into
columns when the frames are built. ``engine.py`` writes them; the metrics, reports and traces read the
frames."""

from __future__ import annotations

import collections.abc
import struct
from array import array

import numpy as np
import pandas as pd

from .kvmemory import BLOCK_TOKENS


class EventLog(collections.abc.Sequence):
    """The event log: a read-only sequence of ``(time_s, what, request_id)`` tuples (equal to a list of
    them), stored packed (``struct``: a float64 time, an int8 code and an int64 request id, 17 bytes an event
    instead of ~120 for a tuple of objects), each event added with one conversion call."""

    WHAT = ("arrive", "finish", "reject", "kv_transferred")
    _CODE = {w: i for i, w in enumerate(WHAT)}
    _EVENT = struct.Struct("=dbq")
    __hash__ = None

    def __init__(self):
        self._buf = bytearray()

    def add(self, t: float, code: int, rid: int) -> None:
        """``append((t, WHAT[code], rid))``, by code."""
        self._buf += self._EVENT.pack(t, code, rid)

    def append(self, event: tuple) -> None:
        t, what, rid = event
        self.add(t, self._CODE[what], rid)

    def __len__(self) -> int:
        return len(self._buf) // self._EVENT.size

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("event index out of range")
        t, code, rid = self._EVENT.unpack_from(self._buf, (i % n) * self._EVENT.size)
        return (t, self.WHAT[code], rid)

    def __iter__(self):
        what = self.WHAT  # (over a snapshot: the log may grow while it is read)
        return ((t, what[c], r) for t, c, r in self._EVENT.iter_unpack(bytes(self._buf)))

    def __eq__(self, other) -> bool:
        if isinstance(other, EventLog | list | tuple):
            return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return repr(list(self))


class StepLog:
    """The step records, kept as *runs*: consecutive steps of one replica with the same kind and counts
    (a decode stretch is one run) share one record (``FIELDS`` as int32 and ``KV_FIELDS`` as int64, packed
    together into one bytearray), and only each step's end time is stored per step (8 bytes a step). KV
    occupancy (KV blocks, divided by the replica's block count when the frame is built) is stored per run: the
    blocks after its last step, and for a decode stretch the blocks before it and the blocks each of its first
    16 ticks opens (the pattern repeats every 16 ticks: a sequence opens a block every 16 tokens), from which
    ``frame`` rebuilds every step's.
    ``frame`` expands the runs into the steps DataFrame, one row per batch step (pool, replica and kind as
    categoricals, counts as int32: ~50 bytes a row)."""

    COLUMNS = ("pool", "replica_id", "start_s", "end_s", "kind", "prefill_seqs", "prefill_tokens", "decode_seqs",
               "output_tokens", "queued", "running", "kv_occupancy", "preempted")
    KINDS = ("decode", "prefill", "mixed")
    STRETCH = 3  # the kind code of a decode stretch's record (a decode run whose KV blocks are stored compactly)
    EXPAND_STEPS = 4_000_000  # decode-stretch steps whose KV blocks ``frame`` rebuilds at a time
    # a run's record: the counts are every step's but ``queued`` and ``running``, which the last step has in
    # ``last_*`` (a stretch's last step records the replica after its finishes and arrivals)
    FIELDS = ("replica", "kind", "repeat", "prefill_seqs", "prefill_tokens", "decode_seqs", "output_tokens",
              "queued", "running", "preempted", "last_queued", "last_running")
    # and its KV blocks (int64: a cache given as "unlimited" may hold more than 2^31): the replica's, those in
    # use after the last step, and (a decode stretch) before the first
    KV_FIELDS = ("kv_div", "kv_last", "kv_before")

    # a run's two records packed as one (``struct``: one call, no per-field conversion as ``array`` makes)
    _RUN = struct.Struct("=" + "i" * len(FIELDS) + "q" * len(KV_FIELDS))
    _RUN_DTYPE = np.dtype([("rec", "=i4", (len(FIELDS),)), ("kv", "=i8", (len(KV_FIELDS),))])
    _CYC = tuple(struct.Struct(f"={k}i") for k in range(BLOCK_TOKENS + 1))  # a stretch's ``cyc`` (<= 16 ints)

    def __init__(self):
        self.runs = bytearray()  # one packed record (``FIELDS`` int32, ``KV_FIELDS`` int64) per run
        # per step: ``bounds`` holds each run's start, then every step's end (a step starts where the one before
        # it ended)
        self.bounds = array("d")
        self.cyc = bytearray()  # per decode stretch: the blocks its first min(steps, 16) ticks open (int32)
        self._frame: pd.DataFrame | None = None  # set (and the arrays released) by the first ``frame``

    def __len__(self) -> int:
        if self._frame is not None:
            return len(self._frame)
        return len(self.bounds) - len(self.runs) // self._RUN.size

    def add(self, uid, start, end, n_prefill, prefill_tokens, n_decode, out_tokens, queued, running, kv_blocks,
            blocks_total, preempted) -> None:
        """One step, after which ``kv_blocks`` of the replica's ``blocks_total`` KV blocks are in use."""
        self.runs += self._RUN.pack(uid, 2 if n_prefill and n_decode else (1 if n_prefill else 0), 1, n_prefill,
                                    prefill_tokens, n_decode, out_tokens, queued, running, preempted, queued, running,
                                    blocks_total, kv_blocks, 0)
        self.bounds.extend((start, end))

    def add_decodes(self, uid: int, bounds: list, blocks0: int, cyc: list, last_blocks: int, blocks_total: int,
                    n: int, queued: int, running: int, last_queued: int, last_running: int) -> None:
        """``len(bounds) - 1`` consecutive pure-decode steps of ``n`` sequences (``bounds``: their start and end
        times), nothing preempted. KV blocks (of ``blocks_total``): ``blocks0`` before the first step, tick ``j``
        opens ``cyc[j % 16]`` more (``cyc``: ``min(steps, 16)`` counts), ``last_blocks`` after the last step;
        ``queued`` waiting and ``running`` admitted after each step but the last, ``last_queued`` and
        ``last_running`` after the last (a stretch's last step records the replica after its finishes and
        arrivals)."""
        self.runs += self._RUN.pack(uid, self.STRETCH, len(bounds) - 1, 0, 0, n, n, queued, running, 0, last_queued,
                                    last_running, blocks_total, last_blocks, blocks0)
        self.bounds.fromlist(bounds)  # (``fromlist``: twice as fast as ``extend``)
        self.cyc += self._CYC[len(cyc)].pack(*cyc)

    def _kv_blocks(self, rec: np.ndarray, kvrec: np.ndarray, rep_n: np.ndarray, first: np.ndarray) -> np.ndarray:
        """KV blocks in use after every step (releasing ``cyc``): a run's last step has its ``kv_last``; a decode
        stretch's step ``j`` the blocks before it plus the first ``j + 1`` ticks' openings (tick ``j`` opens its
        ``cyc[j % 16]``). Stretches are expanded a few million steps at a time, so the temporaries stay small
        beside the frame."""
        last = kvrec[:, self.KV_FIELDS.index("kv_last")]
        kv = np.repeat(last, rep_n)
        runs = np.flatnonzero(rec[:, self.FIELDS.index("kind")] == self.STRETCH)
        if len(runs):
            lens = rep_n[runs]
            width = np.minimum(lens, BLOCK_TOKENS)  # each stretch's ``cyc`` entries
            cyc_at = np.cumsum(width) - width
            cyc = np.frombuffer(self.cyc, np.int32)
            before = kvrec[runs, self.KV_FIELDS.index("kv_before")]
            ends = np.cumsum(lens)
            lo = 0
            while lo < len(runs):  # stretches [lo, hi): about EXPAND_STEPS steps
                hi = int(np.searchsorted(ends, ends[lo] + self.EXPAND_STEPS, side="right"))
                hi = max(hi, lo + 1)
                ln = lens[lo:hi]
                start = np.cumsum(ln) - ln  # each stretch's first step, counted from stretch lo's
                at = np.arange(int(start[-1] + ln[-1]))
                # the blocks tick j (of its stretch) opens: cyc[j % 16] (a stretch of fewer than 16 steps has
                # j < its width), each stretch's per-run values spread over its steps by ``repeat``
                j = at - np.repeat(start, ln)
                j &= BLOCK_TOKENS - 1
                j += np.repeat(cyc_at[lo:hi], ln)
                opened = cyc[j]
                del j
                cum = np.cumsum(opened, dtype=np.int64)
                cum += np.repeat(before[lo:hi] - (cum[start] - opened[start]), ln)  # restart at each stretch
                del opened
                at += np.repeat(first[runs[lo:hi]] - start, ln)  # each step's row
                kv[at] = cum
                lo = hi
            del cyc, before
            kv[first[runs] + lens - 1] = last[runs]  # (after the last step's finishes)
        self.cyc = None
        return kv

    def frame(self, pools: list[str], names: list[str]) -> pd.DataFrame:
        """The steps DataFrame, one row per step. The first call builds it column by column, releasing
        the records as it goes (they are complete once the run ends), and hands the columns to the frame
        without copying them, so the peak holds one copy of the records, not two; later calls return copies
        of that frame."""
        if self._frame is not None:
            return self._frame.copy()
        if not len(self):
            return pd.DataFrame([], columns=list(self.COLUMNS))
        f = self.FIELDS
        packed = np.frombuffer(self.runs, self._RUN_DTYPE)
        rec, kvrec = packed["rec"], packed["kv"]
        del packed
        rep_n = rec[:, f.index("repeat")].astype(np.int64)
        first = np.concatenate(([0], np.cumsum(rep_n)[:-1]))  # each run's first step
        cols = {}
        # pool, replica and kind as categoricals (one byte a row, not a pointer to a string)
        rep = np.repeat(rec[:, f.index("replica")], rep_n)
        pool_names = list(dict.fromkeys(pools))
        pool_code = np.array([pool_names.index(p) for p in pools], np.int8 if len(pool_names) < 128 else np.int32)
        cols["pool"] = pd.Categorical.from_codes(pool_code[rep], pool_names)
        cols["replica_id"] = pd.Categorical.from_codes(rep, list(names))
        del rep
        bounds = np.frombuffer(self.bounds, float)
        is_end = np.ones(len(bounds), bool)
        is_end[first + np.arange(len(first))] = False  # each run's start
        cols["start_s"] = bounds[:-1][is_end[1:]]  # the value before each step's end
        cols["end_s"] = bounds[is_end]
        del bounds, is_end
        self.bounds = None
        kind = rec[:, f.index("kind")].astype(np.int8)
        kind[kind == self.STRETCH] = 0  # a stretch's steps are decode steps
        cols["kind"] = pd.Categorical.from_codes(np.repeat(kind, rep_n), list(self.KINDS))
        del kind
        last = first + rep_n - 1  # each run's last step
        for c in ("prefill_seqs", "prefill_tokens", "decode_seqs", "output_tokens", "queued", "running"):
            col = np.repeat(rec[:, f.index(c)], rep_n)
            if c in ("queued", "running"):
                col[last] = rec[:, f.index("last_" + c)]
            cols[c] = col
            del col
        kv = self._kv_blocks(rec, kvrec, rep_n, first)
        occ = np.repeat(kvrec[:, self.KV_FIELDS.index("kv_div")].astype(float), rep_n)
        cols["kv_occupancy"] = np.divide(kv, occ, out=occ)
        del occ, kv
        cols["preempted"] = np.repeat(rec[:, f.index("preempted")], rep_n)
        del rec, kvrec
        self.runs = None
        assert tuple(cols) == self.COLUMNS
        df = pd.DataFrame(cols, copy=False)
        del cols
        self._frame = df
        return df
