"""What a run ran on, in words: the CPU's model name or the GPU's name.

The same 2-core machines differ 3-4x in speed, and a run can be resumed on another device
(a GPU window continues a run begun on a CPU), so times are only meaningful beside the
device that measured them.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (``lscpu``'s "Model name", read from /proc/cpuinfo), e.g. ``AMD EPYC``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device | str) -> str:
    """``"cpu (AMD EPYC)"`` or ``"cuda (NVIDIA H200)"``: the device type and what it is."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({cpu_name()})"
    return device.type
