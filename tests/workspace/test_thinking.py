"""Reasoning models: the `thinking` answer reaches the chat template in training and in answering alike.
off: the generation prompt closes an empty <think> block and only the answer is learnt; keep: the reasoning
block is learnt with the answer. Checked on the tiny model's template and on Qwen3's real one."""

from __future__ import annotations

import copy

import pytest

from finetune.data import Example
from finetune.encoding import IGNORE_INDEX, encode
from helpers.project import ROOT

OFF, KEEP = {"enable_thinking": False}, {"enable_thinking": True}
QUESTION = {"role": "user", "content": "How often should I water a cactus?"}
ANSWER = "Every three weeks."
REASONED = "<think>\nCacti store water.\n</think>\n\n" + ANSWER
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module", params=["tiny", "qwen3", "smollm3"])
def tokenizer(request):
    from finetune.tiny import build_tokenizer

    texts = [QUESTION["content"], REASONED, "Why? Because. system user assistant"] * 20
    tok = build_tokenizer(texts, 400, thinking=True)
    if request.param != "tiny":  # the real model's template
        tok = copy.deepcopy(tok)
        tok.chat_template = (FIXTURES / f"{request.param}_chat_template.jinja").read_text()
    return tok


def split(row: dict, tokenizer) -> tuple[str, str]:
    """(context, learnt): the text before the first trained token, and the trained text."""
    first = next(i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
    learnt = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    return tokenizer.decode(row["input_ids"][:first]), tokenizer.decode(learnt)


def example(*messages: dict) -> Example:
    return Example(messages=list(messages), source="data.jsonl:1")


def test_off_learns_the_answer_after_the_closed_empty_block_the_generation_prompt_gives(tokenizer):
    row = encode(example(QUESTION, {"role": "assistant", "content": ANSWER}), tokenizer, 4096, template_kwargs=OFF)
    context, learnt = split(row, tokenizer)
    assert context.rstrip("\n").endswith("<|im_start|>assistant\n<think>\n\n</think>")
    assert learnt == ANSWER + "<|im_end|>\n"
    prompt = tokenizer.apply_chat_template([QUESTION], tokenize=False, add_generation_prompt=True, **OFF)
    assert context.endswith(prompt.split("<|im_end|>\n")[-1])  # what the model answers after is what it learnt after


def test_keep_learns_the_reasoning_block_with_the_answer(tokenizer):
    row = encode(example(QUESTION, {"role": "assistant", "content": REASONED}), tokenizer, 4096, template_kwargs=KEEP)
    context, learnt = split(row, tokenizer)
    assert context.endswith("<|im_start|>assistant\n")
    assert learnt == "<think>\nCacti store water.\n</think>\n\n" + ANSWER + "<|im_end|>\n"  # as the data says it


def test_keep_without_reasoning_learns_an_empty_block_and_the_doctor_says_so(tokenizer, tmp_path):
    row = encode(example(QUESTION, {"role": "assistant", "content": ANSWER}), tokenizer, 4096, template_kwargs=KEEP)
    assert split(row, tokenizer)[1].endswith(ANSWER + "<|im_end|>\n")  # with an empty block, or none (SmolLM3)
    from finetune.doctor import examine

    data = tmp_path / "data.jsonl"
    import json

    data.write_text(
        "".join(json.dumps({"messages": [QUESTION, {"role": "assistant", "content": ANSWER}]}) + "\n" for _ in range(4))
    )
    config = {
        "data": {
            "path": str(data),
            "format": "messages",
            "split": "train",
            "eval_fraction": 0,
            "max_length": 4096,
            "system_prompt": None,
            "chat_template_kwargs": KEEP,
        },
        "training": {"seed": 1},
        "task": {"scenario": "chat"},
    }
    assert any("<think>" in w for w in examine(config, tokenizer).warnings)
    config["data"]["chat_template_kwargs"] = OFF
    assert not any("<think>" in w for w in examine(config, tokenizer).warnings)


def test_a_conversation_whose_template_drops_earlier_reasoning_trains_its_last_turn(tokenizer):
    """Qwen3 renders an earlier turn without its reasoning, so the turns are not prefixes of each other: the last
    turn is trained, the rest is context. A template that keeps it (SmolLM3) trains every turn."""
    messages = [
        QUESTION,
        {"role": "assistant", "content": REASONED},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": REASONED},
    ]
    row = encode(example(*messages), tokenizer, 4096, template_kwargs=KEEP)
    context, learnt = split(row, tokenizer)
    drops = tokenizer.apply_chat_template(messages, tokenize=False, **KEEP).count("Cacti store water") < 2
    assert learnt.startswith("<think>") and learnt.endswith(ANSWER + "<|im_end|>\n")
    if drops:
        assert "Why?" in context and learnt.count(ANSWER) == 1
    else:
        assert "Why?" not in context and learnt.count(ANSWER) == 2


def test_answering_uses_the_same_switch(tokenizer, tmp_path):
    from finetune.inference import PytorchBackend

    backend = PytorchBackend.__new__(PytorchBackend)  # prompt_ids needs only the tokenizer and the switch
    backend.tokenizer, backend.template_kwargs = tokenizer, OFF
    assert (
        tokenizer.decode(backend.prompt_ids([QUESTION]))
        .rstrip("\n")
        .endswith("<|im_start|>assistant\n<think>\n\n</think>")
    )
    backend.template_kwargs = KEEP
    assert tokenizer.decode(backend.prompt_ids([QUESTION])).endswith("<|im_start|>assistant\n")


def test_the_answer_exists_only_where_the_template_has_the_switch():
    from tuneforge.planning.answers import Given
    from tuneforge.planning.plan import resolve

    def plan_for(**answers):
        given = Given()
        given.add(answers, "--set")
        return resolve(given)

    assert plan_for(model="qwen3-0.6b").values["thinking"] == "off"
    refused = plan_for(model="qwen2.5-0.5b-instruct", thinking="keep")
    assert any(p.key == "thinking" and "no thinking switch" in p.reason for p in refused.problems)
    assert not plan_for(model="smollm3-3b", thinking="keep", targets="pytorch", gpu_memory_gb=64).problems


def test_train_yaml_passes_the_switch_only_to_models_that_have_one(new_workspace):
    import yaml

    keep = yaml.safe_load((new_workspace(model="qwen3-0.6b", thinking="keep") / "configs" / "train.yaml").read_text())
    assert keep["data"]["chat_template_kwargs"] == KEEP
    plain = yaml.safe_load((new_workspace(model="qwen2.5-0.5b-instruct") / "configs" / "train.yaml").read_text())
    assert "chat_template_kwargs" not in plain["data"]
