"""Simulate the published saturated vLLM runs of reports/validation/decode-itl/ and compare the median inter-token
latency (a decode step's time, seen from the client).

Each row is one ML.ENERGY leaderboard v3 configuration (vLLM 0.11.1; LM Arena chat or GPQA prompts): every prompt
is sent at once and ``--max-num-seqs`` caps the running batch, which stays at >= 85% of the cap in the steady state.
Each row is simulated as a closed loop of ``max_num_seqs`` clients on the row's GPU, tensor parallelism and precision
(MoE rows with expert parallelism over the same devices, as the runner launches them), with the row's mean output
length and vLLM's step budget of 8192 tokens. The source gives no prompt lengths, so every row is run at three fixed
prompt lengths, 250, 1000 and 3000 tokens, and the error is read at each: where they agree the prompt length does
not matter.

Writes reports/decode-itl.md. Run from the repository root:  python reports/scripts/decode_itl_compare.py
(about 40 s on 2 cores; ``--workers N``).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from simulator.build import PlanOptions, quick_deployment  # noqa: E402
from simulator.errors import SimulatorError  # noqa: E402
from simulator.serving.runner import simulate  # noqa: E402
from simulator.specs.catalog import load_model  # noqa: E402
from simulator.specs.traffic import simple_traffic  # noqa: E402

DATA = ROOT / "reports/validation/decode-itl"  # one CSV per published task
OUT = ROOT / "reports/decode-itl.md"
PROMPTS = (250, 1000, 3000)  # assumed prompt lengths (tokens): the source does not give them
CENTRAL = 1000  # the one the per-row error column reads
MATCHED = 0.85  # a row is compared where the simulated running batch is at least this share of the published one
BUCKETS = ((1, 32, "batch <= 32"), (33, 128, "batch 33-128"), (129, 1 << 30, "batch > 128"))


def simulated_itl_ms(row: dict, isl: int) -> tuple[float, float]:
    """The simulated median inter-token latency (ms) of ``row`` with ``isl``-token prompts, and the running batch
    it kept over the steady-state window (time-weighted): where the KV cache cannot hold the published batch the
    simulation runs a smaller one, and its step time says nothing about the published one's."""
    c = int(row["max_seqs"])
    opts = PlanOptions(model=row["model_id"], hardware=row["hardware"], devices=int(row["devices"]), tp=int(row["tp"]),
                       ep=int(row["ep"]), precision=row["precision"], kv_precision="bf16")  # vLLM kv-cache-dtype auto
    dep = quick_deployment(opts, max_batch_tokens=int(row["max_batch_tokens"]), max_seqs=c, engine=row["engine"])
    t = simple_traffic(rate=None, concurrency=c, isl=isl, osl=int(round(row["avg_output_len"])),
                       requests=max(3 * c, 48), seed=0)
    try:
        res = simulate(dep, t)
    except SimulatorError:  # (e.g. the model does not fit as the row ran it: listed, not compared)
        return float("nan"), float("nan")
    s, st = res.summary, res.steps
    w = s["window"]
    inside = (st.end_s > w["start_s"]) & (st.start_s < w["end_s"])
    dt = (st.end_s.clip(upper=w["end_s"]) - st.start_s.clip(lower=w["start_s"]))[inside]
    batch = float((st.running[inside] * dt).sum() / dt.sum()) if dt.sum() > 0 else float("nan")
    itl = float(s["itl_s"]["p50"]) * 1e3 if s["itl_s"]["p50"] is not None else float("nan")
    return itl, batch


def _one(row: dict) -> list[tuple[float, float]]:
    return [simulated_itl_ms(row, isl) for isl in PROMPTS]


def load_rows() -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(DATA.glob("*.csv"))], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rows = load_rows()
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        sims = list(ex.map(_one, rows.to_dict("records"), chunksize=4))
    took = time.perf_counter() - t0
    for i, isl in enumerate(PROMPTS):
        rows[f"sim_{isl}"] = [s[i][0] for s in sims]
        rows[f"batch_{isl}"] = [s[i][1] for s in sims]
        # compared only where the simulation holds the published batch (the source's own 85% filter)
        held = rows[f"batch_{isl}"] >= MATCHED * rows.avg_batch_size
        # ... and not where the data README sets a row aside (``excluded``: a launch unlike its peers')
        held &= rows.excluded.fillna("").eq("")
        rows[f"ratio_{isl}"] = (rows[f"sim_{isl}"] / rows.median_itl_ms).where(held)
    rows["moe"] = [load_model(m).is_moe for m in rows.model_id]
    OUT.write_text(render(rows, took))
    print(f"wrote {OUT.relative_to(ROOT)} ({len(rows)} rows, {took:.0f} s)")


def _group_line(name: str, g: pd.DataFrame) -> str:
    cells = []
    for isl in PROMPTS:
        r = g[f"ratio_{isl}"].dropna()
        cells.append(f"{(r - 1).abs().mean():.0%} ({r.median():.2f}) n={len(r)}" if len(r) else "-")
    return f"| {name} | {len(g)} | " + " | ".join(cells) + " |"


