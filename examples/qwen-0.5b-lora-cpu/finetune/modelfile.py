"""An Ollama Modelfile for a GGUF model: the model's chat template in Ollama's (Go) template syntax, its stop
tokens, the system prompt and the generation settings of configs/train.yaml.

The chat template is read, not guessed: it is rendered with marker messages, and the text around each marker
gives what each role's turn starts with and what every turn ends with. The result is checked by rendering
conversations both ways; a template that does not decompose so (one that rewrites earlier turns, say) gets no
TEMPLATE line, and Ollama falls back on the template stored in the GGUF file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MARK = {
    "system": "\u2063SYSTEM\u2063",
    "user1": "\u2063USER1\u2063",
    "assistant1": "\u2063ASSISTANT1\u2063",
    "user2": "\u2063USER2\u2063",
}


@dataclass(frozen=True)
class Turns:
    """A chat template as Ollama needs it: each role's opening text, the text that ends every turn, and the
    generation prompt (the assistant's opening, and whatever the template's switches add to it)."""

    system: str
    user: str
    assistant: str
    end: str
    prompt: str
    stops: tuple[str, ...]

    def render(self, messages: list[dict]) -> str:
        """The prompt Ollama's template below renders for messages (with the generation prompt)."""
        return "".join(getattr(self, m["role"]) + m["content"] + self.end for m in messages) + self.prompt

    def go_template(self) -> str:
        def quoted(text: str) -> str:
            return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""  # a Go string literal

        return (
            "{{- range .Messages }}"
            '{{- if eq .Role "system" }}'
            + quoted(self.system)
            + '{{- else if eq .Role "user" }}'
            + quoted(self.user)
            + '{{- else if eq .Role "assistant" }}'
            + quoted(self.assistant)
            + "{{- end }}{{ .Content }}"
            + quoted(self.end)
            + "{{- end }}"
            + quoted(self.prompt)
        )


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start) : text.index(end)]


def read_turns(
    tokenizer, end_ids: list[int], template_kwargs: dict | None = None, with_system: bool = True
) -> Turns | None:
    """The chat template's turns, or None when it is not one opening per role and one common ending.
    end_ids: the token ids generation stops at (generation_config.json's eos_token_id). with_system: every
    conversation has a system message (the Modelfile's SYSTEM), so a template's default system is never used."""
    kwargs = template_kwargs or {}
    conversation = [
        {"role": "system", "content": MARK["system"]},
        {"role": "user", "content": MARK["user1"]},
        {"role": "assistant", "content": MARK["assistant1"]},
        {"role": "user", "content": MARK["user2"]},
    ]
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, **kwargs)
    except Exception:  # noqa: BLE001  a template that refuses this conversation (no system role, say)
        return None
    if not all(mark in text for mark in MARK.values()):
        return None
    bos = tokenizer.bos_token or ""
    head = text[: text.index(MARK["system"])]
    head = head[len(bos) :] if bos and head.startswith(bos) else head  # llama.cpp adds BOS itself
    after_system = _between(text, MARK["system"], MARK["user1"])
    after_user = _between(text, MARK["user1"], MARK["assistant1"])
    after_assistant = _between(text, MARK["assistant1"], MARK["user2"])
    tail = text[text.index(MARK["user2"]) + len(MARK["user2"]) :]
    stops = _stop_tokens(tokenizer, after_system + after_user + after_assistant, end_ids)
    end = _turn_end(after_system, after_user, after_assistant, stops)
    if end is None:
        return None
    if not tail.startswith(end + after_user[len(end) :]):
        return None
    turns = Turns(
        system=head,
        user=after_system[len(end) :],
        assistant=after_user[len(end) :],
        end=end,
        prompt=tail[len(end) :],
        stops=stops,
    )
    if after_assistant[len(end) :] != turns.user:
        return None
    for messages in (conversation, conversation[:2]) + (() if with_system else (conversation[1:2],)):
        want = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
        if turns.render(messages) != (want[len(bos) :] if bos and want.startswith(bos) else want):
            return None
    return turns


def _stop_tokens(tokenizer, text: str, end_ids: list[int]) -> tuple[str, ...]:
    """The tokens between turns that end generation: the end-of-sequence token and those end_ids name."""
    ends = {tokenizer.eos_token} | {
        t for t in tokenizer.get_added_vocab() if tokenizer.convert_tokens_to_ids(t) in end_ids
    }
    return tuple(sorted(t for t in ends if t and t in text))


def _turn_end(after_system: str, after_user: str, after_assistant: str, stops: tuple[str, ...]) -> str | None:
    """The text every turn ends with: up to and including the first stop token, and the line breaks after it."""
    for text in (after_system, after_user, after_assistant):
        positions = [text.find(s) + len(s) for s in stops if s in text]
        if not positions:
            return None
    cut = min(after_system.find(s) + len(s) for s in stops if s in after_system)
    while cut < len(after_system) and after_system[cut] in "\n ":
        cut += 1
    end = after_system[:cut]
    return end if after_user.startswith(end) and after_assistant.startswith(end) else None


def modelfile(
    gguf_name: str,
    turns: Turns | None,
    system: str | None,
    generation: dict,
    context_length: int,
    adapter: str | None = None,
) -> str:
    """The Modelfile's text (FROM ./gguf_name, and ADAPTER ./adapter when given, in the same folder)."""
    lines = ["# Ollama: ollama create NAME -f Modelfile (in this folder), then ollama run NAME", f"FROM ./{gguf_name}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    if turns is not None:
        lines.append(f'TEMPLATE """{turns.go_template()}"""')
        lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in turns.stops]
    else:
        lines.append(
            "# no TEMPLATE: this chat template rewrites earlier turns; Ollama uses the one stored in the GGUF file"
        )
    if system:
        lines.append(f'SYSTEM """{system}"""' if '"""' not in system else f"SYSTEM {json.dumps(system)}")
    temperature = float(generation.get("temperature") or 0)
    lines.append(f"PARAMETER temperature {temperature:g}")
    if temperature > 0 and generation.get("top_p"):
        lines.append(f"PARAMETER top_p {float(generation['top_p']):g}")
    if generation.get("repetition_penalty"):
        lines.append(f"PARAMETER repeat_penalty {float(generation['repetition_penalty']):g}")
    lines.append(f"PARAMETER num_ctx {int(context_length)}")
    if generation.get("max_new_tokens"):
        lines.append(f"PARAMETER num_predict {int(generation['max_new_tokens'])}")
    return "\n".join(lines) + "\n"
