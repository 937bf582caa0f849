"""Honest kernel timing: warm-up, CUDA events (or perf_counter on CPU, which runs synchronously),
an L2 flush between repetitions on GPUs, and the median of N with the spread recorded."""

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
