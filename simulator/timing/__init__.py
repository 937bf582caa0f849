"""Timing models: op tables in, per-op time breakdowns out. The roofline is the fallback that
calibrated models refine."""

from .base import OpTimes, TimingModel
from .roofline import RooflineModel, pure_roofline_s

__all__ = ["OpTimes", "RooflineModel", "TimingModel", "pure_roofline_s"]
