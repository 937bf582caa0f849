"""Analysis: one serving plan and one request shape -> per-quadrant breakdown, TTFT, TPOT, fit, cost."""

from .whatif import QUADRANTS, PhaseTiming, WhatIfResult, time_phase, whatif

__all__ = ["QUADRANTS", "PhaseTiming", "WhatIfResult", "time_phase", "whatif"]
