"""The answers a workspace is generated from: their keys, types and allowed values, and parsing.

The template's copier.yml gets its questions from here (copier_questions, added where the template is versioned);
this module is what the command line, the prompts and the plan use to read and check them.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    maximum: float | None = None  # both inclusive: the range the tools accept
    group: str = "main"  # main: asked interactively; hyper: asked when the user wants to customise
    above: bool = False  # the minimum itself is excluded (a learning rate of 0 trains nothing)

    @property
    def range_text(self) -> str:
        show = (lambda n: str(int(n))) if self.kind == "int" else (lambda n: f"{n:g}")
        low = f"above {show(self.minimum)}" if self.above else f"at least {show(self.minimum)}"
        return f"{low} and at most {show(self.maximum)}" if self.maximum is not None else low


def _ids(section: str) -> Callable[[], list[str]]:
    return lambda: list(catalog.load(section))


DISTRIBUTED = [
    "none",
    "ddp",
    "deepspeed-zero1",
    "deepspeed-zero2",
    "deepspeed-zero3",
    "deepspeed-zero3-offload",
    "fsdp",
]
# what each priority steers in the plan's defaults (plan.resolve), as the form explains it
PRIORITIES = {
    "quality": "LoRA rank 32 and the technique that fits with the least compromise",
    "memory": "QLoRA where the hardware has 4-bit kernels, gradient checkpointing, ZeRO-3 on several GPUs",
    "cost": "LoRA rank 8: fewer trained parameters, quicker steps",
    "scale": "several GPUs or nodes: DeepSpeed ZeRO-3 by default",
}
ADAPTER_EXPORTS = ["merged", "adapters"]
TRACKERS = ["tensorboard", "mlflow", "wandb", "none"]
THINKING = ["off", "keep"]
VISION_TRAINING = ["none", "projector", "all"]

# A project name ends up in shell scripts, YAML, JSON and cloud resource names, so it is kept to
# characters that need no quoting anywhere and that Azure ML and Kubernetes names accept.
PROJECT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
PROJECT_NAME_RULE = "1 to 63 letters, digits, '-', '_' or '.', starting with a letter"

SPEC: list[Answer] = [
    Answer("project_name", "name", f"Project name for the README, job and endpoint names ({PROJECT_NAME_RULE})"),
    Answer("model", "str", "Model: a catalog id, a Hugging Face id, or a local folder with config.json"),
    Answer("technique", "choice", "Fine-tuning technique", _ids("techniques")),
    Answer("hardware", "choice", "Hardware that trains", _ids("hardware")),
    Answer("gpu_count", "int", "Accelerators (or CPU processes) per node", minimum=1, maximum=64),
    Answer("gpu_memory_gb", "float", "Memory per accelerator in GB (system RAM for cpu)", minimum=1, maximum=4096),
    Answer("distributed", "choice", "How training is spread over devices", lambda: DISTRIBUTED),
    Answer("num_nodes", "int", "Number of machines", minimum=1, maximum=1024),
    Answer("compute", "choice", "Where training runs", _ids("compute")),
    Answer("targets", "list", "Where the tuned model is served", _ids("targets")),
    Answer(
        "adapter_export",
        "choice",
        "ONNX export: the merged model, or the base plus separate adapter files",
        lambda: ADAPTER_EXPORTS,
    ),
    Answer(
        "gguf_types",
        "list",
        "GGUF quantization types for llama.cpp and Ollama (target gguf); the first is the Modelfile's",
        lambda: catalog.load("targets")["gguf"]["gguf"]["quantizations"],
    ),
    Answer("priority", "choice", "What matters most; steers the defaults", lambda: list(PRIORITIES)),
    Answer(
        "scenario",
        "choice",
        "What the model is tuned for; decides the sample data, format default and metric",
        _ids("scenarios"),
    ),
    Answer("dataset", "str", "Training data: a local JSON/JSONL file or a Hugging Face dataset id"),
    Answer("dataset_format", "choice", "Format of each example", lambda: list(catalog.formats())),
    Answer(
        "objective",
        "choice",
        "What training optimises: sft learns the answers in the data; dpo, orpo, kto and simpo learn "
        "to prefer some answers over others (scenario=preference); grpo samples several answers to each prompt "
        "(num_generations), scores them with reward functions you own (rewards.py: the scenario's check of the "
        "answer, weights in configs/train.yaml) and moves toward the better ones (scenario="
        + ", ".join(s for s, facts in catalog.load("scenarios").items() if facts.get("rewards"))
        + ")",
        _ids("objectives"),
    ),
    Answer(
        "lora_experts",
        "bool",
        "Mixtures of experts (Qwen3-MoE, gpt-oss): also train LoRA on every expert's "
        "projections (gate_up and down, through PEFT's target_parameters), not only on attention; the router stays frozen",
    ),
    Answer(
        "thinking",
        "choice",
        "Reasoning models whose chat template has a thinking switch (Qwen3, SmolLM3): off trains "
        "and answers with thinking switched off; keep trains on and answers with <think> reasoning blocks",
        lambda: THINKING,
    ),
    Answer(
        "train_vision",
        "choice",
        "Image-text models on pictures (scenario=images): none trains the language model alone and keeps the vision "
        "tower and projector as they are; projector also trains the projector (the layer that turns the tower's "
        "features into the language model's tokens) in full; all trains the vision tower too (LoRA on its layers, "
        "or every weight with technique=full), for pictures unlike what the tower saw (documents, screenshots)",
        lambda: VISION_TRAINING,
    ),
    Answer("learning_rate", "float", "Peak learning rate", group="hyper", minimum=0, maximum=1, above=True),
    Answer("num_train_epochs", "float", "Epochs over the data", group="hyper", minimum=0, maximum=1000, above=True),
    Answer(
        "max_steps",
        "int",
        "Stop after this many optimizer steps (-1: run all epochs)",
        group="hyper",
        minimum=-1,
        maximum=10_000_000,
    ),
    Answer(
        "per_device_train_batch_size", "int", "Examples per device per step", group="hyper", minimum=1, maximum=4096
    ),
    Answer(
        "gradient_accumulation_steps",
        "int",
        "Steps accumulated before each update",
        group="hyper",
        minimum=1,
        maximum=4096,
    ),
    Answer("max_length", "int", "Maximum tokens per example", group="hyper", minimum=16, maximum=1_048_576),
    Answer("lora_r", "int", "LoRA rank", group="hyper", minimum=1, maximum=4096),
    Answer("lora_alpha", "int", "LoRA alpha", group="hyper", minimum=1, maximum=65536),
    Answer("lora_dropout", "float", "LoRA dropout (a probability below 1)", group="hyper", minimum=0, maximum=0.9),
    Answer("gradient_checkpointing", "bool", "Recompute activations to save memory", group="hyper"),
    Answer("packing", "bool", "Pack short examples together (no padding waste)", group="hyper"),
    Answer("seed", "int", "Random seed", group="hyper", minimum=0, maximum=2**32 - 1),
    Answer(
        "report_to",
        "choice",
        "Experiment tracking: tensorboard, mlflow (local mlruns/, or Azure ML's own), wandb "
        "(offline unless WANDB_API_KEY is set) or none",
        lambda: TRACKERS,
        group="hyper",
    ),
]
BY_KEY = {a.key: a for a in SPEC}
KEYS = list(BY_KEY)
# Values the plan derives and the template needs (Plan's attributes of these names), recorded in the answers
# file so that a later update renders the old version exactly, never asked: name -> (copier type, what it holds)
DERIVED = {
    "model_facts": ("yaml", "Facts about the model"),
    "scenario_facts": ("yaml", "The scenario's prompt, generation settings and metric"),
    "objective_facts": ("yaml", "What training optimises and the loss's settings"),
    "technique_facts": ("yaml", "What the technique trains and which runtimes take its adapter"),
    "precision": ("str", "Training precision"),
    "resource_name": ("str", "The project name as cloud resources and Kubernetes accept it"),
    "memory_plan": ("yaml", "The plan's peak training memory estimate and verdict"),
    "explicit_answers": ("yaml", "Answers the user chose rather than defaulted"),
    "target_facts": ("yaml", "The catalog's facts about each chosen target"),
    "onnx_targets": ("yaml", "The targets an Olive workflow renders for"),
    "npu_targets": ("yaml", "The ONNX targets compiled to one static graph for an NPU"),
    "runtime_targets": ("yaml", "The ONNX targets whose machine needs other ONNX Runtime packages"),
    "platforms": ("yaml", "The cloud platforms the workspace gets deployment files for"),
    "instances": ("yaml", "The GPU instance each cloud target and cloud training job uses"),
    "include": ("yaml", "One switch per optional file or folder of the workspace"),
    "pins": ("yaml", "Every package version tuneforge pins, from the catalog's pins.txt"),
}
DERIVED_KEYS = list(DERIVED)
COPIER_TYPES = {"int": "int", "float": "float", "bool": "bool", "list": "yaml"}  # the other kinds are text


def copier_questions() -> str:
    """The questions of the template's copier.yml: every answer key and every derived one, declared only so that
    copier records them (tuneforge checks every answer and passes them all, so copier asks nothing)."""
    lines = [f"{a.key}: {{type: {COPIER_TYPES.get(a.kind, 'str')}}}" for a in SPEC]
    lines += [
        f"{key}: {{type: {kind}, help: {json.dumps(text + ' (derived)')}}}" for key, (kind, text) in DERIVED.items()
    ]
    return "\n".join(lines) + "\n"


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def format_value(value: Any) -> str:
    """An answer as it is typed: --set KEY=VALUE, the plan's listing, a suggestion."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(value) or "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def coerce(key: str, value: Any) -> Any:
    """Turn a raw value (a --set string, or YAML) into the answer's type, or raise AnswerError."""
    spec = BY_KEY.get(key)
    if spec is None:
        raise AnswerError(key, f"unknown answer.{suggest(str(key), KEYS)} Known answers: {', '.join(KEYS)}")
    try:
        if spec.kind != "list" and isinstance(value, (dict, list, tuple, set)):
            raise ValueError(f"expected a single value, got a {type(value).__name__}")
        if spec.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError("expected true or false")
        if spec.kind in ("int", "float"):
            return _number(spec, value)
        if spec.kind == "list":
            items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
            if any(isinstance(i, (dict, list)) for i in items):
                raise ValueError("expected a list of names")
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
        if spec.kind == "name" and not PROJECT_NAME.fullmatch(text):
            raise ValueError(f"{text!r} is not a usable name: use {PROJECT_NAME_RULE}")
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(f"{text!r} holds a control character (a newline or tab, say); remove it")
        return text
    except (TypeError, ValueError, OverflowError) as error:
        raise AnswerError(key, str(error)) from None


