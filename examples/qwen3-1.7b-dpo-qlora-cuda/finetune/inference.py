"""Generation backends shared by chat.py, serve.py and benchmark.py: PyTorch (merged model, or base +
adapter) and ONNX Runtime GenAI. Each streams text pieces and records token counts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator


def sampling_options(generation: dict) -> dict:
    """Sampling settings from the config's generation section; empty (greedy decoding) when temperature is 0."""
    temperature = float(generation.get("temperature") or 0)
    if temperature <= 0:
        return {}
    return {"temperature": temperature, "top_p": float(generation.get("top_p") or 1.0)}


class PytorchBackend:
    name = "pytorch"

    def __init__(self, model_path: str, repetition_penalty: float = 1.0, template_kwargs: dict | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        from finetune.hub import base_model_of, from_pretrained, is_local
        from finetune.modeling import load_tokenizer

        if is_local(model_path) and not Path(model_path).is_dir():
            raise FileNotFoundError(f"{model_path} not found: train (python train.py) and merge (python merge.py) first")
        self.tokenizer = load_tokenizer(model_path)
        base = base_model_of(model_path)
        if base is not None:
            from peft import PeftModel

            # the base the adapter was trained on, as recorded with it: one override at train time is enough
            self.model = PeftModel.from_pretrained(from_pretrained(AutoModelForCausalLM, base, dtype=torch.float32), model_path)
        else:
            self.model = from_pretrained(AutoModelForCausalLM, model_path, dtype=torch.float32)
        self.model.eval()
        self.repetition_penalty = repetition_penalty
        self.template_kwargs = template_kwargs or {}  # as in training (data.chat_template_kwargs), e.g. enable_thinking
        self.sampling: dict = {}  # greedy unless set (chat.py sets the config's generation settings)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 20)
        self.max_seconds: float | None = None  # a bound on one generation's time (serve.py sets it)
        self.usage = (0, 0)
        self.finish_reason = "stop"

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                                  **self.template_kwargs)["input_ids"]

    def stream(self, messages: list[dict], max_new_tokens: int, ids: list[int] | None = None) -> Iterator[str]:
        from threading import Thread

        from transformers import TextIteratorStreamer

        ids = ids if ids is not None else self.prompt_ids(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: list[list[int]] = []
        started = time.monotonic()
        thread = Thread(target=lambda: result.append(self.generate_ids(ids, max_new_tokens, streamer)))
        thread.start()
        yield from streamer
        thread.join()
        tokens = result[0] if result else []
        self.usage = (len(ids), len(tokens))
        ended = bool(tokens) and tokens[-1] == self.tokenizer.eos_token_id
        timed_out = self.max_seconds is not None and time.monotonic() - started >= self.max_seconds
        self.finish_reason = "stop" if ended or (len(tokens) < max_new_tokens and not timed_out) else "length"

    def generate_ids(self, ids: list[int], max_new_tokens: int, streamer=None) -> list[int]:
        """Greedy decoding; the new token ids, ending at EOS."""
        import torch

        with torch.no_grad():
            out = self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=max_new_tokens, do_sample=bool(self.sampling), streamer=streamer,
                                      max_time=self.max_seconds, **self.sampling,
                                      repetition_penalty=self.repetition_penalty,
                                      eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id)
        return out[0, len(ids):].tolist()


class OnnxBackend:
    name = "onnx"

    def __init__(self, model_path: str, adapter: str | None = None, template_kwargs: dict | None = None):
        import onnxruntime_genai as og

        if not (Path(model_path) / "genai_config.json").exists():
            raise FileNotFoundError(f"no ONNX model in {model_path}: run python optimize.py first")
        self.og = og
        self.model = og.Model(model_path)
        self.tokenizer = og.Tokenizer(self.model)
        if adapter is None:
            # a base model exported with separate adapters needs one active to run
            adapter = next((str(p) for p in sorted(Path(model_path).glob("*.onnx_adapter"))), None)
        self.adapters = None
        if adapter:
            self.adapters = og.Adapters(self.model)
            self.adapters.load(adapter, "tuned")
        self.usage = (0, 0)
        self.finish_reason = "stop"
        self.sampling: dict = {}
        genai_config = json.loads((Path(model_path) / "genai_config.json").read_text())
        self.context_length = int(genai_config["model"].get("context_length") or 1 << 20)
        self.max_seconds: float | None = None
        self.template_kwargs = template_kwargs or {}
        # ONNX Runtime GenAI's template engine takes no arguments such as enable_thinking: with any, the exported
        # tokenizer's own template is rendered by transformers, as in training (loaded once, not per prompt)
        self.chat_tokenizer = None
        if self.template_kwargs:
            from finetune.modeling import load_tokenizer

            self.chat_tokenizer = load_tokenizer(model_path)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        if self.chat_tokenizer is not None:
            prompt = self.chat_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                             **self.template_kwargs)
        else:
            prompt = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        return list(self.tokenizer.encode(prompt))

    def _generator(self, ids: list[int], max_new_tokens: int):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=bool(self.sampling), **self.sampling)
        generator = self.og.Generator(self.model, params)
        if self.adapters is not None:
            generator.set_active_adapter(self.adapters, "tuned")
        generator.append_tokens(ids)
        return generator

    def stream(self, messages: list[dict], max_new_tokens: int, ids: list[int] | None = None) -> Iterator[str]:
        ids = ids if ids is not None else self.prompt_ids(messages)
        generator = self._generator(ids, max_new_tokens)
        decoder = self.tokenizer.create_stream()
        count = 0
        deadline = time.monotonic() + self.max_seconds if self.max_seconds else None
        out_of_time = False
        while not generator.is_done():
            if deadline and time.monotonic() > deadline:
                out_of_time = True
                break
            generator.generate_next_token()
            count += 1
            yield decoder.decode(generator.get_next_tokens()[0])
        self.usage = (len(ids), count)
        self.finish_reason = "length" if out_of_time or count >= max_new_tokens else "stop"

    def generate_ids(self, ids: list[int], max_new_tokens: int) -> list[int]:
        generator = self._generator(ids, max_new_tokens)
        out = []
        while not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        return out


def find_onnx_model() -> str | None:
    """The first ONNX Runtime GenAI model under outputs/onnx/, if optimize.py made one."""
    found = sorted(Path("outputs/onnx").glob("*/genai_config.json"))
    return str(found[0].parent) if found else None


def default_onnx_model() -> str:
    found = find_onnx_model()
    if not found:
        raise FileNotFoundError("no ONNX model under outputs/onnx/: run python optimize.py first")
    return found


def default_pytorch_model(config: dict) -> str:
    merged = Path(config["merge"]["output_dir"])
    return str(merged if merged.is_dir() else Path(config["merge"]["adapter_dir"]))


def load_backend(backend: str, model_path: str | None, config: dict, adapter: str | None = None):
    template_kwargs = config.get("data", {}).get("chat_template_kwargs")
    if backend == "onnx":
        return OnnxBackend(model_path or default_onnx_model(), adapter, template_kwargs=template_kwargs)
    if model_path is None:
        model_path = default_pytorch_model(config)
        if not Path(model_path).is_dir():  # a folder of this workspace, never a hub id
            raise FileNotFoundError(f"{model_path} not found: train (python train.py) and merge (python merge.py) first")
    return PytorchBackend(model_path, template_kwargs=template_kwargs)
