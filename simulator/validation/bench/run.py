"""Run a suite and write measurement rows (the CSV contract plus provenance columns)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..measurements import COLUMNS
from . import require_torch
from .devices import nvidia_smi_id
from .kernels import BUILDERS, Unsupported
from .suites import load_suite
from .timer import Timer


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi(query: str, gpu: str | None = None) -> str:
    """One ``nvidia-smi --query-gpu`` answer for ``gpu`` (an ``-i`` id: the measured device, not GPU 0)."""
    try:
        out = subprocess.run(["nvidia-smi", *(["-i", gpu] if gpu else []), f"--query-gpu={query}",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(torch, device: str) -> dict:
    cuda = device.startswith("cuda")
    gpu = nvidia_smi_id(torch) if cuda else None
    return {
        "device_name": torch.cuda.get_device_name() if cuda else _cpu_name(),
        "driver": _nvidia_smi("driver_version", gpu) if cuda else "",
        "runtime": f"cuda {torch.version.cuda}" if cuda else f"cpu threads={torch.get_num_threads()}",
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "clocks": _nvidia_smi("clocks.sm,clocks.mem", gpu) if cuda else "",
        "host": platform.node(),
    }


def select_device(torch, device: str, cuda_only: str | None = None) -> None:
    """Check ``device`` (cpu, cuda or cuda:N) and make a CUDA one current, so events, streams and
    graph captures belong to it; a one-line SimulatorError otherwise. ``cuda_only``: what needs a
    CUDA device, refused on a CPU."""
    from ...errors import SimulatorError

    if device == "cpu":
        if cuda_only:
            raise SimulatorError(f"{cuda_only}: it needs --device cuda")
        return
    head, _, index = device.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise SimulatorError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise SimulatorError(f"--device {device}: torch sees no CUDA device")
    n = int(index or 0)
    if n >= torch.cuda.device_count():
        raise SimulatorError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    torch.cuda.set_device(n)


def _sticky(exc: BaseException) -> bool:
    """A CUDA error that poisons the context (every later kernel would fail too)."""
    text = str(exc)
    return "CUDA error" in text or "device-side assert" in text or "illegal memory access" in text


def _scope(op: str) -> dict:
    """What the harness's kernel for ``op`` covers, in the contract's optional columns: its GEMM and
    MoE closures time the matrix kernels alone (operands already in the GEMM dtype, no activation
    quantisation, balanced routing without token permute/unpermute), so those rows carry ``quant=0``;
    its prefill attention is causal (``causal=1``), its decode attention is not (``causal=0``)."""
    return {"gemm": {"quant": 0}, "moe": {"quant": 0}, "attn_prefill": {"causal": 1},
            "attn_decode": {"causal": 0}}.get(op, {})


def run_suite(suite: str, device: str, hardware: str, *, reps: int = 10, warmup: int = 3,
              kernel_times: bool | None = None, progress: Callable[[int], None] | None = None,
              ) -> tuple[pd.DataFrame, list[tuple[dict, str]]]:
    """Measure every shape of ``suite`` on ``device``; returns (rows, skipped (row, reason)).

    ``kernel_times`` (default: on for CUDA) adds ``kernel_us``, the profiler's kernel-only median.
    ``progress`` is called with the number of steps done: one per shape, and one per measured shape
    again for the kernel-time pass."""
    torch = require_torch()
    if kernel_times is None:
        kernel_times = device.startswith("cuda")
    select_device(torch, device)
    torch.manual_seed(0)
    shapes = load_suite(suite)
    rank0 = True
    try:
        import torch.distributed as dist

        if os.environ.get("WORLD_SIZE", "1") != "1" and not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            if device.startswith("cuda"):
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        rank0 = not dist.is_initialized() or dist.get_rank() == 0
        world = dist.get_world_size() if dist.is_initialized() else 1
    except (ImportError, RuntimeError):
        world = 1
    # (after the rank's own device is current: its L2-flush buffer and its provenance are that GPU's)
    timer = Timer(torch, device, warmup=warmup, reps=reps)
    prov = provenance(torch, device)
    rows, skipped, measured = [], [], []
    with torch.inference_mode():
        for i, row in enumerate(shapes.itertuples(index=False)):
            rec = row._asdict()
            try:
                fn = BUILDERS[row.op](torch, row, device)
                med, p10, p90 = timer(fn)
            except Unsupported as exc:
                skipped.append((rec, str(exc)))
                continue
            except RuntimeError as exc:  # one failing kernel must not end the run...
                if _sticky(exc):  # ...unless the device is now unusable for every later row
                    raise
                skipped.append((rec, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"))
                continue
            finally:
                if progress:
                    progress(i + 1)
            rec.update(hardware=hardware, latency_us=med, p10_us=p10, p90_us=p90, reps=reps, **_scope(row.op))
            if row.op in ("all_reduce", "all_gather", "all_to_all"):
                rec["world"] = world
            rows.append({**rec, **prov})
            measured.append(row)
        # Kernel-only times in a pass of their own, after every event time is taken: once the CUDA
        # profiler has attached, each launch costs the host more, and a launch slower than the L2
        # flush in front of it would leak into the event times (seen on an H200: 6 -> 30 us).
        for j, (rec, row) in enumerate(zip(rows, measured if kernel_times else ())):
            try:
                rec["kernel_us"], rec["kernels"], _ = timer.kernel_profile(BUILDERS[row.op](torch, row, device))
            except RuntimeError as exc:  # a profiler that cannot start leaves the cells empty, not the run
                if _sticky(exc):
                    raise
                rec["kernel_us"], rec["kernels"] = float("nan"), ""
            if progress:
                progress(len(shapes) + j + 1)
    if not rows and skipped:
        from ...errors import SimulatorError

        raise SimulatorError(f"no kernel of suite {suite!r} could be measured on {device} (first failure: "
                             f"{skipped[0][1]}): nothing written")
    if kernel_times and progress and skipped:  # the kernel pass had no step for the skipped rows
        progress(2 * len(shapes))
    df = pd.DataFrame(rows)
    for col in (*COLUMNS, "quant", "causal"):  # integral shape columns are written as integers
        if col in df.columns and col != "latency_us" and pd.api.types.is_float_dtype(df[col]):
            vals = df[col].dropna()
            if len(vals) and (vals == vals.round()).all():
                df[col] = df[col].astype("Int64")
    if len(df):
        ordered = list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]
        df = df.reindex(columns=ordered)
    return (df if rank0 else df.iloc[0:0]), skipped
