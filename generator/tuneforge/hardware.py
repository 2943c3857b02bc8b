"""What this machine has, to offer it as the default answer. Never imports torch."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess


def detect() -> dict:
    """Return {hardware, gpu_count, gpu_memory_gb} for this machine."""
    if os.environ.get("TUNEFORGE_NO_DETECT") == "1":
        # a fixed machine, so that tests and examples render the same everywhere
        return {"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": 16.0}
    if shutil.which("nvidia-smi"):
        memories = _query(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        if memories:
            return {"hardware": "cuda", "gpu_count": len(memories), "gpu_memory_gb": round(min(memories) / 1024, 1)}
    if shutil.which("rocm-smi"):
        return {"hardware": "rocm", "gpu_count": 1, "gpu_memory_gb": 64.0}
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return {"hardware": "mps", "gpu_count": 1, "gpu_memory_gb": round(system_memory_gb() * 0.7, 1)}
    return {"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": system_memory_gb()}


def system_memory_gb() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return 16.0


def _query(command: list[str]) -> list[float]:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout
        return [float(line) for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
