"""Hardware per configuration: a tuple of profiles and, for every configuration, which one it uses,
so ops of many configurations (possibly on different devices) are built in one vectorised pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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

    def link(self, level: str, name: str) -> np.ndarray:
        return self._gather([getattr(getattr(s, level), name) for s in self.specs])
