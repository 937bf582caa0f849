"""Strict JSON for every command: NaN and infinities become null, numpy scalars plain numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def clean(obj):
    """JSON-safe copy: NaN and infinities become null; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj) -> str:
    return json.dumps(clean(obj), indent=2, allow_nan=False)
