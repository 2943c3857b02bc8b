"""The questions in the order both forms (the terminal's and the web's) ask them, and which matter for a plan."""

from __future__ import annotations

from tuneforge import catalog
from tuneforge.planning.answers import BY_KEY
from tuneforge.planning.plan import Plan
from tuneforge.planning.rules import expert_techniques, trains_vision

ORDER = [
    "priority",
    "scenario",
    "project_name",
    "hardware",
    "gpu_count",
    "gpu_memory_gb",
    "num_nodes",
    "model",
    "technique",
    "lora_experts",
    "distributed",
    "compute",
    "targets",
    "adapter_export",
    "gguf_types",
    "dataset",
    "dataset_format",
    "objective",
    "thinking",
    "train_vision",
]
HYPER = [a.key for a in BY_KEY.values() if a.group == "hyper"]


def relevant(key: str, plan: Plan) -> bool:
    """Whether the question matters for this plan (the terminal and the web form ask only those)."""
    v = plan.values
    if key in ("gpu_count", "gpu_memory_gb", "num_nodes"):
        return v["hardware"] in ("cuda", "rocm")
    if key == "distributed":
        return len(catalog.load("hardware")[v["hardware"]]["distributed"]) > 1
    if key == "thinking":
        return bool(plan.facts.get("thinking"))
    if key == "train_vision":
        return v["scenario"] == "images" and trains_vision(plan.facts)
    if key == "lora_experts":
        return bool(plan.facts.get("moe")) and v["technique"] in expert_techniques()
    if key == "objective":
        return v["scenario"] == "preference"  # every other scenario learns its answers (sft)
    if key == "gguf_types":
        return "gguf" in v["targets"]
    if key == "adapter_export":
        return (
            any(catalog.is_onnx(t) for t in v["targets"]) and catalog.load("techniques")[v["technique"]]["onnx_adapter"]
        )
    return True