def _number(spec: Answer, value: Any) -> int | float:
    """The number in a --set string or a YAML value, checked against the answer's range."""
    text = value.strip() if isinstance(value, str) else value
    try:
        if isinstance(value, bool):
            raise ValueError  # noqa: TRY004  caught just below: a bool is no number
        if spec.kind == "int":
            number = int(text) if not isinstance(text, float) or text.is_integer() else None
        else:
            number = float(text)
    except (ValueError, OverflowError):
        number = None
    if number is None:
        raise ValueError(f"expected a {'whole number' if spec.kind == 'int' else 'number'}, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    low_ok = number > spec.minimum if spec.above else number >= spec.minimum
    if (spec.minimum is not None and not low_ok) or (spec.maximum is not None and number > spec.maximum):
        raise ValueError(f"must be {spec.range_text}, got {number}")
    return number


def slug_name(text: str) -> str:
    """A usable project name made from any folder name: other characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
    name = re.sub(r"^[^A-Za-z]+", "", name)[:63].rstrip("-._")
    return name or "finetune"


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


MAX_ANSWERS_BYTES = 1 << 20  # answers files are a few hundred bytes; anything this large is not one


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors and aliases: answers never need them, and nested aliases ("a billion
    laughs") expand into gigabytes once anything walks the result."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in answers", event.start_mark
            )
        return super().compose_node(parent, index)


def load_mapping(path: str | Path, key: str) -> dict:
    """A small YAML file holding a mapping, or AnswerError(key) saying what is wrong with it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_ANSWERS_BYTES + 1)
    except OSError as error:
        raise AnswerError(key, f"cannot read {path}: {error.strerror}") from None
    if len(raw) > MAX_ANSWERS_BYTES:
        raise AnswerError(
            key, f"{path} is larger than {MAX_ANSWERS_BYTES >> 20} MB; an answers file is a short YAML mapping"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise AnswerError(key, f"{path}:{line}: not UTF-8 text; an answers file is a short YAML mapping") from None
    if "\0" in text:
        raise AnswerError(key, f"{path} is a binary file, not YAML")
    try:
        data = yaml.load(text, Loader=_NoAliasLoader) or {}
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f":{where.line + 1}" if where else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise AnswerError(key, f"{path}{line} is not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise AnswerError(key, f"{path} must hold a mapping of answers (key: value lines), not a {type(data).__name__}")
    return data


def read_answers_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML answers file (ours, or a workspace's .copier-answers.yml): user answers only."""
    return user_answers(load_mapping(path, "--answers"))


def user_answers(data: dict) -> dict[str, Any]:
    """The user's answers in a mapping, without copier's bookkeeping (`_commit`...) or derived values."""
    return {k: coerce(k, v) for k, v in data.items() if not str(k).startswith("_") and k not in DERIVED_KEYS}


def explicit_answers(data: dict) -> dict[str, Any]:
    """The answers a workspace's answers file records as the user's own choices (the rest were defaults)."""
    explicit = data.get("explicit_answers") or []
    return {k: v for k, v in user_answers(data).items() if k in explicit}


@dataclass
class Given:
    """Answers the user gave, with where each came from (for `tuneforge plan`)."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def add(self, values: dict[str, Any], origin: str) -> None:
        for key, value in values.items():
            self.values[key] = value
            self.origins[key] = origin


def layer(*sources: Given | tuple[dict[str, Any], str]) -> Given:
    """The one place answers are layered: each source over those before it, every answer remembering where it
    came from. Sources are a Given or a (values, origin) pair. Lowest first, as every command orders them: the
    DEST folder's name, a workspace's previous answers, an answers file, --set, then the form's or the asked ones."""
    given = Given()
    for source in sources:
        if isinstance(source, Given):
            given.values.update(source.values)
            given.origins.update(source.origins)
        else:
            given.add(*source)
    return given
