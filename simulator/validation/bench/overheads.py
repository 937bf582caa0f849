"""Per-kernel launch costs: what a step pays for each small kernel beyond the work inside it.

The serving engine profiles charge every kernel the timing model does not list (norms, RoPE,
residual adds, quantisation, sampling) one of two prices: ``kernel_launch_s`` when the step runs
eagerly (each launch goes through the framework's dispatcher on the host) and ``kernel_floor_s``
when it is replayed from a CUDA graph (no host work, only the kernel's own execution and the gap
to the next). This module measures both with torch, on elementwise kernels of decode-step sizes:

* ``kernel``: one kernel alone, from the CUDA profiler (the GPU's own duration);
* ``eager``:  ``n`` launches back to back from Python, host wall time / n (synchronised once);
* ``graph``:  the same ``n`` launches captured in one CUDA graph, replay time / n (CUDA events).

Rows: ``mechanism, tokens, hidden, dtype, per_kernel_us, n`` plus provenance columns.
"""

from __future__ import annotations

import time

import pandas as pd

from . import require_torch
from .run import _cpu_name, provenance
from .timer import Timer

SIZES = ((1, 4096), (64, 4096), (512, 8192))


def launch_overheads(device: str, *, n: int = 1000, reps: int = 5,
                     sizes: tuple[tuple[int, int], ...] = SIZES) -> pd.DataFrame:
    """Measure the three per-kernel costs for each (tokens, hidden) bf16 (fp32 on a CPU) tensor."""
    torch = require_torch()
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        from ...errors import SimulatorError

        raise SimulatorError("--device cuda but torch sees no CUDA device")
    dtype = torch.bfloat16 if cuda else torch.float32
    prov = provenance(torch, device)
    timer = Timer(torch, device, warmup=3, reps=reps)
    rows = []
    with torch.inference_mode():
        for tokens, hidden in sizes:
            x = torch.randn(tokens, hidden, device=device, dtype=dtype)
            y = torch.randn_like(x)
            out = torch.empty_like(x)

            def one(x=x, y=y, out=out):
                return torch.add(x, y, out=out)

            def many(one=one):
                for _ in range(n):
                    one()

            base = dict(tokens=tokens, hidden=hidden, dtype=str(dtype).removeprefix("torch."), n=n)
            if cuda:
                rows.append({**base, "mechanism": "kernel", "per_kernel_us": timer.kernel_us(one), "n": 1})
            rows.append({**base, "mechanism": "eager", "per_kernel_us": _wall_us(torch, cuda, many, reps) / n})
            if cuda:
                graph = torch.cuda.CUDAGraph()
                many()  # warm the allocator and kernels before capture
                torch.cuda.synchronize()
                with torch.cuda.graph(graph):
                    many()
                rows.append({**base, "mechanism": "graph", "per_kernel_us": _graph_us(torch, graph, reps) / n})
    df = pd.DataFrame(rows)
    cols = ["mechanism", "tokens", "hidden", "dtype", "per_kernel_us", "n"]
    return df[cols].assign(**prov, host_cpu=_cpu_name())  # eager launch cost is the host's


def _wall_us(torch, cuda: bool, fn, reps: int) -> float:
    """Median host wall time of ``fn`` (the GPU drained before and after each run)."""
    fn()
    samples = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) * 1e6)
    return sorted(samples)[len(samples) // 2]


def _graph_us(torch, graph, reps: int) -> float:
    """Median replay time of a captured graph, by CUDA events."""
    graph.replay()
    samples = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3)
    return sorted(samples)[len(samples) // 2]
