"""Where specs come from: the built-in catalogues (``hardware/``, ``workloads/``) or a path.

An id resolves to ``<catalogue>/<id>.yaml``; anything that looks like a path is read as a file.
Loaded specs are cached: they are frozen, so sharing them is safe.
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

from ..errors import SpecError
from .hardware import HardwareSpec, read_hardware
from .model import ModelSpec, read_model


def catalog_root() -> Path:
    """The folder holding ``hardware/`` and ``workloads/``.

    ``QUADRANT_CATALOG`` overrides; a built wheel carries the catalogues as ``simulator/_catalog``;
    an editable install or a source checkout uses the repository root.
    """
    env = os.environ.get("QUADRANT_CATALOG")
    if env:
        return Path(env)
    packaged = Path(str(resources.files("simulator"))) / "_catalog"
    if (packaged / "hardware").is_dir():
        return packaged
    return Path(__file__).resolve().parents[2]


def _resolve(ref: str | Path, folder: str, kind: str) -> Path:
    ref_s = str(ref)
    if ref_s.endswith((".yaml", ".yml")) or os.sep in ref_s or "/" in ref_s:
        return Path(ref_s)
    path = catalog_root() / folder / f"{ref_s}.yaml"
    if not path.exists():
        known = ", ".join(list_ids(folder)) or "none"
        raise SpecError(ref_s, "", f"no {kind} with this id (known: {known})")
    return path


def list_ids(folder: str) -> list[str]:
    root = catalog_root() / folder
    return sorted(p.stem for p in root.glob("*.yaml")) if root.is_dir() else []


@functools.lru_cache(maxsize=256)
def load_hardware(ref: str) -> HardwareSpec:
    return read_hardware(_resolve(ref, "hardware", "hardware profile"))


@functools.lru_cache(maxsize=256)
def load_model(ref: str) -> ModelSpec:
    return read_model(_resolve(ref, "workloads/models", "model"))


def hardware_ids() -> list[str]:
    return list_ids("hardware")


def model_ids() -> list[str]:
    return list_ids("workloads/models")


def resolve_workload(ref: str, folder: str, kind: str) -> Path:
    """Deployment and traffic files: an id in ``workloads/<folder>`` or a path."""
    return _resolve(ref, f"workloads/{folder}", kind)
