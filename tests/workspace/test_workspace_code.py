"""The workspace's Python is plain Python: import it straight from the template and test its parts.
Bad data is named by file and line; bad config keys get a close match."""

from __future__ import annotations

import json
import os
import sys

import pytest

from finetune.batching import Collator
from finetune.config import ConfigError, apply_overrides, load_config
from finetune.data import DataError, Example, read_examples
from finetune.encoding import IGNORE_INDEX, build_datasets, encode
from helpers.project import ROOT, WORKSPACE_TEMPLATE


@pytest.fixture(scope="module")
def tokenizer():
    from finetune.tiny import build_tokenizer, corpus

    return build_tokenizer(corpus(str(ROOT / "templates" / "includes" / "samples" / "chat" / "messages.jsonl")), 400)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_overrides_parse_yaml_values_and_name_unknown_keys():
    config = {"training": {"learning_rate": 1.0, "eval_strategy": "steps", "bf16": False}}
    out = apply_overrides(config, ["training.learning_rate=1e-4", "training.eval_strategy=no", "training.bf16=true"])
    assert out["training"] == {"learning_rate": 1e-4, "eval_strategy": "no", "bf16": True}
    assert config["training"]["learning_rate"] == 1.0
    with pytest.raises(ConfigError, match="Did you mean training.learning_rate"):
        apply_overrides(config, ["training.learning_rat=1"])
    with pytest.raises(ConfigError, match="traning is not a key"):
        apply_overrides(config, ["traning.bf16=true"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(config, ["training.bf16"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text, fmt, message",
    [
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{"messages": [}\n',
            "messages",
            ":2: not valid JSON",
        ),
        ('{"text": "x"}\n', "messages", ":1: missing 'messages'"),
        ('{"messages": [{"role": "robot", "content": "x"}]}\n', "messages", ":1: message 1 needs a role"),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}\n',
            "messages",
            ":1: empty assistant turn",
        ),
        ('{"messages": [{"role": "user", "content": "x"}]}\n', "messages", ":1: no assistant turn"),
        ('{"prompt": "x"}\n', "prompt-completion", ":1: missing or empty 'completion'"),
        ('\n\n{"instruction": "x", "output": ""}\n', "alpaca", ":3: missing or empty 'output'"),
        ("[1, 2]", "text", "item 1: expected a JSON object"),
        ("", "text", "the dataset is empty"),
    ],
)
def test_malformed_data_names_file_and_line(tmp_path, text, fmt, message):
    path = write(tmp_path, "data.jsonl", text)
    with pytest.raises(DataError) as error:
        read_examples(path, fmt)
    assert message in str(error.value)
    assert "data.jsonl" in str(error.value)


def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_examples(str(tmp_path / "nope.jsonl"), "messages")


def test_loss_is_on_the_assistant_answer_only(tokenizer):
    example = Example(
        "x:1",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Water?"},
            {"role": "assistant", "content": "Weekly."},
        ],
    )
    encoded = encode(example, tokenizer, 256)
    learned = [t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned).startswith("Weekly.")
    assert "Water?" not in tokenizer.decode(learned)
    assert tokenizer.decode(learned).strip().endswith("<|im_end|>")  # the model learns to stop


def test_text_format_learns_every_token(tokenizer):
    encoded = encode(Example("x:1", text="Plants like light."), tokenizer, 256)
    assert encoded["labels"] == encoded["input_ids"]


def test_examples_longer_than_max_length_are_dropped_and_all_too_long_is_an_error(tmp_path, tokenizer):
    long_prompt = "word " * 300
    row = {"messages": [{"role": "user", "content": long_prompt}, {"role": "assistant", "content": "ok"}]}
    path = write(tmp_path, "d.jsonl", json.dumps(row) + "\n")
    config = {"data": {"path": path, "format": "messages", "max_length": 64, "eval_fraction": 0.1}}
    with pytest.raises(DataError, match="every example is longer than max_length=64"):
        build_datasets(config, tokenizer, seed=0)


def test_eval_split_is_held_out_and_reproducible(tokenizer):
    config = {
        "data": {
            "path": str(ROOT / "templates" / "includes" / "samples" / "chat" / "messages.jsonl"),
            "format": "messages",
            "max_length": 256,
            "eval_fraction": 0.1,
        }
    }
    train_a, eval_a = build_datasets(config, tokenizer, seed=1)
    train_b, eval_b = build_datasets(config, tokenizer, seed=1)
    assert (len(train_a), len(eval_a)) == (22, 2)
    assert eval_a == eval_b and train_a == train_b
    assert not any(e in train_a for e in eval_a)


def test_packing_concatenates_without_padding_and_restarts_positions():
    collate = Collator(pad_token_id=0, packing=True)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]


