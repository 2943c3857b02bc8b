"""The server's side of OpenAI's API, without a model: each request parameter honoured or refused by name (the
error's `param`), stop sequences cut across streamed pieces, answers checked against a response_format, and
log probabilities in both of OpenAI's shapes. tests/e2e/test_openai_client_e2e.py runs the official client
against each backend."""

from __future__ import annotations

import json

import pytest

from finetune.decoding import GRAMMAR, LOGPROBS, PENALTIES, Settings, StopText, logprob_entry
from finetune.inference import backend_classes
from helpers.project import WORKSPACE_TEMPLATE
from helpers.workspace import template_module

# the module as the template holds it (its file name carries the condition that renders it: a local runtime)
api = template_module(
    WORKSPACE_TEMPLATE / "finetune" / "{% if include.serve %}openai_api.py{% endif %}", "finetune.openai_api"
)
BadRequest, check_context, check_json = api.BadRequest, api.check_context, api.check_json
legacy_logprobs, missing_support, parse_chat, parse_completion = (
    api.legacy_logprobs,
    api.missing_support,
    api.parse_chat,
    api.parse_completion,
)

QUESTION = {"messages": [{"role": "user", "content": "x"}]}


def chat(**fields):
    return parse_chat(json.dumps({**QUESTION, **fields}).encode(), ["tuned"])


@pytest.mark.parametrize(
    "bad, param, message",
    [
        ({"temperature": 3}, "temperature", "'temperature' must be a number from 0 to 2"),
        ({"temperature": "hot"}, "temperature", "'temperature'"),
        ({"temperature": True}, "temperature", "'temperature'"),
        ({"top_p": 0}, "top_p", "'top_p' must be a number from 0 to 1 \\(above 0\\)"),
        ({"stream_options": []}, "stream_options", "'stream_options'"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options", "'stream_options'"),
        ({"max_tokens": -1}, "max_tokens", "from 1 to 4096"),
        ({"max_completion_tokens": 10**6}, "max_completion_tokens", "from 1 to 4096"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"n": 0}, "n", "from 1 to 8"),
        ({"seed": 1.5}, "seed", "integer"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "1 to 4"),
        ({"stop": [""]}, "stop", "non-empty"),
        ({"frequency_penalty": 3}, "frequency_penalty", "from -2 to 2"),
        ({"top_logprobs": 2}, "top_logprobs", "needs 'logprobs': true"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "from 0 to 20"),
        ({"response_format": {"type": "xml"}}, "response_format", "json_object"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "system, developer, user"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or a list of text parts"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0]",
            "the models here read text",
        ),
        (
            {"messages": [{"role": "tool", "content": "42", "tool_call_id": "a"}]},
            "messages[0].role",
            "trained to call tools",
        ),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "'tools' is not supported"),
        ({"logit_bias": {"5": 1}}, "logit_bias", "'logit_bias' is not supported"),
        ({"store": True}, "store", "takes only: frequency_penalty, logprobs, max_completion_tokens"),
    ],
)
def test_each_parameter_is_checked_and_a_refusal_names_it(bad, param, message):
    with pytest.raises(BadRequest, match=message) as error:
        chat(**bad)
    assert error.value.status == 400 and error.value.param == param


def test_what_a_chat_request_asks_for_is_kept():
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    request = chat(
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": parts}],
        temperature=0.7,
        stop="END",
        n=3,
        seed=-1,
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.5,
        max_completion_tokens=9,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
        stream_options={"include_usage": True},
        user="someone",
        tools=None,  # null is as good as absent
    )
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello\nthere"},
    ]
    assert request["sampling"] == {"temperature": 0.7} and request["n"] == 3 and request["max_tokens"] == 9
    assert request["usage"] is True and request["logprobs"] is True
    settings = request["settings"]
    assert settings.stop == ("END",) and settings.seed == (1 << 31) - 1 and settings.top_logprobs == 2
    assert settings.presence_penalty == 0.5 and settings.json_schema == {"type": "object"}
    assert settings.needs() == {LOGPROBS, PENALTIES, GRAMMAR}
    assert chat()["sampling"] == {} and chat()["max_tokens"] == 256  # the server's own settings
    assert chat(response_format={"type": "json_object"})["settings"].json_schema == {}


