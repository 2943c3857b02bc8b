"""Score one model on examples with the scenario's metric: perplexity from the model's own
probabilities, or a metric on its greedy answers. Works for the PyTorch, ONNX and GGUF backends alike."""

from __future__ import annotations

import math

from finetune import metrics
from finetune.data import Example
from finetune.encoding import IGNORE_INDEX, encode_examples, with_system

GENERATED = {"classification", "ner", "translation", "qa", "summarization", "chat", "creative", "preference", "images"}


def nll(log_probs, row: dict) -> tuple[float, int]:
    """Negative log-likelihood of a row's labelled tokens, given log-probabilities at each position."""
    total, n = 0.0, 0
    for position, label in enumerate(row["labels"][1:]):
        if label != IGNORE_INDEX:
            total -= float(log_probs[position][label])
            n += 1
    return total, n


def row_nlls(backend, rows: list[dict]) -> list[tuple[float, int]]:
    """(negative log-likelihood of the labelled tokens, their count) of each row."""
    return [nll(log_probs, row) for log_probs, row in zip(backend.log_probs([r["input_ids"] for r in rows]), rows)]


def perplexity(backend, rows: list[dict]) -> float:
    found = row_nlls(backend, rows)
    total, n = sum(t for t, _ in found), sum(n for _, n in found)
    if n == 0:
        raise ValueError("no answer tokens to score: every held-out example was cut off before its answer")
    if not math.isfinite(total):
        raise ValueError("the model's log-probabilities are not finite (NaN or inf): the model is broken")
    return math.exp(min(total / n, 700))


def preference(backend, examples: list[Example], data: dict, tokenizer) -> dict:
    """Pairs: how often the chosen answer gets the higher log-probability per token, and the mean margin (nats per
    token); per token, so that a longer answer is not rejected for its length alone. Single answers marked
    desirable or not (kto): the mean log-probability per token of each kind, and their gap."""
    from finetune.preference import encode_preferences

    pairs = all(e.rejected is not None for e in examples)
    rows = encode_preferences(examples, tokenizer, data, "dpo" if pairs else "kto")
    if not rows:
        raise ValueError("no held-out answer fits within data.max_length")
    first = row_nlls(backend, [r["first"] for r in rows])
    if pairs:
        second = row_nlls(backend, [r["second"] for r in rows])
        margins = [rejected / max(m, 1) - chosen / max(n, 1) for (chosen, n), (rejected, m) in zip(first, second)]
        if not all(math.isfinite(m) for m in margins):
            raise ValueError("the model's log-probabilities are not finite (NaN or inf): the model is broken")
        return {
            "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
            "margin": sum(margins) / len(margins),
        }
    per_token = {True: [], False: []}
    for row, (total, n) in zip(rows, first):
        per_token[row["desirable"]].append(-total / max(n, 1))
    mean = {kind: sum(v) / len(v) if v else float("nan") for kind, v in per_token.items()}
    return {"desirable_logp": mean[True], "undesirable_logp": mean[False], "margin": mean[True] - mean[False]}


def answers(backend, examples: list[Example], system: str | None, max_new_tokens: int) -> list[str]:
    """The model's greedy answer to each example's prompt."""
    return ["".join(backend.stream(with_system(e.prompt, system), max_new_tokens)).strip() for e in examples]


def score(
    backend, examples: list[Example], config: dict, tokenizer, labels: list[str] | None = None
) -> tuple[dict, list[str]]:
    """(scores, answers) of one model on the examples, for the config's scenario."""
    scenario = config["task"]["scenario"]
    data = config["data"]
    scores: dict = {}
    predictions: list[str] = []
    if scenario in ("chat", "domain", "creative", "preference"):
        tokenizer = getattr(backend, "tokenizer", None) if backend.name == "pytorch" else tokenizer
        if tokenizer is None:
            raise ValueError("no tokenizer could be loaded to encode the examples")
        if scenario == "preference":
            scores.update(preference(backend, examples, data, tokenizer))
        else:
            scores["perplexity"] = perplexity(backend, encode_examples(examples, tokenizer, data))
    if scenario == "tools":  # each assistant turn answered on its own; an example's answers joined for the report
        max_new_tokens, system = config["generation"]["max_new_tokens"], data.get("system_prompt")
        said, references, asked = [], [], []
        for e in examples:
            turns = e.turns()
            for before, turn in turns:
                asked.append(with_system(before, system))
                said.append("".join(backend.stream(asked[-1], max_new_tokens, tools=e.tools)).strip())
                references.append((turn, e.tools))
            predictions.append("\n".join(said[len(said) - len(turns) :]))
        scores.update(metrics.tools(said, references, config["tools"]))
        if config.get("grpo"):  # each turn rewarded on its own, as training rewards a conversation's last one
            scores.update(rewards(config, asked, said, references, tokenizer))
    if scenario in GENERATED:
        predictions = answers(backend, examples, data.get("system_prompt"), config["generation"]["max_new_tokens"])
        references = [e.reference for e in examples]
        labels = (labels or sorted(set(references))) if scenario == "classification" else None
        if scenario == "classification":
            scores.update(metrics.classification(predictions, references, labels))
        elif scenario == "ner":
            scores.update(metrics.ner(predictions, examples))
        elif scenario == "translation":
            scores.update(metrics.translation(predictions, references))
        elif scenario == "summarization":
            scores.update(metrics.summarization(predictions, references))
        elif scenario in ("qa", "images"):  # short answers, about a passage or a picture
            scores.update(metrics.qa(predictions, references))
        else:
            scores.update(metrics.text_statistics(predictions))
        if config.get("grpo"):
            asked = [with_system(e.prompt, data.get("system_prompt")) for e in examples]
            answered = [(e.turns()[-1][1], e.tools) for e in examples]
            scores.update(rewards(config, asked, predictions, answered, tokenizer, labels))
    return scores, predictions


def rewards(
    config: dict, prompts: list, answers: list[str], answered: list[tuple[dict, list | None]], tokenizer, labels=None
) -> dict:
    """GRPO workspaces: the mean of each reward function of rewards.py that grpo.rewards switches on, and of their
    weighted sum (`reward`), over the model's answers; answered: (the data's assistant turn, its tools) for each,
    labels: the classification label set, as training has it."""
    import rewards as module
    from finetune import grpo

    functions = grpo.reward_functions(module, config["grpo"]["rewards"])
    rows = [grpo.columns(turn, tools) for turn, tools in answered]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    lengths = [
        len(tokenizer(a, add_special_tokens=False)["input_ids"]) if tokenizer else len(a.split()) for a in answers
    ]
    extra = {"completion_lengths": lengths, "max_completion_length": config["grpo"]["max_completion_length"]}
    total, found = grpo.score(functions, prompts, answers, {**columns, **grpo.constants(config, labels), **extra})
    return {"reward": float(total.mean()), **{f"reward/{name}": sum(v) / len(v) for name, v in found.items()}}
