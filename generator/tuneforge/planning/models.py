"""Resolve the `model` answer (catalog id, Hugging Face id, or local folder) to the facts the plan needs."""

from __future__ import annotations

import functools
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tuneforge import catalog
from tuneforge.planning.answers import AnswerError, suggest
from tuneforge.planning.shapes import count_parameters, tower_parameters

# what the hub accepts as a repository id: owner/name of letters, digits, '-', '_' and '.'
HF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
SHAPE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "tie_word_embeddings",
    "partial_rotary_factor",
    "head_dim",
)


def from_catalog(model_id: str, entry: dict) -> dict:
    """A catalog model's facts; its entry's `source` (where the facts were read) is the catalog's citation, while the
    facts' source says where the model comes from: the catalog."""
    return with_architecture({"id": model_id, **{k: v for k, v in entry.items() if k != "source"}, "source": "catalog"})


def resolve_model(value: str) -> dict:
    """Return the model's facts: id, hf_id (or local path), architecture, params_b, shape, ..."""
    models = catalog.load("models")
    if value in models:
        return from_catalog(value, models[value])
    found = catalog.model_by_hf_id(value)
    if found:
        return from_catalog(*found)
    path = Path(value).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise AnswerError("model", f"the folder {path} has no config.json, so its architecture is unknown")
        facts = facts_from_config(_read_json(config_file), hf_id=str(path.resolve()), source="local")
        template = chat_template_text(path)
        return with_architecture(
            {**facts, "chat_template": template is not None, "tool_calls": tool_calls_in(template)}
        )
    if value.count("/") == 1 and not value.startswith((".", "/", "~")):
        if not HF_ID.fullmatch(value) or ".." in value:
            raise AnswerError(
                "model",
                f"{value!r} is neither a local folder nor a Hugging Face id (owner/name, of "
                "letters, digits, '-', '_' and '.'); check the spelling, or give a local folder holding config.json",
            )
        return with_architecture(_hub_facts(value))
    raise AnswerError(
        "model",
        f"unknown model {value!r}.{suggest(value, list(models))} Give a catalog id (see `tuneforge catalog models`), "
        "a Hugging Face id such as microsoft/Phi-3-mini-4k-instruct, or a local folder holding config.json.",
    )


