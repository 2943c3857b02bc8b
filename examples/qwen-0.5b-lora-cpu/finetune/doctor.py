"""The data doctor: what training will make of the data, before any model is loaded.

It encodes every example as training does and reports what a user cannot see in the file: how long the
examples are in tokens, how many lose tokens to max_length (or their whole answer), duplicates, examples
that are both trained on and held out, answers the model is never taught to end, and one example with
its trained tokens marked. Every problem is found in one run: those that make training pointless or a row
unreadable are errors (each with file:line), the rest warnings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from finetune.data import Example, load_splits
from finetune.encoding import IGNORE_INDEX, encode

# end-of-turn markers of the common chat templates; the tokenizer's own EOS is always one
STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|end_of_text|>")
NO_LIMIT = 1 << 30


@dataclass
class Report:
    examples: int = 0
    held_out: int = 0
    lengths: list[int] = field(default_factory=list)
    max_length: int = 0
    truncated: list[str] = field(default_factory=list)  # lose tokens to max_length
    dropped: list[str] = field(default_factory=list)  # lose their whole answer to max_length
    no_stop: list[str] = field(default_factory=list)  # no end-of-turn token among the trained tokens
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    overlap: list[tuple[str, str]] = field(default_factory=list)  # (held-out, training) pairs
    unreasoned: bool = False  # thinking kept, yet no answer holds a <think> block
    pictures: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each picture that opens
    image_tokens: list[int] = field(default_factory=list)  # what each trained example's pictures cost of max_length
    sample: str = ""
    caption: str = "one example as trained ([[...]] is what the loss is computed on):"
    errors: list[str] = field(default_factory=list)  # what training cannot go on with, each with file:line

    @property
    def warnings(self) -> list[str]:
        def few(items) -> str:
            shown = ", ".join(" = ".join(i) if isinstance(i, tuple) else i for i in items[:3])
            return shown + (f" and {len(items) - 3} more" if len(items) > 3 else "")

        out = []
        if self.truncated:
            out.append(
                f"{len(self.truncated)} example(s) are longer than data.max_length={self.max_length} tokens and "
                f"are cut: {few(self.truncated)}"
            )
        if self.dropped:
            out.append(
                f"{len(self.dropped)} example(s) have no answer left within max_length and are skipped: {few(self.dropped)}"
            )
        if self.no_stop:
            out.append(
                f"{len(self.no_stop)} example(s) end without an end-of-turn token the model learns to say, so it may "
                f"not learn to stop: {few(self.no_stop)}"
            )
        if self.duplicates:
            out.append(f"{len(self.duplicates)} duplicate example(s): {few(self.duplicates)}")
        if self.overlap:
            out.append(
                f"{len(self.overlap)} held-out example(s) are also trained on, so evaluation flatters the model: "
                f"{few(self.overlap)}"
            )
        if self.unreasoned:
            out.append(
                "thinking is kept (data.chat_template_kwargs.enable_thinking: true), yet no answer holds a "
                "<think>...</think> block: the model learns to answer with an empty one; add the reasoning to your "
                "answers, or regenerate with --set thinking=off"
            )
        return out


def stop_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in STOP_TOKENS if t in vocab}
    return {i for i in ids if i is not None}


def key(example: Example) -> str:
    """What makes two examples the same."""
    return json.dumps(
        [example.messages, example.text, example.rejected, example.desirable], sort_keys=True, ensure_ascii=False
    )


def examine(config: dict, tokenizer, limit: int | None = None) -> Report:
    """Encode the data as training does and report every problem: report.errors for what makes training pointless
    (rows that cannot be read, no answer to learn or none that ends), warnings for the rest."""
    data = config["data"]
    problems: list[str] = []
    train, held_out = load_splits(config, config["training"]["seed"], problems)
    report = Report(examples=len(train), held_out=len(held_out), max_length=data["max_length"], errors=problems)
    if config.get("grpo"):
        report.caption = (
            "one example ([[...]] is the reference answer rewards.py checks; GRPO trains on the answers the model "
            "samples after the prompt):"
        )
    stops = stop_ids(tokenizer)
    first_seen: dict[str, str] = {}
    for example in train:
        source = first_seen.setdefault(key(example), example.source)
        if source != example.source:
            report.duplicates.append((example.source, source))
    report.overlap = [(e.source, first_seen[key(e)]) for e in held_out if key(e) in first_seen]
    report.unreasoned = bool((data.get("chat_template_kwargs") or {}).get("enable_thinking")) and not any(
        "</think>" in m["content"] for e in train for m in (e.messages or []) if m["role"] == "assistant"
    )
    trained_any_stop = False
    unreadable: set[str] = set()
    if any(e.images for e in train + held_out):  # finetune/images.py: every picture opened, each bad one named
        from finetune.images import check_pictures

        found, report.pictures, unreadable = check_pictures(train + held_out)
        report.errors += found
    for example in train[:limit]:
        if example.source in unreadable:
            continue
        whole = encode(example, tokenizer, NO_LIMIT, data.get("system_prompt"), data.get("chat_template_kwargs"))
        if whole is None:
            continue
        report.lengths.append(len(whole["input_ids"]))
        kept = encode(
            example, tokenizer, data["max_length"], data.get("system_prompt"), data.get("chat_template_kwargs")
        )
        if kept is None:
            report.dropped.append(example.source)
            continue
        if len(whole["input_ids"]) > data["max_length"]:
            report.truncated.append(example.source)
        if example.images:
            from finetune.images import image_tokens

            report.image_tokens.append(image_tokens(whole, tokenizer.processor))
        trained = {t for t, label in zip(kept["input_ids"], kept["labels"]) if label != IGNORE_INDEX}
        if trained & stops:
            trained_any_stop = True
        elif example.text is None:
            report.no_stop.append(example.source)
        if not report.sample:
            report.sample = marked(kept, tokenizer)
    if report.lengths and not trained_any_stop and report.no_stop:
        report.errors.append(
            f"{report.no_stop[0]}: no example teaches the model to end its answer: the chat template puts no "
            f"end-of-turn token ({', '.join(tokenizer.convert_ids_to_tokens(sorted(stops)))}) inside the "
            "trained answer, so the tuned model would never stop; fix the tokenizer's chat template"
        )
    if not report.lengths:
        report.errors.append(f"{data['path']}: no example has an answer to learn")
    elif len(report.dropped) == len(report.lengths):
        report.errors.append(
            f"{report.dropped[0]}: every example is longer than data.max_length={data['max_length']} before "
            "its answer starts, so nothing is left to learn; raise data.max_length"
        )
    return report


RUN = 8  # a token repeated this often in a row is shown once with its count (a picture's image tokens)


def marked(row: dict, tokenizer) -> str:
    """The example's text with the trained tokens between [[ and ]]; a long run of one token as `token x N`."""
    out, inside, i, ids = [], False, 0, row["input_ids"]
    while i < len(ids):
        trained = row["labels"][i] != IGNORE_INDEX
        if trained != inside:
            out.append("[[" if trained else "]]")
            inside = trained
        n = 1
        while i + n < len(ids) and ids[i + n] == ids[i] and (row["labels"][i + n] != IGNORE_INDEX) == trained:
            n += 1
        text = tokenizer.decode([ids[i]])
        out.append(f"{text} x {n} " if n >= RUN else text * n)
        i += n
    return "".join(out) + ("]]" if inside else "")


