"""Generation backends shared by chat.py, serve.py and benchmark.py: PyTorch (merged model, or base +
adapters) and ONNX Runtime GenAI (model, or base + .onnx_adapter files). Each streams text pieces and
records token counts. A backend holding several adapters on one base answers as the one `select` names."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path


class AdapterError(ValueError):
    """An adapter that cannot be served: missing, or trained on another base."""


def sampling_options(generation: dict) -> dict:
    """Sampling settings from the config's generation section; empty (greedy decoding) when temperature is 0."""
    temperature = float(generation.get("temperature") or 0)
    if temperature <= 0:
        return {}
    return {"temperature": temperature, "top_p": float(generation.get("top_p") or 1.0)}


def model_name(path: str) -> str:
    """The name a model folder or hub id is known by: its last part."""
    return str(path).rstrip("/\\").replace("\\", "/").split("/")[-1]


def check_adapters(adapters: dict[str, str], base: str | None = None) -> str:
    """The base every PEFT adapter folder in adapters was trained on (the same for all), or AdapterError."""
    from finetune.hub import base_model_of

    for name, path in adapters.items():
        trained_on = base_model_of(path)
        if trained_on is None:
            raise AdapterError(f"adapter {name}: {path} holds no adapter_config.json (a folder train.py wrote)")
        base = base or trained_on
        if model_name(trained_on) != model_name(base):
            raise AdapterError(f"adapter {name} was trained on {trained_on}, not {base}: serve it on its own base")
    return base


class Backend:
    """What every backend shares: the names it answers as (models; select picks one, loading nothing) and
    prompts built by the Hugging Face tokenizer's chat template, as in training."""

    models: list[str]
    active: str
    tokenizer = None
    template_kwargs: dict = {}  # noqa: RUF012  never changed in place: each backend's __init__ sets its own

    def select(self, name: str) -> None:
        if name not in self.models:
            raise KeyError(name)
        self.active = name

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, **self.template_kwargs
        )["input_ids"]


class PytorchBackend(Backend):
    name = "pytorch"

    def __init__(
        self,
        model_path: str | None,
        repetition_penalty: float = 1.0,
        template_kwargs: dict | None = None,
        adapters: dict[str, str] | None = None,
    ):
        """model_path: a merged model, an adapter folder, or (with adapters: NAME -> adapter folder) the base
        they share (default: the base recorded with them), loaded once."""
        import torch

        from finetune.hub import base_model_of, from_pretrained, is_local
        from finetune.modeling import load_tokenizer, model_class

        adapters = dict(adapters or {})
        if model_path is not None and base_model_of(model_path) is not None and not adapters:
            # an adapter folder: served on the base the adapter was trained on, as recorded with it
            adapters = {"tuned": model_path}
            model_path = None
        if adapters:
            model_path = check_adapters(adapters, model_path)
        if is_local(model_path) and not Path(model_path).is_dir():
            raise FileNotFoundError(
                f"{model_path} not found: train (python train.py) and merge (python merge.py) first"
            )
        self.tokenizer = load_tokenizer(next(iter(adapters.values()), model_path))
        self.model = from_pretrained(model_class(model_path), model_path, dtype=torch.float32)
        self.base_name = model_name(model_path)
        if adapters:
            from peft import PeftModel

            names = list(adapters)
            if self.base_name in names:
                raise AdapterError(f"adapter name {self.base_name} is the base model's: give the adapter another name")
            self.model = PeftModel.from_pretrained(self.model, adapters[names[0]], adapter_name=names[0])
            for name in names[1:]:
                self.model.load_adapter(adapters[name], adapter_name=name)
            self.model.set_adapter(names[0])
        # what select() can choose: each adapter by its name, then the base alone
        self.models = [*adapters, self.base_name] if adapters else [self.base_name]
        self.active = self.models[0]
        self.model.eval()
        self.repetition_penalty = repetition_penalty
        self.template_kwargs = template_kwargs or {}  # as in training (data.chat_template_kwargs), e.g. enable_thinking
        self.sampling: dict = {}  # greedy unless set (chat.py sets the config's generation settings)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 20)
        self.max_seconds: float | None = None  # a bound on one generation's time (serve.py sets it)
        self.usage = (0, 0)
        self.finish_reason = "stop"

    def select(self, name: str) -> None:
        """Answer as this adapter, or as the base alone; no weights are loaded."""
        super().select(name)
        if name != self.base_name:
            self.model.set_adapter(name)

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

        bare = self.active == self.base_name and hasattr(self.model, "disable_adapter")
        with torch.no_grad(), self.model.disable_adapter() if bare else contextlib.nullcontext():
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=max_new_tokens,
                do_sample=bool(self.sampling),
                streamer=streamer,
                max_time=self.max_seconds,
                **self.sampling,
                repetition_penalty=self.repetition_penalty,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return out[0, len(ids) :].tolist()


