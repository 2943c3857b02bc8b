"""Generated workspaces run for real, beyond smoke.py (tests/e2e/test_pipelines_e2e.py): experiment trackers,
resuming a killed run, the workspace's own tests, serving, hostile paths, several adapters on one base."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.pipelines import smoked
from helpers.project import ROOT
from helpers.workspace import QUICK_TRAINING, losses, run, run_json, save_tiny_base, serving
from helpers.workspace import call as call_server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_each_experiment_tracker_logs_offline(new_workspace, tracker, monkeypatch):
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    workspace = new_workspace(technique="lora", targets="pytorch", report_to=tracker)
    save_tiny_base(workspace, "tiny")
    result = run(
        workspace,
        "train.py",
        "model.name_or_path=tiny",
        "model.torch_dtype=float32",
        "training.max_steps=3",
        "training.logging_steps=1",
        "training.eval_strategy=no",
        "training.save_strategy=no",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if tracker == "tensorboard":
        assert list((workspace / "outputs" / "run").rglob("events.out.tfevents.*"))
    elif tracker == "mlflow":
        losses_logged = list((workspace / "mlruns").rglob("metrics/loss"))
        assert losses_logged and len(losses_logged[0].read_text().splitlines()) == 3
    else:
        assert list((workspace / "wandb").glob("offline-run-*/run-*.wandb"))


def test_a_killed_run_resumes_from_its_last_checkpoint(new_workspace):
    workspace = new_workspace(technique="lora", targets="pytorch")
    save_tiny_base(workspace, "tiny")
    common = [
        "model.name_or_path=tiny",
        "model.torch_dtype=float32",
        "training.max_steps=40",
        "training.save_steps=10",
        "training.logging_steps=1",
        "training.eval_strategy=no",
        "training.learning_rate=0.001",
        "training.per_device_train_batch_size=4",
        "training.gradient_accumulation_steps=1",
        "training.report_to=none",
    ]
    straight = run(workspace, "train.py", "training.output_dir=outputs/straight", *common)
    assert straight.returncode == 0, straight.stderr[-3000:]

    env = {**os.environ}
    env.pop("PYTHONPATH", None)
    process = subprocess.Popen(
        [sys.executable, "train.py", "training.output_dir=outputs/killed", *common],
        cwd=workspace,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = workspace / "outputs" / "killed" / "checkpoint-10" / "trainer_state.json"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists()
    assert not (workspace / "outputs" / "killed" / "metrics.json").exists(), "the run finished before it was killed"
    # saves killed part-way, as they look on disk: a folder made but empty, and one whose weights were written
    # but not yet its trainer_state.json (the Trainer writes that last)
    killed = workspace / "outputs" / "killed"
    (killed / "checkpoint-30").mkdir(exist_ok=True)
    half = killed / "checkpoint-20"
    half.mkdir(exist_ok=True)
    (half / "trainer_state.json").unlink(missing_ok=True)
    (half / "adapter_model.safetensors").write_bytes(b"")

    resumed = run(workspace, "train.py", "--resume", "training.output_dir=outputs/killed", *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipping outputs/killed/checkpoint-30: it has no trainer_state.json" in resumed.stdout
    assert "skipping outputs/killed/checkpoint-20: it has no trainer_state.json" in resumed.stdout
    assert "resuming from outputs/killed/checkpoint-10" in resumed.stdout
    history = json.loads((workspace / "outputs" / "killed" / "log_history.json").read_text())
    steps = [e["step"] for e in history if "loss" in e]
    assert steps[-1] == 40 and steps[0] <= 10
    assert json.loads((workspace / "outputs" / "killed" / "metrics.json").read_text())["global_step"] == 40
    assert losses(workspace / "outputs" / "killed")[-5:] == pytest.approx(
        losses(workspace / "outputs" / "straight")[-5:], rel=1e-3
    )

    # trained with model.name_or_path=tiny: merge and eval take that base from the adapter, with no override
    where = ["merge.adapter_dir=outputs/killed", "merge.output_dir=outputs/killed-merged"]
    merged = run(workspace, "merge.py", *where)
    assert merged.returncode == 0, merged.stderr[-3000:]
    scored = run(workspace, "eval.py", "--limit", "2", "--out", "outputs/eval", *where)
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-2000:]
    report = json.loads((workspace / "outputs" / "eval" / "report.json").read_text())
    assert set(report["models"]) == {"base", "tuned"} and not report["broken"]


@pytest.mark.parametrize("dataset_format", ["messages", "text"])
def test_the_workspace_own_tests_pass(new_workspace, dataset_format):
    workspace = new_workspace(dataset_format=dataset_format, model="phi-4-mini-instruct", gpu_memory_gb=64)
    result = run(workspace, "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert result.returncode == 0, result.stdout[-3000:]
    tests = (ROOT / "templates" / "workspace" / "tests" / "test_workspace.py").read_text().count("\ndef test_")
    assert f"{tests} passed" in result.stdout  # every test the workspace ships ran and passed, none skipped


def test_serve_answers_openai_requests_and_rejects_bad_ones(new_workspace):
    workspace, _ = smoked("qwen3-lora-chat-onnx", new_workspace)
    with serving(workspace, "--model", "outputs/smoke/onnx/onnx-cpu", "--request-timeout", "2") as base:

        def call(path, body=None, raw=None):
            return call_server(base, path, body, raw)

        status, _, body = call("/v1/models")
        assert status == 200 and json.loads(body)["data"][0]["object"] == "model"
        question = {
            "messages": [{"role": "user", "content": "How often should I water a snake plant?"}],
            "max_tokens": 8,
        }
        status, _, body = call("/v1/chat/completions", question)
        reply = json.loads(body)
        assert status == 200 and reply["object"] == "chat.completion"
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert 0 < reply["usage"]["completion_tokens"] <= 8 and reply["usage"]["prompt_tokens"] > 5
        status, kind, body = call("/v1/chat/completions", {**question, "stream": True})
        assert status == 200 and kind == "text/event-stream"
        events = [line[len("data: ") :] for line in body.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        for bad, expected in [
            (b"{not json", 400),
            (json.dumps({"messages": []}).encode(), 400),
            (json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(), 400),
            (json.dumps({**question, "max_tokens": -1}).encode(), 400),
            (json.dumps({**question, "stream": "yes"}).encode(), 400),
        ]:
            status, _, body = call("/v1/chat/completions", raw=bad)
            assert status == expected, body
            assert json.loads(body)["error"]["message"]
        assert call("/v1/nothing", question)[0] == 404
        assert call("/v1/chat/completions", question)[0] == 200  # still serving after the bad ones
        _hardening_probes(base + "/v1", call, question)
    bounded = run(
        workspace,
        "-c",
        "from finetune.inference import PytorchBackend; from finetune.onnx_backend import OnnxBackend\n"
        "for b in (OnnxBackend('outputs/smoke/onnx/onnx-cpu'), PytorchBackend('outputs/smoke/merged')):\n"
        "    b.max_seconds = 1e-6\n"
        "    ''.join(b.stream([{'role': 'user', 'content': 'hi'}], 300))\n"
        "    print(b.name, b.finish_reason, b.usage[1])\n",
    )
    assert bounded.returncode == 0, bounded.stderr[-3000:]
    for line in bounded.stdout.splitlines():  # one generation bounded in time ends early, as cut by length
        _name, reason, tokens = line.split()
        assert reason == "length" and int(tokens) < 300, line


def _hardening_probes(base: str, call, question: dict) -> None:
    """What once stalled or dropped the server: each gets a 4xx at once, and others are still served."""
    import socket
    import threading
    import urllib.parse

    status, _, body = call("/v1/chat/completions", raw=b"[" * 100_000)
    assert status == 400 and b"nested too deeply" in body
    status, _, body = call("/v1/chat/completions", {**question, "model": "gpt-9"})
    assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"
    address = urllib.parse.urlparse(base)

    def raw(head: bytes, body: bytes = b"", wait: float = 20) -> bytes:
        with socket.create_connection((address.hostname, address.port), timeout=wait) as sock:
            sock.sendall(head + body)
            return sock.recv(65536)

    post = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %s\r\n\r\n"
    assert raw(post % (b"text/plain", b"2"), b"{}").startswith(b"HTTP/1.1 415")
    assert raw(post % (b"application/json", b"-1")).startswith(b"HTTP/1.1 400")
    started = time.monotonic()
    assert raw(post % (b"application/json", b"1000"), b'{"messages"').startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 15  # the server's --request-timeout of 2 s, not forever

    # a prompt far beyond the context is refused with the counts, without holding up a normal request
    long = {"messages": [{"role": "user", "content": "water the plants " * 40_000}], "max_tokens": 8}
    results = {}
    thread = threading.Thread(target=lambda: results.update(long=call("/v1/chat/completions", long)))
    thread.start()
    results["normal"] = call("/v1/chat/completions", question)
    thread.join(timeout=120)
    status, _, body = results["long"]
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["code"] == "context_length_exceeded" and "maximum context length is 512 tokens" in error["message"]
    assert results["normal"][0] == 200


def test_a_model_and_data_at_hostile_paths_train_and_run_nothing(tmp_path, new_workspace):
    """The injection case end to end: quoted into YAML, JSON and shell, the paths reach train.py intact."""
    hostile = tmp_path / 'm"; touch PWNED; echo "$(touch PWNED2)`touch PWNED3`\'x‘; y: z'
    scratch = new_workspace(technique="lora", targets="pytorch")
    save_tiny_base(scratch, "tiny")
    hostile.mkdir()
    for file in (scratch / "tiny").iterdir():
        (hostile / file.name).write_bytes(file.read_bytes())
    data = hostile / "data #1: 'x'.jsonl"
    data.write_text((scratch / "data" / "sample.jsonl").read_text())
    workspace = new_workspace(technique="lora", targets="pytorch", model=str(hostile), dataset=str(data))
    setup = subprocess.run(
        ["bash", "setup.sh", "--check"], cwd=workspace, capture_output=True, text=True, timeout=120, check=False
    )
    assert str(hostile.resolve()) in setup.stdout
    result = run(
        workspace,
        "train.py",
        "model.torch_dtype=float32",
        "training.max_steps=2",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.report_to=none",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((workspace / "outputs" / "run" / "metrics.json").read_text())["global_step"] == 2
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


def test_serve_holds_two_adapters_on_one_base_and_each_request_picks_one(new_workspace):
    """Two adapters trained on different data, served together on one base (PyTorch and ONNX): each request's
    "model" gets the answer that adapter gives on its own, the base alone is one more name (PyTorch)."""
    workspace = new_workspace(targets="pytorch,onnx-cpu", model="llama-3.2-1b-instruct", adapter_export="adapters")
    save_tiny_base(workspace)
    rows = [json.loads(line) for line in (workspace / "data" / "sample.jsonl").read_text().splitlines()]
    for row in rows:
        row["messages"][-1]["content"] = "Water it every Sunday morning."
    (workspace / "data" / "sundays.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for out, data in (("run", "data/sample.jsonl"), ("run-sundays", "data/sundays.jsonl")):
        trained = run(
            workspace, "train.py", *QUICK_TRAINING, f"training.output_dir=outputs/smoke/{out}", f"data.path={data}"
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
    exported = run(workspace, "optimize.py", "--smoke", "--target", "onnx-cpu")
    assert exported.returncode == 0, exported.stderr[-3000:]
    added = run(workspace, "optimize.py", "--smoke", "--adapter", "outputs/smoke/run-sundays", "--name", "sundays")
    assert added.returncode == 0, added.stderr[-3000:]
    onnx = "outputs/smoke/onnx/onnx-cpu"
    assert (workspace / onnx / "sundays.onnx_adapter").exists() and not list(
        (workspace / "outputs" / "smoke" / "onnx").glob(".adapter-*")
    )

    question = [{"role": "user", "content": "How often should I water a snake plant?"}]
    expected = run_json(
        workspace,
        "import json, sys; from finetune.inference import PytorchBackend; from finetune.onnx_backend import OnnxBackend\n"
        f"q = {question!r}; onnx = {onnx!r}\n"
        "answers = {'pytorch': {n: ''.join(PytorchBackend(p).stream(q, 12)) for n, p in "
        "[('plants', 'outputs/smoke/run'), ('sundays', 'outputs/smoke/run-sundays')]},\n"
        "           'onnx': {n: ''.join(OnnxBackend(onnx, {n: f'{onnx}/{f}'}).stream(q, 12)) for n, f in "
        "[('plants', 'adapter_weights.onnx_adapter'), ('sundays', 'sundays.onnx_adapter')]}}\n"
        "print(json.dumps(answers))",
    )
    assert expected["pytorch"]["plants"] != expected["pytorch"]["sundays"]

    served = {
        "pytorch": ["--adapter", "plants=outputs/smoke/run", "--adapter", "sundays=outputs/smoke/run-sundays"],
        "onnx": [
            "--model",
            onnx,
            "--adapter",
            f"plants={onnx}/adapter_weights.onnx_adapter",
            "--adapter",
            f"sundays={onnx}/sundays.onnx_adapter",
        ],
    }
    for backend, adapters in served.items():
        with serving(workspace, "--backend", backend, *adapters) as base:
            names = [m["id"] for m in json.loads(call_server(base, "/v1/models")[2])["data"]]
            assert names == (["plants", "sundays", "base"] if backend == "pytorch" else ["plants", "sundays"])

            def answer(**request):
                status, _, body = call_server(
                    base, "/v1/chat/completions", {"messages": question, "max_tokens": 12, **request}
                )
                assert status == 200, body
                reply = json.loads(body)
                return reply["model"], reply["choices"][0]["message"]["content"]

            # back and forth, so that each switch is tested both ways
            for name in ("sundays", "plants", "sundays"):
                assert answer(model=name) == (name, expected[backend][name]), backend
            assert answer() == ("plants", expected[backend]["plants"])  # no model: the first adapter
            if backend == "pytorch":
                assert answer(model="base")[1] not in expected[backend].values()
            status, _, body = call_server(base, "/v1/chat/completions", {"model": "legal", "messages": question})
            assert status == 404 and b"plants" in body
