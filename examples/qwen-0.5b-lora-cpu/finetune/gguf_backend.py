"""llama.cpp as a generation backend: the GGUF file export_gguf.py wrote, for chat.py, serve.py,
eval.py and benchmark.py. Rendered with the gguf target."""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Iterator
from pathlib import Path

from finetune.decoding import GRAMMAR, LOGPROBS, PENALTIES, Settings
from finetune.inference import AdapterError, Backend, cores_allowed, log_softmax


class GgufBackend(Backend):
    """llama.cpp (llama-cpp-python) on a GGUF file export_gguf.py wrote; prompts are built with the
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
            raise FileNotFoundError(f"no GGUF file {model_path}: run python export_gguf.py first")
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

    def log_probs(self, rows: list[list[int]]) -> Iterator:
        """Each row's log-probabilities of the next token at every position but the last (eval's perplexity)."""
        scorer = self.scorer(max(len(ids) for ids in rows))
        for ids in rows:
            scorer.reset()
            scorer.eval(ids)
            yield log_softmax(scorer.scores[: len(ids) - 1])

    def generate_ids(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding; the new token ids, ending at the end token (included), as PytorchBackend.generate_ids."""
        out = []
        for token, _ in self._steps(ids, max_new_tokens, Settings()):
            out.append(token)
            if token in self.end_ids:
                break
        return out


def gguf_folder(config: dict) -> Path:
    return Path((config.get("gguf") or {}).get("output_dir", "outputs/gguf"))


def find_model(config: dict) -> str | None:
    """The GGUF file chat.py, serve.py and eval.py use by default: of the files export_gguf.py wrote to
    gguf.output_dir, the first of gguf.quantizations (the one the Modelfile loads)."""
    found = sorted(gguf_folder(config).glob("*.gguf"))
    for kind in (config.get("gguf") or {}).get("quantizations", []):
        chosen = [path for path in found if path.stem.endswith(f"-{kind}")]
        if chosen:
            return str(chosen[0])
    others = [path for path in found if not path.name.endswith("-F16.gguf")]
    return str(others[0]) if others else None


def load(model_path: str | None, config: dict, adapters: dict | None, template_kwargs: dict | None) -> GgufBackend:
    if adapters:
        raise AdapterError("the gguf backend serves the merged model; serve adapters with --backend pytorch or onnx")
    model_path = model_path or find_model(config)
    if model_path is None:
        raise FileNotFoundError(f"no GGUF model under {gguf_folder(config)}/: run python export_gguf.py first")
    context = max(4096, int(config.get("data", {}).get("max_length") or 0))
    return GgufBackend(model_path, template_kwargs=template_kwargs, context_length=context)


BACKEND = GgufBackend
