"""Preference data as the preference trainer reads it: each example's prompt and answers as token ids.

A pair row holds the chosen and the rejected sequence; a KTO row holds its answer and a mismatched one (the
prompt with the next example's answer), from which KTO estimates its KL reference point. Each sequence is
encoded as supervised examples are (finetune/encoding.py), labelled on its final answer only.
"""

from __future__ import annotations

import random

from finetune.batching import Collator
from finetune.config import ConfigError
from finetune.data import DataError, Example, load_splits
from finetune.encoding import encode

OBJECTIVES = ("dpo", "orpo", "kto", "simpo")


def answer_of(example: Example, answer: str) -> list[dict]:
    return [*example.messages[:-1], {"role": "assistant", "content": answer}]


def as_kto(examples: list[Example]) -> list[Example]:
    """KTO reads single answers: each pair becomes its chosen answer (desirable) and its rejected one (not)."""
    if all(e.rejected is None for e in examples):
        return examples
    return [
        Example(e.source, messages=answer_of(e, text), desirable=good)
        for e in examples
        for text, good in ((e.reference, True), (e.rejected, False))
    ]


def encode_preferences(
    examples: list[Example], tokenizer, data: dict, objective: str, first_index: int = 0
) -> list[dict]:
    """Rows for the preference trainer; examples with no answer token within max_length are left out."""

    def sequence(messages: list[dict], source: str) -> dict | None:
        return encode(
            Example(source, messages=messages),
            tokenizer,
            data["max_length"],
            data.get("system_prompt"),
            data.get("chat_template_kwargs"),
            last_turn_only=True,
        )

    rows = []
    if objective == "kto":
        examples = as_kto(examples)
        for i, example in enumerate(examples):
            other = examples[(i + 1) % len(examples)].reference  # another example's answer to this prompt
            first, second = (
                sequence(example.messages, example.source),
                sequence(answer_of(example, other), example.source),
            )
            if first and second:
                rows.append(
                    {"index": first_index + len(rows), "first": first, "second": second, "desirable": example.desirable}
                )
        return rows
    for example in examples:
        if example.rejected is None:
            raise DataError(
                f"{example.source}: {objective} needs a rejected answer beside the chosen one (the preference format)"
            )
        chosen, rejected = (
            sequence(example.messages, example.source),
            sequence(answer_of(example, example.rejected), example.source),
        )
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
        raise DataError(
            f"{data['path']}: every prompt is longer than data.max_length={data['max_length']}, so no answer "
            "is left to compare; raise data.max_length"
        )
    random.Random(seed).shuffle(train_rows)
    return train_rows, eval_rows


class PairCollator:
    """A batch of B rows as 2B padded sequences, the first of each row then the second (batching.Collator pads
    them), with each row's index into the reference table (and, for KTO, whether its answer is desirable)."""

    def __init__(self, pad_token_id: int):
        self.pad = Collator(pad_token_id)

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        out = self.pad([row["first"] for row in batch] + [row["second"] for row in batch])
        out["index"] = torch.tensor([row["index"] for row in batch])
        if "desirable" in batch[0]:
            out["desirable"] = torch.tensor([row["desirable"] for row in batch])
        return out
