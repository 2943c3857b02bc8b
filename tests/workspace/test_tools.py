"""Function calling without a model: each catalog tool-call format is what the real chat templates of its family
write (llama.cpp's models/templates/, found by the format's detect strings) and reads back as the call; tools data
is checked row by row with file:line; training learns the calls and answers, never the tools' results; the metric
scores calls as JSON; a stream holds back a call's text; the server's request side takes tools and tool turns."""

from __future__ import annotations

import json
import tarfile
from http.server import ThreadingHTTPServer

import pytest

from finetune import metrics
from finetune.data import DataError, read_examples
from finetune.encoding import IGNORE_INDEX, encode
from finetune.inference import Backend
from finetune.tiny import build_tokenizer
from finetune.tool_calls import CallStream, parse
from helpers.project import ROOT, WORKSPACE_TEMPLATE
from helpers.real_tokenizer import llama_cpp_source
from helpers.servers import in_thread
from helpers.workspace import template_module
from tuneforge import catalog
from tuneforge.planning.models import tool_calls_in

FORMS = catalog.load("tool_calls")
SAMPLE = ROOT / "templates" / "includes" / "samples" / "tools" / "tools.jsonl"
STOCK = {
    "type": "function",
    "function": {
        "name": "check_stock",
        "description": "How many the shop has.",
        "parameters": {
            "type": "object",
            "properties": {"plant": {"type": "string"}, "size": {"type": "string", "enum": ["small", "large"]}},
            "required": ["plant"],
        },
    },
}
CALL = {"id": "abcdefghi", "type": "function", "function": {"name": "check_stock", "arguments": {"plant": "fern"}}}
CONVERSATION = [
    {"role": "user", "content": "Do you have ferns?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "abcdefghi", "name": "check_stock", "content": '{"in_stock": 3}'},
    {"role": "assistant", "content": "Yes, three."},
]
# real templates (llama.cpp's models/templates/) -> the format the catalog gives their family, None: no tool calls
REAL_TEMPLATES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
    "Qwen-Qwen3-0.6B.jinja": "hermes",
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3_json",
    "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3_json",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
    "HuggingFaceTB-SmolLM3-3B.jinja": None,  # drops the calls of earlier turns: trains with the catalog's ChatML
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": None,  # [TOOL_CALLS]name[ARGS]{...}: no parser for it here
    "microsoft-Phi-3.5-mini-instruct.jinja": None,
}


@pytest.fixture(scope="module")
def real_templates() -> dict[str, str]:
    with tarfile.open(llama_cpp_source()) as archive:
        return {
            member.name.rsplit("/", 1)[-1]: archive.extractfile(member).read().decode()
            for member in archive.getmembers()
            if "/models/templates/" in member.name and member.name.rsplit("/", 1)[-1] in REAL_TEMPLATES
        }


