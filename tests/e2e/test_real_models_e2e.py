"""The main path on two real pretrained models, walked as a user walks the generated README, with support
messages of tuneforge's own making (five intents) and the hub unreachable: a folder given as the model, the data
checked, a short LoRA run, merged, scored against the base, exported and served. SmolLM2-135M-Instruct (the
Llama architecture, its own ChatML template) goes through ONNX and GGUF; Gemma 3 270M, a base model with no
chat template, learns in Gemma's own turns from the catalog and stops at <end_of_turn>."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from helpers.openai_client import speaks_openai
from helpers.project import ROOT
from helpers.real_models import real_model, support_messages
from helpers.workspace import losses, run, serving

pytestmark = pytest.mark.slow

# long enough for a real model to learn the five labels, short enough for CI; no checkpoints, no tracker
SHORT = [
    "training.max_steps={steps}",
    "training.learning_rate={lr}",
    "training.per_device_train_batch_size={batch}",
    "training.gradient_accumulation_steps=1",
    "training.logging_steps=2",
    "training.eval_strategy=no",
    "training.save_strategy=no",
    "training.report_to=none",
]


def train(workspace, steps: int, lr: float, batch: int) -> list[float]:
    """check_data.py then train.py as the README runs them; the losses logged."""
    checked = run(workspace, "check_data.py")
    assert checked.returncode == 0 and "no warnings" in checked.stdout, checked.stdout[-3000:] + checked.stderr[-3000:]
    trained = run(workspace, "train.py", *(setting.format(steps=steps, lr=lr, batch=batch) for setting in SHORT))
    assert trained.returncode == 0, trained.stderr[-3000:]
    merged = run(workspace, "merge.py")
    assert merged.returncode == 0, merged.stderr[-3000:]
    return losses(workspace / "outputs" / "run")


def test_smollm2_learns_the_intents_and_keeps_them_in_onnx_and_gguf(tmp_path):
    """bench/real_results.py at its smallest size: the README's steps on SmolLM2 with 150 support messages, 25 of 50
    more held out whole (data.eval_path) scored, exported to ONNX int4 and GGUF Q8_0; eval.py shows each model's
    answers and its gate names exactly the exports more than 5 points below the tuned model, and the GGUF model
    answers the official client."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "real_results.py"), "--size", "small", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "real_results.json").read_text())[0]
    scores, exports = result["scores"], ("onnx_int4", "gguf_q8_0")
    assert result["examples"] == 25 and set(scores) == {"base", "tuned", *exports}, result
    assert scores["tuned"] >= 0.75 and scores["tuned"] > scores["base"] + 0.3, scores
    assert min(scores[n] for n in exports) >= scores["tuned"] - 0.25, scores  # int4 and Q8_0 keep most of it
    gated = {line.split(":")[0] for line in result["below_gate"]}
    assert gated == {n for n in exports if scores[n] < scores["tuned"] - 0.05}, result["below_gate"]
    assert result["exports"]["gguf_q8_0"]["size_mb"] < result["exports"]["tuned"]["size_mb"] / 3
    workspace = tmp_path / "smollm2-classification"
    history = losses(workspace / "outputs" / "run")
    assert sum(history[-3:]) / 3 < sum(history[:3]) / 3 / 2, history
    shown = [
        line.split()[0] for line in done.stdout.splitlines() if re.match(r"  (reference|base|tuned|onnx|gguf): ", line)
    ]
    assert shown == ["reference:", "base:", "tuned:", "onnx:", "gguf:"] * 2, done.stdout[-3000:]
    with serving(workspace, "--backend", "gguf") as base:
        speaks_openai(
            base,
            "Label this customer message as one of: account, billing, cancellation, delivery, "
            "technical.\n\nMessage: My router drops the wifi every evening.",
        )


def test_gemma3_base_without_a_chat_template_learns_in_its_own_turns(new_workspace):
    model = real_model("gemma3-270m")
    workspace = new_workspace(
        model=str(model),
        scenario="classification",
        dataset=str(support_messages()),
        dataset_format="classification",
        targets="pytorch",
    )
    template = (workspace / "configs" / "chat_template.jinja").read_text()
    assert "<start_of_turn>" in template and not (model / "chat_template.jinja").exists()
    history = train(workspace, 16, lr=5e-4, batch=4)
    assert sum(history[-3:]) / 3 < sum(history[:3]) / 3 / 2, history
    merged = workspace / "outputs" / "merged"
    assert json.loads((merged / "tokenizer_config.json").read_text())["eos_token"] == "<end_of_turn>"
    assert 106 in json.loads((merged / "generation_config.json").read_text())["eos_token_id"]  # <end_of_turn>
    answer = run(
        workspace,
        "-c",
        "import json; from finetune.config import load_config; from finetune.inference import load_backend\n"
        "config = load_config('configs/train.yaml')\n"
        "backend = load_backend('pytorch', None, config)\n"
        "q = [{'role': 'system', 'content': config['data']['system_prompt']}, {'role': 'user', 'content': "
        "'Label this customer message as one of: account, billing, cancellation, delivery, technical.\\n\\n"
        "Message: I was charged twice for my kettle.'}]\n"
        "text = ''.join(backend.stream(q, 16))\n"
        "print(json.dumps({'text': text, 'reason': backend.finish_reason, 'tokens': backend.usage[1]}))",
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    said = json.loads(answer.stdout.splitlines()[-1])
    assert said["text"].strip() == "billing" and said["reason"] == "stop" and said["tokens"] <= 4, said


def test_smollm2_checks_tool_calling_data_in_the_catalogs_chatml_turns(new_workspace):
    """SmolLM2's own template has no tool calls: the tools scenario gives it the catalog's ChatML turns with hermes
    calls, which its real tokenizer holds as single tokens; the data doctor finds every sample row sound and marks
    the calls and answers as trained, the tools' results not (a full run: bench/real_results.py smollm2-tools)."""
    workspace = new_workspace(model=str(real_model("smollm2")), scenario="tools", targets="pytorch")
    assert "<tool_call>" in (workspace / "configs" / "chat_template.jinja").read_text()
    checked = run(workspace, "check_data.py")
    assert checked.returncode == 0 and "no warnings" in checked.stdout, checked.stdout[-3000:] + checked.stderr[-3000:]
    sample = checked.stdout.split("what the loss is computed on):\n", 1)[1]
    assert '<|im_start|>assistant\n[[<tool_call>\n{"name": ' in sample
    assert "]]<|im_start|>user\n<tool_response>\n" in sample and "[[<tool_response>" not in sample
