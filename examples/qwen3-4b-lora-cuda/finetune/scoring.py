"""Score one model on examples with the scenario's metric: perplexity from the model's own
probabilities, or a metric on its greedy answers. Works for the PyTorch and the ONNX backend alike."""

from __future__ import annotations

import math

from finetune import metrics
from finetune.data import IGNORE_INDEX, Example, encode_examples, with_system

GENERATED = {"classification", "ner", "translation", "qa", "summarization", "chat", "creative"}


def nll(log_probs, row: dict) -> tuple[float, int]:
    """Negative log-likelihood of a row's labelled tokens, given log-probabilities at each position."""
    total, n = 0.0, 0
    for position, label in enumerate(row["labels"][1:]):
        if label != IGNORE_INDEX:
            total -= float(log_probs[position][label])
            n += 1
    return total, n


def pytorch_nll(backend, rows: list[dict]) -> tuple[float, int]:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = backend.model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1].float()
            row_total, n = nll(logits.log_softmax(-1).numpy(), row)
            total, count = total + row_total, count + n
    return total, count


def onnx_nll(backend, rows: list[dict]) -> tuple[float, int]:
    import numpy as np

    total, count = 0.0, 0
    for row in rows:
        params = backend.og.GeneratorParams(backend.model)
        params.set_search_options(max_length=len(row["input_ids"]) + 1)
        generator = backend.og.Generator(backend.model, params)
        if backend.adapters is not None:
            generator.set_active_adapter(backend.adapters, "tuned")
        generator.append_tokens(row["input_ids"])
        logits = np.asarray(generator.get_output("logits"))[0, :-1].astype(np.float64)
        logits = logits - logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        row_total, n = nll(log_probs, row)
        total, count = total + row_total, count + n
    return total, count


def perplexity(backend, rows: list[dict]) -> float:
    total, n = (onnx_nll if backend.name == "onnx" else pytorch_nll)(backend, rows)
    if n == 0:
        raise ValueError("no answer tokens to score: every held-out example was cut off before its answer")
    if not math.isfinite(total):
        raise ValueError("the model's log-probabilities are not finite (NaN or inf): the model is broken")
    return math.exp(min(total / n, 700))


def answers(backend, examples: list[Example], system: str | None, max_new_tokens: int) -> list[str]:
    """The model's greedy answer to each example's prompt."""
    return ["".join(backend.stream(with_system(e.prompt, system), max_new_tokens)).strip() for e in examples]


def score(backend, examples: list[Example], config: dict, tokenizer, labels: list[str] | None = None) -> tuple[dict, list[str]]:
    """(scores, answers) of one model on the examples, for the config's scenario."""
    scenario = config["task"]["scenario"]
    data = config["data"]
    scores: dict = {}
    predictions: list[str] = []
    if scenario in ("chat", "domain", "creative"):
        tokenizer = getattr(backend, "tokenizer", None) if backend.name == "pytorch" else tokenizer
        if tokenizer is None:
            raise ValueError("no tokenizer could be loaded to encode the examples")
        scores["perplexity"] = perplexity(backend, encode_examples(examples, tokenizer, data))
    if scenario in GENERATED:
        predictions = answers(backend, examples, data.get("system_prompt"), config["generation"]["max_new_tokens"])
        references = [e.reference for e in examples]
        if scenario == "classification":
            scores.update(metrics.classification(predictions, references, labels or sorted(set(references))))
        elif scenario == "ner":
            scores.update(metrics.ner(predictions, examples))
        elif scenario == "translation":
            scores.update(metrics.translation(predictions, references))
        elif scenario == "summarization":
            scores.update(metrics.summarization(predictions, references))
        elif scenario == "qa":
            scores.update(metrics.qa(predictions, references))
        else:
            scores.update(metrics.text_statistics(predictions))
    return scores, predictions
