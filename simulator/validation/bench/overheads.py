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

``step_ops`` measures the small operations a decode step runs besides its GEMMs and attention, the
way an engine's CUDA graph replays them: residual add, RMSNorm, SiLU-and-multiply, rotary embedding,
KV-cache write, per-token FP8 quantisation, and the sampler's softmax / argmax / top-k over the
vocabulary. Each is captured ``n`` times in one graph; the replay time per call, divided by the
kernels one call launches (counted by the CUDA profiler), is its per-kernel cost. Plain torch, so
fused engine kernels (one kernel where torch launches several) cost at most a call's time.
"""

from __future__ import annotations

import time

import pandas as pd

from . import require_torch
from .devices import nvidia_smi_id
from .run import _cpu_name, provenance, select_device
from .timer import Timer

SIZES = ((1, 4096), (64, 4096), (512, 8192))


def launch_overheads(device: str, *, n: int = 1000, reps: int = 5,
                     sizes: tuple[tuple[int, int], ...] = SIZES) -> pd.DataFrame:
    """Measure the three per-kernel costs for each (tokens, hidden) bf16 (fp32 on a CPU) tensor."""
    torch = require_torch()
    select_device(torch, device)
    cuda = device.startswith("cuda")
    dtype, dtype_name = (torch.bfloat16, "bf16") if cuda else (torch.float32, "fp32")
    prov = provenance(torch, device)
    timer = Timer(torch, device, warmup=3, reps=reps)
    rows, alone = [], []
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

            base = dict(tokens=tokens, hidden=hidden, dtype=dtype_name, n=n)
            rows.append({**base, "mechanism": "eager", "per_kernel_us": _wall_us(torch, cuda, many, reps) / n})
            if cuda:
                rows.append({**base, "mechanism": "graph", "per_kernel_us": _graph_call_us(torch, one, n, reps)})
                alone.append((base, one))
        # The profiler last: once attached it makes every later host launch dearer (seen: 6 -> 8 us).
        for base, one in alone:
            rows.append({**base, "mechanism": "kernel", "per_kernel_us": timer.kernel_us(one), "n": 1})
    df = pd.DataFrame(rows)
    cols = ["mechanism", "tokens", "hidden", "dtype", "per_kernel_us", "n"]
    return df[cols].assign(**prov, host_cpu=_cpu_name())  # eager launch cost is the host's


def step_op_set(torch, device: str, b: int, *, hidden: int = 4096, inter: int = 14336, heads: int = 32,
                kv_heads: int = 8, head_dim: int = 128, vocab: int = 128256) -> dict:
    """The small ops of one decode step at batch ``b`` (Llama-3.1-8B shapes by default), each a
    closure over its own bf16 inputs (fp32 logits), named as engines name their kernels."""
    F = torch.nn.functional
    bf16 = torch.bfloat16
    x = torch.randn(b, hidden, device=device, dtype=bf16)
    r = torch.randn_like(x)
    w = torch.randn(hidden, device=device, dtype=bf16)
    gu = torch.randn(b, 2 * inter, device=device, dtype=bf16)
    q = torch.randn(b, heads, head_dim, device=device, dtype=bf16)
    cos = torch.randn(b, 1, head_dim // 2, device=device, dtype=bf16)
    sin = torch.randn_like(cos)
    cache = torch.zeros(65536, kv_heads, head_dim, device=device, dtype=bf16)
    k = torch.randn(b, kv_heads, head_dim, device=device, dtype=bf16)
    slots = torch.randperm(65536, device=device)[:b]
    logits = torch.randn(b, vocab, device=device, dtype=torch.float32)
    half = head_dim // 2

    def rope():
        q1, q2 = q[..., :half], q[..., half:]
        return torch.cat((q1 * cos - q2 * sin, q2 * cos + q1 * sin), dim=-1)

    def quant_fp8():
        scale = x.abs().amax(dim=-1, keepdim=True).float() / 448.0  # e4m3 max
        return (x / scale).to(torch.float8_e4m3fn), scale

    return {
        "residual_add": lambda: x.add_(r),
        "rms_norm": lambda: F.rms_norm(x, (hidden,), w, 1e-5),
        "silu_and_mul": lambda: F.silu(gu[:, :inter]) * gu[:, inter:],
        "rotary_embedding": rope,
        "kv_cache_write": lambda: cache.index_copy_(0, slots, k),
        "fp8_per_token_quant": quant_fp8,
        "sampler_softmax": lambda: torch.softmax(logits, dim=-1),
        "sampler_argmax": lambda: logits.argmax(dim=-1),
        "sampler_topk50": lambda: torch.topk(logits, 50, dim=-1),
    }


def step_ops(device: str, *, n: int = 200, reps: int = 5, batches: tuple[int, ...] = (1, 64)) -> pd.DataFrame:
    """Graph-replay cost per call and per kernel of a decode step's small ops (``step_op_set``) at
    each decode batch in ``batches``, with each op's kernel-only time alone (cold L2). CUDA only."""
    torch = require_torch()
    select_device(torch, device, cuda_only="the decode-step ops are replayed from CUDA graphs")
    timer = Timer(torch, device, warmup=3, reps=reps)
    prov = provenance(torch, device)
    rows, ops = [], []
    with torch.inference_mode():
        for b in batches:
            for name, op in step_op_set(torch, device, b).items():
                rows.append(dict(op=name, tokens=b, per_call_us=_graph_call_us(torch, op, n, reps), n=n))
                ops.append(op)
        # The profiler last (kernel counts and names, each op alone): once attached it slows what follows.
        for row, op in zip(rows, ops):
            alone, names, kernels = timer.kernel_profile(op)
            row.update(kernels_per_call=kernels, per_kernel_us=row["per_call_us"] / max(kernels, 1),
                       kernel_alone_us=alone, kernels=names)
    cols = ["op", "tokens", "kernels_per_call", "per_call_us", "per_kernel_us", "kernel_alone_us", "kernels", "n"]
    return pd.DataFrame(rows)[cols].assign(**prov)


