"""Running a generated workspace's own scripts, and reading what they leave."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path


def run(workspace: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """python ARGS in the workspace, with this interpreter (the suite's .venv) first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_json(workspace: Path, code: str, *args: str, timeout: int = 600):
    """python -c CODE ARGS in the workspace; the JSON its last line prints."""
    done = run(workspace, "-c", code, *args, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


# train.py on the tiny base of save_tiny_base long and fast enough for the tuned model to answer unlike its random
# base (tests that compare what models answer)
QUICK_TRAINING = [
    "model.name_or_path=outputs/smoke/base",
    "model.torch_dtype=float32",
    "training.max_steps=30",
    "training.learning_rate=0.005",
    "training.per_device_train_batch_size=4",
    "training.gradient_accumulation_steps=1",
    "training.eval_strategy=no",
    "training.save_strategy=no",
    "training.report_to=none",
    "training.bf16=false",
    "data.max_length=256",
]


def save_tiny_base(workspace: Path, folder: str = "outputs/smoke/base") -> None:
    """A tiny random model of the workspace's architecture in workspace/folder, as smoke.py makes it (built once per
    test run for the same architecture, data and code, then copied)."""
    import yaml

    from helpers import cache

    spec = yaml.safe_load((workspace / "configs" / "smoke.yaml").read_text())["tiny_model"]
    key = cache.key_of(spec, workspace / "data" / "sample.jsonl", workspace / "finetune" / "tiny.py")

    def build(out: Path) -> None:
        tiny = run(
            workspace,
            "-c",
            "import sys, yaml; from pathlib import Path; from finetune.tiny import save_tiny_model; "
            "s = yaml.safe_load(open('configs/smoke.yaml')); "
            "save_tiny_model(s['tiny_model'], 'data/sample.jsonl', 512, Path(sys.argv[1]))",
            str(out),
        )
        assert tiny.returncode == 0, tiny.stderr[-3000:]

    cache.copy_of(cache.cached("tiny-base", key, build), workspace / folder)


def losses(run_dir: Path) -> list[float]:
    """The training losses train.py logged in run_dir."""
    history = json.loads((run_dir / "log_history.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry]


def jsonc(path: Path):
    """Parse JSON with // comments, as VS Code does."""
    text = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*', lambda m: m.group(1) or "", path.read_text())
    return json.loads(text)


@contextlib.contextmanager
def serving(workspace: Path, *args: str):
    """serve.py ARGS on a free port, until the block ends; yields its base URL (http://127.0.0.1:PORT)."""
    env = {**os.environ}
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen(
        [sys.executable, "serve.py", "--port", "0", *args],
        cwd=workspace,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "serving" in line, line + server.stderr.read()[-3000:]
        yield line.strip().split(" on ")[-1].removesuffix("/v1")
    finally:
        server.terminate()
        server.wait(timeout=30)


def call(base: str, path: str, body: dict | None = None, raw: bytes | None = None) -> tuple[int, str, bytes]:
    """One request to a server: (status, content type, body), errors included."""
    import urllib.error
    import urllib.request

    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read()


def template_module(path: Path, name: str):
    """A workspace module as the template holds it, under name (its file name may carry the condition that renders it)."""
    import importlib.util
    from importlib.machinery import SourceFileLoader

    loader = SourceFileLoader(name, str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    sys.modules[name] = module  # as an import would: dataclasses look their module up there
    loader.exec_module(module)
    return module
