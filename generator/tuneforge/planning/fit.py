"""What would fit when a plan does not: single changes that save memory, or the fewest taken together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge import catalog
from tuneforge.planning.answers import format_value
from tuneforge.planning.memory import Estimate, plan_memory, setup_for
from tuneforge.planning.models import resolve_model


@dataclass
class Suggestion:
    changes: dict[str, Any]
    estimate: Estimate

    def __str__(self) -> str:
        change = ", ".join(f"{k}={format_value(v)}" for k, v in self.changes.items())
        return f"{change} (about {self.estimate.total_gb:g} GB)"


def _candidate_changes(plan) -> list[dict[str, Any]]:
    v = plan.values
    hw = catalog.load("hardware")[v["hardware"]]
    changes: list[dict[str, Any]] = []
    if not v["gradient_checkpointing"]:
        changes.append({"gradient_checkpointing": True})
    leaner = catalog.load("techniques")[v["technique"]].get("leaner")
    if leaner and hw["quantization"]:
        changes.append({"technique": leaner})
    if v["technique"] == "full":
        changes.append({"technique": "lora"})
        if hw["quantization"]:
            changes.append({"technique": "qlora"})
    if v["per_device_train_batch_size"] > 1:
        b = v["per_device_train_batch_size"]
        changes.append(
            {"per_device_train_batch_size": 1, "gradient_accumulation_steps": v["gradient_accumulation_steps"] * b}
        )
    if v["max_length"] > 512:
        changes.append({"max_length": max(512, v["max_length"] // 2)})
    if (
        "deepspeed-zero3-offload" in hw["distributed"]
        and v["distributed"] != "deepspeed-zero3-offload"
        and v["technique"] != "qlora"
    ):
        changes.append({"distributed": "deepspeed-zero3-offload"})
    return changes


def _estimate(plan, changes: dict[str, Any], facts: dict | None = None) -> Estimate:
    """The plan's memory estimate with these changes (and another model's facts, when given)."""
    values = {**plan.values, **changes}
    devices = values["gpu_count"] * values["num_nodes"]
    return plan_memory(
        facts or plan.facts, setup_for(values, plan.precision, devices), catalog.load("hardware")[values["hardware"]]
    )


def _paths(plan) -> list[list[dict[str, Any]]]:
    """Ways to save memory step by step: quantize the base, or offload it with ZeRO-3 (never both)."""
    changes = _candidate_changes(plan)
    offload = [c for c in changes if c.get("distributed")]
    quantize = [c for c in changes if c.get("technique") == "qlora"]
    common = [c for c in changes if c not in offload and c not in quantize]
    paths = [common + quantize]
    if offload:
        paths.append(common + offload)
    return paths


def _steps(plan, path: list[dict[str, Any]]):
    """Walk a path, taking each change that lowers the estimate (on a CPU, QLoRA's bitsandbytes loads the weights
    in fp32 first and costs more than it saves): each taken step's changes so far and their estimate."""
    combined: dict[str, Any] = {}
    best = plan.memory
    for change in path:
        estimate = _estimate(plan, {**combined, **change})
        if estimate.total_gb < best.total_gb:
            combined, best = {**combined, **change}, estimate
            yield Suggestion(dict(combined), estimate)


def what_fits(plan) -> list[Suggestion]:
    """Single changes that fit; failing those, the fewest changes taken together that do."""
    singles = [Suggestion(c, _estimate(plan, c)) for c in _candidate_changes(plan)]
    fitting = [s for s in singles if s.estimate.total_gb <= plan.available_gb]
    if fitting:
        return sorted(fitting, key=lambda s: s.estimate.total_gb, reverse=True)
    found = []
    for path in _paths(plan):
        step = next((s for s in _steps(plan, path) if s.estimate.total_gb <= plan.available_gb), None)
        if step:
            found.append(step)
    return found


def leanest(plan) -> Suggestion | None:
    """The changes of a path that each save memory, taken together, on the path that saves the most; None when
    no change saves any."""
    ends = [steps[-1] for path in _paths(plan) if (steps := list(_steps(plan, path)))]
    return min(ends, key=lambda s: s.estimate.total_gb, default=None)


def smaller_models(plan, changes: dict[str, Any], count: int = 2) -> list[str]:
    """The largest catalog models that fit with the plan's answers and these changes, the newest first among
    equals (the catalog lists older families first); only models the rest of the answers allow (the images scenario
    needs one that reads pictures)."""
    from tuneforge.planning.rules import check

    fitting = []
    for order, model_id in enumerate(catalog.load("models")):
        facts = resolve_model(model_id)
        if (
            facts["params_b"] < plan.facts["params_b"]
            and _estimate(plan, changes, facts).total_gb <= plan.available_gb
            and not [p for p in check({**plan.values, **changes, "model": model_id}, facts) if p.key == "model"]
        ):
            fitting.append((facts["params_b"], order, model_id))
    return [model_id for *_, model_id in sorted(fitting, reverse=True)[:count]]