def _wall_us(torch, cuda: bool, fn, reps: int, warmup: int = 3) -> float:
    """Median host wall time of ``fn`` (the GPU drained before and after each run)."""
    for _ in range(warmup):  # the first runs in a fresh process are dearer (dispatcher caches)
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


def _graph_call_us(torch, op, n: int, reps: int) -> float:
    """Median time per call of ``op``, ``n`` calls captured in one CUDA graph and replayed."""
    def many():
        for _ in range(n):
            op()

    many()  # warm the allocator and kernels before capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        many()
    return _graph_us(torch, graph, reps) / n


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


def sustained_load(device: str, *, seconds: float = 20.0, size: int = 8192, dtypes: tuple[str, ...] = ("bf16", "fp8"),
                   poll_s: float = 0.25) -> pd.DataFrame:
    """GEMMs back to back for ``seconds`` per dtype, as a long prefill keeps the card busy: achieved
    TFLOP/s per window of 20 products (CUDA events) beside the SM clock, power and temperature that
    ``nvidia-smi`` reads meanwhile. The clock the card holds under this load, over the clock its
    datasheet peak implies, is the profile's ``sustained_clock_fraction``. CUDA only."""
    import subprocess
    import threading

    torch = require_torch()
    select_device(torch, device, cuda_only="a sustained-load run")
    index = nvidia_smi_id(torch)  # (nvidia-smi's id of the measured GPU, whatever CUDA_VISIBLE_DEVICES shows)
    samples: list[tuple[float, str]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def poll():
        query = ["nvidia-smi", "-i", index, "--query-gpu=clocks.sm,power.draw,temperature.gpu",
                 "--format=csv,noheader,nounits"]
        while not stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                out = ""
            samples.append((time.perf_counter() - t0, out))
            stop.wait(poll_s)

    windows = []
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        with torch.inference_mode():
            for name in dtypes:
                a = torch.randn(size, size, device=device)
                b = torch.randn(size, size, device=device)
                if name == "fp8":
                    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
                    one = torch.ones((), device=device)
                    def op(a8=a8, b8=b8, one=one):
                        return torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
                else:
                    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)

                    def op(a16=a16, b16=b16):
                        return torch.matmul(a16, b16)
                end_at = time.perf_counter() + seconds
                while time.perf_counter() < end_at:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(20):
                        op()
                    end.record()
                    end.synchronize()
                    ms = start.elapsed_time(end)
                    windows.append(dict(dtype=name, t_s=time.perf_counter() - t0,
                                        tflops=20 * 2 * size**3 / (ms * 1e-3) / 1e12))
    finally:
        stop.set()
        thread.join(timeout=10)
    clock = []
    for t, out in samples:
        parts = [p.strip() for p in out.split(",")]
        try:
            clock.append((t, float(parts[0]), float(parts[1]), float(parts[2])))
        except (ValueError, IndexError):
            continue
    df = pd.DataFrame(windows)
    if clock and len(df):
        c = pd.DataFrame(clock, columns=["t_s", "sm_clock_mhz", "power_w", "temp_c"])
        df = pd.merge_asof(df.sort_values("t_s"), c.sort_values("t_s"), on="t_s", direction="nearest")
    return df.assign(**provenance(torch, device))
