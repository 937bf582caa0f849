"""Predict the KV cache of every published engine startup log (reports/validation/published/engine-memory.csv)
with the engine-aware rule (simulator/serving/kvmemory.py, the engine profile's ``memory:`` constants) and with the
old engine-agnostic memory fit (device memory - weights - activations - the hardware profile's memory_reserve), and
print the errors per engine: median absolute percentage error and bias (median signed error). Writes the table to
reports/validation/engine-memory.md.

    python reports/scripts/engine_memory_check.py

A row is compared on its KV bytes per device where the log gives them, else on its KV tokens per replica. Rows whose
model or GPU is not catalogued (``checked`` = 0) are listed in the CSV only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from simulator.build import PlanOptions, plan_from_options  # noqa: E402
from simulator.serving.kvmemory import replica_kv_capacity  # noqa: E402
from simulator.serving.profiles import engine_profile, engine_release, release_problem  # noqa: E402

DATA = ROOT / "reports/validation/published/engine-memory.csv"
OUT = ROOT / "reports/validation/engine-memory.md"
NOTES = """## What the logs say

* **SGLang** (2 rows, -2.3% and -1.3%): `mem_fraction_static x (memory free at start) - weights` holds with the user's
  0.93 on 4 x H100 and with the v0.5 default (0.886) on 8 x H200. The H200 row is also where the context and
  distributed-init constants come from, so only the H100 row is an independent check.
* **vLLM, modelled versions** (1 row, Qwen3-235B-A22B-FP8 on 4 x H100, +3.7% / +4.9% in tokens): the old fit gave
  twice the logged cache (+100%): a large model leaves little beside its weights, and the profile run's sampler
  (1024 requests x 151936 logits) takes ~5.5 GiB of what is left.
