"""A workspace's server, driven by OpenAI's own Python client as an application would drive it: each parameter
the server honours changes the answer as OpenAI's API says it does, and each it cannot honour is refused with
a 400 (or a 422 for an answer that broke its response_format) that names it."""

from __future__ import annotations

import json
import math
import sys

from helpers.project import WORKSPACE_TEMPLATE


def speaks_openai(base: str, question: str) -> None:
    """The checks, against the server at base (http://host:port) whose first model answers; the backend it
    serves with decides which optional settings are honoured and which refused (its /health says which)."""
    import openai

    if str(WORKSPACE_TEMPLATE) not in sys.path:  # the names of the optional settings, as the workspace's code says
        sys.path.insert(0, str(WORKSPACE_TEMPLATE))
    from finetune.decoding import GRAMMAR, PENALTIES

    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    health = json.loads(_get(base + "/health"))
    supports = set(health["supports"])
    messages = [{"role": "user", "content": question}]

    def ask(**options):
        return client.chat.completions.create(model=model, messages=messages, **options)

    def refused(error_type, param: str, **options) -> None:
        try:
            ask(**options)
        except error_type as error:
            assert error.body["param"] == param, error.body
        else:
            raise AssertionError(f"{options} was not refused")

    # sampling with a seed answers the same twice; a stop sequence cuts that answer where it first appears
    sampled = {"temperature": 1.0, "max_tokens": 24, "seed": 11}
    first, again = ask(**sampled), ask(**sampled)
    text = first.choices[0].message.content
    assert text == again.choices[0].message.content
    at = next((i for i in range(3, len(text) - 1) if text[i : i + 2].isalnum()), None)
    assert at is not None, f"no two letters to stop at in {text!r}"
    stop = text[at : at + 2]
    cut = ask(**sampled, stop=[stop]).choices[0]
    assert (cut.message.content, cut.finish_reason) == (text[: text.find(stop)], "stop")

    # n answers: the first is the seed's own, the second sampled with the next seed (a sure model may say the same
    # twice), each counted in the usage
    two, next_seed = ask(**sampled, n=2), ask(**{**sampled, "seed": sampled["seed"] + 1})
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].message.content == text
    assert two.choices[1].message.content == next_seed.choices[0].message.content
    assert two.usage.completion_tokens == first.usage.completion_tokens + next_seed.usage.completion_tokens

    # greedy: the same answer streamed, or asked with the content as a list of text parts
    greedy = ask(max_completion_tokens=12, temperature=0)
    answer = greedy.choices[0].message.content
    parts = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": [{"type": "text", "text": question}]}],
        max_tokens=12,
        temperature=0,
    )
    assert parts.choices[0].message.content == answer and greedy.usage.completion_tokens <= 12
    chunks = list(ask(max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer and chunks[-1].usage.completion_tokens == greedy.usage.completion_tokens

    # log probabilities: one per token, the greedy token the likeliest of its top three
    scored = ask(max_tokens=6, temperature=0, logprobs=True, top_logprobs=3).choices[0]
    entries = scored.logprobs.content
    assert 0 < len(entries) <= 6
    for entry in entries:
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and entry.logprob == tops[0]
        assert sum(math.exp(t) for t in tops) <= 1.0 + 1e-6

    # the legacy completions endpoint: a raw prompt, no chat template
    done = client.completions.create(model=model, prompt=question, max_tokens=5, temperature=0, logprobs=2)
    assert done.object == "text_completion" and 0 < done.usage.completion_tokens <= 5
    assert len(done.choices[0].logprobs.tokens) == done.usage.completion_tokens - (
        done.choices[0].finish_reason == "stop"
    )

    # the penalties change a greedy answer that repeats a token, or are refused by a backend without them
    if PENALTIES in supports:
        tokens = [e.token for e in ask(max_tokens=16, temperature=0, logprobs=True).choices[0].logprobs.content]
        penalised = ask(max_tokens=16, temperature=0, frequency_penalty=2.0).choices[0].message.content
        assert len(set(tokens)) == len(tokens) or penalised != "".join(tokens)
    else:
        refused(openai.BadRequestError, "frequency_penalty", frequency_penalty=1.0)

    # JSON answers: held to a schema by a grammar, else checked and refused with the reason
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    json_schema = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
    if GRAMMAR in supports:
        held = ask(max_tokens=64, temperature=0, response_format=json_schema).choices[0]
        assert held.finish_reason == "stop" and json.loads(held.message.content) in ({"ok": True}, {"ok": False})
    else:
        refused(openai.UnprocessableEntityError, "response_format", max_tokens=8, response_format=json_schema)
        refused(openai.BadRequestError, "response_format", max_tokens=8, stream=True, response_format=json_schema)

    # what no backend here does is refused by name, never ignored
    refused(openai.BadRequestError, "tools", tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    refused(openai.BadRequestError, "logit_bias", logit_bias={"5": 10})


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()
