"""examples/ holds rendered workspaces; they must match what the template renders today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.project import ROOT
from helpers.workspace import template_module
from tuneforge import catalog

render_example = template_module(ROOT / "examples" / "render.py", "render").render_example

EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))
BOOKKEEPING = re.compile(rb"^_(commit|src_path): .*\n", re.MULTILINE)


def tree(root: Path) -> dict[str, bytes]:
    files = {}
    for path in root.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(root).as_posix()] = BOOKKEEPING.sub(b"", path.read_bytes())
    return files


def test_the_examples_show_what_the_readme_promises():
    """A new family, a mixture of experts, a preference objective, a GPU, an ONNX target and a cloud platform."""
    import yaml

    from tuneforge.models import resolve_model

    answers = [yaml.safe_load(path.read_text()) for path in EXAMPLES]
    facts = [resolve_model(a["model"]) for a in answers]
    assert any(f["architecture"].startswith("qwen3") for f in facts)
    assert any(f.get("moe") or f.get("active_params_b") for f in facts)
    assert any(a.get("objective", "sft") != "sft" for a in answers)
    assert any(a.get("hardware") == "cuda" for a in answers)
    assert any(catalog.is_onnx(t) for a in answers for t in a.get("targets", []))
    assert any(a.get("compute") == "azureml" for a in answers)


@pytest.mark.parametrize("answers", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_is_current(answers, tmp_path):
    render_example(answers, tmp_path / "fresh")
    committed, fresh = tree(ROOT / "examples" / answers.stem), tree(tmp_path / "fresh")
    stale = sorted(set(committed) ^ set(fresh)) + sorted(
        k for k in committed.keys() & fresh.keys() if committed[k] != fresh[k]
    )
    assert not stale, f"examples/{answers.stem} is stale in {stale}; run `make examples`"


def test_dev_requirements_pin_what_the_workspace_pins():
    template = (ROOT / "templates" / "workspace" / "requirements.txt.jinja").read_text()
    pins = dict(re.findall(r"^([a-z][a-z0-9-]*)==([0-9.]+)", (ROOT / "requirements-dev.txt").read_text(), re.MULTILINE))
    for name, version in re.findall(r"^([a-z][a-z0-9-]*)(?:\{\{[^}]*\}\})?==([0-9.]+)", template, re.MULTILINE):
        if name in pins:
            assert pins[name] == version, name
    assert {"transformers", "peft", "olive-ai", "onnxruntime-genai"} <= pins.keys()