def render(rows: pd.DataFrame, took: float) -> str:
    heads = " | ".join(f"prompt {isl}" for isl in PROMPTS)
    out = [
        "# Decode step check: saturated vLLM runs (ML.ENERGY leaderboard v3)",
        "",
        "Generated by `python reports/scripts/decode_itl_compare.py` (no hand edits). Published rows: "
        "`reports/validation/decode-itl/*.csv` (source URL pinned to a commit, the quoted figures, a trust tag); how "
        "they were run and read: `reports/validation/decode-itl/README.md`. Two tasks: LM Arena chat (multi-turn "
        "chat, mean outputs of 350-940 tokens) and GPQA (reasoning, mean outputs of 6,900-11,900 tokens, so the "
        "decode attention reads a long KV). Rows the data README sets aside (column `excluded`: the single-B200 "
        "GPQA rows, whose launch differs from their chat peers') are listed but not compared.",
        "",
        "What is compared: the client's median inter-token latency of a saturated batch (vLLM 0.11.1, `--max-num-seqs` "
        "the only cap, chunked prefill under 8192 tokens a step) against `simulate`'s median ITL of a closed loop of "
        "as many clients. The median gap is a decode step's time. The source does not give prompt lengths, so each row "
        f"runs at {', '.join(map(str, PROMPTS))} prompt tokens. A row is compared only where the simulation holds the "
        f"published batch: its running batch over the steady-state window at least {MATCHED:.0%} of the published "
        "average (the source's own filter). Where the simulated KV cache cannot hold that many sequences at the "
        "assumed prompt length it runs a smaller batch, and its step time says nothing about the published one; the "
        "rows table marks those. Outputs are fixed at the row's mean length (the real ones spread, so the real batch "
        "holds more KV at once than the simulated one). Errors are simulated / published - 1; the groups give the "
        "mean absolute error, in brackets the median ratio (simulated / published), and the rows compared.",
        "",
        "## By GPU, dense or MoE, and batch",
        "",
        f"| group | rows | {heads} |",
        "|---|---:|" + "---|" * len(PROMPTS),
    ]
    for task in sorted(rows.task.unique()):
        for gpu in sorted(rows.gpu.unique()):
            for moe in (False, True):
                g = rows[(rows.task == task) & (rows.gpu == gpu) & (rows.moe == moe)]
                if not len(g):
                    continue
                kind = "MoE" if moe else "dense"
                out.append(_group_line(f"**{task}, {gpu} {kind}**", g))
                for lo, hi, label in BUCKETS:
                    b = g[(g.max_seqs >= lo) & (g.max_seqs <= hi)]
                    if len(b):
                        out.append(_group_line(f"{task}, {gpu} {kind}, {label}", b))
    for moe in (False, True):
        out.append(_group_line(f"**all {'MoE' if moe else 'dense'} rows**", rows[rows.moe == moe]))
    out += ["", "## By configuration (all batch sizes)", "",
            f"| task | GPU x n | model | precision | rows | {heads} |",
            "|---|---|---|---|---:|" + "---|" * len(PROMPTS)]
    for (task, gpu, n, model, prec), g in rows.groupby(["task", "gpu", "devices", "model", "precision"], sort=True):
        out.append(_group_line(f"{task} | {gpu} x {n} | {model} | {prec}", g))
    out += ["", "## Rows", "",
            "Simulated median ITL in ms, then in brackets the simulated running batch; `*`: below "
            f"{MATCHED:.0%} of the published batch, not compared; `excluded`: set aside by the data README.", "",
            "| id | GPU x n (TP, EP) | model | prec | max seqs | avg batch | out tokens | median ITL pub ms | "
            + " | ".join(f"sim {isl}" for isl in PROMPTS) + f" | err ({CENTRAL}) |",
            "|---|---|---|---|---:|---:|---:|---:|" + "---:|" * len(PROMPTS) + "---:|"]
    for r in rows.sort_values(["task", "gpu", "model", "devices", "max_seqs"]).itertuples():
        cells = []
        for isl in PROMPTS:
            b = getattr(r, f"batch_{isl}")
            mark = "" if b >= MATCHED * r.avg_batch_size else "*"
            cells.append(f"{getattr(r, f'sim_{isl}'):.2f} ({b:.0f}){mark}")
        err = getattr(r, f"ratio_{CENTRAL}") - 1
        verdict = "excluded" if isinstance(r.excluded, str) and r.excluded else "-" if err != err else f"{err:+.0%}"
        out.append(f"| [{r.id}]({r.source_url}) | {r.gpu} x {r.devices} (TP{r.tp} EP{r.ep}) | {r.model} | "
                   f"{r.precision} | {r.max_seqs} | {r.avg_batch_size:.1f} | {r.avg_output_len:.0f} | "
                   f"{r.median_itl_ms:.2f} | {' | '.join(cells)} | {verdict} |")
    out += ["", f"Simulated {len(rows)} rows x {len(PROMPTS)} prompt lengths in {took:.0f} s.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
