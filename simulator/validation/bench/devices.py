"""Which hardware profile a measured device is: ``torch.cuda.get_device_name()`` -> a ``hardware/<id>.yaml`` id.

Only names that identify one profile map; anything else (an H100 NVL, an A100 PCIe, an unknown part)
returns None so ``bench run`` asks for ``--hardware`` instead of labelling rows with the wrong profile.
"""

from __future__ import annotations

import re

# (pattern on the upper-cased device name, profile id); first match wins, so specific names come first.
_NAME_TO_PROFILE: tuple[tuple[str, str | None], ...] = (
    (r"GB200", "gb200"),
    (r"\bB200\b", "b200-sxm"),
    (r"\bB300\b", "b300-sxm"),  # (GB300 is a 1400 W NVL72 part: no profile, and "GB300" has no word break before B)
    (r"H100.*(NVL)", None),
    (r"H100.*(PCIE)", "h100-pcie"),
    (r"H100", "h100-sxm"),
    (r"H200.*NVL", None),
    (r"H200", "h200-sxm"),
    (r"H800.*PCIE", None),
    (r"H800", "h800-sxm"),
    (r"\bH20\b", "h20"),
    (r"A100.*PCIE", None),
    (r"A100.*(SXM|80GB)", "a100-sxm"),
    (r"\bL40S\b", "l40s"),
    (r"\bL20\b", "l20"),
    (r"MI325X", "mi325x"),
    (r"MI300X", "mi300x"),
    (r"GAUDI ?3|HL-325", "gaudi3"),
)


def profile_for_device_name(name: str) -> str | None:
    """The profile id of a device name as torch reports it, or None when it does not identify one."""
    up = " ".join(str(name).upper().replace("-", " ").split())
    for pattern, profile in _NAME_TO_PROFILE:
        if re.search(pattern.replace("-", " "), up):
            return profile
    return None


def cuda_device_name(device: str) -> str:
    """``torch.cuda.get_device_name`` of ``cuda`` / ``cuda:N``."""
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    return torch.cuda.get_device_name(index)


def nvidia_smi_id(torch) -> str:
    """The current CUDA device as ``nvidia-smi -i`` names it: its UUID (torch's device index counts only the GPUs
    CUDA_VISIBLE_DEVICES shows, nvidia-smi's counts every GPU); its index where torch does not report one."""
    index = torch.cuda.current_device()
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except (AttributeError, RuntimeError):
        return str(index)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
