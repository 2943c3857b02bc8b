"""A model whose tokenizer has no chat template (a base model) gets its family's turns from the catalog: the plan
finds it missing in a local folder, the workspace holds the template as configs/chat_template.jinja with the
end-of-turn token in configs/train.yaml, and each catalog format renders answers as training needs them."""

from __future__ import annotations

import json

import jinja2
import pytest
import yaml

from tuneforge import catalog
from tuneforge.planning.answers import Given
from tuneforge.planning.plan import resolve

FORMATS = catalog.load("chat_formats")


def local_model(folder, model_type: str, **tokenizer_files) -> str:
    config = {
        "model_type": model_type,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "intermediate_size": 128,
        "vocab_size": 1000,
        "max_position_embeddings": 2048,
    }
    (folder / "config.json").write_text(json.dumps(config))
    for name, text in tokenizer_files.items():
        (folder / name.replace("__", ".")).write_text(text)
    return str(folder)


def plan_for(**answers):
    given = Given()
    given.add({"targets": "pytorch", **answers}, "--set")
    return resolve(given)


@pytest.mark.parametrize("model_type, expected", [("gemma3_text", "gemma"), ("qwen2", "chatml")])
def test_a_local_model_without_a_template_gets_its_familys_turns_in_the_workspace(
    tmp_path, new_workspace, model_type, expected
):
    model = tmp_path / "model"
    model.mkdir()
    path = local_model(model, model_type, tokenizer_config__json='{"eos_token": "<eos>"}')
    fallback = plan_for(model=path).facts["fallback_chat_template"]
    assert fallback["format"] == expected and fallback["template"] == FORMATS[expected]["template"]
    workspace = new_workspace(model=path, targets="pytorch")
    assert (workspace / "configs" / "chat_template.jinja").read_text().strip() == fallback["template"].strip()
    data = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())["data"]
    assert data["chat_template"] == "configs/chat_template.jinja"
    assert data["end_of_turn"] == FORMATS[expected]["end_of_turn"]


@pytest.mark.parametrize(
    "files",
    [{"chat_template__jinja": "{{ messages }}"}, {"tokenizer_config__json": '{"chat_template": "{{ messages }}"}'}],
)
def test_a_model_with_its_own_template_keeps_it(tmp_path, new_workspace, files):
    model = tmp_path / "model"
    model.mkdir()
    path = local_model(model, "gemma3_text", **files)
    assert "fallback_chat_template" not in plan_for(model=path).facts
    workspace = new_workspace(model=path, targets="pytorch")
    assert not (workspace / "configs" / "chat_template.jinja").exists()
    assert "chat_template" not in yaml.safe_load((workspace / "configs" / "train.yaml").read_text())["data"]


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_ends_every_answer_with_its_end_token_after_its_own_generation_prompt(name):
    """What training needs of a template (finetune/encoding.py): the conversation up to an answer, rendered with
    the generation prompt, is exactly what precedes the answer in the whole conversation, and the answer is
    followed by the end-of-turn token; it also cites where it comes from."""
    facts = FORMATS[name]
    assert facts["source"].startswith("https://")
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(facts["template"])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]

    def render(upto: int, prompt: bool = False) -> str:
        return template.render(messages=messages[:upto], add_generation_prompt=prompt, bos_token="<bos>")

    whole = render(len(messages))
    for at in (2, 4):
        before = render(at, prompt=True)
        assert whole.startswith(before + messages[at]["content"] + facts["end_of_turn"]), (name, whole)


@pytest.mark.parametrize(
    "files, fmt, fallback",
    [
        ({"tokenizer_config__json": json.dumps({"chat_template": "{{ messages }}"})}, "hermes", "chatml"),
        ({"chat_template__jinja": "{%- for c in m.tool_calls %}{{ '}\\n</tool_call>' }}{% endfor %}"}, "hermes", None),
        (
            {"chat_template__jinja": '{% if tools %}{{ \'{"name": "\' + n + \'", "parameters": \' }}{% endif %}'},
            "llama3_json",
            None,
        ),
        ({"tokenizer_config__json": '{"eos_token": "<eos>"}'}, "hermes", "chatml"),
    ],
)
def test_the_tools_scenario_takes_the_templates_own_calls_or_the_catalogs_turns(tmp_path, files, fmt, fallback):
    model = tmp_path / "model"
    model.mkdir()
    plan = plan_for(model=local_model(model, "qwen2", **files), scenario="tools")
    assert plan.facts["tool_calls"]["format"] == fmt and not plan.problems
    assert plan.facts.get("fallback_chat_template", {}).get("format") == fallback
    assert plan.include["chat_template"] == bool(fallback) and plan.include["tools"]


def test_a_catalog_model_without_tool_calls_gets_its_familys_turns_or_a_refusal(capsys):
    from tuneforge.terminal.report import format_plan

    gemma = plan_for(model="gemma-3-1b-it", scenario="tools")
    assert gemma.facts["fallback_chat_template"]["format"] == "gemma" and not gemma.problems
    assert "Chat turns: gemma from tuneforge's catalog" in format_plan(gemma, [])
    assert plan_for(model="qwen2.5-0.5b-instruct", scenario="tools").facts["tool_calls"]["format"] == "hermes"
    assert "fallback_chat_template" not in plan_for(model="qwen2.5-0.5b-instruct", scenario="tools").facts
    (problem,) = plan_for(model="phi-3-mini-4k-instruct", scenario="tools").problems
    assert problem.key == "model" and "chat template has no tool calls" in problem.reason
    assert "model=qwen2.5-0.5b-instruct" in problem.alternatives
