"""Op records: the kinds of kernel the simulator emits, the shape columns each kind carries, and
the one place where FLOP and bytes are derived from a shape.

An op table is a struct of arrays: ``n_ops`` rows (one per kernel of one layer on one device) x
``n`` configurations (so thousands of plans are costed in one pass). Every row has one kind; its
shape columns say what the kernel works on; ``hw`` indexes the device it runs on in the table's
``devices`` tuple and ``dtype`` indexes ``DTYPES`` (the tensor-core rate that applies). Columns a
kind does not use are zero.

Shape columns per kind (all per device):

==============  ===========================================================================
gemm            ``m`` tokens x ``k`` in -> ``n`` out; ``w_bytes``/``a_bytes``/``o_bytes`` per
                weight / input / output element
grouped_gemm    routed experts: ``m`` token-expert pairs per rank on average over ``groups``
                experts, each ``k`` -> ``n``; FLOP and bytes are the busiest rank's
                (``imbalance`` x the mean pairs)
attn_prefill    ``batch`` sequences of ``q_len`` new tokens attending to ``kv_len`` keys
                (cached + new), ``heads`` query heads over ``kv_heads`` KV heads, ``d_qk`` /
                ``d_v`` head dims, ``kv_token_bytes`` cached bytes per token, ``causal`` 0/1
attn_decode     as prefill with ``q_len`` 1 (or k+1 when verifying k draft tokens)
elementwise     ``m`` tokens x ``n`` elements, ``a_bytes`` read and ``o_bytes`` written per
                element, ``k`` FLOP per element (norms, RoPE, quantisation, sampling, copies)
all_reduce      ``msg_bytes`` per rank over ``ranks`` ranks, ``domain`` of them per scale-up domain
all_gather      ``msg_bytes`` = the gathered output per rank
all_to_all      ``m`` tokens per rank of ``n`` elements x ``a_bytes``, each to ``fanout``
                destinations (top-k) over ``ranks`` ranks; ``all_remote`` 1 when every destination is
                another device (attention -> FFN pools); wire bytes are derived here
p2p             ``msg_bytes`` one device sends to another (``domain`` 1 = across domains)
==============  ===========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("gemm", "grouped_gemm", "attn_prefill", "attn_decode", "elementwise",
         "all_reduce", "all_gather", "all_to_all", "p2p")
GEMM, GROUPED_GEMM, ATTN_PREFILL, ATTN_DECODE, ELEMENTWISE, ALL_REDUCE, ALL_GATHER, ALL_TO_ALL, P2P = range(9)
COMPUTE_KINDS = (GEMM, GROUPED_GEMM, ATTN_PREFILL, ATTN_DECODE, ELEMENTWISE)
COLLECTIVE_KINDS = (ALL_REDUCE, ALL_GATHER, ALL_TO_ALL, P2P)

# tensor-core rates a compute op can ask for (index = the ``dtype`` column)
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
DTYPE_INDEX = {d: i for i, d in enumerate(DTYPES)}

SHAPE_COLUMNS = ("count", "m", "n", "k", "groups", "imbalance", "w_bytes", "a_bytes", "o_bytes",
                 "batch", "q_len", "kv_len", "heads", "kv_heads", "d_qk", "d_v", "kv_token_bytes", "causal",
                 "msg_bytes", "ranks", "domain", "fanout", "all_remote")
_DEFAULTS = {"count": 1.0, "imbalance": 1.0, "ranks": 1.0, "domain": 1.0, "fanout": 1.0}


def is_collective(kind) -> np.ndarray:
    return np.asarray(kind) >= ALL_REDUCE


@dataclass
class OpTableBuilder:
    """Collects op rows; each value may be a scalar or a length-``n`` array (broadcast)."""

    n: int = 1
    devices: tuple = ()
    names: list[str] = field(default_factory=list)
    quadrant: list[str] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    cols: dict[str, list] = field(default_factory=dict)

    def __post_init__(self):
        for c in SHAPE_COLUMNS + ("hw", "dtype", "row"):
            self.cols.setdefault(c, [])

    def device(self, hw) -> int:
        """Index of ``hw`` in this table's devices (added on first use)."""
        for i, d in enumerate(self.devices):
            if d is hw:
                return i
        self.devices = self.devices + (hw,)
        return len(self.devices) - 1

    def add(self, name: str, quadrant: str, kind: int, *, hw=0, dtype: str | int | np.ndarray = "bf16",
            row=0, **shape) -> None:
        unknown = set(shape) - set(SHAPE_COLUMNS)
        if unknown:
            raise TypeError(f"unknown shape column(s) {sorted(unknown)} for op {name}")
        self.names.append(name)
        self.quadrant.append(quadrant)
        self.kinds.append(kind)
        for c in SHAPE_COLUMNS:
            self.cols[c].append(shape.get(c, _DEFAULTS.get(c, 0.0)))
        self.cols["hw"].append(hw)
        self.cols["dtype"].append(DTYPE_INDEX[dtype] if isinstance(dtype, str) else dtype)
        self.cols["row"].append(row)

    def finish(self, *, served: bool = False) -> OpTable:
        """The frozen table; ``served``: these ops are a served step's (see ``OpTable.served``)."""
        arrays = {}
        n_ops = len(self.names)
        for c, values in self.cols.items():
            integer = c in ("hw", "dtype", "row")
            dtype = np.int64 if integer else float
            if all(np.ndim(v) == 0 or np.size(v) == 1 for v in values):
                # one value per row: a read-only broadcast view costs no memory per configuration
                col = np.array([float(np.asarray(v).reshape(-1)[0]) for v in values], dtype=dtype).reshape(n_ops, 1)
                arrays[c] = np.broadcast_to(col, (n_ops, self.n))
                continue
            col = np.empty((n_ops, self.n), dtype=dtype)
            for i, v in enumerate(values):  # (row assignment broadcasts a scalar; cheaper than stacking views)
                col[i] = v
            arrays[c] = col
        return OpTable(tuple(self.names), tuple(self.quadrant), np.asarray(self.kinds, dtype=np.int64), arrays,
                       self.n, tuple(self.devices), served=served)


