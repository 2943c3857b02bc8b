"""Generation backends shared by chat.py, serve.py, eval.py and benchmark.py: what every backend shares (one
generation loop: stop sequences, limits, usage, log probabilities) and PyTorch (merged model, or base + adapters).
ONNX Runtime GenAI (finetune/onnx_backend.py) and llama.cpp (finetune/gguf_backend.py) are rendered with their
targets; load_backend finds whichever this workspace has. A backend holding several adapters on one base answers
as the one `select` names."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path

from finetune.decoding import LOGPROBS, PENALTIES, Settings, StopText, logprob_entry


class AdapterError(ValueError):
    """An adapter that cannot be served: missing, or trained on another base."""


class Prompt(list):
    """A prompt's token ids, with what else its model reads beside them (inputs: a picture's pixels), so that they
    travel together from prompt_ids to the generation."""

    inputs: dict


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

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """The prompt's tokens: the messages (and the functions they may call) through the chat template."""
        from finetune.encoding import prompt_ids

        if shows_pictures(messages):
            raise ValueError(
                f"the {self.name} backend here reads no pictures: a workspace for conversations about pictures answers "
                "about them in PyTorch, with its merged model"
            )
        return prompt_ids(self.tokenizer, messages, tools, self.template_kwargs)

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
        self,
        messages: list[dict],
        max_new_tokens: int,
        ids: list[int] | None = None,
        settings: Settings | None = None,
        tools: list[dict] | None = None,
    ) -> Iterator[str]:
        """The answer's text as it is generated (settings: this answer's own, else the backend's sampling); then
        usage is (prompt tokens, completion tokens), finish_reason "stop" or "length", and logprobs one entry per
        token when settings ask for them."""
        settings = settings or Settings(sampling=self.sampling)
        ids = ids if ids is not None else self.prompt_ids(messages, tools)
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

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """The prompt's tokens; a conversation about pictures goes through the model's processor, whose pixels (and
        whatever else its model reads beside the ids) go with them, as a Prompt's inputs."""
        processor = getattr(self.tokenizer, "processor", None)
        if processor is None or not shows_pictures(messages):
            return super().prompt_ids(messages, tools)
        from finetune.images import as_parts, images_of, model_inputs

        text = processor.apply_chat_template(
            as_parts(messages), tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )
        inputs = model_inputs(processor, text, images_of(messages))
        prompt = Prompt(inputs["input_ids"][0].tolist())
        prompt.inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        return prompt

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
                **getattr(ids, "inputs", {}),
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

    def log_probs(self, rows: list[list[int]]) -> Iterator:
        """Each row's log-probabilities of the next token at every position but the last (eval's perplexity)."""
        import torch

        with torch.no_grad():
            for ids in rows:
                yield self.model(input_ids=torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1).numpy()


def shows_pictures(messages: list[dict]) -> bool:
    """Whether a turn holds content parts: pictures beside text (chat.py, serve.py join text-only parts into text)."""
    return any(isinstance(m.get("content"), list) for m in messages)


def log_softmax(logits):
    """Log-probabilities from a NumPy array of logits (positions x vocabulary), in float64."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def cores_allowed() -> int | None:
    """The threads OMP_NUM_THREADS allows this process (as PyTorch reads it), for ONNX Runtime and llama.cpp too;
    None: each runtime's own default."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def default_pytorch_model(config: dict) -> str:
    merged = Path(config["merge"]["output_dir"])
    return str(merged if merged.is_dir() else Path(config["merge"]["adapter_dir"]))


KINDS = {"pytorch": None, "onnx": "onnx_backend", "gguf": "gguf_backend"}  # backend -> module, besides this one


def backend_names() -> list[str]:
    """The backends this workspace has: PyTorch always, ONNX and llama.cpp where it was generated with their targets."""
    return [name for name, module in KINDS.items() if module is None or find_spec(f"finetune.{module}") is not None]


def backend_module(name: str):
    """The module of the onnx or gguf backend, or FileNotFoundError naming how to get it."""
    if name not in backend_names():
        target = "onnx-cpu" if name == "onnx" else name  # onnx: any ONNX target brings the backend
        raise FileNotFoundError(
            f"this workspace has no {name} backend: it was generated without a {name} target; add one with "
            f"`tuneforge update . --set targets=<the targets you keep>,{target}`, then run python "
            + ("optimize.py" if name == "onnx" else "export_gguf.py")
        )
    return import_module(f"finetune.{KINDS[name]}")


def backend_classes() -> list[type[Backend]]:
    """The backend classes of this workspace (the server names those that honour a setting)."""
    return [PytorchBackend] + [backend_module(n).BACKEND for n in backend_names() if n != "pytorch"]


def load_backend(backend: str, model_path: str | None, config: dict, adapters: dict[str, str] | None = None):
    """The backend chat.py and serve.py answer with: model_path (default: this workspace's merged, ONNX or GGUF
    model) or, with adapters (NAME -> path), the base they share with each adapter on it."""
    template_kwargs = config.get("data", {}).get("chat_template_kwargs")
    if backend != "pytorch":
        return backend_module(backend).load(model_path, config, adapters, template_kwargs)
    if model_path is None and not adapters:
        model_path = default_pytorch_model(config)
        if not Path(model_path).is_dir():  # a folder of this workspace, never a hub id
            raise FileNotFoundError(
                f"{model_path} not found: train (python train.py) and merge (python merge.py) first"
            )
    return PytorchBackend(model_path, template_kwargs=template_kwargs, adapters=adapters, data=config.get("data"))


def find_model(backend: str, config: dict) -> str | None:
    """The model the onnx or gguf backend answers with by default, if this workspace has the backend and made it."""
    return backend_module(backend).find_model(config) if backend in backend_names() else None


def compare_backends(config: dict) -> dict[str, tuple]:
    """What serve.py --compare serves, as {name: (backend, its name there)}: base and tuned in PyTorch (one model
    with the adapter switched off for the base, when training left an adapter; else the base model beside the
    tuned one), then the ONNX and GGUF models where optimize.py and export_gguf.py made them."""
    adapter = Path(config["merge"]["adapter_dir"])
    if (adapter / "adapter_config.json").is_file():
        both = load_backend("pytorch", None, config, {"tuned": str(adapter)})
        routes = {"base": (both, both.base_name), "tuned": (both, "tuned")}
    else:
        tuned = load_backend("pytorch", None, config)
        base = load_backend("pytorch", config["model"]["name_or_path"], config)
        routes = {"base": (base, base.models[0]), "tuned": (tuned, tuned.models[0])}
    for name in ("onnx", "gguf"):
        if find_model(name, config):
            backend = load_backend(name, None, config)
            routes[name] = (backend, backend.models[0])
    return routes
