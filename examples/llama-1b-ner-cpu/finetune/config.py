"""Load a YAML config and apply dotted `section.key=value` overrides from the command line."""

from __future__ import annotations

import copy
import difflib
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
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
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
    with open(path, encoding="utf-8") as f:
        config = yaml.load(f, Loader=Loader) or {}
    return apply_overrides(config, overrides or [], source=str(path))


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
        node[leaf] = parse_value(raw) if raw != "" else None
    return config


def _unknown(dotted: str, node: dict, source: str) -> str:
    leaf = dotted.split(".")[-1]
    prefix = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    close = difflib.get_close_matches(leaf, list(node), n=1)
    hint = f" Did you mean {prefix}{close[0]}?" if close else f" Keys here: {', '.join(prefix + k for k in node)}"
    return f"{dotted} is not a key of {source}.{hint}"