@dataclass(frozen=True)
class OpTable:
    """Frozen op records: ``names``/``quadrant``/``kind`` per row; shape arrays [n_ops, n]."""

    names: tuple[str, ...]
    quadrant: tuple[str, ...]
    kind: np.ndarray  # [n_ops] int
    arrays: dict[str, np.ndarray]
    n: int
    devices: tuple = ()  # HardwareSpec per ``hw`` index
    # True: the ops of a served step (a card under continuous load: timing models apply each device's
    # ``served_compute_fraction``); False: kernels timed one at a time, as a kernel benchmark runs them
    served: bool = False

    def __getitem__(self, col: str) -> np.ndarray:
        if col == "flop":
            return self.flop_bytes()[0]
        if col == "bytes":
            return self.flop_bytes()[1]
        return self.arrays[col]

    @property
    def n_ops(self) -> int:
        return len(self.names)

    def mask(self, quadrant: str) -> np.ndarray:
        return np.array([q == quadrant for q in self.quadrant], dtype=bool)

    def named(self, *names: str) -> np.ndarray:
        return np.array([n in names for n in self.names], dtype=bool)

    def flop_bytes(self) -> tuple[np.ndarray, np.ndarray]:
        cached = self.__dict__.get("_fb")
        if cached is None:
            cached = derive_flop_bytes(self.kind, self.arrays)
            object.__setattr__(self, "_fb", cached)
        return cached

    def select(self, rows: np.ndarray) -> OpTable:
        """The sub-table of the selected rows (a boolean mask or indices)."""
        idx = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        return OpTable(tuple(self.names[i] for i in idx), tuple(self.quadrant[i] for i in idx), self.kind[idx],
                       _Rows(self.arrays, idx), self.n, self.devices, served=self.served)


def attention_pairs(kind, a: dict) -> np.ndarray:
    """(query, key) pairs an attention op scores: causal prefill sees its cached prefix and the
    lower triangle of its own chunk; decode and non-causal prefill see every key."""
    b, q, kv = a["batch"], a["q_len"], a["kv_len"]
    prior = np.maximum(kv - q, 0.0)
    causal_pairs = b * q * (prior + (q + 1.0) / 2.0)
    full_pairs = b * q * kv
    return np.where((np.asarray(kind)[:, None] == ATTN_PREFILL) & (a["causal"] > 0), causal_pairs, full_pairs)


def distinct_destinations(fanout, ranks) -> np.ndarray:
    """Expected distinct ranks (or nodes) among ``fanout`` picks uniformly over ``ranks``."""
    p = np.maximum(np.asarray(ranks, dtype=float), 1.0)
    return p * (1.0 - np.power(1.0 - 1.0 / p, np.maximum(np.asarray(fanout, dtype=float), 1.0)))


