"""Preference data as the preference trainer reads it: each example's prompt and answers as token ids.

A pair row holds the chosen and the rejected sequence; a KTO row holds its answer and a mismatched one (the
prompt with the next example's answer), from which KTO estimates its KL reference point. Each sequence is the
chat template's rendering of the prompt and one answer, with the loss on the answer's tokens only.
"""

from __future__ import annotations

import random

from finetune.config import ConfigError
from finetune.data import DataError, Example, load_splits
from finetune.encoding import IGNORE_INDEX, assistant_spans, with_system

OBJECTIVES = ("dpo", "orpo", "kto", "simpo")


def split_ids(messages: list[dict], tokenizer, source: str, template_kwargs: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of a conversation whose last turn is the answer, as the chat template renders it."""
    full, spans = assistant_spans(messages, tokenizer, source, template_kwargs)
    start = spans[-1][0]
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    cut = next((t for t, (_, end) in enumerate(encoded["offset_mapping"]) if end > start), len(ids))
    return ids[:cut], ids[cut:]


def sequence(prompt: list[int], answer: list[int], max_length: int) -> dict | None:
    """The prompt and answer cut to max_length (the answer's end goes first); None when no answer token is left."""
    keep = max_length - len(prompt)
    if keep < 1:
        return None
    return {"ids": prompt + answer[:keep], "start": len(prompt)}


def answer_of(example: Example, answer: str) -> list[dict]:
    return [*example.messages[:-1], {"role": "assistant", "content": answer}]


def as_kto(examples: list[Example]) -> list[Example]:
    """KTO reads single answers: each pair becomes its chosen answer (desirable) and its rejected one (not)."""
    if all(e.rejected is None for e in examples):
        return examples
    return [Example(e.source, messages=answer_of(e, text), desirable=good)
            for e in examples for text, good in ((e.reference, True), (e.rejected, False))]


def encode_preferences(examples: list[Example], tokenizer, data: dict, objective: str, first_index: int = 0) -> list[dict]:
    """Rows for the preference trainer; examples with no answer token within max_length are left out."""
    kwargs = data.get("chat_template_kwargs") or {}
    system = data.get("system_prompt")
    max_length = data["max_length"]

    def encode(messages: list[dict], source: str) -> tuple[list[int], list[int]]:
        return split_ids(with_system(messages, system), tokenizer, source, kwargs)

    rows = []
    if objective == "kto":
        examples = as_kto(examples)
        parts = [encode(e.messages, e.source) for e in examples]
        for i, (example, (prompt, answer)) in enumerate(zip(examples, parts)):
            mismatched = parts[(i + 1) % len(parts)][1]  # another example's answer to this prompt
            first, second = sequence(prompt, answer, max_length), sequence(prompt, mismatched, max_length)
            if first and second:
                rows.append({"index": first_index + len(rows), "first": first, "second": second, "desirable": example.desirable})
        return rows
    for example in examples:
        if example.rejected is None:
            raise DataError(f"{example.source}: {objective} needs a rejected answer beside the chosen one (the preference format)")
        chosen = sequence(*encode(example.messages, example.source), max_length)
        rejected = sequence(*encode(answer_of(example, example.rejected), example.source), max_length)
        if chosen and rejected:
            rows.append({"index": first_index + len(rows), "first": chosen, "second": rejected})
    return rows


def build_preference_datasets(config: dict, tokenizer, seed: int) -> tuple[list[dict], list[dict]]:
    """Training and held-out rows; their indices do not overlap, so one table holds the reference of both."""
    data, objective = config["data"], config["preference"].get("objective")
    if objective not in OBJECTIVES:
        raise ConfigError(f"preference.objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    train, held_out = load_splits(config, seed)
    train_rows = encode_preferences(train, tokenizer, data, objective)
    eval_rows = encode_preferences(held_out, tokenizer, data, objective, first_index=len(train_rows))
    if not train_rows:
        raise DataError(f"{data['path']}: every prompt is longer than data.max_length={data['max_length']}, so no answer "
                        "is left to compare; raise data.max_length")
    random.Random(seed).shuffle(train_rows)
    return train_rows, eval_rows


class PairCollator:
    """A batch of B rows as 2B sequences: the first sequence of each row, then the second, padded on the right,
    labelled on the answer tokens only."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        sequences = [row["first"] for row in batch] + [row["second"] for row in batch]
        width = max(len(s["ids"]) for s in sequences)
        ids, labels, mask = [], [], []
        for s in sequences:
            pad = width - len(s["ids"])
            ids.append(s["ids"] + [self.pad_token_id] * pad)
            labels.append([IGNORE_INDEX] * s["start"] + s["ids"][s["start"]:] + [IGNORE_INDEX] * pad)
            mask.append([1] * len(s["ids"]) + [0] * pad)
        out = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask),
               "index": torch.tensor([row["index"] for row in batch])}
        if "desirable" in batch[0]:
            out["desirable"] = torch.tensor([row["desirable"] for row in batch])
        return out
