"""Shared set-up: an isolated template cache, offline hubs, a fixed machine, and helpers that render."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "generator"))

os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OLIVE_DISABLE_TELEMETRY": "1",
                   "TOKENIZERS_PARALLELISM": "false"})


@pytest.fixture(autouse=True)
def fixed_machine(request, monkeypatch):
    """Every plan is made for the typical machine (as `--no-detect` makes it), so that a test means the same on
    a laptop, a GPU box and CI; a test marked this_machine sees the real detection."""
    if request.node.get_closest_marker("this_machine") is None:
        from tuneforge import hardware

        monkeypatch.setattr(hardware, "detect", lambda: dict(hardware.TYPICAL))


@pytest.fixture(scope="session", autouse=True)
def template_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tuneforge-cache")
    os.environ["TUNEFORGE_CACHE_DIR"] = str(cache)
    yield cache


def sets(answers: dict) -> list[str]:
    args = []
    for key, value in answers.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        args += ["--set", f"{key}={value}"]
    return args


def tuneforge(*args: str) -> int:
    from tuneforge.cli import main

    return main([str(a) for a in args])


@pytest.fixture
def new_workspace(tmp_path):
    """Render a workspace with these answers (defaults for the rest) and return its path."""
    counter = iter(range(1000))

    def make(name: str | None = None, **answers) -> Path:
        dest = tmp_path / (name or f"ws{next(counter)}")
        assert tuneforge("new", dest, "--defaults", *sets(answers)) == 0
        return dest

    return make


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout
