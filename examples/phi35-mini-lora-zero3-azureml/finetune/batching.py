"""Batches of encoded examples as tensors: padded, or packed several to a row."""

from __future__ import annotations

from finetune.encoding import IGNORE_INDEX


class Collator:
    """Pads a batch into a tensor. With packing, it first packs the batch's examples into as few rows
    of at most max_length tokens as it can, so little compute goes to padding; position ids restart at
    each example, which keeps attention within it (transformers reads packed rows from the position ids)."""

    def __init__(self, pad_token_id: int, packing: bool = False, max_length: int | None = None):
        self.pad_token_id = pad_token_id
        self.packing = packing
        self.max_length = max_length

    def row_width(self, batch: list[dict]) -> int:
        """The row width, from the longest example up to max_length, that wastes the fewest padding slots."""
        longest = max(len(row["input_ids"]) for row in batch)
        limit = max(self.max_length or sum(len(row["input_ids"]) for row in batch), longest)
        candidates = sorted({min(limit, int(longest * f)) for f in (1.0, 1.25, 1.5, 2.0, 3.0)})

        def padded_slots(width: int) -> tuple[int, int]:
            rows = pack(batch, width)
            return len(rows) * max(len(r[0]) for r in rows), width

        return min(candidates, key=padded_slots)

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        if not self.packing:
            width = max(len(row["input_ids"]) for row in batch)
            ids = [row["input_ids"] + [self.pad_token_id] * (width - len(row["input_ids"])) for row in batch]
            labels = [row["labels"] + [IGNORE_INDEX] * (width - len(row["labels"])) for row in batch]
            mask = [[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in batch]
            return {
                "input_ids": torch.tensor(ids),
                "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask),
            }
        rows = pack(batch, self.row_width(batch))
        width = max(len(row[0]) for row in rows)
        for ids, labels, positions in rows:
            # padding becomes one more short sequence of its own, never attended to by the others
            pad = width - len(ids)
            ids += [self.pad_token_id] * pad
            labels += [IGNORE_INDEX] * pad
            positions += list(range(pad))
        return {
            "input_ids": torch.tensor([r[0] for r in rows]),
            "labels": torch.tensor([r[1] for r in rows]),
            "position_ids": torch.tensor([r[2] for r in rows]),
        }


def pack(batch: list[dict], max_length: int) -> list[tuple[list, list, list]]:
    """First-fit decreasing: each example goes into the first row with room for it."""
    rows: list[tuple[list, list, list]] = []
    for row in sorted(batch, key=lambda r: len(r["input_ids"]), reverse=True):
        n = len(row["input_ids"])
        target = next((r for r in rows if len(r[0]) + n <= max_length), None)
        if target is None:
            target = ([], [], [])
            rows.append(target)
        target[0].extend(row["input_ids"])
        target[1].extend([IGNORE_INDEX] + row["labels"][1:])
        target[2].extend(range(n))
    return rows
