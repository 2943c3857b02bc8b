"""The workspace's playground (serve.py's page at /) in headless Chromium, on a tiny trained model: a streamed
answer in chat mode, then the same prompt to the base, the tuned and the ONNX model side by side, each with its
tokens per second. TUNEFORGE_SCREENSHOTS=docs/ keeps a screenshot (the README shows it)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from helpers.browser import chrome, screenshot, wait_for
from helpers.workspace import QUICK_TRAINING, call, run, save_tiny_base, serving
from tuneforge import catalog

pytestmark = pytest.mark.slow


def test_playground_streams_an_answer_and_compares_base_tuned_and_onnx(new_workspace):
    from selenium.webdriver.common.by import By

    workspace = new_workspace(targets="pytorch,onnx-cpu", model="llama-3.2-1b-instruct")
    save_tiny_base(workspace)
    trained = run(workspace, "train.py", *QUICK_TRAINING, "training.output_dir=outputs/smoke/run")
    assert trained.returncode == 0, trained.stderr[-3000:]
    merged = run(workspace, "merge.py", "merge.adapter_dir=outputs/smoke/run", "merge.output_dir=outputs/smoke/merged")
    assert merged.returncode == 0, merged.stderr[-3000:]
    exported = run(workspace, "optimize.py", "--smoke", "--target", "onnx-cpu")
    assert exported.returncode == 0, exported.stderr[-3000:]
    # where a real run's models are (train.py's and optimize.py's defaults), which serve.py --compare serves
    for name in ("run", "onnx"):
        shutil.move(workspace / "outputs" / "smoke" / name, workspace / "outputs" / name)
    config = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())
    prompt = config["generation"]["example_prompt"]
    assert prompt == catalog.load("scenarios")["chat"]["chat_prompt"]

    with serving(workspace, "--compare") as base:
        status, _, body = call(base, "/v1/playground")
        settings = json.loads(body)
        assert status == 200 and settings["models"] == ["base", "tuned", "onnx"]
        assert settings["system"] == config["data"]["system_prompt"] and settings["prompt"] == prompt
        assert settings["max_tokens"] == config["generation"]["max_new_tokens"] and settings["temperature"] == 0
        question = {
            "messages": [{"role": "system", "content": settings["system"]}, {"role": "user", "content": prompt}],
            "max_tokens": 12,
            "temperature": 0,
        }
        expected = {}
        for model in settings["models"]:
            status, _, body = call(base, "/v1/chat/completions", {**question, "model": model})
            assert status == 200, body
            expected[model] = json.loads(body)["choices"][0]["message"]["content"]
        assert expected["base"] != expected["tuned"]  # the adapter is switched off for the base
        for bad in ({"temperature": 3}, {"temperature": "hot"}, {"top_p": 0}, {"stream_options": []}):
            status, _, body = call(base, "/v1/chat/completions", {**question, **bad})
            assert status == 400 and json.loads(body)["error"]["message"], bad
        status, _, body = call(
            base, "/v1/chat/completions", {**question, "stream": True, "stream_options": {"include_usage": True}}
        )
        events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]
        assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0

        with chrome() as driver:
            driver.get(base + "/")
            wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            assert driver.find_element(By.ID, "system").get_attribute("value") == settings["system"]
            assert driver.find_element(By.ID, "prompt").get_attribute("value") == prompt
            tokens = driver.find_element(By.ID, "max-tokens")
            tokens.clear()
            tokens.send_keys("12")

            def answers(d):
                """{model: (answer, speed)} once every column shown has finished its answer (data-tokens is set last)."""
                columns = d.find_elements(By.CSS_SELECTOR, ".column:not([hidden])")
                speeds = d.find_elements(By.CSS_SELECTOR, ".column:not([hidden]) .speed[data-tokens]")
                if not columns or len(speeds) != len(columns):
                    return None
                return {
                    c.get_attribute("data-model"): (
                        c.find_elements(By.CSS_SELECTOR, ".turn.assistant")[-1].text,
                        c.find_element(By.CSS_SELECTOR, ".speed").text,
                    )
                    for c in d.find_elements(By.CSS_SELECTOR, ".column:not([hidden])")
                }

            driver.find_element(By.ID, "send").click()
            chat = wait_for(driver, answers, timeout=120)
            assert list(chat) == ["base"] and chat["base"][0] == expected["base"].strip()
            assert "tokens/s" in chat["base"][1]

            driver.find_element(By.ID, "clear").click()
            driver.find_element(By.ID, "compare").click()
            driver.find_element(By.ID, "prompt").send_keys(prompt)
            driver.find_element(By.ID, "send").click()
            compared = wait_for(driver, lambda d: (a := answers(d)) and len(a) == 3 and a, timeout=180)
            assert list(compared) == ["base", "tuned", "onnx"]
            for model, (text, speed) in compared.items():
                assert text == expected[model].strip(), model
                assert " tokens, " in speed and "tokens/s" in speed
            screenshot(driver, "playground-compare.png")
