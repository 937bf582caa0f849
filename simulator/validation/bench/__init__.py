"""The bundled torch micro-benchmark harness (optional ``bench`` extra).

It measures the op kinds the simulator predicts (GEMM, prefill/decode attention, MoE expert FFN,
memory copy, collectives) on ``cpu`` or ``cuda`` and writes rows in the measurement CSV contract
(``simulator/measurements.py``) with provenance columns. Nothing outside this package imports
torch.
"""

from __future__ import annotations

from ...errors import SimulatorError


def require_torch():
    try:
        import torch
    except ImportError:
        raise SimulatorError("the benchmark harness needs torch: install a torch build for your machine "
                             "(e.g. `pip install torch`), then `pip install '.[bench]'`") from None
    return torch
