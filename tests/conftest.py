"""Shared set-up: an isolated template cache, offline hubs, a fixed machine, and helpers that render."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generator"))

from helpers.project import sets, tuneforge

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OLIVE_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
# each xdist worker and the workspace processes it starts get their share of the cores, so that two workers' torch,
# ONNX Runtime and llama.cpp thread pools do not fight over them (torch reads these, and the workspace's ONNX and
# llama.cpp backends OMP_NUM_THREADS)
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[variable] = str(THREADS)


@pytest.fixture(autouse=True)
def fixed_machine(request, monkeypatch):
    """Every plan is made for the typical machine (as `--no-detect` makes it), so that a test means the same on
    a laptop, a GPU box and CI; a test marked this_machine sees the real detection."""
    if request.node.get_closest_marker("this_machine") is None:
        from tuneforge.planning import hardware

        monkeypatch.setattr(hardware, "detect", lambda: dict(hardware.TYPICAL))


@pytest.fixture(scope="session", autouse=True)
def template_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tuneforge-cache")
    os.environ["TUNEFORGE_CACHE_DIR"] = str(cache)
    yield cache


@pytest.fixture(scope="session", autouse=True)
def artefact_cache(tmp_path_factory):
    """tests/helpers/cache.py's folder: one for the whole run, which every xdist worker shares."""
    from helpers import cache

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "artefacts"
    folder.mkdir(exist_ok=True)
    os.environ[cache.ENV] = str(folder)
    yield folder


@pytest.fixture
def new_workspace(tmp_path):
    """Render a workspace with these answers (defaults for the rest) and return its path."""
    counter = iter(range(1000))

    def make(name: str | None = None, **answers) -> Path:
        dest = tmp_path / (name or f"ws{next(counter)}")
        assert tuneforge("new", dest, "--defaults", *sets(answers)) == 0
        return dest

    return make


# the longest tests (each several minutes: real models, real-vocabulary GGUF exports) go first, so that neither
# worker ends the run alone on one of them: in the last run they ran last and set its length
LONGEST_FIRST = ("test_real_models_e2e.py", "test_gguf_e2e.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: the rest keep their order
