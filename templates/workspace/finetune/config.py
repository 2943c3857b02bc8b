"""Load a YAML config and apply dotted `section.key=value` overrides from the command line."""

from __future__ import annotations

import copy
import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


class Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: `1e-4` is a float and `no` is a string (PyYAML's YAML 1.1 reads them the other
    way round, which breaks `learning_rate=1e-4` and `eval_strategy=no`)."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_value(text: str):
    return yaml.load(text, Loader=Loader)


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.load(f, Loader=Loader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold sections (model:, data:, training:, ...), not a {type(config).__name__}")
    config = apply_overrides(config, overrides or [], source=str(path))
    check_ranges(config, source=str(path))
    return config


def apply_overrides(config: dict, overrides: list[str], source: str = "config") -> dict:
    """Return a copy of config with each `a.b=value` applied; the value is parsed as YAML."""
    config = copy.deepcopy(config)
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        *parents, leaf = dotted.split(".")
        node = config
        walked = []
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(_unknown(".".join(walked + [part]), node, source))
            node = node[part]
            walked.append(part)
        if leaf not in node:
            raise ConfigError(_unknown(dotted, node, source))
        try:
            value = parse_value(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw  # not YAML: plain text, which the type check below judges
        node[leaf] = _same_type(dotted, node[leaf], value, raw)
    return config


def _same_type(dotted: str, old: Any, new: Any, raw: str) -> Any:
    """The override's value, if it has the type the config's own value has."""
    if old is None:
        return new
    if isinstance(old, dict):
        raise ConfigError(
            f"{dotted} is a section; override one of its keys: {', '.join(f'{dotted}.{k}=...' for k in list(old)[:3])}"
        )
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        raise ConfigError(f"{dotted} must be true or false, got {raw!r}")
    if isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
        raise ConfigError(f"{dotted} must be a whole number, got {raw!r}")
    if isinstance(old, float):
        if isinstance(new, (int, float)) and not isinstance(new, bool):
            return new
        raise ConfigError(f"{dotted} must be a number (such as 2e-4), got {raw!r}")
    if isinstance(old, list):
        if isinstance(new, list):
            return new
        raise ConfigError(f"{dotted} must be a list such as [a, b], got {raw!r}")
    if isinstance(new, (dict, list)):
        raise ConfigError(f"{dotted} must be a single value, got {raw!r}")
    return raw if new is not None and not isinstance(new, str) else new  # text keys keep what was typed


def _between(low: float, high: float, low_open: bool = False):
    def check(value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return (value > low if low_open else value >= low) and value <= high

    check.text = f"{'above' if low_open else 'at least'} {low:g} and at most {high:g}"
    return check


def _whole(low: int, high: int, *extra: int):
    def check(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and (low <= value <= high or value in extra)

    check.text = f"a whole number from {low} to {high}" + "".join(f" (or {e})" for e in extra)
    return check


# The ranges the training libraries accept: a value outside them fails minutes later, deep inside a
# library, so it is refused here with the key named.
RANGES = {
    "training.learning_rate": _between(0, 1, low_open=True),
    "training.num_train_epochs": _between(0, 1000, low_open=True),
    "training.max_steps": _whole(1, 10**7, -1),
    "training.per_device_train_batch_size": _whole(1, 4096),
    "training.per_device_eval_batch_size": _whole(1, 4096),
    "training.gradient_accumulation_steps": _whole(1, 4096),
    "training.seed": _whole(0, 2**32 - 1),
    "training.warmup_steps": _between(0, 10**7),
    "training.weight_decay": _between(0, 10),
    "training.max_grad_norm": _between(0, 10**6),
    "training.logging_steps": _between(0, 10**7, low_open=True),
    "training.eval_steps": _between(0, 10**7, low_open=True),
    "training.save_steps": _between(0, 10**7, low_open=True),
    "peft.lora_r": _whole(1, 4096),
    "peft.lora_alpha": _between(0, 65536, low_open=True),
    "peft.lora_dropout": _between(0, 0.9),
    "data.max_length": _whole(16, 1 << 20),
    "data.eval_fraction": _between(0, 0.9),
    "preference.beta": _between(0, 1000, low_open=True),
    "preference.gamma": _between(0, 100),
    "preference.desirable_weight": _between(0, 100, low_open=True),
    "preference.undesirable_weight": _between(0, 100, low_open=True),
    "grpo.num_generations": _whole(2, 1024),
    "grpo.max_completion_length": _whole(1, 1 << 20),
    "grpo.temperature": _between(0, 10, low_open=True),
    "grpo.beta": _between(0, 1000),
    "grpo.epsilon": _between(0, 1, low_open=True),
}


# an image-text model's vision parts that train beside its language model (configs/train.yaml's vision.train)
VISION_TRAINING = {"none": (), "projector": ("projector",), "all": ("projector", "tower")}


def check_ranges(config: dict, source: str = "config") -> None:
    for dotted, check in RANGES.items():
        section, key = dotted.split(".")
        node = config.get(section)
        if not isinstance(node, dict) or key not in node or node[key] is None:
            continue
        if not check(node[key]):
            raise ConfigError(f"{dotted} must be {check.text}, got {node[key]!r} (in {source} or on the command line)")
    peft = config.get("peft") or {}
    if peft.get("target_parameters") and peft.get("lora_dropout"):
        raise ConfigError(
            f"peft.lora_dropout must be 0 with peft.target_parameters (PEFT's LoRA on the experts' fused "
            f"weights has no dropout), got {peft['lora_dropout']!r} (in {source} or on the command line)"
        )

    vision = config.get("vision") or {}
    if vision and vision.get("train") not in VISION_TRAINING:
        raise ConfigError(
            f"vision.train must be {', '.join(VISION_TRAINING)}, got {vision.get('train')!r} "
            f"(in {source} or on the command line)"
        )
    if vision.get("train") == "all" and peft and not vision.get("tower_lora_modules"):
        raise ConfigError(
            "vision.train all with an adapter needs vision.tower_lora_modules, the tower's layers LoRA adapts "
            f"(in {source} or on the command line)"
        )


def _unknown(dotted: str, node: dict, source: str) -> str:
    leaf = dotted.split(".")[-1]
    prefix = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    close = difflib.get_close_matches(leaf, list(node), n=1)
    hint = f" Did you mean {prefix}{close[0]}?" if close else f" Keys here: {', '.join(prefix + k for k in node)}"
    return f"{dotted} is not a key of {source}.{hint}"


SMOKE_CONFIG = Path("configs/smoke.yaml")


def smoke_path(path: str | Path, root: str | Path | None = None) -> Path:
    """Where smoke.py's run keeps what the workspace keeps at path: every outputs/ folder moves under the smoke
    config's output_dir, root (outputs/merged -> outputs/smoke/merged), so --smoke reads the tiny model's files."""
    if root is None:
        root = yaml.load(SMOKE_CONFIG.read_text(encoding="utf-8"), Loader=Loader)["output_dir"]
    root, path = Path(root), Path(path)
    return root / path.relative_to("outputs") if path.parts[:1] == ("outputs",) else root / path


def smoke_base(root: str | Path | None = None) -> Path:
    """The tiny random base model smoke.py builds."""
    return smoke_path("base", root)
