"""A classifier trained long enough on the sample beats its base model; eval.py's exit codes. (Every scenario's
smoke run is in tests/e2e/test_pipelines_e2e.py.)"""

from __future__ import annotations

import json

import pytest
import yaml

from helpers.workspace import run

pytestmark = pytest.mark.slow


def test_a_classifier_trained_long_enough_beats_its_base_model(new_workspace):
    workspace = new_workspace(
        scenario="classification", technique="full", targets="pytorch", model="qwen2.5-0.5b-instruct"
    )
    smoke = yaml.safe_load((workspace / "configs" / "smoke.yaml").read_text())
    build = (
        "import yaml; from finetune.config import load_config; from finetune.tiny import save_tiny_model; "
        "s = yaml.safe_load(open('configs/smoke.yaml')); c = load_config('configs/train.yaml'); "
        "save_tiny_model(s['tiny_model'], c['data']['path'], s['tokenizer_vocab_size'], 'outputs/base', "
        "[c['data']['system_prompt'], c['task']['instruction']])"
    )
    assert run(workspace, "-c", build).returncode == 0
    split = ["data.eval_fraction=0.25"]  # 8 held-out messages, two of each label in expectation
    train = run(
        workspace,
        "train.py",
        "model.name_or_path=outputs/base",
        "model.torch_dtype=float32",
        "training.output_dir=outputs/run",
        "training.max_steps=240",
        "training.per_device_train_batch_size=8",
        "training.gradient_accumulation_steps=1",
        "training.learning_rate=0.003",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.report_to=none",
        "training.bf16=false",
        *split,
    )
    assert train.returncode == 0, train.stderr[-4000:]
    assert smoke["tiny_model"]["architecture"] == "qwen2"
    for name in ("eval", "train"):
        result = run(
            workspace,
            "eval.py",
            "--base",
            "outputs/base",
            "--tuned",
            "outputs/run",
            "--split",
            name,
            "--out",
            f"eval-{name}",
            *split,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "accuracy" in result.stdout  # the side-by-side table
    held_out = json.loads((workspace / "eval-eval" / "report.json").read_text())["models"]
    seen = json.loads((workspace / "eval-train" / "report.json").read_text())["models"]
    assert held_out["tuned"]["accuracy"] > held_out["base"]["accuracy"]
    assert seen["tuned"]["accuracy"] >= 0.9 > seen["base"]["accuracy"]  # it learned the labels, not one guess


def test_eval_exits_1_for_a_broken_model_and_2_for_bad_input(new_workspace):
    workspace = new_workspace(scenario="qa", targets="pytorch")
    build = (
        "import yaml; from finetune.tiny import save_tiny_model; s = yaml.safe_load(open('configs/smoke.yaml')); "
        "save_tiny_model(s['tiny_model'], 'data/sample.jsonl', s['tokenizer_vocab_size'], 'outputs/base')"
    )
    assert run(workspace, "-c", build).returncode == 0
    broken = workspace / "outputs" / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    result = run(workspace, "eval.py", "--base", "outputs/base", "--tuned", str(broken), "--limit", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "tuned: BROKEN" in result.stdout
        and "base" in json.loads((workspace / "eval" / "report.json").read_text())["models"]
    )
    missing = run(workspace, "eval.py", "--base", "outputs/base", "--tuned", "outputs/nothing-here")
    assert missing.returncode == 2 and "no tuned model at outputs/nothing-here" in missing.stderr
    (workspace / "data" / "sample.jsonl").write_text('{"question": "Why?", "answer": ""}\n')
    bad = run(workspace, "eval.py", "--base", "outputs/base", "--tuned", "outputs/base")
    assert bad.returncode == 2 and "data/sample.jsonl:1: missing or empty 'answer'" in bad.stderr
