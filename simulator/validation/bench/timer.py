"""Honest kernel timing: warm-up, CUDA events (or perf_counter on CPU, which runs synchronously),
an L2 flush between repetitions on GPUs, and the median of N with the spread recorded.

On a GPU a second figure is taken too: the kernels' own durations from the CUDA profiler (kineto),
summed per repetition, the way published kernel benchmarks time (DeepGEMM's ``bench_kineto``).
The event time also holds the gaps a stream leaves between launches (a microsecond or two per
kernel); the difference between the two is how much of a small kernel's time is launch, not work."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


class Timer:
    def __init__(self, torch, device: str, warmup: int = 3, reps: int = 10, flush_bytes: int = 256 * 2**20):
        self.torch, self.device, self.warmup, self.reps = torch, device, warmup, reps
        self.cuda = device.startswith("cuda")
        # a buffer larger than any L2 (H100: 50 MB) so each repetition starts cold
        self.flush = torch.empty(flush_bytes // 4, dtype=torch.float32, device=device) if self.cuda else None
        self._flush_names: set[str] | None = None

    def __call__(self, fn: Callable[[], object]) -> tuple[float, float, float]:
        """Return (median, p10, p90) in microseconds."""
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        samples = []
        if self.cuda:
            torch.cuda.synchronize()
            for _ in range(self.reps):
                self.flush.zero_()
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) * 1e3)  # ms -> us
        else:
            for _ in range(self.reps):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e6)
        s = np.asarray(samples)
        return float(np.median(s)), float(np.percentile(s, 10)), float(np.percentile(s, 90))

    def kernel_us(self, fn: Callable[[], object]) -> float:
        """Median over repetitions of the summed durations of the GPU kernels ``fn`` launches (NaN on
        a CPU, or where the profiler reports no kernels). The L2 flush between repetitions is told
        apart by its kernel names, read from a profile of the flush alone."""
        if not self.cuda:
            return float("nan")
        if self._flush_names is None:
            self._flush_names = {e.name for e in self._gpu_events(lambda: None, 1)}
        flush_names = self._flush_names
        groups: list[float] = []
        for e in self._gpu_events(fn, self.reps):
            if e.name in flush_names:
                groups.append(0.0)
            elif groups:
                groups[-1] += e.time_range.elapsed_us()
        return float(np.median(groups)) if groups and max(groups) > 0 else float("nan")

    def _gpu_events(self, fn: Callable[[], object], reps: int) -> list:
        """The GPU-side profiler events of ``reps`` x (flush, fn), in the order they ran."""
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        torch = self.torch
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                self.flush.zero_()
                fn()
            torch.cuda.synchronize()
        gpu = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        return sorted(gpu, key=lambda e: e.time_range.start)
