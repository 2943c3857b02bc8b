"""eval.py's exit codes. (Every scenario's smoke run is in tests/e2e/test_pipelines_e2e.py; that a classifier
trained long enough beats its base model is shown on a real model, SmolLM2, in tests/e2e/test_real_models_e2e.py.)"""

from __future__ import annotations

import json

import pytest

from helpers.workspace import run

pytestmark = pytest.mark.slow


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
