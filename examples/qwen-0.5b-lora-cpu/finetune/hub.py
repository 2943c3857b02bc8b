"""Where a model comes from: a local folder, or the Hugging Face hub, which may be out of reach.

Loading from an unreachable hub otherwise retries for about a minute and ends in a library traceback;
here it ends at once in one sentence that says which model, why, and how to train from a local copy.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from pathlib import Path

LOCAL_HINT = (
    "train from a local copy instead: python train.py model.name_or_path=/path/to/folder (a folder "
    "with config.json, the weights and the tokenizer), or regenerate with tuneforge --set model=/path/to/folder"
)


class ModelUnavailable(FileNotFoundError):
    """The model cannot be loaded; the message says why and what to do."""


def is_local(name: str) -> bool:
    return Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") != 1


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers at all (through a proxy, assume it does and let the request say)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def go_offline_if_unreachable(name: str) -> None:
    """Before loading a hub model: with the hub out of reach, read only the local cache, without retries."""
    if is_local(name) or os.environ.get("HF_HUB_OFFLINE") == "1" or hub_reachable():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def explain(name: str, error: Exception) -> str:
    text = str(error)
    if is_local(name):
        if not Path(name).expanduser().exists():
            return (
                f"model folder {name} not found; point model.name_or_path at a folder with config.json and the weights"
            )
        return f"model folder {name} could not be loaded ({text.splitlines()[0] if text else type(error).__name__})"
    if "gated" in text.lower() or " 401" in text or " 403" in text:
        token = (
            "HF_TOKEN is set, but its account has not accepted"
            if os.environ.get("HF_TOKEN")
            else "HF_TOKEN is not set; accept"
        )
        return f"model {name} is gated: {token} its licence on its Hugging Face page, then export HF_TOKEN=hf_...; or {LOCAL_HINT}"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or "connect" in text.lower() or "offline" in text.lower():
        return f"model {name} cannot be fetched: the Hugging Face hub is out of reach and it is not in the local cache; {LOCAL_HINT}"
    if "not a valid model identifier" in text or "404" in text or "does not appear to have" in text:
        return f"model {name} was not found on the Hugging Face hub: check the id (owner/name), or {LOCAL_HINT}"
    return (
        f"model {name} could not be loaded ({text.splitlines()[0] if text else type(error).__name__}); or {LOCAL_HINT}"
    )


def from_pretrained(loader, name: str, **kwargs):
    """loader.from_pretrained(name), with ModelUnavailable in place of the libraries' errors."""
    go_offline_if_unreachable(name)
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelUnavailable(explain(name, error)) from None


def base_model_of(adapter_dir: str | Path) -> str | None:
    """The base model an adapter was trained on, as peft recorded it; None for a full model."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")


def model_file(name: str, filename: str) -> Path | None:
    """One file of a model (a local folder, or a hub id: from the local cache when the hub is out of reach); None
    when the model has no such file or it cannot be had."""
    if is_local(name):
        path = Path(name).expanduser() / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    go_offline_if_unreachable(name)
    try:
        return Path(hf_hub_download(name, filename))
    except (OSError, ValueError, EntryNotFoundError):
        return None
