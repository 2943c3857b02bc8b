"""The catalog: models, techniques, hardware, targets, compute platforms, scenarios, objectives, chat turns and
tool-call formats, kept as YAML data."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

HERE = Path(__file__).parent
SECTIONS = (
    "models",
    "techniques",
    "hardware",
    "targets",
    "compute",
    "architectures",
    "scenarios",
    "objectives",
    "chat_formats",
    "tool_calls",
)


@functools.cache
def load(section: str) -> dict[str, dict]:
    """Return one catalog section as {id: facts}, in file order."""
    if section not in SECTIONS:
        raise KeyError(f"unknown catalog section {section!r}; known: {', '.join(SECTIONS)}")
    with open(HERE / f"{section}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


@functools.cache
def pins() -> dict[str, str]:
    """Each pinned package's version specifier ("==2.13.0", ">=6"), from pins.txt, the one file that pins them."""
    found = {}
    for line in (HERE / "pins.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, specifier = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*([<>=!~].*)", line.strip()).groups()
            found[name.lower()] = specifier
    return found


def model_by_hf_id(hf_id: str) -> tuple[str, dict] | None:
    """Find a catalog model by its Hugging Face id, ignoring case."""
    for model_id, facts in load("models").items():
        if facts["hf_id"].lower() == hf_id.lower():
            return model_id, facts
    return None


def formats() -> dict[str, list[str]]:
    """Each data format with the scenarios that read it, from the scenarios' own lists."""
    found: dict[str, list[str]] = {}
    for scenario, facts in load("scenarios").items():
        for fmt in facts["formats"]:
            found.setdefault(fmt, []).append(scenario)
    return found


def onnx_targets() -> list[str]:
    """The targets an Olive workflow renders for."""
    return [t for t, facts in load("targets").items() if "onnx" in facts]


def is_onnx(target: str) -> bool:
    return "onnx" in load("targets")[target]