* **vLLM v0.17-v0.19** (llm-d-planner sweep, 6 rows at v0.19): v0.17 cut the profile sampler from ~39 B to ~15 B
  per logit (the sweep's own version table). The rule takes 15.4 B from that release on
  (`sampler_bytes_per_logit.from_version`), applied by each row's release: the rows go from -4% to -6% with the
  older peak to -1.4% to +0.1%. The 15.4 B was read off these same logs, so this is a consistency check, not an
  out-of-sample one. The TP/PP rows confirm the communicator buffers: +1.8-1.9 GiB at TP2/TP4 on H100, nothing for
  PP.
* **vLLM V0** (v0.6.5: +3%; v0.2.4: +45%): older rules, kept for the record; v0.2.4's TP4 A100 profile reserved ~14
  GiB more than any current rule.
* **TensorRT-LLM** (1 row, +3.8%): the logged pool is capped by trtllm-bench's own max_tokens, so +3.8% is within the
  fraction rule's upper bound; the old fit was +17%.
* **Contradiction in the serving rows** (`reports/validation/serving-published/vllm.csv`, GPUStack): Qwen3-32B BF16
  on one H100 (and one A100) served 100 prompts of 32,000 tokens with `vllm serve Qwen/Qwen3-32B` at v0.11.0. vLLM
  refuses to start unless the KV cache holds one request of max_model_len (40,960 for Qwen3-32B, 10.0 GiB); at
  gpu_memory_utilization 0.9 the weights (61.0 GiB) leave at most 0.9 x 79.2 - 61.0 = 10.2 GiB before any profiling
  peak, so no vLLM rule here can start that launch as stated: those runs must have had a smaller max_model_len, a
  higher utilisation or a larger GPU than the page says. The engine rule gives 17.8k tokens at vLLM's default 1024
  sequences (the 32k prompts would not fit), the `max_seqs` the published-run check gives vLLM rows.

## Effect on the published serving runs

See "Engine-aware KV cache sizing" in `reports/scripts/serving-published-notes.md` (the figures before and after,
regenerated with `reports/serving-published.md`).
"""
GIB = 2**30
# the versions whose rule the engine profiles model (engines.yaml memory: sources; vLLM 0.17+ through the sampler
# peak's from_version, applied by the row's release)
MODELLED = {"vllm": "v1 0.9+", "sglang": "0.4.7-0.5.x", "trtllm": "PyTorch backend 0.20+"}


def release(r: pd.Series) -> str | None:
    """The row's release number (``0.19.0``; ``~0.9.2`` and ``0.6.5.dev (...)`` read as 0.9.2 and 0.6.5), or None."""
    head = str(r.engine_version).split()[0].lstrip("~")
    return None if release_problem(head) else head


def modelled(r: pd.Series) -> bool:
    if r.engine == "vllm":
        v = release(r)
        return v is not None and engine_release(v, "engine_version") >= (0, 9, 0)
    return True


def predict(r: pd.Series) -> dict:
    dp = int(r.dp)
    o = PlanOptions(model=r.model_id, hardware=r.hardware, devices=int(r.tp) * int(r.pp) * dp, tp=int(r.tp),
                    pp=int(r.pp), ep=int(r.ep), dp=dp if dp > 1 else None, precision=r.precision,
                    kv_precision=r.kv_precision)
    built = plan_from_options(o)
    kw = dict(max_seqs=float(r.max_seqs), max_batch_tokens=float(r.max_batch_tokens), kv_precision=r.kv_precision)
    frac = None if pd.isna(r.memory_fraction) else float(r.memory_fraction)
    rule = engine_profile(r.engine).memory.for_release(release(r) if r.engine == "vllm" else None)
    new = replica_kv_capacity(built.model, built.prefill, rule, fraction=frac, **kw)
    old = replica_kv_capacity(built.model, built.prefill, None, **kw)
    return {"new_gib": new.kv_bytes_per_device / GIB, "old_gib": old.kv_bytes_per_device / GIB,
            "new_tokens": new.tokens, "old_tokens": old.tokens,
            "weights_gib": new.fits[0].weights_bytes / GIB}


def table() -> pd.DataFrame:
    df = pd.read_csv(DATA)
    df = df[df.checked == 1].copy()
    rows = []
    for _, r in df.iterrows():
        p = predict(r)
        by_gib = not pd.isna(r.logged_kv_gib)
        logged = float(r.logged_kv_gib) if by_gib else float(r.logged_kv_tokens)
        new = p["new_gib"] if by_gib else p["new_tokens"]
        old = p["old_gib"] if by_gib else p["old_tokens"]
        rows.append({"id": r.id, "engine": r.engine, "version": r.engine_version.split(" (")[0],
                     "modelled": modelled(r), "unit": "GiB/device" if by_gib else "tokens/replica",
                     "logged": logged, "new": new, "old": old,
                     "err_new_pct": 100 * (new - logged) / logged, "err_old_pct": 100 * (old - logged) / logged,
                     "logged_weights_gib": r.logged_weights_gib, "weights_gib": p["weights_gib"]})
    return pd.DataFrame(rows)


def summary(t: pd.DataFrame) -> pd.DataFrame:
    out = []
    groups = []
    for e in ("vllm", "sglang", "trtllm"):
        groups.append((f"{e}, all rows", t.engine == e))
        groups.append((f"{e}, modelled version ({MODELLED[e]})", (t.engine == e) & t.modelled))
    groups += [("all engines, modelled versions", t.modelled), ("all engines, all rows", t.engine == t.engine)]
    for label, sel in groups:
        s = t[sel]
        if s.empty:
            continue
        out.append({"rows": label, "n": len(s),
                    "new median APE %": s.err_new_pct.abs().median(), "new bias %": s.err_new_pct.median(),
                    "old median APE %": s.err_old_pct.abs().median(), "old bias %": s.err_old_pct.median()})
    return pd.DataFrame(out)


def fmt(v, unit: str) -> str:
    return f"{v:,.2f}" if unit.startswith("GiB") else f"{v:,.0f}"


def main() -> None:
    t = table()
    s = summary(t)
    lines = ["# Engine KV-cache sizing: predicted vs logged", "",
             "Generated by `python reports/scripts/engine_memory_check.py` from "
             "`reports/validation/published/engine-memory.csv` (sources: `reports/validation/published/SOURCES.md`, "
             "\"Engine KV-cache sizing logs\"). *new*: the engine's own rule (`simulator/serving/kvmemory.py`, "
             "constants in `simulator/serving/engines.yaml` `memory:`) with the launch's KV memory flag and batch "
             "limits; *old*: "
             "the engine-agnostic fit the simulator used before (device memory - weights - activations - the hardware "
             "profile's 10% memory_reserve). Error = (predicted - logged) / logged.", "",
             "## Errors by engine", "",
             "| rows | n | new median APE | new bias | old median APE | old bias |",
             "|---|---:|---:|---:|---:|---:|"]
    for _, r in s.iterrows():
        lines.append(f"| {r['rows']} | {r.n} | {r['new median APE %']:.1f}% | {r['new bias %']:+.1f}% | "
                     f"{r['old median APE %']:.1f}% | {r['old bias %']:+.1f}% |")
    lines += ["", "## Rows", "",
              "| id | engine | version | unit | logged | new | old | new err | old err "
              "| weights logged / model (GiB) |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for _, r in t.iterrows():
        w = "" if pd.isna(r.logged_weights_gib) else f"{r.logged_weights_gib:.2f} / {r.weights_gib:.2f}"
        lines.append(f"| {r.id} | {r.engine} | {r.version}{'' if r.modelled else ' *'} | {r.unit} | "
                     f"{fmt(r.logged, r.unit)} | {fmt(r.new, r.unit)} | {fmt(r.old, r.unit)} | {r.err_new_pct:+.1f}% | "
                     f"{r.err_old_pct:+.1f}% | {w} |")
    lines += ["", NOTES]
    lines += ["", "\\* a vLLM version whose rule differs from the modelled ones (v1 0.9 on, each row's release "
              "choosing the sampler peak): V0 (0.2, 0.6) counted other memory.", ""]
    OUT.write_text("\n".join(lines))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(t.drop(columns=["logged_weights_gib"]).round(2).to_string(index=False))
        print()
        print(s.round(1).to_string(index=False))
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
