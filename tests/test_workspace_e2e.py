"""Generated workspaces run for real: smoke.py trains a tiny model of the chosen architecture with the
chosen technique and launcher, merges, optimizes and chats, offline on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CASES = {
    "lora-qwen2-messages-onnx": dict(technique="lora", model="qwen2.5-0.5b-instruct", dataset_format="messages",
                                     targets="pytorch,onnx-cpu"),
    "qlora-phi3-prompt-completion": dict(technique="qlora", model="phi-3-mini-4k-instruct",
                                         dataset_format="prompt-completion", targets="pytorch"),
    "dora-llama-alpaca": dict(technique="dora", model="llama-3.2-1b-instruct", dataset_format="alpaca", targets="pytorch"),
    "full-qwen2-text": dict(technique="full", model="qwen2.5-0.5b-instruct", dataset_format="text", targets="pytorch"),
    "deepspeed-zero2": dict(technique="lora", distributed="deepspeed-zero2", targets="pytorch"),
    "deepspeed-zero3": dict(technique="lora", distributed="deepspeed-zero3", targets="pytorch"),
    "ddp-two-processes": dict(technique="lora", distributed="ddp", gpu_count=2, targets="pytorch"),
}


def run(workspace: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout)


def losses(run_dir: Path) -> list[float]:
    history = json.loads((run_dir / "log_history.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry]


@pytest.mark.parametrize("answers", list(CASES.values()), ids=list(CASES))
def test_smoke_passes_and_the_loss_falls_over_30_steps(new_workspace, answers):
    workspace = new_workspace(**answers)
    smoke = workspace / "configs" / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("training.max_steps=8", "training.max_steps=30")
                     .replace("training.eval_steps=4", "training.eval_steps=15")
                     .replace("training.save_steps=4", "training.save_steps=15"))
    result = run(workspace, "smoke.py")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "[smoke] passed" in result.stdout
    history = losses(workspace / "outputs" / "smoke" / "run")
    assert len(history) == 30
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < first - 0.05, history
    assert (workspace / "outputs" / "smoke" / "run" / "loss.png").stat().st_size > 1000
    merged = workspace / "outputs" / "smoke" / "merged"
    assert (merged / "config.json").exists() and (merged / "tokenizer_config.json").exists()
    assert "model>" in result.stdout
    if "onnx-cpu" in answers["targets"]:
        assert (workspace / "outputs" / "smoke" / "onnx" / "onnx-cpu" / "genai_config.json").exists()
        assert result.stdout.count("model>") == 2


def test_a_killed_run_resumes_from_its_last_checkpoint(new_workspace):
    workspace = new_workspace(technique="lora", targets="pytorch")
    tiny = run(workspace, "-c", "import yaml; from finetune.tiny import save_tiny_model; "
                                "s = yaml.safe_load(open('configs/smoke.yaml')); "
                                "save_tiny_model(s['tiny_model'], 'data/sample.jsonl', 512, __import__('pathlib').Path('tiny'))")
    assert tiny.returncode == 0, tiny.stderr
    common = ["model.name_or_path=tiny", "model.torch_dtype=float32", "training.max_steps=40", "training.save_steps=10",
              "training.logging_steps=1", "training.eval_strategy=no", "training.learning_rate=0.001",
              "training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=1", "training.report_to=none"]
    straight = run(workspace, "train.py", "training.output_dir=outputs/straight", *common)
    assert straight.returncode == 0, straight.stderr[-3000:]

    env = {**os.environ}
    env.pop("PYTHONPATH", None)
    process = subprocess.Popen([sys.executable, "train.py", "training.output_dir=outputs/killed", *common],
                               cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = workspace / "outputs" / "killed" / "checkpoint-10" / "trainer_state.json"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists()
    assert not (workspace / "outputs" / "killed" / "metrics.json").exists(), "the run finished before it was killed"

    resumed = run(workspace, "train.py", "--resume", "training.output_dir=outputs/killed", *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((workspace / "outputs" / "killed" / "log_history.json").read_text())
    steps = [e["step"] for e in history if "loss" in e]
    assert steps[-1] == 40 and steps[0] <= 10
    assert json.loads((workspace / "outputs" / "killed" / "metrics.json").read_text())["global_step"] == 40
    assert losses(workspace / "outputs" / "killed")[-5:] == pytest.approx(losses(workspace / "outputs" / "straight")[-5:], rel=1e-3)
