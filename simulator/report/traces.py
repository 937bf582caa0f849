"""Chrome / Perfetto traces of a simulation: one "X" (complete) event per batch step, one process per pool,
one thread per replica, so ``ui.perfetto.dev`` (or ``chrome://tracing``) shows the timeline of every replica.

Trace Event Format: a JSON object ``{"traceEvents": [...], "displayTimeUnit": "ms"}``; complete events carry
``ph: "X"``, ``ts`` and ``dur`` in microseconds, ``pid`` and ``tid`` integers; ``M`` (metadata) events name
the processes and threads. KV-cache transfers (PD disaggregation) appear as async spans ("b"/"e", one id
per request) from the end of the request's prefill to the arrival of its KV cache on the decode pool.
"""

from __future__ import annotations

import json
import math


def chrome_trace(steps, events=None, requests=None) -> dict:
    """The trace as a dict (see the module docstring). ``events``: the simulation's event log; with
    ``requests`` (for each request's end of prefill) KV-cache transfers become async spans."""
    out: list[dict] = []
    pools: dict[str, int] = {}
    replicas: dict[str, tuple[int, int]] = {}
    if steps is not None and len(steps):
        for pool in steps["pool"].drop_duplicates():
            pools[str(pool)] = len(pools) + 1
        for pool, rep in steps[["pool", "replica_id"]].drop_duplicates().itertuples(index=False):
            pid = pools[str(pool)]
            replicas[str(rep)] = (pid, sum(1 for p, _ in replicas.values() if p == pid) + 1)
        cols = ["pool", "replica_id", "start_s", "end_s", "kind", "prefill_seqs", "prefill_tokens", "decode_seqs",
                "output_tokens", "queued", "running", "kv_occupancy", "preempted"]
        cols = [c for c in cols if c in steps.columns]
        for row in steps[cols].itertuples(index=False):
            r = row._asdict()
            pid, tid = replicas[str(r["replica_id"])]
            start, end = float(r["start_s"]), float(r["end_s"])
            if not (math.isfinite(start) and math.isfinite(end)):
                continue
            args = {k: _plain(v) for k, v in r.items() if k not in ("pool", "replica_id", "start_s", "end_s", "kind")}
            out.append({"name": f"{r['kind']} step", "cat": str(r["kind"]), "ph": "X", "ts": start * 1e6,
                        "dur": max(end - start, 0.0) * 1e6, "pid": pid, "tid": tid, "args": args})
    for pool, pid in pools.items():
        out.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"pool {pool}"}})
    for rep, (pid, tid) in replicas.items():
        out.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": rep}})
    # a transfer starts when the request's prefill ends (its first token, under P/D, comes when the KV lands)
    prefill_done = None
    if requests is not None and len(requests) and "prefill_done_s" in requests.columns:
        prefill_done = dict(zip(requests["request_id"].astype(int), requests["prefill_done_s"].astype(float)))
    for ev in events or []:
        if len(ev) >= 3 and ev[1] == "kv_transferred" and math.isfinite(float(ev[0])):
            rid, end = int(ev[2]), float(ev[0])
            start = (prefill_done or {}).get(rid, end)
            start = start if math.isfinite(start) and start <= end else end
            common = {"name": f"KV transfer, request {rid}", "cat": "kv_transfer", "id": rid, "pid": 0, "tid": 0}
            out.append({**common, "ph": "b", "ts": start * 1e6, "args": {"request_id": rid}})
            out.append({**common, "ph": "e", "ts": end * 1e6})
    if any(e.get("pid") == 0 for e in out):
        out.append({"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": "KV transfers"}})
    return {"traceEvents": out, "displayTimeUnit": "ms",
            "otherData": {"generator": "quadrant-sim", "time_unit": "microseconds"}}


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def chrome_trace_json(steps, events=None, requests=None) -> str:
    return json.dumps(chrome_trace(steps, events, requests), allow_nan=False, separators=(",", ":"))
