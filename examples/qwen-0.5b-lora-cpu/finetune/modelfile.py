"""An Ollama Modelfile for a GGUF model: the model's chat template in Ollama's (Go) template syntax (with its tools,
calls and results for a model trained to call tools), its stop tokens, the system prompt and the generation
settings of configs/train.yaml.

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

    def go_template(self, tools: ToolTurns | None = None) -> str:
        if tools is not None:
            return tools.go_template(self)
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


def quoted(text: str) -> str:
    """Text as a Go template writes it: a string literal in an action."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


# a function and a call's arguments whose text is found again in what the template renders
TOOLS = [
    {"type": "function", "function": {"name": f"\u2063F{i}\u2063", "parameters": {"type": "object", "properties": {}}}}
    for i in (1, 2)
]
ARGUMENTS = {"\u2063A\u2063": 1}
RESULT = "\u2063RESULT\u2063"


@dataclass(frozen=True)
class ToolTurns:
    """How a chat template writes tools: the functions after the system message (header, each function's JSON
    with `between` them, footer), each call of an assistant turn (before its name, between name and arguments,
    after the arguments; `sep` between calls) and a tool's result (before and after it, the turn's end included)."""

    header: str
    between: str
    footer: str
    call: tuple[str, str, str]
    sep: str
    result: tuple[str, str]

    def render(self, turns: Turns, messages: list[dict], tools: list[dict]) -> str:
        """What the Go template below renders for messages offering tools, with the generation prompt."""
        out = []
        for m in messages:
            if m["role"] == "tool":
                out.append(self.result[0] + m["content"] + self.result[1])
                continue
            out.append(getattr(turns, m["role"]) + m["content"])
            if m["role"] == "system" and tools:
                functions = self.between.join(json.dumps(t, ensure_ascii=False) for t in tools)
                out.append(self.header + functions + self.footer)
            calls = [c["function"] for c in m.get("tool_calls") or []]
            pre, mid, post = self.call
            out.append(
                self.sep.join(
                    pre + c["name"] + mid + json.dumps(c["arguments"], ensure_ascii=False) + post for c in calls
                )
            )
            out.append(turns.end)
        return "".join(out) + turns.prompt

    def go_template(self, turns: Turns) -> str:
        pre, mid, post = self.call
        return (
            "{{- range .Messages }}"
            '{{- if eq .Role "system" }}'
            + quoted(turns.system)
            + "{{ .Content }}{{ if $.Tools }}"
            + quoted(self.header)
            + "{{ range $i, $t := $.Tools }}{{ if $i }}"
            + quoted(self.between)
            + "{{ end }}{{ json $t }}{{ end }}"
            + quoted(self.footer)
            + "{{ end }}"
            + quoted(turns.end)
            + '{{- else if eq .Role "user" }}'
            + quoted(turns.user)
            + "{{ .Content }}"
            + quoted(turns.end)
            + '{{- else if eq .Role "assistant" }}'
            + quoted(turns.assistant)
            + "{{ .Content }}{{ range $i, $c := .ToolCalls }}{{ if $i }}"
            + quoted(self.sep)
            + "{{ end }}"
            + quoted(pre)
            + "{{ $c.Function.Name }}"
            + quoted(mid)
            + "{{ json $c.Function.Arguments }}"
            + quoted(post)
            + "{{ end }}"
            + quoted(turns.end)
            + '{{- else if eq .Role "tool" }}'
            + quoted(self.result[0])
            + "{{ .Content }}"
            + quoted(self.result[1])
            + "{{- end }}{{- end }}"
            + quoted(turns.prompt)
        )


