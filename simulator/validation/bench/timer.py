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
        self._flush_n: int | None = None  # GPU operations one flush launches

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
        a CPU, or where the profile cannot be split into repetitions)."""
        return self.kernel_profile(fn)[0]

    def kernel_profile(self, fn: Callable[[], object]) -> tuple[float, str, int]:
        """(median kernel-only time per call in us, the kernels one call runs, how many GPU operations
        one call launches). The profile of
        ``reps`` x (flush, fn) is split by position: the flush and ``fn`` each launch a fixed number of
        GPU operations, counted from profiles of each alone, so no kernel name is trusted (a measured
        op may run the very fill kernel the flush does). A count that does not add up gives NaN."""
        if not self.cuda:
            return float("nan"), "", 0
        if self._flush_n is None:
            self._flush_n = len(self._gpu_events(lambda: self.flush.zero_(), 1, flush=False))
        call = self._gpu_events(fn, 1, flush=False)
        events = self._gpu_events(fn, self.reps)
        names = " + ".join(dict.fromkeys(_short(e.name) for e in call))
        return split_by_period(events, self._flush_n, len(call), self.reps), names, len(call)

    def _gpu_events(self, fn: Callable[[], object], reps: int, flush: bool = True) -> list:
        """The GPU-side profiler events of ``reps`` x ([flush,] fn), in the order they ran."""
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        torch = self.torch
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                if flush:
                    self.flush.zero_()
                fn()
            torch.cuda.synchronize()
        gpu = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        return sorted(gpu, key=lambda e: e.time_range.start)


def split_by_period(events: list, flush_n: int, call_n: int, reps: int) -> float:
    """Median over ``reps`` groups of the summed durations of each call's ``call_n`` events, the
    events running as ``reps`` x (``flush_n`` flush events, ``call_n`` call events); NaN when the
    count is not exactly that (a dropped or extra event would shift every later group)."""
    period = flush_n + call_n
    if call_n == 0 or len(events) != reps * period:
        return float("nan")
    groups = [sum(e.time_range.elapsed_us() for e in events[i * period + flush_n:(i + 1) * period])
              for i in range(reps)]
    return float(np.median(groups))


def _short(name: str, width: int = 60) -> str:
    """A kernel's name without its template and argument lists, at most ``width`` characters."""
    name = name.replace("(anonymous namespace)::", "")
    for sep in ("<", "("):
        name = name.split(sep, 1)[0]
    return name.removeprefix("void ").strip()[:width]
