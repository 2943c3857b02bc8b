"""The answers a workspace is generated from: their keys, types and allowed values, and parsing.

The template's copier.yml declares the same keys (a test keeps the two in step); this module is what
the command line, the prompts and the plan use to read and check them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from tuneforge import catalog


class AnswerError(ValueError):
    """A bad answer: names the key and what would be accepted."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class Answer:
    key: str
    kind: str  # str, int, float, bool, choice, list
    help: str
    choices: Callable[[], list[str]] | None = None
    minimum: float | None = None
    group: str = "main"  # main: asked interactively; hyper: asked when the user wants to customise


def _ids(section: str) -> Callable[[], list[str]]:
    return lambda: list(catalog.load(section))


DISTRIBUTED = ["none", "ddp", "deepspeed-zero1", "deepspeed-zero2", "deepspeed-zero3", "deepspeed-zero3-offload", "fsdp"]
DATASET_FORMATS = ["messages", "prompt-completion", "alpaca", "text", "classification", "ner", "translation", "qa", "summarization"]
PRIORITIES = ["quality", "memory", "cost", "scale"]
ADAPTER_EXPORTS = ["merged", "adapters"]

SPEC: list[Answer] = [
    Answer("project_name", "str", "Project name (used for the folder's README and job names)"),
    Answer("model", "str", "Model: a catalog id, a Hugging Face id, or a local folder with config.json"),
    Answer("technique", "choice", "Fine-tuning technique", _ids("techniques")),
    Answer("hardware", "choice", "Hardware that trains", _ids("hardware")),
    Answer("gpu_count", "int", "Accelerators (or CPU processes) per node", minimum=1),
    Answer("gpu_memory_gb", "float", "Memory per accelerator in GB (system RAM for cpu)", minimum=1),
    Answer("distributed", "choice", "How training is spread over devices", lambda: DISTRIBUTED),
    Answer("num_nodes", "int", "Number of machines", minimum=1),
    Answer("compute", "choice", "Where training runs", _ids("compute")),
    Answer("targets", "list", "Where the tuned model is served", _ids("targets")),
    Answer("adapter_export", "choice", "ONNX export: the merged model, or the base plus separate adapter files", lambda: ADAPTER_EXPORTS),
    Answer("priority", "choice", "What matters most; steers the defaults", lambda: PRIORITIES),
    Answer("scenario", "choice", "What the model is tuned for; decides the sample data, format default and metric", _ids("scenarios")),
    Answer("dataset", "str", "Training data: a local JSON/JSONL file or a Hugging Face dataset id"),
    Answer("dataset_format", "choice", "Format of each example", lambda: DATASET_FORMATS),
    Answer("learning_rate", "float", "Peak learning rate", group="hyper", minimum=0),
    Answer("num_train_epochs", "float", "Epochs over the data", group="hyper", minimum=0),
    Answer("max_steps", "int", "Stop after this many optimizer steps (-1: run all epochs)", group="hyper", minimum=-1),
    Answer("per_device_train_batch_size", "int", "Examples per device per step", group="hyper", minimum=1),
    Answer("gradient_accumulation_steps", "int", "Steps accumulated before each update", group="hyper", minimum=1),
    Answer("max_length", "int", "Maximum tokens per example", group="hyper", minimum=16),
    Answer("lora_r", "int", "LoRA rank", group="hyper", minimum=1),
    Answer("lora_alpha", "int", "LoRA alpha", group="hyper", minimum=1),
    Answer("lora_dropout", "float", "LoRA dropout", group="hyper", minimum=0),
    Answer("gradient_checkpointing", "bool", "Recompute activations to save memory", group="hyper"),
    Answer("packing", "bool", "Pack short examples together (no padding waste)", group="hyper"),
    Answer("seed", "int", "Random seed", group="hyper", minimum=0),
]
BY_KEY = {a.key: a for a in SPEC}
KEYS = list(BY_KEY)
# Values the plan derives and the template needs; recorded in the answers file, never asked.
DERIVED_KEYS = ["model_facts", "scenario_facts", "precision", "explicit_answers"]

_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def coerce(key: str, value: Any) -> Any:
    """Turn a raw value (a --set string, or YAML) into the answer's type, or raise AnswerError."""
    spec = BY_KEY.get(key)
    if spec is None:
        raise AnswerError(key, f"unknown answer.{suggest(key, KEYS)} Known answers: {', '.join(KEYS)}")
    try:
        if spec.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError("expected true or false")
        if spec.kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected a whole number")
            number = int(value) if not isinstance(value, str) else int(value.strip())
            return _check_minimum(spec, number)
        if spec.kind == "float":
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return _check_minimum(spec, float(value))
        if spec.kind == "list":
            items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
            items = [str(i) for i in items if str(i)]
            allowed = spec.choices()
            for item in items:
                if item not in allowed:
                    raise ValueError(f"{item!r} is not one of: {', '.join(allowed)}.{suggest(item, allowed)}")
            return list(dict.fromkeys(items))
        if spec.kind == "choice":
            text = str(value).strip()
            allowed = spec.choices()
            if text not in allowed:
                raise ValueError(f"{text!r} is not one of: {', '.join(allowed)}.{suggest(text, allowed)}")
            return text
        text = str(value).strip()
        if not text:
            raise ValueError("must not be empty")
        return text
    except (TypeError, ValueError) as error:
        raise AnswerError(key, str(error)) from None


def _check_minimum(spec: Answer, number: float) -> float:
    if spec.minimum is not None and number < spec.minimum:
        raise ValueError(f"must be at least {spec.minimum:g}, got {number:g}")
    return number


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """Parse repeated --set KEY=VALUE options."""
    answers: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise AnswerError(pair, "expected KEY=VALUE")
        key = key.strip()
        answers[key] = coerce(key, value)
    return answers


def read_answers_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML answers file (ours, or a workspace's .copier-answers.yml): user answers only."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as error:
        raise AnswerError("--answers", f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise AnswerError("--answers", f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise AnswerError("--answers", f"{path} must hold a mapping of answers")
    return user_answers(data)


def user_answers(data: dict) -> dict[str, Any]:
    """The user's answers in a mapping, without copier's bookkeeping (`_commit`...) or derived values."""
    return {k: coerce(k, v) for k, v in data.items() if not k.startswith("_") and k not in DERIVED_KEYS}


@dataclass
class Given:
    """Answers the user gave, with where each came from (for `tuneforge plan`)."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def add(self, values: dict[str, Any], origin: str) -> None:
        for key, value in values.items():
            self.values[key] = value
            self.origins[key] = origin