def histogram(lengths: list[int], max_length: int, width: int = 40) -> list[str]:
    """Token lengths in power-of-two buckets, with the max_length bucket marked."""
    if not lengths:
        return []
    edges, edge = [], 16
    while edge < min(lengths):  # from the first bucket that holds an example
        edge *= 2
    while edge < max(lengths):
        edges.append(edge)
        edge *= 2
    edges.append(edge)
    first = edges[0] // 2 if edges[0] > 16 else 0
    counts, low = [], first
    for high in edges:
        counts.append(sum(low < n <= high for n in lengths))
        low = high
    most = max(counts)
    lines, low = [], first
    for high, count in zip(edges, counts):
        cut = "  <- cut at max_length" if low < max_length <= high else ""
        lines.append(f"  {low + 1:>6}-{high:<6} {'#' * round(width * count / most):<{width}} {count}{cut}")
        low = high
    return lines


def describe(report: Report) -> list[str]:
    """What the data holds: the examples' lengths, the warnings and a sample (check_data.py prints the errors)."""
    lines = []
    lengths = sorted(report.lengths)
    if lengths:
        lines.append(
            f"{report.examples} training and {report.held_out} held-out examples; tokens per example: "
            f"min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]} (max_length {report.max_length})"
        )
        fill = sum(min(n, report.max_length) for n in lengths) / len(lengths) / report.max_length
        lines.append(
            f"an example fills {fill:.0%} of max_length on average: batches of them take about that share of the "
            "activation and logit memory the README's estimate counts for rows that fill max_length"
        )
    lines += histogram(report.lengths, report.max_length)
    if report.pictures:
        widths, heights = sorted(w for w, _ in report.pictures), sorted(h for _, h in report.pictures)
        cost = sorted(report.image_tokens)
        lines.append(
            f"{len(report.pictures)} pictures, {widths[0]}-{widths[-1]} pixels wide and {heights[0]}-{heights[-1]} high; "
            f"their image tokens per example: min {cost[0]}, max {cost[-1]} of max_length {report.max_length}"
            if cost
            else f"{len(report.pictures)} pictures"
        )
    lines += [f"warning: {w}" for w in report.warnings] or ["no warnings"]
    if report.sample:
        lines += [report.caption, report.sample]
    return lines
