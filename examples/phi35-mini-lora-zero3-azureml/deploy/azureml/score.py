"""Scoring script of the Azure ML online deployment: init() loads the merged model once, run() answers one
chat request. Request: {"messages": [{"role": "user", "content": "..."}], "max_new_tokens": 256,
"temperature": 0}. Answer: {"choices": [{"message": {"role": "assistant", "content": "..."}}], "usage": {...}};
a bad request gets {"error": "..."} instead."""

from __future__ import annotations

import json
import os
from pathlib import Path

MAX_NEW_TOKENS = 2048
model = None
tokenizer = None


def model_folder(root: Path) -> Path:
    """Azure ML mounts the registered model under AZUREML_MODEL_DIR, one or two folders down."""
    found = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    if not found:
        raise FileNotFoundError(f"no config.json under {root}")
    return found[0].parent


def init() -> None:
    global model, tokenizer
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder = model_folder(Path(os.environ["AZUREML_MODEL_DIR"]))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    # an image-text checkpoint AutoModelForCausalLM has no class for (Mistral Small 3.x) answers text as well
    text_only = AutoConfig.from_pretrained(folder).model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    loader = AutoModelForCausalLM if text_only else AutoModelForImageTextToText
    model = loader.from_pretrained(folder, dtype=dtype, device_map="auto" if cuda else None)
    model.eval()


def parse(raw_data: str) -> tuple[list[dict], int, float]:
    request = json.loads(raw_data)
    if not isinstance(request, dict):
        raise ValueError("the request must be a JSON object")  # noqa: TRY004  run() answers a ValueError as a bad request
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content}")
    for message in messages:
        if (
            not isinstance(message, dict)
            or message.get("role") not in ("system", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            raise ValueError("each message needs a role (system, user or assistant) and a text content")
    max_new_tokens = request.get("max_new_tokens", 256)
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"'max_new_tokens' must be a whole number from 1 to {MAX_NEW_TOKENS}")
    temperature = request.get("temperature", 0)
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError("'temperature' must be a number of at least 0")
    return messages, max_new_tokens, float(temperature)


def run(raw_data: str) -> dict:
    import torch

    try:
        messages, max_new_tokens, temperature = parse(raw_data)
    except (ValueError, json.JSONDecodeError) as error:
        return {"error": str(error)}
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
    new = out[0, inputs["input_ids"].shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if len(new) >= max_new_tokens else "stop",
            }
        ],
        "usage": {"prompt_tokens": int(inputs["input_ids"].shape[1]), "completion_tokens": len(new)},
    }
