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

from finetune.decoding import GRAMMAR, LOGPROBS, PENALTIES, Settings, StopText, logprob_entry


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
    """What every backend shares: the names it answers as (models; select picks one, loading nothing), prompts
    built by the Hugging Face tokenizer's chat template, as in training, and one loop over the tokens a backend
    generates that ends the answer (end token, token limit, time limit, stop sequence) and counts it alike."""

    models: list[str]
    active: str
    tokenizer = None
    template_kwargs: dict = {}  # noqa: RUF012  never changed in place: each backend's __init__ sets its own
    supports: frozenset[str] = frozenset()  # the optional settings it honours (finetune.decoding)
    end_ids: frozenset[int] = frozenset()
    max_seconds: float | None = None  # a bound on one generation's time (serve.py sets it)

    def select(self, name: str) -> None:
        if name not in self.models:
            raise KeyError(name)
        self.active = name

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, **self.template_kwargs
        )["input_ids"]

    def text_ids(self, text: str) -> list[int]:
        """A raw prompt's tokens, no chat template (serve.py's /v1/completions)."""
        return self.tokenizer(text)["input_ids"]

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def pieces(self):
        """A function from each new token to the text it adds (None at the end: what is left); text is held back
        while a character is incomplete, and a newline starts afresh so that decoding stays cheap."""
        tokens: list[int] = []
        said = ""

        def piece(token: int | None) -> str:
            nonlocal said
            if token is None:
                return ""
            tokens.append(token)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                return ""
            new = text.removeprefix(said)
            said = text
            if text.endswith("\n"):
                tokens.clear()
                said = ""
            return new

        return piece

    def stream(
        self, messages: list[dict], max_new_tokens: int, ids: list[int] | None = None, settings: Settings | None = None
    ) -> Iterator[str]:
        """The answer's text as it is generated (settings: this answer's own, else the backend's sampling); then
        usage is (prompt tokens, completion tokens), finish_reason "stop" or "length", and logprobs one entry per
        token when settings ask for them."""
        settings = settings or Settings(sampling=self.sampling)
        ids = ids if ids is not None else self.prompt_ids(messages)
        self.logprobs: list[dict] = []
        stops, piece = StopText(settings.stop), self.pieces()
        deadline = time.monotonic() + self.max_seconds if self.max_seconds else None
        count, reason, stopped = 0, "length", False
        steps = self._steps(ids, max_new_tokens, settings)
        try:
            for token, logits in steps:
                count += 1
                if token in self.end_ids:
                    reason = "stop"
                    break
                if settings.top_logprobs is not None:
                    self.logprobs.append(logprob_entry(logits, token, settings.top_logprobs, self.token_text))
                text, stopped = stops.feed(piece(token))
                if text:
                    yield text
                if stopped:
                    reason = "stop"
                    break
                if count >= max_new_tokens or (deadline is not None and time.monotonic() > deadline):
                    break
            else:
                reason = "length" if count >= max_new_tokens else "stop"
            if not stopped and (rest := stops.feed(piece(None))[0] + stops.flush()):
                yield rest
        finally:
            steps.close()
            self.usage = (len(ids), count)
            self.finish_reason = reason

    def _steps(self, ids: list[int], max_new_tokens: int, settings: Settings) -> Iterator[tuple[int, object]]:
        """Each new token, with the logits it was drawn from when settings ask for log probabilities."""
        raise NotImplementedError


