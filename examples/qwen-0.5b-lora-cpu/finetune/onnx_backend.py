"""ONNX Runtime GenAI as a generation backend: the model optimize.py exported (merged, or a base with
.onnx_adapter files), for chat.py, serve.py, eval.py and benchmark.py. Rendered with an ONNX target."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from finetune.decoding import LOGPROBS, Settings
from finetune.inference import AdapterError, Backend, cores_allowed, log_softmax, model_name


class OnnxBackend(Backend):
    name = "onnx"
    supports = frozenset({LOGPROBS})

    def __init__(self, model_path: str, adapters: dict[str, str] | None = None, template_kwargs: dict | None = None):
        """adapters: NAME -> .onnx_adapter file, all loaded once on the one base (default: the adapter
        optimize.py exported with the model, if any: a base exported with separate adapters needs one to run)."""
        import onnxruntime_genai as og

        if not (Path(model_path) / "genai_config.json").exists():
            raise FileNotFoundError(f"no ONNX model in {model_path}: run python optimize.py first")
        self.og = og
        config = og.Config(model_path)
        if threads := cores_allowed():
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        if not adapters:
            found = Path(model_path) / "adapter_weights.onnx_adapter"
            found = found if found.exists() else next(iter(sorted(Path(model_path).glob("*.onnx_adapter"))), None)
            adapters = {"tuned": str(found)} if found else {}
        self.adapters = None
        if adapters:
            self.adapters = og.Adapters(self.model)
            for name, path in adapters.items():
                if not Path(path).is_file():
                    raise AdapterError(f"adapter {name}: no file {path} (python optimize.py --adapter makes one)")
                self.adapters.load(str(path), name)
        self.models = list(adapters) or [model_name(str(Path(model_path).resolve()))]
        self.active = self.models[0]
        self.usage = (0, 0)
        self.finish_reason = "stop"
        self.sampling: dict = {}
        genai_config = json.loads((Path(model_path) / "genai_config.json").read_text())
        self.context_length = int(genai_config["model"].get("context_length") or 1 << 20)
        eos = genai_config["model"].get("eos_token_id", [])
        self.end_ids = frozenset(eos if isinstance(eos, list) else [eos])
        self.template_kwargs = template_kwargs or {}
        # ONNX Runtime GenAI's template engine takes no arguments such as enable_thinking, nor tools: with any, the
        # exported tokenizer's own template is rendered by transformers, as in training (loaded once, not per prompt)
        self.model_path, self.chat_tokenizer = model_path, None
        if self.template_kwargs:
            self.use_transformers_template()

    def use_transformers_template(self) -> None:
        from finetune.modeling import load_tokenizer

        self.chat_tokenizer = load_tokenizer(self.model_path)

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        if tools and self.chat_tokenizer is None:
            self.use_transformers_template()
        if self.chat_tokenizer is not None:
            prompt = self.chat_tokenizer.apply_chat_template(
                messages, tools=tools or None, tokenize=False, add_generation_prompt=True, **self.template_kwargs
            )
        else:
            prompt = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        return list(self.tokenizer.encode(prompt))

    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def pieces(self):
        decoder = self.tokenizer.create_stream()
        return lambda token: "" if token is None else decoder.decode(token)

    def _generator(
        self, ids: list[int], max_new_tokens: int, settings: Settings | None = None, min_new_tokens: int = 0
    ):
        """A generator over ids (settings: greedy by default; min_new_tokens: generate past the end token)."""
        settings = settings or Settings()
        params = self.og.GeneratorParams(self.model)
        options = {"max_length": len(ids) + max_new_tokens, "do_sample": bool(settings.sampling)}
        if settings.seed is not None:
            options["random_seed"] = settings.seed
        if min_new_tokens:
            options["min_length"] = len(ids) + min_new_tokens
        params.set_search_options(**options, **settings.sampling)
        generator = self.og.Generator(self.model, params)
        if self.adapters is not None:
            generator.set_active_adapter(self.adapters, self.active)
        generator.append_tokens(ids)
        return generator

    def _steps(self, ids: list[int], max_new_tokens: int, settings: Settings) -> Iterator[tuple[int, object]]:
        generator = self._generator(ids, max_new_tokens, settings)
        while not generator.is_done():
            generator.generate_next_token()
            logits = generator.get_logits() if settings.top_logprobs is not None else None
            yield int(generator.get_next_tokens()[0]), logits

    def log_probs(self, rows: list[list[int]]) -> Iterator:
        """Each row's log-probabilities of the next token at every position but the last (eval's perplexity)."""
        import numpy as np

        for ids in rows:
            params = self.og.GeneratorParams(self.model)
            params.set_search_options(max_length=len(ids) + 1)
            generator = self.og.Generator(self.model, params)
            if self.adapters is not None:
                generator.set_active_adapter(self.adapters, self.active)
            generator.append_tokens(ids)
            yield log_softmax(np.asarray(generator.get_output("logits"))[0, :-1])

    def generate_ids(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding; the new token ids, ending at the end token."""
        return [token for token, _ in self._steps(ids, max_new_tokens, Settings())]


def find_model(config: dict) -> str | None:
    """The first ONNX Runtime GenAI model an olive/*.json workflow wrote to its output_dir, if optimize.py made one."""
    for workflow in sorted(Path("olive").glob("*.json")):
        out = Path(json.loads(workflow.read_text(encoding="utf-8"))["output_dir"])
        if (out / "genai_config.json").is_file():
            return str(out)
    return None


def load(model_path: str | None, config: dict, adapters: dict | None, template_kwargs: dict | None) -> OnnxBackend:
    model_path = model_path or find_model(config)
    if not model_path:
        raise FileNotFoundError(
            "no ONNX model where olive/*.json writes one (output_dir): run python optimize.py first"
        )
    return OnnxBackend(model_path, adapters, template_kwargs=template_kwargs)


BACKEND = OnnxBackend