def alltoall_wire_bytes(a: dict) -> np.ndarray:
    """Bytes one rank sends in an all-to-all dispatch (or receives in the combine) when each of its
    ``m`` tokens goes to ``fanout`` of ``ranks`` ranks chosen at random: a token is sent once per
    distinct remote rank it needs (per-rank de-duplication), ``ranks * (1 - (1 - 1/ranks)^fanout)``
    expected destinations, of which ``(ranks - 1) / ranks`` are remote (all of them with
    ``all_remote``). ``fanout`` 0 is a uniform all-to-all: ``msg_bytes`` spread evenly."""
    p = np.maximum(a["ranks"], 1.0)
    distinct = distinct_destinations(a["fanout"], p)
    remote = np.where(a["all_remote"] > 0, distinct, distinct * (p - 1.0) / p)
    routed = a["m"] * a["n"] * a["a_bytes"] * remote
    return np.where(a["fanout"] > 0, routed, a["msg_bytes"] * (p - 1.0) / p)


class _Rows(dict):
    """Columns of a subset of rows, sliced on first use (a full mapping: iteration slices the rest)."""

    def __init__(self, arrays: dict, idx: np.ndarray):
        super().__init__()
        self._arrays, self._idx = arrays, idx

    def __missing__(self, col: str) -> np.ndarray:
        a = self._arrays[col]
        if a.ndim == 2 and a.shape[1] > 1 and a.strides[1] == 0 and np.ndim(self._idx) == 1:
            first = a[self._idx, :1]  # one value per row (indices or a mask): stays a broadcast view
            value = np.broadcast_to(first, (first.shape[0], a.shape[1]))
        else:
            value = a[self._idx]
        dict.__setitem__(self, col, value)
        return value

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __contains__(self, col) -> bool:
        return col in self._arrays

    def keys(self):
        return self._arrays.keys()

    def items(self):
        return ((c, self[c]) for c in self._arrays)

    def values(self):
        return (self[c] for c in self._arrays)

    def get(self, col, default=None):
        return self[col] if col in self._arrays else default


def rows_of(arrays: dict, idx: np.ndarray) -> dict:
    return _Rows(arrays, idx)


def derive_flop_bytes(kind: np.ndarray, a: dict) -> tuple[np.ndarray, np.ndarray]:
    """FLOP and HBM bytes of every op, per configuration: the only place they are derived.

    Collectives have no FLOP and no HBM bytes here; their wire bytes are ``wire_bytes``."""
    kind = np.asarray(kind)
    shape = np.shape(a["m"])
    flop, nbytes = np.zeros(shape), np.zeros(shape)
    for k in sorted(set(kind.tolist())):
        idx = np.flatnonzero(kind == k)
        r = rows_of(a, idx)
        if k in (GEMM, GROUPED_GEMM):
            m, n, kk = r["m"], r["n"], r["k"]
            if k == GROUPED_GEMM:  # the busiest EP rank sets the time: its token-expert pairs
                m = m * np.maximum(r["imbalance"], 1.0)
            flop[idx] = 2.0 * m * n * kk
            weights = kk * n * r["w_bytes"] * (r["groups"] if k == GROUPED_GEMM else 1.0)
            # dense GEMM: read activations and weights once, write the output; grouped GEMM: every active
            # expert's weights, every routed token-expert pair's rows
            nbytes[idx] = weights + m * (kk * r["a_bytes"] + n * r["o_bytes"])
        elif k in (ATTN_PREFILL, ATTN_DECODE):
            # QK^T and PV over the scored pairs; read the KV cache, read Q and write O
            pairs = attention_pairs(kind[idx], r)
            flop[idx] = 2.0 * pairs * r["heads"] * (r["d_qk"] + r["d_v"])
            qo = r["batch"] * r["q_len"] * r["heads"] * (r["d_qk"] + r["d_v"]) * r["a_bytes"]
            nbytes[idx] = r["batch"] * r["kv_len"] * r["kv_token_bytes"] + qo
        elif k == ELEMENTWISE:  # k FLOP per element, read a_bytes and write o_bytes per element
            flop[idx] = r["m"] * r["n"] * r["k"]
            nbytes[idx] = r["m"] * r["n"] * (r["a_bytes"] + r["o_bytes"])
    return flop, nbytes


def wire_bytes(kind: np.ndarray, a: dict) -> np.ndarray:
    """Bytes a collective moves per rank (the message for all-reduce/all-gather/p2p; the de-duplicated
    remote traffic for all-to-all)."""
    k = np.asarray(kind)[:, None]
    return np.where(k == ALL_TO_ALL, alltoall_wire_bytes(a), np.where(k >= ALL_REDUCE, a["msg_bytes"], 0.0))
