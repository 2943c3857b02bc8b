"""What this machine has, to offer it as the default answer. Never imports torch."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess

# the machine `--no-detect` plans for, in place of this one: to generate for another machine (with --set
# hardware=...) or to get the same workspace on every machine (the examples, the benchmarks)
TYPICAL = {"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": 16.0}


def detect() -> dict:
    """Return {hardware, gpu_count, gpu_memory_gb} for this machine; gpu_memory_gb is None when it cannot be told."""
    if shutil.which("nvidia-smi"):
        memories = _query(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        if memories:
            return {"hardware": "cuda", "gpu_count": len(memories), "gpu_memory_gb": round(min(memories) / 1024, 1)}
    if shutil.which("rocm-smi"):
        memories = _rocm_memories()
        # an AMD GPU whose memory rocm-smi does not report: count it, and leave its memory unknown
        return {
            "hardware": "rocm",
            "gpu_count": len(memories) or 1,
            "gpu_memory_gb": round(min(memories) / 1024**3, 1) if memories else None,
        }
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return {"hardware": "mps", "gpu_count": 1, "gpu_memory_gb": round(system_memory_gb() * 0.7, 1)}
    return {"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": system_memory_gb()}


def system_memory_gb() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return 16.0


def _rocm_memories() -> list[float]:
    """Each AMD GPU's memory in bytes, from `rocm-smi --showmeminfo vram --json` ({"card0": {"VRAM Total Memory (B)": ...}})."""
    try:
        cards = json.loads(_output(["rocm-smi", "--showmeminfo", "vram", "--json"]))
        return [float(card["VRAM Total Memory (B)"]) for name, card in cards.items() if name.startswith("card")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def _query(command: list[str]) -> list[float]:
    try:
        return [float(line) for line in _output(command).split() if line.strip()]
    except ValueError:
        return []


def _output(command: list[str]) -> str:
    """What a command prints, or nothing when it cannot run, fails or hangs."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
