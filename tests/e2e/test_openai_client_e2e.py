"""serve.py, driven by OpenAI's official Python client, on the PyTorch and ONNX backends of the default chat
workspace's smoke run (the GGUF backend: on the real SmolLM2, tests/e2e/test_real_models_e2e.py)."""

from __future__ import annotations

import pytest

from helpers.openai_client import speaks_openai
from helpers.pipelines import smoked
from helpers.workspace import serving

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "backend, model", [("pytorch", "outputs/smoke/merged"), ("onnx", "outputs/smoke/onnx/onnx-cpu")]
)
def test_the_official_openai_client_gets_each_parameter_honoured_or_refused_by_name(new_workspace, backend, model):
    workspace, _ = smoked("qwen3-lora-chat-onnx", new_workspace)
    with serving(workspace, "--backend", backend, "--model", model) as base:
        speaks_openai(base, "How often should I water a snake plant?")
