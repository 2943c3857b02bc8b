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

from conftest import ROOT
from helpers.workspace import call as call_server
from helpers.workspace import QUICK_TRAINING, losses, run, run_json, save_tiny_base, serving

pytestmark = pytest.mark.slow

CASES = {
    "lora-qwen2-messages": dict(technique="lora", model="qwen2.5-0.5b-instruct", dataset_format="messages",
                                targets="pytorch"),
    # a 3.8B model trains on a CPU with 64 GB: on a CPU, bitsandbytes loads the weights in fp32 (15 GB) first
    "qlora-phi3-prompt-completion": dict(technique="qlora", model="phi-3-mini-4k-instruct", gpu_memory_gb=64,
                                         dataset_format="prompt-completion", targets="pytorch"),
    "dora-llama-alpaca": dict(technique="dora", model="llama-3.2-1b-instruct", dataset_format="alpaca", targets="pytorch"),
    "rslora-phi4mini": dict(technique="rslora", model="phi-4-mini-instruct", targets="pytorch", gpu_memory_gb=64),
    "ia3-mistral": dict(technique="ia3", model="mistral-7b-v0.3", targets="pytorch", gpu_memory_gb=64),
    "full-qwen3-text": dict(technique="full", model="qwen3-0.6b", dataset_format="text", targets="pytorch"),
    "dora-gemma3": dict(technique="dora", model="gemma-3-1b-it", targets="pytorch"),
    # a mixture of experts: adapters on attention, the fused experts and the router frozen (30B in fp32 on a CPU)
    "lora-qwen3-moe": dict(technique="lora", model="qwen3-30b-a3b", targets="pytorch", gpu_memory_gb=400),
    "lora-gpt-oss-moe": dict(technique="lora", model="gpt-oss-20b", targets="pytorch", gpu_memory_gb=400),
    "deepspeed-zero2": dict(technique="lora", distributed="deepspeed-zero2", targets="pytorch"),
    "deepspeed-zero3": dict(technique="lora", distributed="deepspeed-zero3", targets="pytorch"),
    "ddp-two-processes": dict(technique="lora", distributed="ddp", gpu_count=2, targets="pytorch"),
}


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


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_each_experiment_tracker_logs_offline(new_workspace, tracker, monkeypatch):
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    workspace = new_workspace(technique="lora", targets="pytorch", report_to=tracker)
    save_tiny_base(workspace, "tiny")
    result = run(workspace, "train.py", "model.name_or_path=tiny", "model.torch_dtype=float32", "training.max_steps=3",
                 "training.logging_steps=1", "training.eval_strategy=no", "training.save_strategy=no")
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
    assert losses(workspace / "outputs" / "killed")[-5:] == pytest.approx(losses(workspace / "outputs" / "straight")[-5:], rel=1e-3)

    # trained with model.name_or_path=tiny: merge and eval take that base from the adapter, with no override
    where = ["merge.adapter_dir=outputs/killed", "merge.output_dir=outputs/killed-merged"]
    merged = run(workspace, "merge.py", *where)
    assert merged.returncode == 0, merged.stderr[-3000:]
    scored = run(workspace, "eval.py", "--limit", "2", "--no-onnx", "--out", "outputs/eval", *where)
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


ONNX_CASES = {
    # plain text: benchmark.py prompts with the first half of each held-out paragraph
    "merged-qwen2-text": dict(technique="lora", model="qwen2.5-0.5b-instruct", adapter_export="merged", scenario="domain",
                              dataset_format="text"),
    "adapters-llama": dict(technique="lora", model="llama-3.2-1b-instruct", adapter_export="adapters"),
    "adapters-phi3-qlora": dict(technique="qlora", model="phi-3-mini-4k-instruct", adapter_export="adapters", gpu_memory_gb=64),
    "merged-granite-qlora": dict(technique="qlora", model="granite-3.3-2b-instruct", adapter_export="merged", gpu_memory_gb=64),
    "merged-smollm3-dora": dict(technique="dora", model="smollm3-3b", adapter_export="merged", gpu_memory_gb=64),
}


@pytest.mark.parametrize("answers", list(ONNX_CASES.values()), ids=list(ONNX_CASES))
def test_onnx_cpu_optimize_chat_and_fp32_parity(new_workspace, answers):
    workspace = new_workspace(targets="pytorch,onnx-cpu", **answers)
    result = run(workspace, "smoke.py")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    onnx = workspace / "outputs" / "smoke" / "onnx" / "onnx-cpu"
    assert (onnx / "genai_config.json").exists()
    adapters = list(onnx.glob("*.onnx_adapter"))
    assert bool(adapters) == (answers["adapter_export"] == "adapters")
    assert result.stdout.count("model>") == 2  # PyTorch and ONNX both answered
    bench = run(workspace, "benchmark.py", "--smoke", "--new-tokens", "16", "--prompts", "2", "--parity-steps", "16")
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    report = json.loads((workspace / "outputs" / "smoke" / "benchmark.json").read_text())
    assert report["fp32_greedy_tokens_match"] is True and "gguf_q8_0_greedy_tokens_same" not in report
    assert set(report["models"]) == {"pytorch_fp32", "onnx_int4"}
    assert report["models"]["onnx_int4"]["perplexity_ratio"] == pytest.approx(1.0, abs=0.1)
    assert report["models"]["onnx_int4"]["decode_tokens_per_s"] > 0


