"""Each benchmark under bench/ runs at its smallest size, so that none rots unnoticed (`make bench` runs them
at full size). What is asserted is that they run and report their comparison, never how fast anything is."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers.project import ROOT

pytestmark = pytest.mark.slow


def bench(*args: str, timeout: int = 900) -> str:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_generation_benchmark():
    out = bench("bench/generation.py", "--rounds", "1")
    ours, copier = (
        float(re.search(rf"{name} .*?median ([0-9.]+) s", out).group(1)) for name in ("tuneforge new", "copier copy")
    )
    ratio = float(re.search(r"ratio tuneforge / copier +([0-9.]+)x", out).group(1))
    assert ours > 0 and copier > 0 and ratio == pytest.approx(ours / copier, abs=0.01)


def test_training_benchmark_against_trl():
    out = bench("bench/training.py", "--examples", "16", "--rounds", "1")
    assert "tuneforge" in out and "trl" in out and "x TRL" in out


def test_onnx_speed_benchmark(tmp_path):
    out = bench(
        "bench/onnx_speed.py", "--size", "tiny", "--train-steps", "2", "--data", "drills", "--workdir", str(tmp_path)
    )
    assert "tokens/s" in out


def test_cpu_backends_benchmark(tmp_path):
    out = bench("bench/cpu_backends.py", "--size", "tiny", "--train-steps", "2", "--workdir", str(tmp_path))
    assert "onnx_int4" in out and "gguf_q4_k_m" in out and "gguf_q8_0" in out and "decode (tokens/s)" in out


def test_gpu_memory_benchmark_on_a_tiny_model_on_the_cpu(tmp_path):
    import json

    out = bench("bench/gpu_memory.py", "prepare", "--workspaces", str(tmp_path))
    assert "estimate" in out and (tmp_path / "plan.json").exists()
    bench(
        "bench/gpu_memory.py",
        "run",
        "--workspaces",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
        "--tiny",
        "--max-length",
        "32",
        timeout=600,
    )
    report = json.loads((tmp_path / "out" / "gpu_memory.json").read_text())
    assert all(entry["returncode"] == 0 for entry in report.values()), report


def test_plan_accuracy_benchmark(tmp_path):
    out = bench("bench/plan_accuracy.py", "--size", "small", "--steps", "1", "--workdir", str(tmp_path))
    assert "mean absolute error" in out and "20m-lora-b4-512" in out


def test_preference_benchmark_against_trl():
    out = bench("bench/preference.py", "--pairs", "8", "--rounds", "1")
    assert "tuneforge" in out and "trl" in out and "x TRL" in out


def test_grpo_benchmark_against_trl():
    out = bench("bench/grpo.py", "--prompts", "4", "--generations", "2", "--completion", "4")
    assert re.search(r"tuneforge .* tokens/s .*\ntrl .* tokens/s", out) and "x TRL" in out, out


def test_ui_plan_benchmark():
    from helpers.browser import chromedriver

    chromedriver()  # the page's own timing needs the browser
    out = bench("bench/ui_plan.py", "--changes", "4", "--cli-changes", "1")
    assert '"browser"' in out and "plan update (browser)" in out and "x as long" in out
