"""The answer combinations the rendering tests cover: every pair of choices that some valid workspace can hold
(all-pairs), each row checked by tuneforge's own rules.

A pair no row could be found for is not dropped in silence: all_pairs returns it, and the tests hold that the
rules refuse it on its own and that no valid row found any other way holds it."""

from __future__ import annotations

import functools
import itertools
import json
import random

from tuneforge import catalog
from tuneforge.planning.answers import DISTRIBUTED, AnswerError, Given
from tuneforge.planning.plan import resolve

DIMENSIONS = {
    "model": [
        "phi-3-mini-4k-instruct",
        "phi-4-mini-instruct",
        "llama-3.2-1b-instruct",
        "mistral-7b-v0.3",
        "qwen2.5-0.5b-instruct",
        "gemma-3-4b-it",  # image-text models: the kind that holds scenario=images (Gemma on a GPU, SmolVLM on a CPU)
        "smolvlm-256m-instruct",
    ],
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
    "train_vision": ["none", "projector", "all"],
}
KEYS = list(DIMENSIONS)


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


def problems(row: dict) -> tuple[str, ...]:
    """The answers the rules find fault with in a row (none: a valid workspace); an answer refused outright: '*'."""
    plan = _plan(json.dumps(row, sort_keys=True))
    return ("*",) if plan is None else tuple(problem.key for problem in plan.problems)


def plan_or_none(row: dict):
    """The row's plan, if the rules find no problem with it."""
    plan = _plan(json.dumps(row, sort_keys=True))
    return None if plan is None or plan.problems else plan


@functools.cache
def _plan(row: str):
    """The plan a row (as JSON) makes on a CPU machine with 64 GB; None where an answer is refused outright."""
    given = Given()
    given.add(answers_for(json.loads(row)), "test")
    try:
        return resolve(given, detected={"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": 64.0})
    except AnswerError:
        return None


def row_id(row: dict) -> str:
    return "-".join(str(row[k]) for k in DIMENSIONS if k in row)


def pairs_of(row: dict) -> set:
    return {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(KEYS, 2)}


def every_pair() -> set:
    return {
        ((a, va), (b, vb)) for a, b in itertools.combinations(KEYS, 2) for va in DIMENSIONS[a] for vb in DIMENSIONS[b]
    }


@functools.cache
def all_pairs(seed: int = 0) -> tuple[list[dict], frozenset]:
    """(rows, unplaced): valid rows that together hold every pair of values some valid row can hold, and the pairs
    none could hold. A pair is placed where it makes a valid plan alone (the plan deriving the other answers, as it
    does for a user: a preference objective brings preference data) or with one more answer; the row then takes
    the other answers one by one, each the value that covers the most pairs not yet covered and keeps it valid."""
    rng = random.Random(seed)
    uncovered = every_pair()
    rows: list[dict] = []
    unseeded = set()
    while uncovered - unseeded:
        pair = min(uncovered - unseeded, key=str)
        row = _seed(dict(pair))
        if row is None:
            unseeded.add(pair)  # a row grown for another pair may still hold it
            continue
        row = _grow(row, uncovered, rng)
        rows.append(row)
        uncovered -= pairs_of(row)
    return rows, frozenset(uncovered)


def _seed(pair: dict) -> dict | None:
    """The pair's answers, or with one more answer, where they make a valid plan: that plan's answers."""
    candidates = [pair] + [{**pair, key: value} for key in KEYS if key not in pair for value in DIMENSIONS[key]]
    for answers in candidates:
        if (row := full_row(answers)) is not None:
            return row
    return None


def _grow(row: dict, uncovered: set, rng: random.Random) -> dict:
    """Take each answer the plan derived, in random order, as the value that covers the most new pairs and keeps
    the row valid (the derived value where none does better)."""
    for key in rng.sample(KEYS, len(KEYS)):

        def gain(value, key=key, row=row):
            return len(pairs_of({**row, key: value}) & uncovered)

        for value in sorted(DIMENSIONS[key], key=gain, reverse=True):
            if gain(value) <= gain(row[key]):
                break
            if not problems({**row, key: value}):
                row = {**row, key: value}
                break
    return row


def full_row(answers: dict) -> dict | None:
    """Every dimension's value in the plan these answers make, if valid (unless they say otherwise, the smallest model
    and one target, pytorch)."""
    answers = {"model": "qwen2.5-0.5b-instruct", "targets": "pytorch", **answers}
    plan = plan_or_none(answers)
    if plan is None:
        return None
    row = {**{key: plan.values[key] for key in KEYS}, "targets": answers["targets"]}
    if any(row[key] not in DIMENSIONS[key] for key in KEYS) or problems(row):
        return None
    return row


def random_valid_rows(count: int, seed: int = 1) -> list[dict]:
    """Valid rows drawn at random (three answers drawn, the plan deriving the rest): a check on all_pairs that
    shares none of its search."""
    rng = random.Random(seed)
    found = []
    while len(found) < count:
        answers = {key: rng.choice(DIMENSIONS[key]) for key in rng.sample(KEYS, 3)}
        if (row := full_row(answers)) is not None:
            found.append(row)
    return found
