"""The evaluation metrics, one function per scenario: plain functions of predictions and references.

All run offline on well-kept libraries (scikit-learn, seqeval, sacrebleu, rouge-score); none is fetched
from a hub at run time.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter

from finetune.data import Example

OTHER = "(other)"  # a predicted label outside the label set


def normalize_label(prediction: str, labels: list[str]) -> str:
    """The label a generated answer names: its first line, case and surrounding punctuation ignored."""
    first = (
        prediction.strip().splitlines()[0].strip().strip(string.punctuation + " ").lower() if prediction.strip() else ""
    )
    by_lower = {label.lower(): label for label in labels}
    return by_lower.get(first, OTHER)


def classification(predictions: list[str], references: list[str], labels: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = [normalize_label(p, labels) for p in predictions]
    return {
        "accuracy": float(accuracy_score(references, predicted)),
        "macro_f1": float(f1_score(references, predicted, labels=labels, average="macro", zero_division=0)),
    }


def parse_entities(text: str) -> list[tuple[str, str]]:
    """(type, text) pairs from an answer such as 'PER: Marie Curie; LOC: Paris' (or 'none')."""
    found = []
    for part in re.split(r"[;\n]", text):
        kind, sep, words = part.partition(":")
        if sep and kind.strip() and words.strip():
            found.append((kind.strip().upper(), words.strip()))
    return found


def tags_for(tokens: list[str], found: list[tuple[str, str]]) -> list[str]:
    """BIO tags that place each predicted entity on the first free run of words that spells it."""
    tags = ["O"] * len(tokens)
    for kind, text in found:
        words = text.split()
        for start in range(len(tokens) - len(words) + 1):
            if tokens[start : start + len(words)] == words and all(t == "O" for t in tags[start : start + len(words)]):
                tags[start : start + len(words)] = [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
                break
    return tags


def ner(predictions: list[str], examples: list[Example]) -> dict:
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold = [e.tags for e in examples]
    predicted = [tags_for(e.tokens, parse_entities(p)) for p, e in zip(predictions, examples)]
    return {
        "entity_f1": float(f1_score(gold, predicted, zero_division=0)),
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
    }


def translation(predictions: list[str], references: list[str]) -> dict:
    import sacrebleu

    return {
        "bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(predictions, [references]).score),
    }


def summarization(predictions: list[str], references: list[str]) -> dict:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [
        scorer.score(reference, prediction)["rougeL"].fmeasure for prediction, reference in zip(predictions, references)
    ]
    return {"rougeL": sum(scores) / len(scores)}


def _squad_tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def qa(predictions: list[str], references: list[str]) -> dict:
    """SQuAD's exact match and token F1: lower case, no punctuation, no articles."""
    exact, f1 = 0.0, 0.0
    for prediction, reference in zip(predictions, references):
        pred, ref = _squad_tokens(prediction), _squad_tokens(reference)
        exact += float(pred == ref)
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            f1 += 2 * precision * recall / (precision + recall)
    return {"exact_match": exact / len(references), "f1": f1 / len(references)}


def tools(predictions: list[str], references: list[tuple[dict, list[dict]]], form: dict) -> dict:
    """Each assistant turn of tool-calling conversations, as the model said it, against (the turn, its tools):
    call_accuracy over the turns that call (the same functions with arguments equal as JSON, in any order),
    valid_calls (the share of the model's calls that parse and match their function's schema) and answer_f1
    (SQuAD's token F1 over the turns that answer in text; calling there instead scores 0)."""
    from finetune.tool_calls import from_openai, parse, problem, schemas

    def same(calls: list[dict]) -> list[str]:
        return sorted(json.dumps(c, sort_keys=True) for c in calls)

    hits, calling, made, valid, f1 = 0, 0, 0, 0, []
    for text, (turn, functions) in zip(predictions, references):
        content, calls, broken = parse(text, form)
        allowed = schemas(functions)
        made += len(calls) + len(broken)
        valid += sum(problem(c, allowed) is None for c in calls)
        if turn.get("tool_calls"):
            calling += 1
            hits += same(calls) == same([from_openai(c) for c in turn["tool_calls"]])
        else:
            f1.append(0.0 if calls or broken else qa([content], [turn["content"]])["f1"])
    return {
        "call_accuracy": hits / calling if calling else float("nan"),
        "valid_calls": valid / made if made else float("nan"),
        "answer_f1": sum(f1) / len(f1) if f1 else float("nan"),
    }


def text_statistics(texts: list[str]) -> dict:
    """Length in words, the share of distinct word pairs, and the share of word triples said before in the same text."""
    words = [t.split() for t in texts]
    pairs = [tuple(w[i : i + 2]) for w in words for i in range(len(w) - 1)]
    repeated, triples = 0, 0
    for w in words:
        seen = set()
        for i in range(len(w) - 2):
            triple = tuple(w[i : i + 3])
            repeated += triple in seen
            seen.add(triple)
            triples += 1
    return {
        "mean_words": sum(len(w) for w in words) / max(len(words), 1),
        "distinct_2": len(set(pairs)) / len(pairs) if pairs else 0.0,
        "repetition": repeated / triples if triples else 0.0,
    }