def read_tool_turns(tokenizer, turns: Turns, template_kwargs: dict | None = None) -> ToolTurns | None:
    """The chat template's tools, calls and results as ToolTurns, or None when it does not write them so (then the
    Modelfile's template has no tools, and Ollama answers a request that offers some with its own refusal)."""
    kwargs = template_kwargs or {}

    def render(messages: list[dict], tools: list[dict] | None, prompt: bool = True) -> str:
        text = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=prompt, **kwargs
        )
        bos = tokenizer.bos_token or ""
        return text[len(bos) :] if bos and text.startswith(bos) else text

    def called(*names: str) -> dict:
        calls = [
            {"id": f"call_{n}", "type": "function", "function": {"name": n, "arguments": ARGUMENTS}} for n in names
        ]
        return {"role": "assistant", "content": "", "tool_calls": calls}

    system, user = {"role": "system", "content": MARK["system"]}, {"role": "user", "content": MARK["user1"]}
    name1, name2 = (t["function"]["name"] for t in TOOLS)
    tool1, tool2 = (json.dumps(t, ensure_ascii=False) for t in TOOLS)
    arguments = json.dumps(ARGUMENTS, ensure_ascii=False)
    try:
        both = render([system, user], TOOLS)
        one_call = render([system, user, called(name1)], TOOLS, prompt=False)
        two_calls = render([system, user, called(name1, name2)], TOOLS, prompt=False)
        answered = render(
            [system, user, called(name1), {"role": "tool", "content": RESULT, "tool_call_id": "call_1"}], TOOLS
        )
    except Exception:  # noqa: BLE001  a template that refuses tools or these turns
        return None
    plain = turns.render([system, user])
    opening = turns.system + MARK["system"]
    if not (both.startswith(opening) and tool1 in both and tool2 in both):
        return None
    header = _between(both, MARK["system"], tool1)
    between = _between(both, tool1, tool2)
    rest = both[both.index(tool2) + len(tool2) :]
    tail = plain[len(opening) :]
    if not rest.endswith(tail):
        return None
    footer = rest[: len(rest) - len(tail)]
    prefix = both[: -len(turns.prompt)] if turns.prompt else both
    if not (one_call.startswith(prefix + turns.assistant) and one_call.endswith(turns.end)):
        return None
    written = one_call[len(prefix + turns.assistant) : len(one_call) - len(turns.end)]
    if name1 not in written or arguments not in written:
        return None
    pre, after = written.split(name1, 1)
    mid, post = after.split(arguments, 1)
    second = two_calls[len(prefix + turns.assistant) : len(two_calls) - len(turns.end)]
    first, two = (pre + name + mid + arguments + post for name in (name1, name2))
    if not (second.startswith(first) and second.endswith(two)):
        return None
    sep = second[len(first) : len(second) - len(two)]
    after_call = answered[len(one_call) :]
    if RESULT not in after_call or not after_call.endswith(turns.prompt):
        return None
    opened, closed = after_call.split(RESULT, 1)
    found = ToolTurns(
        header, between, footer, (pre, mid, post), sep, (opened, closed[: len(closed) - len(turns.prompt)])
    )
    # one result per call turn: a template that joins several results into one turn (Qwen's) gets each in a turn
    # of its own from Ollama, as Ollama's own Qwen template does
    checks = [
        [system, user],
        [system, user, called(name1, name2)],
        [system, user, called(name1), {"role": "tool", "content": "a"}, {"role": "assistant", "content": "c"}, user],
    ]
    for messages in checks:
        if found.render(turns, messages, TOOLS) != render(messages, TOOLS):
            return None
    return found


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
    tools: ToolTurns | None = None,
) -> str:
    """The Modelfile's text (FROM ./gguf_name, and ADAPTER ./adapter when given, in the same folder); with tools, its
    template writes the tools offered, the calls and the results as the model learnt them."""
    lines = ["# Ollama: ollama create NAME -f Modelfile (in this folder), then ollama run NAME", f"FROM ./{gguf_name}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    if turns is not None:
        if tools is not None:
            lines.append("# tools as the model learnt them; Ollama writes JSON without spaces where training had them")
        lines.append(f'TEMPLATE """{turns.go_template(tools)}"""')
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