def cores_allowed() -> int | None:
    """The threads OMP_NUM_THREADS allows this process (as PyTorch reads it), for ONNX Runtime and llama.cpp too;
    None: each runtime's own default."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class OnnxBackend(Backend):
    name = "onnx"

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
            prompt = self.chat_tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **self.template_kwargs
            )
        else:
            prompt = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        return list(self.tokenizer.encode(prompt))

    def _generator(self, ids: list[int], max_new_tokens: int, min_new_tokens: int = 0):
        params = self.og.GeneratorParams(self.model)
        at_least = {"min_length": len(ids) + min_new_tokens} if min_new_tokens else {}
        params.set_search_options(
            max_length=len(ids) + max_new_tokens, do_sample=bool(self.sampling), **at_least, **self.sampling
        )
        generator = self.og.Generator(self.model, params)
        if self.adapters is not None:
            generator.set_active_adapter(self.adapters, self.active)
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


class GgufBackend(Backend):
    """llama.cpp (llama-cpp-python) on a GGUF file optimize.py --target gguf wrote; prompts are built with the
    tokenizer files kept beside it, as in training."""

    name = "gguf"

    def __init__(
        self,
        model_path: str,
        template_kwargs: dict | None = None,
        context_length: int = 4096,
        threads: int | None = None,
    ):
        """context_length: the tokens llama.cpp keeps room for (its cache grows with it), capped at the model's."""
        import llama_cpp

        from finetune.modeling import load_tokenizer

        path = Path(model_path)
        if not path.is_file() or path.suffix != ".gguf":
            raise FileNotFoundError(f"no GGUF file {model_path}: run python optimize.py --target gguf first")
        self.tokenizer = load_tokenizer(str(path.parent))
        from finetune.gguf import output_to

        with output_to(Path(os.devnull)):  # llama.cpp warns that a vocabulary alone has no context length
            header = llama_cpp.Llama(str(path), vocab_only=True, verbose=False).metadata  # reads no weights
        trained = int(header.get(f"{header.get('general.architecture')}.context_length") or context_length)
        self.context_length = min(context_length, trained)
        threads = threads or cores_allowed()
        self.model = llama_cpp.Llama(str(path), n_ctx=self.context_length, n_threads=threads, verbose=False)
        atexit.register(self.model.close)  # freed before the interpreter tears llama_cpp down, not after
        self.end_ids = {self.model.token_eos(), *self.tokenizer.convert_tokens_to_ids([self.tokenizer.eos_token])}
        self.template_kwargs = template_kwargs or {}
        self.models = [path.stem]
        self.active = path.stem
        self.path = str(path)
        self._scorer = None
        self.sampling: dict = {}
        self.max_seconds: float | None = None
        self.usage = (0, 0)
        self.finish_reason = "stop"

    def scorer(self, length: int):
        """The model once more, keeping the logits of every position (eval.py's perplexity), for rows up to length."""
        import llama_cpp

        if self._scorer is None or self._scorer.n_ctx() < length:
            if self._scorer is not None:
                atexit.unregister(self._scorer.close)
                self._scorer.close()
            self._scorer = llama_cpp.Llama(self.path, n_ctx=length, n_batch=length, logits_all=True, verbose=False)
            atexit.register(self._scorer.close)
        return self._scorer

    def _tokens(self, ids: list[int], max_new_tokens: int) -> Iterator[int]:
        """The new token ids, ending at an end token (included), the token limit or the time limit."""
        options = (
            {"temp": self.sampling["temperature"], "top_p": self.sampling["top_p"]}
            if self.sampling
            else {"temp": 0.0, "top_k": 1}
        )
        deadline = time.monotonic() + self.max_seconds if self.max_seconds else None
        for count, token in enumerate(self.model.generate(ids, reset=True, repeat_penalty=1.0, **options), start=1):
            yield token
            if token in self.end_ids or count >= max_new_tokens or (deadline and time.monotonic() > deadline):
                return

    def stream(self, messages: list[dict], max_new_tokens: int, ids: list[int] | None = None) -> Iterator[str]:
        import codecs

        ids = ids if ids is not None else self.prompt_ids(messages)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two tokens
        tokens = []
        for token in self._tokens(ids, max_new_tokens):
            tokens.append(token)
            if token not in self.end_ids:
                yield decoder.decode(self.model.detokenize([token], special=False))
        yield decoder.decode(b"", final=True)
        self.usage = (len(ids), len(tokens))
        self.finish_reason = "stop" if tokens and tokens[-1] in self.end_ids else "length"

    def generate_ids(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding; the new token ids, ending at the end token, as PytorchBackend.generate_ids."""
        return list(self._tokens(ids, max_new_tokens))


def find_gguf_model() -> str | None:
    """The GGUF file chat.py and serve.py use by default: the first quantization optimize.py wrote."""
    found = sorted(Path("outputs/gguf").glob("*.gguf"), key=lambda p: (p.name.endswith("-F16.gguf"), p.name))
    return str(found[0]) if found else None


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


def load_backend(backend: str, model_path: str | None, config: dict, adapters: dict[str, str] | None = None):
    """The backend chat.py and serve.py answer with: model_path (default: this workspace's merged or ONNX
    model) or, with adapters (NAME -> path), the base they share with each adapter on it."""
    template_kwargs = config.get("data", {}).get("chat_template_kwargs")
    if backend == "gguf":
        if adapters:
            raise AdapterError(
                "the gguf backend serves the merged model; serve adapters with --backend pytorch or onnx"
            )
        model_path = model_path or find_gguf_model()
        if model_path is None:
            raise FileNotFoundError("no GGUF model under outputs/gguf/: run python optimize.py --target gguf first")
        context = max(4096, int(config.get("data", {}).get("max_length") or 0))
        return GgufBackend(model_path, template_kwargs=template_kwargs, context_length=context)
    if backend == "onnx":
        return OnnxBackend(model_path or default_onnx_model(), adapters, template_kwargs=template_kwargs)
    if model_path is None and not adapters:
        model_path = default_pytorch_model(config)
        if not Path(model_path).is_dir():  # a folder of this workspace, never a hub id
            raise FileNotFoundError(
                f"{model_path} not found: train (python train.py) and merge (python merge.py) first"
            )
    return PytorchBackend(model_path, template_kwargs=template_kwargs, adapters=adapters)


def compare_backends(config: dict) -> dict[str, tuple]:
    """What serve.py --compare serves, as {name: (backend, its name there)}: base and tuned in PyTorch (one model
    with the adapter switched off for the base, when training left an adapter; else the base model beside the
    tuned one), then the ONNX and GGUF models where optimize.py made them."""
    adapter = Path(config["merge"]["adapter_dir"])
    if (adapter / "adapter_config.json").is_file():
        both = load_backend("pytorch", None, config, {"tuned": str(adapter)})
        routes = {"base": (both, both.base_name), "tuned": (both, "tuned")}
    else:
        tuned = load_backend("pytorch", None, config)
        base = load_backend("pytorch", config["model"]["name_or_path"], config)
        routes = {"base": (base, base.models[0]), "tuned": (tuned, tuned.models[0])}
    if find_onnx_model():
        onnx = load_backend("onnx", None, config)
        routes["onnx"] = (onnx, onnx.models[0])
    if find_gguf_model():
        gguf = load_backend("gguf", None, config)
        routes["gguf"] = (gguf, gguf.models[0])
    return routes
