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


def test_pictures_go_to_the_server_as_openai_sends_them(new_workspace):
    """A workspace about pictures serves its merged model in PyTorch: an image_url part with a data: URL reaches the
    model as eval.py's picture does (the trained model's greedy answers through the official client are eval.py's,
    for questions only the picture answers), streamed alike; a web address, a detail the model cannot honour, a
    picture that is no picture and a picture outside a user message are refused by name."""
    import base64
    import json

    import openai

    workspace, _ = smoked("gemma3-full-images", new_workspace)
    report = json.loads((workspace / "outputs" / "smoke" / "eval-train" / "report.json").read_text())
    sample = [json.loads(line) for line in (workspace / "data" / "sample.jsonl").read_text().splitlines()]
    asked = {}
    for answer in report["answers"][:8]:
        row = sample[int(answer["source"].rsplit(":", 1)[1]) - 1]
        if "images" not in row:  # a content-parts row: its picture and question
            picture, question = (part.get("image") or part.get("text") for part in row["messages"][0]["content"])
            asked[(picture, question)] = answer["tuned"]
    with serving(workspace, "--model", "outputs/smoke/merged") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)

        def ask(parts, **options):
            return client.chat.completions.create(
                model="merged", messages=[{"role": "user", "content": parts}], max_tokens=32, temperature=0, **options
            )

        def data_url(picture: str) -> str:
            return "data:image/png;base64," + base64.b64encode((workspace / "data" / picture).read_bytes()).decode()

        for (picture, question), expected in asked.items():
            parts = [{"type": "image_url", "image_url": {"url": data_url(picture)}}, {"type": "text", "text": question}]
            answer = ask(parts)
            assert answer.choices[0].message.content == expected, (picture, question)
            assert answer.usage.prompt_tokens > 4  # the picture's image tokens and the question
            streamed = "".join(c.choices[0].delta.content or "" for c in ask(parts, stream=True) if c.choices)
            assert streamed == expected
        picture = data_url("images/red_circle.png")
        for image_url, param in [
            ({"url": "https://example.com/a.png"}, "messages[0].content[0].image_url.url"),
            ({"url": picture, "detail": "high"}, "messages[0].content[0].image_url.detail"),
            ({"url": "data:image/png;base64,AAAA"}, "messages"),
        ]:
            with pytest.raises(openai.BadRequestError) as refused:
                ask([{"type": "image_url", "image_url": image_url}, {"type": "text", "text": "What is it?"}])
            assert refused.value.body["param"] == param, refused.value.body
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="merged",
                messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": picture}}]}],
            )
        assert refused.value.body["param"] == "messages[0].content"
