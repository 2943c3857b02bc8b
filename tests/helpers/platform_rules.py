"""What the platforms' own validators would say about a generated file, checked offline: JSON schemas
(tests/schemas/, each naming its source) and the KAITO admission rules its CRD does not encode."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

SCHEMAS = Path(__file__).parents[1] / "schemas"


def schema_errors(document: dict, schema_name: str) -> list[str]:
    from jsonschema import Draft202012Validator

    schema = json.loads((SCHEMAS / schema_name).read_text())
    validator = Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]


def kaito_admission_errors(workspace: dict, training_config: dict | None, presets: set[str]) -> list[str]:
    """KAITO's webhook rules for a Workspace: one of tuning or inference; tuning has exactly one input
    source and one output; qlora needs 4- or 8-bit loading and lora forbids it; the preset exists."""
    errors = []
    tuning, inference = workspace.get("tuning"), workspace.get("inference")
    if bool(tuning) == bool(inference):
        errors.append("a Workspace holds exactly one of tuning and inference")
    spec = tuning or inference or {}
    preset = (spec.get("preset") or {}).get("name")
    if preset not in presets:
        errors.append(f"preset {preset!r} is not one of KAITO's presets")
    if tuning:
        sources = [k for k in ("urls", "image", "volumeSource") if tuning.get("input", {}).get(k)]
        if len(sources) != 1:
            errors.append(f"tuning.input needs exactly one of urls, image, volumeSource; has {sources or 'none'}")
        outputs = [k for k in ("image", "volumeSource") if tuning.get("output", {}).get(k)]
        if len(outputs) != 1:
            errors.append(f"tuning.output needs exactly one of image, volumeSource; has {outputs or 'none'}")
        if tuning.get("output", {}).get("image") and not tuning["output"].get("imagePushSecret"):
            errors.append("tuning.output.image needs an imagePushSecret")
        method = tuning.get("method")
        if method not in ("lora", "qlora"):
            errors.append(f"tuning.method must be lora or qlora, not {method!r}")
        quant = ((training_config or {}).get("training_config") or {}).get("QuantizationConfig") or {}
        bits = quant.get("load_in_4bit") or quant.get("load_in_8bit")
        if method == "qlora" and not bits:
            errors.append("qlora needs QuantizationConfig with load_in_4bit or load_in_8bit")
        if method == "lora" and bits:
            errors.append("lora must not load the model in 4 or 8 bits (that is qlora)")
    for adapter in (inference or {}).get("adapters") or []:
        source = adapter.get("source") or {}
        if not source.get("name") or not (source.get("image") or source.get("urls")):
            errors.append("each adapter needs a source with a name and an image")
        try:
            strength = float(adapter.get("strength", "1.0"))
        except ValueError:
            strength = -1
        if not 0 <= strength <= 1:
            errors.append(f"adapter strength must be a number from 0 to 1, got {adapter.get('strength')!r}")
    return errors


def training_config_of(configmap: dict) -> dict:
    return yaml.safe_load(configmap["data"]["training_config.yaml"])
