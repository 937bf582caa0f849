"""Hardware figures as numpy arrays, one entry per configuration, so that ops of many
configurations (possibly on different devices) are costed in one vectorised pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .precision import Precision, attention_dtype, compute_dtype
from .specs.hardware import HardwareSpec


@dataclass(frozen=True)
class DeviceArrays:
    specs: tuple[HardwareSpec, ...]
    index: np.ndarray  # which spec each configuration uses

    @classmethod
    def of(cls, hw: HardwareSpec | Sequence[HardwareSpec], index: np.ndarray | None = None) -> DeviceArrays:
        if isinstance(hw, HardwareSpec):
            return cls((hw,), np.zeros(1, dtype=np.int64))
        specs = tuple(hw)
        idx = np.zeros(1, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        return cls(specs, idx)

    def _gather(self, values: Sequence[float]) -> np.ndarray:
        return np.asarray(values, dtype=float)[self.index]

    def field(self, name: str) -> np.ndarray:
        return self._gather([getattr(s, name) for s in self.specs])

    def link(self, level: str, name: str) -> np.ndarray:
        return self._gather([getattr(getattr(s, level), name) for s in self.specs])

    def peak_for(self, precision: Precision) -> np.ndarray:
        return self._gather([s.peak(compute_dtype(precision, s)) for s in self.specs])

    def attention_peak(self, precision: Precision, kv_precision: str) -> np.ndarray:
        return self._gather([s.peak(attention_dtype(precision, kv_precision, s)) for s in self.specs])

    def peak_16bit(self) -> np.ndarray:
        return self._gather([next((s.peak(d) for d in ("bf16", "fp16", "fp32") if s.peak(d) > 0), 0.0)
                             for s in self.specs])

    def efficiency(self, op_class: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        effs = [s.efficiency.classes[op_class] for s in self.specs]
        return (self._gather([e.compute_fraction for e in effs]), self._gather([e.compute_ramp_s for e in effs]),
                self._gather([e.memory_fraction for e in effs]), self._gather([e.memory_ramp_s for e in effs]))

    def launch_s(self) -> np.ndarray:
        return self._gather([s.efficiency.launch_overhead_s for s in self.specs])

    def collective_fraction(self) -> np.ndarray:
        return self._gather([s.efficiency.collective_bandwidth_fraction for s in self.specs])

