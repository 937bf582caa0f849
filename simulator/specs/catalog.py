"""Where specs come from: the built-in catalogues (``hardware/``, ``workloads/``) or a path.

An id resolves to ``<catalogue>/<id>.yaml``; anything that looks like a path is read as a file; other names
are matched against the ids and the ``aliases`` the specs list (case and separators aside, a Hugging Face
repo's last part, chat/precision/release endings taken off).
Loaded specs are cached: they are frozen, so sharing them is safe.
"""

from __future__ import annotations

import functools
import os
import re
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


# name endings a catalogue id leaves out: chat/instruct tunes, checkpoints' precisions and release tags of the
# same architecture (``Qwen/Qwen3-235B-A22B-Instruct-2507-FP8`` is ``qwen3-235b-a22b``)
_VARIANT_SUFFIXES = ("-instruct", "-chat", "-it", "-hf", "-base", "-fp8", "-fp4", "-nvfp4", "-mxfp4", "-awq",
                     "-gptq", "-int4", "-int8", "-w4a16", "-w8a8", "-bf16", "-fp16", "-dynamic", "-v2", "-v0.1",
                     "-2507", "-0528", "-0324")


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _candidates(ref: str) -> list[str]:
    """``ref`` normalised, its last path part (a Hugging Face repo id), and each with variant endings taken off."""
    n = _norm(ref)
    out = [n] + ([n.rsplit("/", 1)[1]] if "/" in n else [])
    for base in list(out):
        stripped = True
        while stripped:
            stripped = False
            for suffix in _VARIANT_SUFFIXES:
                if base.endswith(suffix) and len(base) > len(suffix):
                    base = base[: -len(suffix)]
                    out.append(base)
                    stripped = True
    return out


@functools.lru_cache(maxsize=8)
def _alias_index(folder: str) -> dict[str, str]:
    """Every catalogue id of ``folder`` and the ``aliases`` its spec lists, normalised, to the id."""
    load = load_hardware if folder == "hardware" else load_model
    index: dict[str, str] = {}
    for spec_id in list_ids(folder):
        for name in (spec_id, *load(spec_id).aliases):
            index.setdefault(_norm(name), spec_id)
    return index


def _by_alias(ref: str, folder: str) -> str | None:
    """The catalogue id ``ref`` names through an alias or a variant ending (None: no match)."""
    index = _alias_index(folder)
    return next((index[c] for c in _candidates(ref) if c in index), None)


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


def _named(ref: str, folder: str, kind: str) -> Path:
    """A path, a catalogue id, or a name the catalogue knows by an alias (``H100``,
    ``meta-llama/Llama-3.1-8B-Instruct``); anything else fails as an unknown id or an unreadable file."""
    ref_s = str(ref)
    is_id = (catalog_root() / folder / f"{ref_s}.yaml").exists()
    # (a reference written as a path - ./x, ../x, /x, ~/x - is a file, found or not: never the catalogue's spec of the
    # same last name, which a mistyped path would otherwise quietly load; "dir/x" without ./ stays ambiguous with a
    # Hugging Face name such as meta-llama/Llama-3.1-8B and resolves as one)
    if ref_s.endswith((".yaml", ".yml")) or Path(ref_s).exists() or is_id or ref_s.startswith((".", "/", "~")):
        return _resolve(ref_s, folder, kind)
    spec_id = _by_alias(ref_s, folder)
    if spec_id is None and ("/" in ref_s or os.sep in ref_s):  # neither a file nor a name the catalogue knows
        ids = ", ".join(list_ids(folder)) or "none"
        raise SpecError(ref_s, "", f"no such file, and no {kind} id or alias matches it (known ids: {ids})")
    return _resolve(spec_id if spec_id else ref_s, folder, kind)


@functools.lru_cache(maxsize=256)
def load_hardware(ref: str) -> HardwareSpec:
    """A hardware profile by id (``hardware/<id>.yaml``), by a name it goes by (``H100``) or by path."""
    return read_hardware(_named(ref, "hardware", "hardware profile"))


@functools.lru_cache(maxsize=256)
def load_model(ref: str) -> ModelSpec:
    """A model spec by id (``workloads/models/<id>.yaml``), by a name it goes by (a HuggingFace repo id) or by
    path."""
    return read_model(_named(ref, "workloads/models", "model"))


def in_catalogue(spec) -> bool:
    """Whether a loaded hardware profile is the catalogue's own file for its id (reached by id, alias or path),
    not a copy elsewhere that may have been edited."""
    own = catalog_root() / "hardware" / f"{spec.id}.yaml"
    return bool(spec.file) and own.is_file() and os.path.samefile(spec.file, own)


def hardware_ids() -> list[str]:
    return list_ids("hardware")


def model_ids() -> list[str]:
    return list_ids("workloads/models")


def resolve_workload(ref: str, folder: str, kind: str) -> Path:
    """Deployment and traffic files: an id in ``workloads/<folder>`` or a path."""
    return _resolve(ref, f"workloads/{folder}", kind)