def chat_template_text(folder: Path) -> str | None:
    """A model folder's chat template (chat_template.jinja, chat_template.json or tokenizer_config.json's), or None."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8", errors="replace")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            template = _read_json(folder / name).get("chat_template")
            if template:
                return template if isinstance(template, str) else json.dumps(template)
    return None


def tool_calls_in(template: str | None) -> str | None:
    """The tool-call format a chat template writes (tool_calls.yaml's detect strings), or None when it has none."""
    if not template or "tool" not in template:
        return None
    found = (name for name, spec in catalog.load("tool_calls").items() if any(d in template for d in spec["detect"]))
    return next(found, None)


def tool_fallback(facts: dict) -> dict:
    """The facts of a model trained for the tools scenario: its own template's tool-call format where it has one,
    else its family's turns from chat_formats.yaml, which write hermes calls (said as fallback_chat_template's why)."""
    if facts.get("tool_calls"):
        return facts
    return family_turns(facts, "its chat template has no tool calls")


def family_turns(facts: dict, why: str) -> dict:
    """The facts with the turns of the model's family from chat_formats.yaml (its architecture's chat_format,
    else ChatML) as the workspace's chat template, and the tool-call format those turns write."""
    name = catalog.load("architectures")[facts["architecture"]].get("chat_format", "chatml")
    fallback = {"format": name, "why": why, **catalog.load("chat_formats")[name]}
    return {**facts, "fallback_chat_template": fallback, "tool_calls": tool_format(fallback["tool_calls"])}


def tool_format(name: str | dict | None) -> dict | None:
    """A tool-call format by name, as {format, start, end, list, arguments, ...} (tool_calls.yaml)."""
    if name is None or isinstance(name, dict):
        return name
    return {"format": name, **catalog.load("tool_calls")[name]}


def with_architecture(facts: dict) -> dict:
    """The model's facts with what its architecture implies (LoRA targets, experts, the smoke test's tiny model),
    and, for a model whose tokenizer has no chat template (a catalog entry's chat_template: false, a local folder
    without one), the turns the workspace gives it instead (chat_formats.yaml)."""
    known = catalog.load("architectures")[facts["architecture"]]
    if facts.get("chat_template", True) is False:
        facts = family_turns(facts, "its tokenizer has no chat template")
    else:
        facts = {**facts, "tool_calls": tool_format(facts.get("tool_calls"))}
    return {
        "lora_target_modules": known["lora_target_modules"],
        **facts,
        "moe": "moe" in known,
        "lora_target_parameters": known.get("lora_target_parameters", []),
        "attn_implementation": known.get("attn_implementation", "sdpa"),
        "thinking": bool(known.get("thinking")),
        "image_text": known.get("image_text", {}),
        "tiny": known.get("tiny", {}),
    }


def _read_json(path: Path) -> dict:
    try:
        if path.stat().st_size > 10 << 20:
            raise AnswerError("model", f"{path} is larger than 10 MB; a model's config.json is a few kB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AnswerError("model", f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise AnswerError("model", f"{path} is not UTF-8 text, so not a model's config.json") from None
    except json.JSONDecodeError as error:
        raise AnswerError("model", f"{path} line {error.lineno}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise AnswerError("model", f"{path} is nested too deeply to be a model's config.json") from None
    if not isinstance(data, dict):
        raise AnswerError(
            "model",
            f"{path} holds a JSON {type(data).__name__}; a model's config.json is an object "
            "with model_type, hidden_size, num_hidden_layers, ...",
        )
    return data


@functools.cache
def _hub_facts(hf_id: str) -> dict:
    """A hub model's facts from its config.json and the hub's model API, fetched once per process (the form
    resolves a plan for every choice it shows)."""
    facts = facts_from_config(_fetch_hub_config(hf_id), hf_id=hf_id, source="hub")
    return {**facts, "gated": _hub_gated(hf_id)}


def _hub_json(url: str):
    """The JSON at a hub URL, with HF_TOKEN when it is set; urllib's and json's errors pass through."""
    request = urllib.request.Request(url)
    if token := os.environ.get("HF_TOKEN"):
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read(10 << 20))


def _fetch_hub_config(hf_id: str) -> dict:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise AnswerError(
            "model",
            f"{hf_id!r} is not in the catalog and HF_HUB_OFFLINE=1, so its config.json "
            "cannot be fetched; use a catalog id or a local folder",
        )
    try:
        config = _hub_json(f"https://huggingface.co/{hf_id}/resolve/main/config.json")
    except urllib.error.HTTPError as error:
        hint = " (gated: accept its licence on the hub and set HF_TOKEN)" if error.code in (401, 403) else ""
        raise AnswerError(
            "model", f"cannot read {hf_id}'s config.json from the Hugging Face hub: HTTP {error.code}{hint}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as error:
        raise AnswerError(
            "model",
            f"{hf_id!r} is not in the catalog and its config.json could not be fetched ({error}); "
            "give a local folder holding config.json instead",
        ) from None
    if not isinstance(config, dict):
        raise AnswerError("model", f"{hf_id}'s config.json is not a JSON object")
    return config


def _hub_gated(hf_id: str) -> bool | None:
    """Whether the hub asks for a licence to be accepted before download (its API's "gated": false, "auto" or
    "manual"); None when the hub does not say."""
    try:
        info = _hub_json(f"https://huggingface.co/api/models/{hf_id}")
    except (urllib.error.URLError, TimeoutError, OSError, ValueError):
        return None
    return bool(info.get("gated")) if isinstance(info, dict) and "gated" in info else None


def facts_from_config(config: dict, hf_id: str, source: str) -> dict:
    architecture = config.get("model_type")
    known = catalog.load("architectures")
    if not isinstance(architecture, str) or architecture not in known:
        raise AnswerError(
            "model", f"{hf_id}: architecture {architecture!r} is not supported; supported: {', '.join(known)}"
        )
    vision = 0
    if known[architecture].get("image_text"):  # the language model's shape is its text_config's
        text, tower = config.get("text_config"), config.get("vision_config")
        if not isinstance(text, dict):
            raise AnswerError(
                "model", f"{hf_id}: config.json of an image-text model ({architecture}) lacks its text_config"
            )
        vision = vision_parameters(tower) if isinstance(tower, dict) else 0
        # whether the head shares the embeddings is the whole model's setting where config.json gives one
        config = {**config, **text, **{k: config[k] for k in ("tie_word_embeddings",) if k in config}}
    shape = {k: config[k] for k in SHAPE_KEYS if k in config and config[k] is not None}
    if known[architecture].get("moe"):  # each family spells its experts its own way (architectures.yaml)
        shape.update({ours: config.get(theirs) for ours, theirs in known[architecture]["moe"].items()})
    shape.setdefault("num_key_value_heads", shape.get("num_attention_heads"))
    shape.setdefault(
        "tie_word_embeddings", known[architecture].get("config_defaults", {}).get("tie_word_embeddings", False)
    )
    counts = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        *(k for k in ("head_dim", "experts", "experts_per_token", "expert_intermediate_size") if k in shape),
    )
    missing = [k for k in counts if k not in shape]
    if missing:
        raise AnswerError("model", f"{hf_id}: config.json lacks {', '.join(missing)}")
    bad = [
        f"{k}={shape[k]!r}"
        for k in counts
        if isinstance(shape[k], bool) or not isinstance(shape[k], int) or not 0 < shape[k] < 10**9
    ]
    if bad:
        raise AnswerError("model", f"{hf_id}: config.json has {', '.join(bad)}; each must be a positive whole number")
    if (shape["hidden_size"] % shape["num_attention_heads"] and "head_dim" not in shape) or shape[
        "num_attention_heads"
    ] % shape["num_key_value_heads"]:
        raise AnswerError(
            "model",
            f"{hf_id}: config.json's hidden_size {shape['hidden_size']}, num_attention_heads "
            f"{shape['num_attention_heads']} and num_key_value_heads {shape['num_key_value_heads']} "
            "do not divide evenly, so it is not a model these tools can load",
        )
    context = config.get("max_position_embeddings", 4096)
    if isinstance(context, bool) or not isinstance(context, int) or context < 16:
        raise AnswerError(
            "model",
            f"{hf_id}: config.json has max_position_embeddings={context!r}; it must be a whole number of at least 16",
        )
    return {
        "id": Path(hf_id).name.lower() if source == "local" else hf_id.split("/")[-1].lower(),
        "source": source,
        "hf_id": hf_id,
        "family": architecture,
        "architecture": architecture,
        "params_b": round((count_parameters(shape) + vision) / 1e9, 3),
        **({"active_params_b": round(count_parameters(shape, active=True) / 1e9, 3)} if "experts" in shape else {}),
        "shape": shape,
        "context_length": context,
        "gated": False,  # a local folder needs no hub; for a hub model resolve_model asks the hub
    }


def vision_parameters(vision_config: dict) -> int:
    """About how many weights a vision tower has (its transformer layers: attention and a two-matrix MLP), 0 when
    its config does not say."""
    sizes = [vision_config.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 10**6 for n in sizes):
        return 0
    return tower_parameters(vision_config)
