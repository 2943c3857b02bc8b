"""The answer combinations the rendering tests cover: every pair of choices (all-pairs) plus the full
product of technique x hardware x distributed, each filtered by tuneforge's own rules."""

from __future__ import annotations

import itertools
import random

from tuneforge import catalog
from tuneforge.answers import DISTRIBUTED, AnswerError, Given
from tuneforge.plan import resolve

DIMENSIONS = {
    "model": ["phi-3-mini-4k-instruct", "phi-4-mini-instruct", "llama-3.2-1b-instruct", "mistral-7b-v0.3",
              "qwen2.5-0.5b-instruct"],
    "technique": list(catalog.load("techniques")),
    "hardware": list(catalog.load("hardware")),
    "distributed": DISTRIBUTED,
    "compute": list(catalog.load("compute")),
    "targets": list(catalog.load("targets")),  # each target on its own
    "adapter_export": ["merged", "adapters"],
    "scenario": list(catalog.load("scenarios")),
    "dataset_format": list(catalog.formats()),
    "objective": list(catalog.load("objectives")),
    "num_nodes": [1, 2],
}


def answers_for(row: dict) -> dict:
    """Fill in what a row implies: enough devices for its distributed mode, a big enough GPU."""
    answers = dict(row)
    answers["targets"] = [row["targets"]] if isinstance(row.get("targets"), str) else row.get("targets", ["pytorch"])
    if answers.get("adapter_export") == "adapters" and not any(catalog.is_onnx(t) for t in answers["targets"]):
        answers["targets"] = answers["targets"] + ["onnx-cpu"]
    distributed = answers.get("distributed", "none")
    hardware = answers.get("hardware", "cpu")
    answers.setdefault("num_nodes", 1)
    if distributed == "none" or hardware == "mps":
        answers["num_nodes"] = 1
    answers["gpu_count"] = 2 if distributed in ("ddp", "fsdp") or (distributed != "none" and hardware != "cpu") else 1
    if hardware in ("cuda", "rocm"):
        answers["gpu_memory_gb"] = 80
    return answers


def plan_or_none(row: dict):
    given = Given()
    given.add(answers_for(row), "test")
    try:
        plan = resolve(given, detected={"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": 64.0})
    except AnswerError:
        return None
    return None if plan.problems else plan


def row_id(row: dict) -> str:
    return "-".join(str(row[k]) for k in DIMENSIONS if k in row)


def all_pairs(seed: int = 0) -> list[dict]:
    """A small set of valid rows covering every pair of values that some valid row can hold."""
    rng = random.Random(seed)
    keys = list(DIMENSIONS)
    uncovered = {((a, va), (b, vb)) for a, b in itertools.combinations(keys, 2)
                 for va in DIMENSIONS[a] for vb in DIMENSIONS[b]}
    rows: list[dict] = []
    while uncovered:
        (a, va), (b, vb) = sorted(uncovered, key=str)[0]
        best = None
        for _ in range(30):
            row = {a: va, b: vb}
            for key in rng.sample(keys, len(keys)):
                if key in row:
                    continue
                options = DIMENSIONS[key][:]
                rng.shuffle(options)
                row[key] = max(options, key=lambda v: sum(((k, row[k]), (key, v)) in uncovered or
                                                          ((key, v), (k, row[k])) in uncovered for k in row))
            if plan_or_none(row) is not None:
                gain = _pairs(row, keys) & uncovered
                if best is None or len(gain) > len(best[1]):
                    best = (row, gain)
        if best is None:
            uncovered.discard(((a, va), (b, vb)))  # no valid workspace holds this pair
            continue
        rows.append(best[0])
        uncovered -= best[1]
    return rows


def _pairs(row: dict, keys: list[str]) -> set:
    return {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(keys, 2)}


def technique_hardware_distributed() -> list[dict]:
    rows = []
    for technique, hardware, distributed in itertools.product(DIMENSIONS["technique"], DIMENSIONS["hardware"], DISTRIBUTED):
        row = {"technique": technique, "hardware": hardware, "distributed": distributed, "model": "qwen2.5-0.5b-instruct"}
        if plan_or_none(row) is not None:
            rows.append(row)
    return rows
