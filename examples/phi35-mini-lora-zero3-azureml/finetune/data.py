"""Read training data in four formats, apply the chat template, mask the loss to the answers.

Every error names the file and line it comes from.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

IGNORE_INDEX = -100
ROLES = {"system", "user", "assistant"}
# Used when a tokenizer has no chat template of its own (ChatML, the most widely understood layout).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class DataError(ValueError):
    pass


@dataclass
class Example:
    source: str  # "file:line", for error messages
    messages: list[dict] | None = None
    text: str | None = None


def read_examples(path: str, fmt: str, split: str = "train") -> list[Example]:
    """Read a local JSON/JSONL file, or a Hugging Face dataset id, into Examples."""
    file = Path(path)
    if file.is_file():
        rows = list(_read_rows(file))
    elif file.suffix in (".json", ".jsonl") or "/" not in path:
        raise DataError(f"dataset {path} not found (looked for a local file at {file.resolve()})")
    else:
        rows = _read_hub(path, split)
    examples = [to_example(row, fmt, where) for where, row in rows]
    if not examples:
        raise DataError(f"{path}: the dataset is empty")
    return examples


def _read_rows(file: Path):
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{file}:{error.lineno}: not valid JSON ({error.msg})") from None
        if not isinstance(data, list):
            raise DataError(f"{file}: expected a JSON list of examples")
        for i, row in enumerate(data):
            yield f"{file}:item {i + 1}", row
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{file}:{number}", json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{file}:{number}: not valid JSON ({error.msg} at column {error.colno})") from None


def _read_hub(dataset_id: str, split: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{dataset_id} looks like a Hugging Face dataset id; `pip install datasets` to read it") from None
    try:
        rows = datasets.load_dataset(dataset_id, split=split)
    except Exception as error:  # the hub raises many kinds; the message says which
        raise DataError(f"could not load Hugging Face dataset {dataset_id} (split {split}): {error}") from None
    return [(f"{dataset_id}[{split}]:row {i + 1}", row) for i, row in enumerate(rows)]


def to_example(row: object, fmt: str, where: str) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fmt == "messages":
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: missing 'messages' (a list of {{role, content}})")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise DataError(f"{where}: message {i + 1} needs a role of {sorted(ROLES)}")
            if not isinstance(message.get("content"), str):
                raise DataError(f"{where}: message {i + 1} has no text 'content'")
        assistants = [m for m in messages if m["role"] == "assistant"]
        if not assistants:
            raise DataError(f"{where}: no assistant turn to learn from")
        if any(not m["content"].strip() for m in assistants):
            raise DataError(f"{where}: empty assistant turn")
        return Example(where, messages=[{"role": m["role"], "content": m["content"]} for m in messages])
    if fmt == "prompt-completion":
        prompt, completion = _need(row, where, "prompt", "completion")
        return Example(where, messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])
    if fmt == "alpaca":
        instruction, output = _need(row, where, "instruction", "output")
        extra = row.get("input") or ""
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return Example(where, messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": output}])
    if fmt == "text":
        (text,) = _need(row, where, "text")
        return Example(where, text=text)
    raise DataError(f"unknown data format {fmt!r}; use messages, prompt-completion, alpaca or text")


def _need(row: dict, where: str, *keys: str) -> list[str]:
    values = []
    for key in keys:
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: missing or empty {key!r}")
        values.append(value)
    return values


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE


def encode(example: Example, tokenizer, max_length: int, system_prompt: str | None = None) -> dict | None:
    """Token ids and labels; labels are IGNORE_INDEX outside assistant turns. None if nothing is left to learn."""
    if example.text is not None:
        ids = tokenizer(example.text, add_special_tokens=True)["input_ids"][: max_length - 1] + [tokenizer.eos_token_id]
        return {"input_ids": ids, "labels": list(ids)}
    messages = example.messages
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(through) or not through.startswith(before):
            raise DataError(f"{example.source}: the chat template does not render turns as prefixes; cannot mask the loss")
        spans.append((len(before), len(through)))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][:max_length]
    labels = [IGNORE_INDEX] * len(ids)
    for t, (start, end) in enumerate(encoded["offset_mapping"][: len(ids)]):
        if any(s <= start < e for s, e in spans) and end > start:
            labels[t] = ids[t]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def build_datasets(config: dict, tokenizer, seed: int) -> tuple[list[dict], list[dict]]:
    """Encode the data section's dataset and hold out an evaluation split."""
    data = config["data"]
    examples = read_examples(data["path"], data["format"], data.get("split", "train"))
    encoded = [encode(e, tokenizer, data["max_length"], data.get("system_prompt")) for e in examples]
    kept = [e for e in encoded if e is not None]
    if not kept:
        raise DataError(f"{data['path']}: every example is longer than max_length={data['max_length']} before its "
                        "answer starts, so nothing is left to learn; raise data.max_length")
    random.Random(seed).shuffle(kept)
    n_eval = int(len(kept) * data.get("eval_fraction", 0.0))
    if n_eval == 0 and data.get("eval_fraction", 0.0) > 0 and len(kept) >= 4:
        n_eval = 1
    return kept[n_eval:], kept[:n_eval]


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
        return min(candidates, key=lambda w: (len(pack(batch, w)) * max(len(r[0]) for r in pack(batch, w)), w))

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        if not self.packing:
            width = max(len(row["input_ids"]) for row in batch)
            ids = [row["input_ids"] + [self.pad_token_id] * (width - len(row["input_ids"])) for row in batch]
            labels = [row["labels"] + [IGNORE_INDEX] * (width - len(row["labels"])) for row in batch]
            mask = [[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in batch]
            return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
        rows = pack(batch, self.row_width(batch))
        width = max(len(row[0]) for row in rows)
        for ids, labels, positions in rows:
            # padding becomes one more short sequence of its own, never attended to by the others
            pad = width - len(ids)
            ids += [self.pad_token_id] * pad
            labels += [IGNORE_INDEX] * pad
            positions += list(range(pad))
        return {"input_ids": torch.tensor([r[0] for r in rows]), "labels": torch.tensor([r[1] for r in rows]),
                "position_ids": torch.tensor([r[2] for r in rows])}


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
