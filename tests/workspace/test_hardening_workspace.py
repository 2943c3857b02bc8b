"""Hardening of the workspace's own code: overrides of the wrong type or range, resume after a kill
mid-save, non-UTF-8 data, and the server's request checks. Imported straight from the template."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.project import ROOT
from helpers.workspace import template_module

WORKSPACE = ROOT / "templates" / "workspace"

from finetune.config import ConfigError, apply_overrides, check_ranges
from finetune.data import DataError, read_examples

# serve.py as the template holds it (its file name carries the condition that renders it)
template_module(WORKSPACE / "finetune" / "{% if include.serve %}openai_api.py{% endif %}", "finetune.openai_api")
serve = template_module(WORKSPACE / "{% if include.serve %}serve.py{% endif %}", "serve")

CONFIG = {
    "training": {
        "learning_rate": 2e-4,
        "max_steps": -1,
        "per_device_train_batch_size": 2,
        "seed": 42,
        "bf16": False,
        "report_to": "auto",
        "num_train_epochs": 3.0,
    },
    "peft": {"lora_dropout": 0.05, "target_modules": ["q_proj"]},
    "eval": {"limit": None},
}


# -- 4. overrides of the wrong type or out of range ---------------------------------------------


@pytest.mark.parametrize(
    "override, words",
    [
        ("training.learning_rate=abc", ["training.learning_rate", "number"]),
        ("training.max_steps=ten", ["training.max_steps", "whole number"]),
        ("training.max_steps=1.5", ["training.max_steps", "whole number"]),
        ("training.bf16=maybe", ["training.bf16", "true or false"]),
        ("training=5", ["training is a section", "training.learning_rate=..."]),
        ("peft.target_modules=q_proj", ["peft.target_modules", "list"]),
        ("training.report_to={a: 1}", ["training.report_to", "single value"]),
    ],
)
def test_an_override_of_the_wrong_type_names_the_key(override, words):
    with pytest.raises(ConfigError) as error:
        apply_overrides(CONFIG, [override])
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ("training.per_device_train_batch_size=0", ["per_device_train_batch_size", "from 1"]),
        ("training.learning_rate=0", ["learning_rate", "above 0"]),
        ("training.learning_rate=.nan", ["learning_rate"]),
        ("training.num_train_epochs=.inf", ["num_train_epochs"]),
        ("training.seed=-1", ["training.seed"]),
        ("peft.lora_dropout=1.5", ["lora_dropout", "at most 0.9"]),
    ],
)
def test_an_override_out_of_range_names_the_key_and_the_range(override, words):
    config = apply_overrides(CONFIG, [override])
    with pytest.raises(ConfigError) as error:
        check_ranges(config)
    for word in words:
        assert word in str(error.value)


def test_lora_on_expert_parameters_takes_no_dropout():
    experts = {
        **CONFIG,
        "peft": {**CONFIG["peft"], "target_parameters": ["mlp.experts.down_proj"], "lora_dropout": 0.05},
    }
    with pytest.raises(ConfigError, match="peft.lora_dropout must be 0 with peft.target_parameters"):
        check_ranges(experts)
    check_ranges({**experts, "peft": {**experts["peft"], "lora_dropout": 0}})


def test_good_overrides_still_pass():
    config = apply_overrides(
        CONFIG,
        [
            "training.learning_rate=1e-4",
            "training.num_train_epochs=1",
            "training.max_steps=5",
            "training.report_to=none",
            "eval.limit=3",
            "peft.target_modules=[a, b]",
        ],
    )
    check_ranges(config)
    assert config["training"]["num_train_epochs"] == 1 and config["eval"]["limit"] == 3


def test_train_py_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(CONFIG))
    for override in [
        "training.learning_rate=abc",
        "training.max_steps=ten",
        "training.per_device_train_batch_size=0",
        "training=5",
    ]:
        result = subprocess.run(
            [sys.executable, "train.py", "--config", str(config), override],
            cwd=WORKSPACE,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and override.split("=")[0] in result.stderr


# -- 2. resume picks the newest complete checkpoint ----------------------------------------------


def _checkpoint(
    folder: Path, step: int, state: str | None = '{"global_step": 1}', weights=True, optimizer=True
) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    if weights:
        (path / "adapter_model.safetensors").write_bytes(b"x")
    if optimizer:
        (path / "optimizer.pt").write_bytes(b"x")
    return path


def test_resume_skips_incomplete_checkpoints_and_says_why(tmp_path, capsys):
    from train import last_complete_checkpoint

    good = _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4, state=None)
    _checkpoint(tmp_path, 6, state='{"global_st')
    _checkpoint(tmp_path, 8, weights=False)
    (tmp_path / "checkpoint-10").mkdir()
    assert last_complete_checkpoint(str(tmp_path)) == str(good)
    out = capsys.readouterr().out
    for step in (4, 6, 8, 10):
        assert f"skipping {tmp_path}/checkpoint-{step}:" in out
    assert "interrupted" in out and "no model weights" in out


def test_resume_with_no_complete_checkpoint_starts_afresh(tmp_path, capsys):
    from train import last_complete_checkpoint

    (tmp_path / "checkpoint-4").mkdir()
    assert last_complete_checkpoint(str(tmp_path)) is None
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None
    assert "starting from scratch" in capsys.readouterr().out


def test_results_are_written_whole_or_not_at_all(tmp_path):
    from finetune.files import new_folder, write_text

    write_text(tmp_path / "metrics.json", "{}")
    assert (tmp_path / "metrics.json").read_text() == "{}" and not list(tmp_path.glob(".*partial"))
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), new_folder(tmp_path / "merged") as partial:
        (partial / "half.bin").write_text("x")
        raise KeyboardInterrupt
    assert [p.name for p in (tmp_path / "merged").iterdir()] == ["old.txt"]
    with new_folder(tmp_path / "merged") as partial:
        (partial / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "merged").iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "metrics.json"]


# -- 5. a dataset that is not UTF-8 is named by file and line ------------------------------------


def test_non_utf8_data_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"data.jsonl:2: not UTF-8 text \(byte 0xe9 at column 14\)"):
        read_examples(str(path), "text")
    path.write_bytes(b"[" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        read_examples(str(path), "text")


# -- 3. the server checks each request before any work -------------------------------------------


def _headers(**values):
    from email.message import Message

    message = Message()
    for key, value in values.items():
        message[key.replace("_", "-")] = value
    return message


@pytest.mark.parametrize(
    "headers, body, status, code",
    [
        ({"Content_Type": "text/plain", "Content_Length": "2"}, b"{}", 415, "unsupported_content_type"),
        ({"Content_Type": "application/json", "Content_Length": "-1"}, b"", 400, None),
        ({"Content_Type": "application/json"}, b"{}", 411, None),
        ({"Content_Type": "application/json", "Content_Length": str(2 << 20)}, b"", 413, None),
        ({"Content_Type": "application/json", "Content_Length": "100"}, b"{}", 408, None),
    ],
)
def test_request_bodies_are_checked_before_reading(headers, body, status, code):
    with pytest.raises(serve.BadRequest) as error:
        serve.read_body(_headers(**headers), io.BytesIO(body))
    assert error.value.status == status and error.value.code == code


def test_a_json_charset_is_accepted():
    body = serve.read_body(
        _headers(Content_Type="application/json; charset=utf-8", Content_Length="2"), io.BytesIO(b"{}")
    )
    assert body == b"{}"


# -- a model the hub cannot give: one sentence at once, not a minute of retries and a traceback -----


def test_an_unreachable_or_unknown_hub_model_is_one_sentence(monkeypatch):
    import time

    from finetune.hub import ModelUnavailable
    from finetune.modeling import load_tokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as error:
        load_tokenizer("tuneforge-tests/no-such-model")
    assert time.monotonic() - started < 30
    message = str(error.value)
    assert (
        message.startswith("model tuneforge-tests/no-such-model ") and "model.name_or_path=/path/to/folder" in message
    )
    assert "\n" not in message


@pytest.mark.parametrize(
    "text, words",
    [
        ("You are trying to access a gated repo. 401 Client Error", ["is gated", "HF_TOKEN"]),
        (
            "org/x is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'",
            ["was not found on the Hugging Face hub"],
        ),
        ("We couldn't connect to 'https://huggingface.co' to load the files", ["out of reach"]),
    ],
)
def test_each_hub_failure_says_why(monkeypatch, text, words):
    from finetune.hub import explain

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    message = explain("org/x", OSError(text))
    for word in words:
        assert word in message
    assert "model.name_or_path=" in message
    assert "not found; point model.name_or_path" in explain("./missing-folder", OSError("x"))


def test_train_py_on_an_unreachable_hub_exits_2_at_once(new_workspace, monkeypatch):
    import os
    import time

    workspace = new_workspace(model="qwen2.5-0.5b-instruct")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTHONPATH")}
    env["HF_HOME"] = str(workspace / "empty-hf-cache")  # nothing cached, as on a new machine
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "train.py", "model.name_or_path=tuneforge-tests/no-such-model"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "error: model tuneforge-tests/no-such-model" in result.stderr and "model.name_or_path=" in result.stderr
    assert time.monotonic() - started < 60


def test_chat_before_training_says_to_train_not_that_the_hub_is_out_of_reach(tmp_path, monkeypatch):
    from finetune.inference import load_backend

    monkeypatch.chdir(tmp_path)  # outputs/run has one slash, like a hub id, but is this workspace's folder
    with pytest.raises(FileNotFoundError, match=r"^outputs/run not found: train \(python train.py\)"):
        load_backend("pytorch", None, {"merge": {"output_dir": "outputs/merged", "adapter_dir": "outputs/run"}})


def test_adapter_options_are_name_equals_path_with_unique_safe_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b.onnx_adapter").write_bytes(b"")
    a, b = str(tmp_path / "a"), str(tmp_path / "b.onnx_adapter")
    assert serve.parse_adapters([f"plants={a}", f"sundays={b}"]) == {"plants": a, "sundays": b}
    assert serve.parse_adapters([a]) == {"tuned": a}  # one bare path, as before
    for values, message in [
        ([f"plants={a}", f"plants={b}"], "given twice"),
        ([f"=${a}"], "give NAME=PATH"),
        ([f"my plants={a}"], "give NAME=PATH"),
        ([f"x=$(id)={a}"], "give NAME=PATH"),
        ([f"plants={tmp_path / 'missing'}"], "not found"),
    ]:
        with pytest.raises(ValueError, match=message):
            serve.parse_adapters(values)
