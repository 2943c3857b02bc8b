"""VS Code files, the dev container and setup.sh of a generated workspace."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.workspace import jsonc
from tuneforge import catalog


@pytest.mark.parametrize(
    "answers",
    [
        {},
        {"targets": "pytorch"},
        {"targets": "pytorch,onnx-cpu,gguf"},
        {"targets": "pytorch,gguf"},
        {"hardware": "cuda", "gpu_memory_gb": 24, "compute": "azureml", "targets": "pytorch,azureml-endpoint"},
        {
            "hardware": "cuda",
            "gpu_memory_gb": 24,
            "model": "phi-3.5-mini-instruct",
            "compute": "kaito",
            "targets": "pytorch,kaito",
        },
        {
            "hardware": "cuda",
            "gpu_memory_gb": 24,
            "model": "phi-3.5-mini-instruct",
            "compute": "foundry-serverless",
            "technique": "lora",
            "targets": "pytorch",
        },
    ],
)
def test_vscode_files_point_at_real_scripts(new_workspace, answers):
    workspace = new_workspace(**answers)
    launch = jsonc(workspace / ".vscode" / "launch.json")
    for config in launch["configurations"]:
        assert config["type"] == "debugpy"
        assert (workspace / config["program"].replace("${workspaceFolder}/", "")).is_file(), config["name"]
    names = {c["name"] for c in launch["configurations"]}
    assert {"Smoke test (tiny model, offline)", "Train", "Merge adapter", "Chat (PyTorch)"} <= names
    tasks = jsonc(workspace / ".vscode" / "tasks.json")["tasks"]
    labels = {t["label"] for t in tasks}
    assert {"setup", "smoke", "train", "merge", "chat", "test"} <= labels
    onnx, gguf = (workspace / "optimize.py").exists(), (workspace / "export_gguf.py").exists()
    assert ("optimize" in labels) == onnx and ("export gguf" in labels) == gguf
    assert ({"serve", "benchmark"} <= labels) == (onnx or gguf)
    assert ("Serve (OpenAI-compatible)" in names) == (onnx or gguf)
    for task in tasks:
        for command in (task["command"], task.get("windows", {}).get("command", "")):
            for script in re.findall(r"([\w./-]+\.(?:py|sh|ps1|yaml|yml))", command):
                assert (workspace / script).is_file(), (task["label"], script)
    extensions = jsonc(workspace / ".vscode" / "extensions.json")["recommendations"]
    assert {"ms-python.python", "ms-python.debugpy", "ms-windows-ai-studio.windows-ai-studio"} <= set(extensions)
    assert ("ms-toolsai.vscode-ai" in extensions) == (answers.get("compute") in ("azureml", "foundry-serverless"))
    assert ("ms-kubernetes-tools.vscode-kubernetes-tools" in extensions) == (answers.get("compute") == "kaito")
    deploy = {t["label"] for t in tasks if t["label"].startswith("deploy: ")}
    assert bool(deploy) == (answers.get("compute") in ("azureml", "kaito", "foundry-serverless"))
    assert "eval" in labels and "Evaluate (base against tuned)" in names
    settings = jsonc(workspace / ".vscode" / "settings.json")
    assert settings["python.defaultInterpreterPath"].endswith(".venv/bin/python")
    assert settings["python.testing.pytestEnabled"] is True


@pytest.mark.parametrize("hardware", ["cpu", "cuda"])
def test_dev_container_asks_for_a_gpu_only_for_cuda(new_workspace, hardware):
    workspace = new_workspace(hardware=hardware, gpu_memory_gb=24)
    container = jsonc(workspace / ".devcontainer" / "devcontainer.json")
    assert container["image"].startswith("mcr.microsoft.com/devcontainers/python")
    assert container["postCreateCommand"] == "bash setup.sh"
    gpu = hardware == "cuda"
    assert container.get("hostRequirements", {}).get("gpu", False) is gpu
    assert ("ghcr.io/devcontainers/features/nvidia-cuda:1" in container.get("features", {})) is gpu


def run_setup(workspace: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        ["bash", "setup.sh", *args],
        cwd=workspace,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def test_setup_check_passes_on_this_cpu_machine(new_workspace, tmp_path):
    # a local copy of the model, as a user without the hub has it
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text(
        '{"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, '
        '"num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 1000}'
    )
    workspace = new_workspace(model=str(model))
    assert os.access(workspace / "setup.sh", os.X_OK)
    result = run_setup(workspace, "--check")
    assert result.returncode == 0, result.stdout
    assert "ok       Python 3." in result.stdout and "free disk" in result.stdout
    assert "GB of memory per device (training needs about" in result.stdout
    assert "All checks passed." in result.stdout
    assert not (workspace / ".venv").exists()


def test_setup_check_holds_memory_and_the_hub_against_the_plan(new_workspace, tmp_path):
    workspace = new_workspace(model="qwen2.5-0.5b-instruct", gpu_memory_gb=4096)  # a plan for a far bigger machine
    result = run_setup(workspace, "--check", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty")})
    assert result.returncode == 1
    assert "MISSING  Qwen/Qwen2.5-0.5B-Instruct in the local Hugging Face cache: HF_HUB_OFFLINE=1" in result.stdout
    cached = tmp_path / "hf" / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct"
    cached.mkdir(parents=True)
    result = run_setup(workspace, "--check", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert "ok       Qwen/Qwen2.5-0.5B-Instruct is in the local Hugging Face cache" in result.stdout
    big = new_workspace(model="llama-3.1-8b-instruct", technique="full", gpu_memory_gb=4096)
    result = run_setup(big, "--check")
    assert "MISSING  about" in result.stdout and "GB of memory per device for training as configured" in result.stdout


def test_setup_check_says_what_is_missing(new_workspace):
    workspace = new_workspace(hardware="cuda", gpu_memory_gb=24, model="llama-3.2-1b-instruct")
    result = run_setup(workspace, "--check", env={"PATH": "/usr/bin:/bin", "HF_TOKEN": ""})
    assert result.returncode == 1
    assert "MISSING  an NVIDIA GPU and driver: nvidia-smi was not found" in result.stdout
    assert "MISSING  HF_TOKEN" in result.stdout
    assert "MISSING  meta-llama/Llama-3.2-1B-Instruct in the local Hugging Face cache" in result.stdout
    assert "3 thing(s) missing" in result.stdout
    old = run_setup(workspace, "--check", env={"PYTHON": "/nonexistent/python"})
    assert "MISSING  Python 3.10 or newer" in old.stdout


@pytest.mark.slow
def test_setup_installs_a_working_venv_on_cpu(new_workspace):
    workspace = new_workspace(targets="pytorch")
    # TORCH_INDEX_URL empty: pip's own configuration (this machine keeps a CPU build of torch on disk)
    result = run_setup(workspace, env={"TORCH_INDEX_URL": ""})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"torch {catalog.pins()['torch'].removeprefix('==')}" in result.stdout and "Ready:" in result.stdout
    check = subprocess.run(
        [str(workspace / ".venv" / "bin" / "python"), "-c", "import peft, transformers, accelerate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