def test_unknown_models_deep_json_and_long_prompts_are_refused():
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_chat(b"[" * 100_000, ["tuned"])
    with pytest.raises(BadRequest, match="`gpt-9` does not exist") as error:
        chat(model="gpt-9")
    assert error.value.status == 404 and error.value.code == "model_not_found" and error.value.param == "model"
    with pytest.raises(BadRequest, match="maximum context length is 512 tokens.*150000 in the messages") as error:
        check_context(150_000, 256, 512)
    assert error.value.code == "context_length_exceeded"
    check_context(200, 256, 512)


def test_a_completion_request_takes_its_own_parameters():
    request = parse_completion(json.dumps({"prompt": ["a", "b"], "logprobs": 3, "n": 2}).encode())
    assert request["prompts"] == ["a", "b"] and request["max_tokens"] == 16  # OpenAI's default there
    assert request["settings"].top_logprobs == 3 and request["n"] == 2
    for bad, param in [({"echo": True}, "echo"), ({"best_of": 2}, "best_of"), ({"suffix": "x"}, "suffix")]:
        with pytest.raises(BadRequest) as error:
            parse_completion(json.dumps({"prompt": "a", **bad}).encode())
        assert error.value.param == param
    with pytest.raises(BadRequest) as error:
        parse_completion(json.dumps({"prompt": "a", "messages": []}).encode())  # a chat field on the wrong endpoint
    assert error.value.param == "messages"


def test_a_backend_lacking_a_setting_is_named_with_one_that_has_it():
    supports = {backend.name: backend.supports for backend in backend_classes()}
    refusal = missing_support(chat(frequency_penalty=1.0), supports["onnx"], "onnx")
    assert refusal.param == "frequency_penalty" and "--backend pytorch or gguf" in str(refusal)
    assert missing_support(chat(presence_penalty=1.0), supports["onnx"], "onnx").param == "presence_penalty"
    assert missing_support(chat(frequency_penalty=1.0), supports["pytorch"], "pytorch") is None
    json_object = {"response_format": {"type": "json_object"}}
    assert missing_support(chat(**json_object), supports["onnx"], "onnx") is None  # checked once complete
    streamed = missing_support(chat(stream=True, **json_object), supports["onnx"], "onnx")
    assert streamed.param == "response_format" and "--backend gguf" in str(streamed)


@pytest.mark.parametrize(
    "pieces, stops, said, reached",
    [
        (["Hello wo", "rld. END", " more"], ["END"], "Hello world. ", True),
        (["Hel", "lo E", "N", "D!"], ["END"], "Hello ", True),  # the stop spans three pieces
        (["an E", "ND", "x"], ["x", "END"], "an ", True),  # the first of several to appear
        (["no E", "nd here"], ["END"], "no End here", False),  # held back, then let go
        (["ends in E"], ["END"], "ends in E", False),  # what was held is given at the end
    ],
)
def test_stop_sequences_are_cut_across_pieces(pieces, stops, said, reached):
    scanner, out, hit = StopText(stops), "", False
    for piece in pieces:
        text, hit = scanner.feed(piece)
        out += text
        if hit:
            break
    if not hit:
        out += scanner.flush()
    assert (out, hit) == (said, reached)


def test_answers_are_checked_against_the_response_format():
    assert check_json('{"a": 1}', {}) is None
    assert "not valid JSON" in check_json("{a: 1", {})
    assert "not an object" in check_json("[1]", {})
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert check_json('{"a": 2}', schema) is None
    assert "does not match the schema" in check_json('{"a": "two"}', schema)


def test_log_probabilities_in_both_shapes():
    texts = {0: "a", 1: "b", 2: "c"}
    entry = logprob_entry([0.0, 2.0, 1.0], 2, 2, texts.get)
    assert entry["token"] == "c" and entry["bytes"] == [99]
    assert [t["token"] for t in entry["top_logprobs"]] == ["b", "c"]
    total = sum(pow(2.718281828, t) for t in (0.0, 2.0, 1.0))
    assert entry["logprob"] == pytest.approx(1.0 - __import__("math").log(total))
    legacy = legacy_logprobs([entry, entry])
    assert legacy["tokens"] == ["c", "c"] and legacy["text_offset"] == [0, 1]
    assert legacy["top_logprobs"][0] == {"b": entry["top_logprobs"][0]["logprob"], "c": entry["logprob"]}
    assert Settings().needs() == set()
