"""Turn examples into token ids with the chat template, the loss masked to the answers as the model generates them."""

from __future__ import annotations

import random

from finetune.data import DataError, Example, load_splits

IGNORE_INDEX = -100


def use_chat_template(tokenizer, source: str, data: dict) -> None:
    """Give a tokenizer the workspace's chat template (data.chat_template: a Jinja file), with data.end_of_turn,
    the token that closes each answer, as its end token; DataError when there is none."""
    from pathlib import Path

    path = data.get("chat_template")
    if not path:
        raise DataError(
            f"{source} has no chat template: write one (a Jinja file, as apply_chat_template renders) and set "
            "data.chat_template to it and data.end_of_turn to the token that ends an answer"
        )
    if not Path(path).is_file():
        raise DataError(f"data.chat_template: {path} not found")
    tokenizer.chat_template = Path(path).read_text(encoding="utf-8")
    end = data.get("end_of_turn")
    if end:
        if tokenizer.convert_tokens_to_ids(end) in (None, tokenizer.unk_token_id):
            raise DataError(
                f"data.end_of_turn {end!r} is not one token of {source}'s vocabulary: take a chat template whose "
                "turn tokens the model has (configs/chat_template.jinja), and its end-of-turn token"
            )
        tokenizer.eos_token = end


def with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """The messages, led by the config's system prompt unless they bring their own."""
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)


def prompt_ids(tokenizer, messages: list[dict], tools: list[dict] | None = None, template_kwargs: dict | None = None):
    """A prompt's tokens as the model is asked it: the messages (and the functions they may call) through the chat
    template, with its generation prompt."""
    return tokenizer.apply_chat_template(
        messages,
        tools=tools or None,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        **(template_kwargs or {}),
    )["input_ids"]


def encode(
    example: Example,
    tokenizer,
    max_length: int,
    system_prompt: str | None = None,
    template_kwargs: dict | None = None,
    last_turn_only: bool = False,
) -> dict | None:
    """Token ids and labels; labels are IGNORE_INDEX outside assistant turns (outside the last one with
    last_turn_only, as preference pairs compare only their final answers): a tool-calling conversation learns
    its calls and answers, never the tools' results. None if nothing is left to learn. template_kwargs reach the
    chat template as they do when answering (e.g. enable_thinking), and the example's tools with them."""
    if example.images:  # finetune/images.py: the pictures become the model's image tokens
        from finetune.images import encode_images

        return encode_images(example, tokenizer.processor, max_length, system_prompt, template_kwargs)
    if example.text is not None:
        ids = tokenizer(example.text, add_special_tokens=True)["input_ids"][: max_length - 1] + [tokenizer.eos_token_id]
        return {"input_ids": ids, "labels": list(ids)}
    messages = with_system(example.messages, system_prompt)
    template_kwargs = {**(template_kwargs or {}), **({"tools": example.tools} if example.tools else {})}
    full, spans = assistant_spans(messages, tokenizer, example.source, template_kwargs)
    spans = spans[-1:] if last_turn_only else spans
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][:max_length]
    labels = span_labels(ids, encoded["offset_mapping"], spans)
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def span_labels(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """Each token's label: the token itself where it starts inside one of the character spans (the assistant turns),
    else IGNORE_INDEX."""
    return [
        token if end > start and any(s <= start < e for s, e in spans) else IGNORE_INDEX
        for token, (start, end) in zip(ids, offsets)
    ]


def assistant_spans(
    messages: list[dict], tokenizer, source: str, template_kwargs: dict
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns, each as the model generates it
    after the generation prompt. Templates that render earlier turns differently from the last (Qwen3 drops
    earlier turns' reasoning) train on the last turn only, with the rest as context."""

    def render(upto: int, prompt: bool = False) -> str:
        return (
            tokenizer.apply_chat_template(
                messages[:upto], tokenize=False, add_generation_prompt=prompt, **template_kwargs
            )
            if upto
            else ""
        )

    full = render(len(messages))
    turns = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    rendered = [(render(i, prompt=True), render(i + 1)) for i in turns]  # (the prompt before the turn, through it)
    if all(full.startswith(through) and through.startswith(before) for before, through in rendered):
        return full, [(len(before), len(through)) for before, through in rendered]
    if turns and turns[-1] == len(messages) - 1 and full.startswith(rendered[-1][0]):
        return full, [(len(rendered[-1][0]), len(full))]
    raise DataError(
        f"{source}: the chat template does not render the answer after its own generation prompt; "
        "cannot mask the loss (end each conversation with the assistant's answer)"
    )


def encode_examples(examples: list[Example], tokenizer, data: dict) -> list[dict]:
    """encode() each example with the data section's max_length and system prompt; drops those left with nothing to learn."""
    rows = (
        encode(e, tokenizer, data["max_length"], data.get("system_prompt"), data.get("chat_template_kwargs"))
        for e in examples
    )
    return [row for row in rows if row is not None]


def build_datasets(config: dict, tokenizer, seed: int) -> tuple[list[dict], list[dict]]:
    """Encode the data section's dataset: training rows and held-out evaluation rows."""
    data = config["data"]
    train, held_out = load_splits(config, seed)
    train_rows, eval_rows = encode_examples(train, tokenizer, data), encode_examples(held_out, tokenizer, data)
    if not train_rows:
        raise DataError(
            f"{data['path']}: every example is longer than max_length={data['max_length']} before its "
            "answer starts, so nothing is left to learn; raise data.max_length"
        )
    random.Random(seed).shuffle(train_rows)
    return train_rows, eval_rows