def rendered_call(template: str) -> str:
    """The assistant's tool-call turn as the template writes it after its own generation prompt."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    compiled = _compile_jinja_template(template)
    common = {"tools": [STOCK], "bos_token": "<s>", "eos_token": "</s>"}
    before = compiled.render(messages=CONVERSATION[:1], add_generation_prompt=True, **common)
    through = compiled.render(messages=CONVERSATION[:2], add_generation_prompt=False, **common)
    assert through.startswith(before)
    return through[len(before) :]


@pytest.mark.parametrize("name", REAL_TEMPLATES)
def test_each_format_reads_back_the_call_its_familys_real_template_writes(real_templates, name):
    form = tool_calls_in(real_templates[name])
    assert form == REAL_TEMPLATES[name]
    if form is None:
        return
    text = rendered_call(real_templates[name])
    for end in ("<|im_end|>", "<|eot_id|>", "</s>"):  # the end token, which decoding drops
        text = text.split(end)[0]
    content, calls, broken = parse(text, FORMS[form])
    assert calls == [{"name": "check_stock", "arguments": {"plant": "fern"}}] and not broken
    assert content in ("", "<think>\n\n</think>")  # Qwen3's empty reasoning, which its generation prompt holds
    if FORMS[form]["start"] and FORMS[form]["start"].startswith("["):  # a special token decoding skips
        assert parse(text.replace(FORMS[form]["start"], ""), FORMS[form])[1] == parse(text, FORMS[form])[1]


@pytest.mark.parametrize("name", catalog.load("chat_formats"))
def test_the_catalogs_own_turns_write_hermes_calls_and_keep_tool_results_in_user_turns(name):
    form = catalog.load("chat_formats")[name]["tool_calls"]
    template = catalog.load("chat_formats")[name]["template"]
    assert tool_calls_in(template) == form
    text = rendered_call(template)
    assert parse(text.split(catalog.load("chat_formats")[name]["end_of_turn"])[0], FORMS[form])[1] == [
        {"name": "check_stock", "arguments": {"plant": "fern"}}
    ]
    from transformers.utils.chat_template_utils import _compile_jinja_template

    whole = _compile_jinja_template(template).render(messages=CONVERSATION, tools=[STOCK], bos_token="")
    assert '\n<tool_response>\n{"in_stock": 3}\n</tool_response>' in whole and whole.count("check_stock") == 2


def test_parse_keeps_text_and_reports_broken_calls():
    hermes = FORMS["hermes"]
    assert parse('Let me check.\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>', hermes) == (
        "Let me check.",
        [{"name": "a", "arguments": {}}],
        [],
    )
    assert parse('<tool_call>\n{"name": "a", "arguments": {</tool_call>', hermes) == (
        "",
        [],
        ['{"name": "a", "arguments": {'],
    )
    assert parse("{not json at all", FORMS["llama3_json"]) == ("{not json at all", [], [])
    assert parse("Plain answer.", hermes) == ("Plain answer.", [], [])


def test_a_stream_sends_the_text_and_holds_back_the_call():
    stream = CallStream(FORMS["hermes"])
    sent = [
        stream.feed(piece)
        for piece in ["Let me", " check.\n<to", 'ol_call>\n{"name": "a",', ' "arguments": {}}\n</tool_call>']
    ]
    assert "".join(sent) == "Let me check.\n"
    assert stream.finish() == ("", [{"name": "a", "arguments": {}}])
    plain = CallStream(FORMS["hermes"])
    assert plain.feed("a <tool") == "a " and plain.feed(" box") == "<tool box" and plain.finish() == ("", [])
    whole = CallStream(FORMS["llama3_json"])
    assert whole.feed('{"name": "a", ') == "" and whole.feed('"parameters": {}}') == ""
    assert whole.finish() == ("", [{"name": "a", "arguments": {}}])


def test_the_sample_data_reads_and_each_call_matches_its_schema():
    examples = read_examples(str(SAMPLE), "tools")
    calls = [m for e in examples for m in e.messages if m.get("tool_calls")]
    assert len(examples) >= 40 and len(calls) >= 30
    assert all(e.tools and e.messages[-1]["role"] == "assistant" for e in examples)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("tools"), "'tools' must be a non-empty list of functions"),
        (lambda r: r["tools"][0]["function"].update(parameters={"type": "nope"}), "not a valid JSON schema"),
        (lambda r: r["messages"][1]["tool_calls"][0]["function"].update(name="buy"), "calls 'buy', which is not among"),
        (
            lambda r: r["messages"][1]["tool_calls"][0]["function"].update(arguments='{"size": "small"}'),
            "do not match its schema ('plant' is a required property)",
        ),
        (lambda r: r["messages"][1]["tool_calls"][0]["function"].update(arguments="{plant"), "not valid JSON"),
        (lambda r: r["messages"].pop(1), "a tool result with no assistant tool call before it"),
        (lambda r: r["messages"].__setitem__(-1, {"role": "assistant", "content": " "}), "no text 'content'"),
    ],
)
def test_a_bad_row_is_named_with_its_line(tmp_path, change, message):
    good = {"tools": [STOCK], "messages": json.loads(json.dumps(CONVERSATION))}
    good["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"plant": "fern"}'
    bad = json.loads(json.dumps(good))
    change(bad)
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=f"data.jsonl:2: .*{message}".replace("(", "\\(").replace(")", "\\)")):
        read_examples(str(path), "tools")


def test_training_learns_the_calls_and_answers_never_the_tool_results():
    example = read_examples(str(SAMPLE), "tools")[0]
    tokenizer = build_tokenizer([SAMPLE.read_text()], 512, tools=True)
    row = encode(example, tokenizer, 4096, "You run a plant shop.")
    trained = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX])
    result = next(m for m in example.messages if m["role"] == "tool")["content"]
    call = next(m for m in example.messages if m.get("tool_calls"))["tool_calls"][0]["function"]
    assert f'"name": "{call["name"]}"' in trained and example.reference in trained
    assert result not in trained and "check_stock" not in trained.split("<tool_call>")[0]
    assert '"description"' in tokenizer.decode(row["input_ids"])  # the tools reach the prompt, untrained


def test_the_metric_scores_calls_as_json_and_answers_by_f1():
    form = FORMS["hermes"]
    call_turn = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "check_stock", "arguments": '{"plant": "fern"}'}}],
    }
    answer_turn = {"role": "assistant", "content": "Yes, three."}
    right = '<tool_call>\n{"arguments": {"plant": "fern"}, "name": "check_stock"}\n</tool_call>'
    wrong = '<tool_call>\n{"name": "check_stock", "arguments": {"plant": "rose", "size": "huge"}}\n</tool_call>'
    references = [(call_turn, [STOCK]), (call_turn, [STOCK]), (answer_turn, [STOCK])]
    scores = metrics.tools([right, wrong, "Yes, three."], references, form)
    assert scores == {"call_accuracy": 0.5, "valid_calls": 0.5, "answer_f1": 1.0}
    assert metrics.tools([right, right, right], references, form)["answer_f1"] == 0.0  # a call where text was due


api = template_module(
    WORKSPACE_TEMPLATE / "finetune" / "{% if include.serve %}openai_api.py{% endif %}", "finetune.openai_api"
)


def chat(tool_form=FORMS["hermes"], **fields):
    body = {"messages": [{"role": "user", "content": "x"}], **fields}
    return api.parse_chat(json.dumps(body).encode(), ["tuned"], tool_form)


def test_the_server_takes_tools_and_tool_turns_and_refuses_what_it_cannot_honour():
    request = chat(
        tools=[STOCK],
        messages=[
            *CONVERSATION[:1],
            {
                **CONVERSATION[1],
                "tool_calls": [{**CALL, "function": {"name": "check_stock", "arguments": '{"plant": "fern"}'}}],
            },
            CONVERSATION[2],
        ],
    )
    assert request["tools"] == [STOCK] and request["tool_choice"] == "auto"
    assert request["messages"][1]["tool_calls"][0]["function"] == {
        "name": "check_stock",
        "arguments": {"plant": "fern"},
    }
    assert request["messages"][2] == {"role": "tool", "content": '{"in_stock": 3}', "tool_call_id": "abcdefghi"}
    assert chat(tools=[STOCK], tool_choice="none")["tools"] is None
    assert (
        chat(tools=[STOCK], tool_choice={"type": "function", "function": {"name": "check_stock"}})["tool_choice"]
        == "check_stock"
    )
    refused = [
        ({"tool_form": None, "tools": [STOCK]}, "tools", "not trained to call tools"),
        ({"tools": [{"type": "function"}]}, "tools", "tool 1 must be"),
        ({"tool_choice": "auto"}, "tool_choice", "needs 'tools'"),
        ({"tools": [STOCK], "tool_choice": "always"}, "tool_choice", "auto, none, required"),
        (
            {"tools": [STOCK], "tool_choice": {"type": "function", "function": {"name": "buy"}}},
            "tool_choice",
            "one of check_stock",
        ),
        ({"tools": [STOCK], "tool_choice": "required", "stream": True}, "tool_choice", "with stream"),
        ({"tools": [STOCK], "parallel_tool_calls": False}, "parallel_tool_calls", "every call"),
        ({"functions": [STOCK]}, "functions", "replaced it with tools"),
        ({"tool_form": None, "messages": [CONVERSATION[2]]}, "messages[0].role", "not trained to call tools"),
    ]
    for fields, param, message in refused:
        with pytest.raises(api.BadRequest, match=message) as error:
            chat(**fields)
        assert error.value.param == param


serve = template_module(WORKSPACE_TEMPLATE / "{% if include.serve %}serve.py{% endif %}", "serve")


class Scripted(Backend):
    """A backend that answers each prompt with the next of its scripted texts, token by token."""

    name, models, active, sampling, context_length = "pytorch", ["tuned"], "tuned", {}, 8192

    def __init__(self, tokenizer, answers: list[str]):
        self.tokenizer, self.answers = tokenizer, list(answers)
        self.end_ids = frozenset({tokenizer.eos_token_id})
        self.prompts: list[str] = []

    def _steps(self, ids, max_new_tokens, settings):
        self.prompts.append(self.tokenizer.decode(ids))
        for token in [*self.tokenizer(self.answers.pop(0))["input_ids"], self.tokenizer.eos_token_id]:
            yield token, None


def test_the_official_client_gets_calls_and_streamed_calls_then_sends_the_result_back():
    """serve.py's HTTP side with the official openai client: a call comes back as tool_calls (finish_reason
    tool_calls), streamed as one delta per call, and the tool's result goes into the next prompt."""
    import openai

    call = '<tool_call>\n{"name": "check_stock", "arguments": {"plant": "fern"}}\n</tool_call>'
    tokenizer = build_tokenizer([SAMPLE.read_text(), call], 512, tools=True)
    backend = Scripted(tokenizer, [call, "Checking.\n" + call, "Yes, three ferns.", "Ferns are in stock."])
    handler = serve.make_handler({"tuned": (backend, "tuned")}, tool_form=FORMS["hermes"])
    with in_thread(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        question = [{"role": "user", "content": "Do you have ferns?"}]
        answer = client.chat.completions.create(model="tuned", messages=question, tools=[STOCK])
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (made,) = choice.message.tool_calls
        assert made.function.name == "check_stock" and json.loads(made.function.arguments) == {"plant": "fern"}
        assert '"name": "check_stock"' in backend.prompts[-1]  # the tools reached the prompt

        chunks = list(client.chat.completions.create(model="tuned", messages=question, tools=[STOCK], stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
        assert text == "Checking.\n" and [d.function.name for d in deltas] == ["check_stock"]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        followed = [*question, choice.message.model_dump(exclude_none=True)]
        followed.append({"role": "tool", "tool_call_id": made.id, "content": '{"in_stock": 3}'})
        final = client.chat.completions.create(model="tuned", messages=followed, tools=[STOCK])
        assert final.choices[0].message.content == "Yes, three ferns." and final.choices[0].finish_reason == "stop"
        assert '<tool_response>\n{"in_stock": 3}\n</tool_response>' in backend.prompts[-1]

        with pytest.raises(openai.UnprocessableEntityError, match="answered without a tool call"):
            client.chat.completions.create(model="tuned", messages=question, tools=[STOCK], tool_choice="required")


_modelfile = template_module(
    WORKSPACE_TEMPLATE / "finetune" / "{% if include.gguf %}modelfile.py{% endif %}", "modelfile"
)


@pytest.mark.parametrize("source", ["tiny", "catalog chatml", "Qwen-Qwen2.5-7B-Instruct.jinja", "tiny without tools"])
def test_the_ollama_template_writes_tools_calls_and_results_as_the_chat_template_does(real_templates, source):
    """The Modelfile's tool section is read from the chat template and rendered back (as Ollama's template would,
    JSON spacing aside) to what the chat template renders for conversations that offer tools, call and answer."""
    import copy

    tokenizer = copy.deepcopy(build_tokenizer([SAMPLE.read_text()], 512, tools=source != "tiny without tools"))
    if source == "catalog chatml":
        tokenizer.chat_template = catalog.load("chat_formats")["chatml"]["template"]
    elif source.endswith(".jinja"):
        tokenizer.chat_template = real_templates[source]
    turns = _modelfile.read_turns(tokenizer, [tokenizer.eos_token_id])
    tools = _modelfile.read_tool_turns(tokenizer, turns)
    if source == "tiny without tools":
        assert turns is not None and tools is None
        return
    system = {"role": "system", "content": "Be brief."}
    called = {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "b"}]}
    for messages in ([system, *CONVERSATION[:1]], [system, *CONVERSATION], [system, *CONVERSATION[:1], called]):
        want = tokenizer.apply_chat_template(messages, tools=[STOCK], tokenize=False, add_generation_prompt=True)
        assert tools.render(turns, messages, [STOCK]) == want
    text = _modelfile.modelfile("m.gguf", turns, "Be brief.", {}, 4096, tools=tools)
    template = next(line for line in text.splitlines() if line.startswith("TEMPLATE"))
    for part in ("{{ range $i, $t := $.Tools }}", "{{ json $t }}", ".ToolCalls", "{{ json $c.Function.Arguments }}"):
        assert part in template
    assert '{{- else if eq .Role "tool" }}{{ "<|im_start|>user\\n<tool_response>\\n" }}' in template


def test_chat_shows_a_call_takes_the_typed_result_and_refuses_a_bad_tools_file(tmp_path, capsys):
    from finetune.tool_calls import ToolChat, ToolError

    config = {"tools": FORMS["hermes"], "data": {"path": str(SAMPLE), "format": "tools"}, "training": {"seed": 1}}
    chat = ToolChat(config)
    assert [t["function"]["name"] for t in chat.offered] == ["check_stock", "order_status", "care_guide"]
    history = [{"role": "user", "content": "Do you have ferns?"}]
    said = '<tool_call>\n{"name": "check_stock", "arguments": {"plant": "fern", "size": "huge"}}\n</tool_call>'
    results = chat.take_turn(said, history, ask=lambda prompt: '{"in_stock": 3}')
    assert results == [
        {"role": "tool", "content": '{"in_stock": 3}', "tool_call_id": "call_1_0", "name": "check_stock"}
    ]
    assert history[1]["tool_calls"][0]["function"] == {
        "name": "check_stock",
        "arguments": {"plant": "fern", "size": "huge"},
    }
    shown = capsys.readouterr().out
    assert '(tool call: check_stock({"plant": "fern", "size": "huge"}); it calls check_stock with arguments' in shown
    assert "do not match its schema ('huge' is not one of" in shown
    assert chat.take_turn("Yes, three.", history) == [] and history[-1] == {
        "role": "assistant",
        "content": "Yes, three.",
    }
    bad = tmp_path / "tools.json"
    bad.write_text("[{")
    with pytest.raises(ToolError, match="not a JSON file of OpenAI's tools list"):
        ToolChat(config, str(bad))