class PytorchBackend(Backend):
    name = "pytorch"
    supports = frozenset({LOGPROBS, PENALTIES})

    def __init__(
        self,
        model_path: str | None,
        repetition_penalty: float = 1.0,
        template_kwargs: dict | None = None,
        adapters: dict[str, str] | None = None,
        data: dict | None = None,
    ):
        """model_path: a merged model, an adapter folder, or (with adapters: NAME -> adapter folder) the base
        they share (default: the base recorded with them), loaded once. data: the config's data section, whose
        chat template a base model without one takes."""
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
        self.tokenizer = load_tokenizer(next(iter(adapters.values()), model_path), data)
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
        self.end_ids = frozenset({self.tokenizer.eos_token_id})
        self.repetition_penalty = repetition_penalty
        self.template_kwargs = template_kwargs or {}  # as in training (data.chat_template_kwargs), e.g. enable_thinking
        self.sampling: dict = {}  # greedy unless set (chat.py sets the config's generation settings)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 20)
        self.usage = (0, 0)
        self.finish_reason = "stop"

    def select(self, name: str) -> None:
        """Answer as this adapter, or as the base alone; no weights are loaded."""
        super().select(name)
        if name != self.base_name:
            self.model.set_adapter(name)

    def _steps(self, ids: list[int], max_new_tokens: int, settings: Settings) -> Iterator[tuple[int, object]]:
        """generate() in a thread of its own, handing over each token as it comes; stopped when the loop is."""
        import queue
        import threading

        from finetune.torch_generation import Cancelled, LogitsRecorder, TokenQueue

        tokens, cancel, failed = queue.Queue(), threading.Event(), []
        recorded = LogitsRecorder(self.model) if settings.top_logprobs is not None else None

        def generate() -> None:
            try:
                self._generate(ids, max_new_tokens, settings, TokenQueue(tokens), Cancelled(cancel))
            except Exception as error:  # noqa: BLE001  raised below, in the caller's thread
                failed.append(error)
            finally:
                tokens.put(None)

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        try:
            step = 0
            while (token := tokens.get()) is not None:
                yield token, (recorded.rows[step] if recorded else None)
                step += 1
            if failed:
                raise failed[0]
        finally:
            cancel.set()
            thread.join()
            if recorded:
                recorded.remove()

    def _generate(self, ids: list[int], max_new_tokens: int, settings: Settings, streamer=None, cancel=None):
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from finetune.torch_generation import Penalties

        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        penalties = settings.frequency_penalty or settings.presence_penalty
        bare = self.active == self.base_name and hasattr(self.model, "disable_adapter")
        with torch.no_grad(), self.model.disable_adapter() if bare else contextlib.nullcontext():
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=max_new_tokens,
                do_sample=bool(settings.sampling),
                streamer=streamer,
                **settings.sampling,
                repetition_penalty=self.repetition_penalty,
                logits_processor=LogitsProcessorList(
                    [Penalties(len(ids), settings.frequency_penalty, settings.presence_penalty)] if penalties else []
                ),
                stopping_criteria=StoppingCriteriaList([cancel] if cancel else []),
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return out[0, len(ids) :].tolist()

    def generate_ids(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding; the new token ids, ending at EOS."""
        return self._generate(ids, max_new_tokens, Settings())


def cores_allowed() -> int | None:
    """The threads OMP_NUM_THREADS allows this process (as PyTorch reads it), for ONNX Runtime and llama.cpp too;
    None: each runtime's own default."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


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

    def generate_ids(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding; the new token ids, ending at the end token."""
        return [token for token, _ in self._steps(ids, max_new_tokens, Settings())]


class GgufBackend(Backend):
    """llama.cpp (llama-cpp-python) on a GGUF file optimize.py --target gguf wrote; prompts are built with the
    tokenizer files kept beside it, as in training."""

    name = "gguf"
    supports = frozenset({LOGPROBS, PENALTIES, GRAMMAR})

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
        self.end_ids = frozenset(
            {self.model.token_eos(), *self.tokenizer.convert_tokens_to_ids([self.tokenizer.eos_token])}
        )
        self.template_kwargs = template_kwargs or {}
        self.models = [path.stem]
        self.active = path.stem
        self.path = str(path)
        self._scorer = None
        self.sampling: dict = {}
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

    def pieces(self):
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two tokens
        return lambda token: (
            decoder.decode(b"", final=True)
            if token is None
            else decoder.decode(self.model.detokenize([token], special=False))
        )

    def _steps(self, ids: list[int], max_new_tokens: int, settings: Settings) -> Iterator[tuple[int, object]]:
        """llama.cpp's own sampler, penalties and grammar; its generator never ends by itself (stream() ends it)."""
        import llama_cpp
        import numpy as np

        sampling = settings.sampling
        options = (
            {"temp": sampling["temperature"], "top_p": sampling["top_p"]} if sampling else {"temp": 0.0, "top_k": 1}
        )
        if settings.seed is not None:
            self.model.set_seed(settings.seed)
        if settings.json_schema is not None:
            schema = settings.json_schema
            options["grammar"] = (
                llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
                if schema
                else llama_cpp.LlamaGrammar.from_string(llama_cpp.llama_grammar.JSON_GBNF, verbose=False)
            )
        tokens = self.model.generate(
            ids,
            reset=True,
            repeat_penalty=1.0,
            frequency_penalty=settings.frequency_penalty,
            presence_penalty=settings.presence_penalty,
            **options,
        )
        for count, token in enumerate(tokens, start=1):
            logits = None
            if settings.top_logprobs is not None:  # the row the token was drawn from: the last evaluation's
                row = self.model._ctx.get_logits_ith(-1)
                logits = np.ctypeslib.as_array(row, shape=(self.model.n_vocab(),)).copy()
            yield token, logits
            if count >= max_new_tokens:
                return

    def generate_ids(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding; the new token ids, ending at the end token (included), as PytorchBackend.generate_ids."""
        out = []
        for token, _ in self._steps(ids, max_new_tokens, Settings()):
            out.append(token)
            if token in self.end_ids:
                break
        return out


BACKENDS = (PytorchBackend, OnnxBackend, GgufBackend)


def gguf_folder(config: dict) -> Path:
    return Path((config.get("gguf") or {}).get("output_dir", "outputs/gguf"))


def find_gguf_model(config: dict) -> str | None:
    """The GGUF file chat.py, serve.py and eval.py use by default: of the files optimize.py wrote to
    gguf.output_dir, the first of gguf.quantizations (the one the Modelfile loads)."""
    found = sorted(gguf_folder(config).glob("*.gguf"))
    for kind in (config.get("gguf") or {}).get("quantizations", []):
        chosen = [path for path in found if path.stem.endswith(f"-{kind}")]
        if chosen:
            return str(chosen[0])
    others = [path for path in found if not path.name.endswith("-F16.gguf")]
    return str(others[0]) if others else None


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
        model_path = model_path or find_gguf_model(config)
        if model_path is None:
            raise FileNotFoundError(
                f"no GGUF model under {gguf_folder(config)}/: run python optimize.py --target gguf first"
            )
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
    return PytorchBackend(model_path, template_kwargs=template_kwargs, adapters=adapters, data=config.get("data"))


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
    if find_gguf_model(config):
        gguf = load_backend("gguf", None, config)
        routes["gguf"] = (gguf, gguf.models[0])
    return routes