def test_packing_fills_rows_of_at_most_max_length():
    rows = [{"input_ids": [1] * n, "labels": [1] * n} for n in (6, 5, 4, 3, 2)]
    batch = Collator(pad_token_id=0, packing=True, max_length=8)(rows)
    # rows of 7 waste the least: [6 +1 padding], [5 + 2], [4 + 3]; rows of 8 would take 24 slots
    assert batch["input_ids"].shape == (3, 7)
    assert (batch["input_ids"] != 0).sum().item() == 20
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0], [0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 3, 0, 1, 2]]
    assert batch["labels"].tolist()[0][6] == -100
    padded = Collator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert padded["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert padded["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_packed_and_padded_batches_give_the_same_loss(tokenizer):
    import torch

    from finetune.tiny import build_model

    model = build_model(
        {
            "architecture": "llama",
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
        },
        tokenizer,
    )
    rows = [
        {"input_ids": [10, 11, 12, 13, 14], "labels": [-100, -100, 12, 13, 14]},
        {"input_ids": [20, 21, 22], "labels": [-100, 21, 22]},
        {"input_ids": [30, 31], "labels": [-100, 31]},
    ]
    model.config.use_cache = False  # as train.py sets it: packing is only detected without a cache
    with torch.no_grad():
        # rows of 6: [5-token example + padding], [3 + 2]; the padding must not change the loss
        packed = model(**Collator(tokenizer.pad_token_id, packing=True, max_length=6)(rows)).loss
        separate = [model(**Collator(tokenizer.pad_token_id)([r])).loss for r in rows]
    # token-weighted mean of the separate losses (3, 2 and 1 predicted tokens)
    expected = (separate[0].item() * 3 + separate[1].item() * 2 + separate[2].item()) / 6
    assert packed.item() == pytest.approx(expected, rel=1e-4)


def test_answer_only_loss_equals_the_full_logits_loss(tokenizer, tmp_path):
    import torch
    from transformers import TrainingArguments

    from finetune.tiny import build_model
    from finetune.trainer import AnswerOnlyTrainer

    model = build_model(
        {
            "architecture": "qwen2",
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
        },
        tokenizer,
    )
    model.config.use_cache = False
    rows = [
        {"input_ids": [10, 11, 12, 13, 14, 15], "labels": [-100, -100, -100, 13, 14, 15]},
        {"input_ids": [20, 21, 22], "labels": [-100, 21, 22]},
    ]
    trainer = AnswerOnlyTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    )
    for packing in (False, True):
        batch = Collator(tokenizer.pad_token_id, packing=packing)(rows)
        with torch.no_grad():
            reference = model(**batch).loss
            ours = trainer.compute_loss(model, dict(batch))
        assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


def test_the_merged_model_keeps_the_bases_sentencepiece_model_and_image_processor(tmp_path, monkeypatch):
    """transformers' save_pretrained writes tokenizer.json only; llama.cpp's converter reads Phi-3's tokenizer.model,
    so merge.py copies it from the base: a local folder, or a hub id (from the cache, offline); none is no error."""
    from finetune.modeling import keep_base_files

    base, merged = tmp_path / "base", tmp_path / "merged"
    base.mkdir()
    merged.mkdir()
    (base / "tokenizer.model").write_bytes(b"sentencepiece")
    keep_base_files(str(base), merged)
    assert (merged / "tokenizer.model").read_bytes() == b"sentencepiece"
    (base / "preprocessor_config.json").write_text('{"image_processor_type": "Gemma3ImageProcessor"}')
    keep_base_files(str(base), merged)  # an image-text model's image processor settings too
    assert (
        json.loads((merged / "preprocessor_config.json").read_text())["image_processor_type"] == "Gemma3ImageProcessor"
    )
    (merged / "tokenizer.model").write_bytes(b"already here")
    keep_base_files(str(base), merged)
    assert (merged / "tokenizer.model").read_bytes() == b"already here"  # never replaced

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    keep_base_files("microsoft/Phi-3.5-mini-instruct", elsewhere)  # not cached, hub out of reach
    keep_base_files(str(tmp_path / "no-such-folder"), elsewhere)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("quiet", [True, False])
def test_deepspeeds_cpu_fallback_notice_is_silenced_with_the_other_noise(quiet):
    """DeepSpeed, which transformers imports whenever it is installed, warns on every start without a GPU."""
    import subprocess

    code = ("from finetune.quiet import quiet_libraries; quiet_libraries(); " if quiet else "") + "import deepspeed"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("DS_ACCELERATOR", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=WORKSPACE_TEMPLATE, env=env, capture_output=True, text=True, check=True
    )
    assert ("Setting accelerator to CPU" in done.stdout + done.stderr) is not quiet