def test_serve_answers_openai_requests_and_rejects_bad_ones(new_workspace):
    workspace = new_workspace(targets="pytorch,onnx-cpu")
    result = run(workspace, "smoke.py")
    assert result.returncode == 0, result.stdout[-3000:]
    with serving(workspace, "--model", "outputs/smoke/onnx/onnx-cpu", "--request-timeout", "2") as base:
        def call(path, body=None, raw=None):
            return call_server(base, path, body, raw)

        status, _, body = call("/v1/models")
        assert status == 200 and json.loads(body)["data"][0]["object"] == "model"
        question = {"messages": [{"role": "user", "content": "How often should I water a snake plant?"}], "max_tokens": 8}
        status, _, body = call("/v1/chat/completions", question)
        reply = json.loads(body)
        assert status == 200 and reply["object"] == "chat.completion"
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert 0 < reply["usage"]["completion_tokens"] <= 8 and reply["usage"]["prompt_tokens"] > 5
        status, kind, body = call("/v1/chat/completions", {**question, "stream": True})
        assert status == 200 and kind == "text/event-stream"
        events = [line[len("data: "):] for line in body.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        for bad, expected in [(b"{not json", 400), (json.dumps({"messages": []}).encode(), 400),
                              (json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(), 400),
                              (json.dumps({**question, "max_tokens": -1}).encode(), 400),
                              (json.dumps({**question, "stream": "yes"}).encode(), 400)]:
            status, _, body = call("/v1/chat/completions", raw=bad)
            assert status == expected, body
            assert json.loads(body)["error"]["message"]
        assert call("/v1/nothing", question)[0] == 404
        assert call("/v1/chat/completions", question)[0] == 200  # still serving after the bad ones
        _hardening_probes(base + "/v1", call, question)
    bounded = run(workspace, "-c", "from finetune.inference import OnnxBackend, PytorchBackend\n"
                                   "for b in (OnnxBackend('outputs/smoke/onnx/onnx-cpu'), PytorchBackend('outputs/smoke/merged')):\n"
                                   "    b.max_seconds = 1e-6\n"
                                   "    ''.join(b.stream([{'role': 'user', 'content': 'hi'}], 300))\n"
                                   "    print(b.name, b.finish_reason, b.usage[1])\n")
    assert bounded.returncode == 0, bounded.stderr[-3000:]
    for line in bounded.stdout.splitlines():  # one generation bounded in time ends early, as cut by length
        name, reason, tokens = line.split()
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
    setup = subprocess.run(["bash", "setup.sh", "--check"], cwd=workspace, capture_output=True, text=True, timeout=120)
    assert str(hostile.resolve()) in setup.stdout
    result = run(workspace, "train.py", "model.torch_dtype=float32", "training.max_steps=2", "training.eval_strategy=no",
                 "training.save_strategy=no", "training.report_to=none")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((workspace / "outputs" / "run" / "metrics.json").read_text())["global_step"] == 2
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


THINKING_CASES = {
    "qwen3": dict(model="qwen3-0.6b", targets="pytorch,onnx-cpu"),
    "smollm3": dict(model="smollm3-3b", targets="pytorch,onnx-cpu", gpu_memory_gb=64),
    # the model builder has no Qwen3-MoE export: the adapter and the merged model are compared
    "qwen3-moe": dict(model="qwen3-30b-a3b", targets="pytorch", gpu_memory_gb=400),
}


@pytest.mark.parametrize("case", THINKING_CASES)
def test_kept_reasoning_runs_alike_in_the_adapter_the_merged_and_the_onnx_model(new_workspace, case):
    """thinking=keep on a tiny model of each architecture whose template has the switch: answers learnt with
    <think> blocks; the adapter, the merged model and the fp32 ONNX export give the same first 20 greedy tokens,
    reasoning tags included."""
    answers = THINKING_CASES[case]
    workspace = new_workspace(thinking="keep", **answers)
    data = workspace / "data" / "sample.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    for row in rows:
        for message in row["messages"]:
            if message["role"] == "assistant":
                message["content"] = "<think>\nThe user asks about a plant.\n</think>\n\n" + message["content"]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    smoke = workspace / "configs" / "smoke.yaml"
    # long and fast enough for the adapter to learn that an answer opens with its reasoning; and weights 10x the
    # default initialisation, since with LoRA the random head stays frozen, and at 0.02 its logits cannot move
    # far from uniform (over 60 steps the loss went from 6.24 to 6.0 on SmolLM3 and 5.9 on Qwen3; at 0.2: 2.5)
    smoke.write_text(smoke.read_text().replace("training.max_steps=8", "training.max_steps=60")
                     .replace("training.learning_rate=0.001", "training.learning_rate=0.01")
                     .replace("  intermediate_size: 128\n", "  intermediate_size: 128\n  initializer_range: 0.2\n"))
    result = run(workspace, "smoke.py")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "[[<think>" in result.stdout and "no warnings" in result.stdout  # the reasoning is learnt, none missing
    if "onnx-cpu" in answers["targets"]:
        bench = run(workspace, "benchmark.py", "--smoke", "--new-tokens", "8", "--prompts", "2", "--parity-steps", "20")
        assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
        benchmark = json.loads((workspace / "outputs" / "smoke" / "benchmark.json").read_text())
        assert benchmark["fp32_greedy_tokens_match"] is True
    compare = run(workspace, "-c", (
        "import json; from finetune.config import load_config; from finetune.inference import PytorchBackend\n"
        "kw = {'enable_thinking': True}\n"
        "adapter, merged = (PytorchBackend(p, template_kwargs=kw) for p in ('outputs/smoke/run', 'outputs/smoke/merged'))\n"
        "system = load_config('configs/train.yaml')['data']['system_prompt']\n"
        "ids = merged.prompt_ids([{'role': 'system', 'content': system},\n"
        "                         {'role': 'user', 'content': 'How often should I water a snake plant?'}])\n"
        "a, m = adapter.generate_ids(ids, 20), merged.generate_ids(ids, 20)\n"
        "print(json.dumps({'same': a == m, 'text': merged.tokenizer.decode(m)}))"))
    assert compare.returncode == 0, compare.stderr[-3000:]
    outcome = json.loads(compare.stdout.strip().splitlines()[-1])
    assert outcome["same"] and outcome["text"].startswith("<think>"), outcome


def test_serve_holds_two_adapters_on_one_base_and_each_request_picks_one(new_workspace):
    """Two adapters trained on different data, served together on one base (PyTorch and ONNX): each request's
    "model" gets the answer that adapter gives on its own, the base alone is one more name (PyTorch)."""
    workspace = new_workspace(targets="pytorch,onnx-cpu", model="llama-3.2-1b-instruct", adapter_export="adapters")
    smoke = workspace / "outputs" / "smoke"
    save_tiny_base(workspace)
    rows = [json.loads(line) for line in (workspace / "data" / "sample.jsonl").read_text().splitlines()]
    for row in rows:
        row["messages"][-1]["content"] = "Water it every Sunday morning."
    (workspace / "data" / "sundays.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for out, data in (("run", "data/sample.jsonl"), ("run-sundays", "data/sundays.jsonl")):
        trained = run(workspace, "train.py", *QUICK_TRAINING, f"training.output_dir=outputs/smoke/{out}", f"data.path={data}")
        assert trained.returncode == 0, trained.stderr[-3000:]
    exported = run(workspace, "optimize.py", "--smoke", "--target", "onnx-cpu")
    assert exported.returncode == 0, exported.stderr[-3000:]
    added = run(workspace, "optimize.py", "--smoke", "--adapter", "outputs/smoke/run-sundays", "--name", "sundays")
    assert added.returncode == 0, added.stderr[-3000:]
    onnx = "outputs/smoke/onnx/onnx-cpu"
    assert (workspace / onnx / "sundays.onnx_adapter").exists() and not list((workspace / "outputs" / "smoke" / "onnx").glob(".adapter-*"))

    question = [{"role": "user", "content": "How often should I water a snake plant?"}]
    expected = run_json(workspace, "import json, sys; from finetune.inference import OnnxBackend, PytorchBackend\n"
                                   f"q = {question!r}; onnx = {onnx!r}\n"
                                   "answers = {'pytorch': {n: ''.join(PytorchBackend(p).stream(q, 12)) for n, p in "
                                   "[('plants', 'outputs/smoke/run'), ('sundays', 'outputs/smoke/run-sundays')]},\n"
                                   "           'onnx': {n: ''.join(OnnxBackend(onnx, {n: f'{onnx}/{f}'}).stream(q, 12)) for n, f in "
                                   "[('plants', 'adapter_weights.onnx_adapter'), ('sundays', 'sundays.onnx_adapter')]}}\n"
                                   "print(json.dumps(answers))")
    assert expected["pytorch"]["plants"] != expected["pytorch"]["sundays"]

    served = {"pytorch": ["--adapter", "plants=outputs/smoke/run", "--adapter", "sundays=outputs/smoke/run-sundays"],
              "onnx": ["--model", onnx, "--adapter", f"plants={onnx}/adapter_weights.onnx_adapter",
                       "--adapter", f"sundays={onnx}/sundays.onnx_adapter"]}
    for backend, adapters in served.items():
        with serving(workspace, "--backend", backend, *adapters) as base:
            names = [m["id"] for m in json.loads(call_server(base, "/v1/models")[2])["data"]]
            assert names == (["plants", "sundays", "base"] if backend == "pytorch" else ["plants", "sundays"])

            def answer(**request):
                status, _, body = call_server(base, "/v1/chat/completions", {"messages": question, "max_tokens": 12, **request})
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
