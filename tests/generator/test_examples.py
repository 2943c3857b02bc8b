"""examples/ holds rendered workspaces; they must match what the template renders today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.project import ROOT, git
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

    from tuneforge.planning.models import resolve_model

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


PINNED = re.compile(r"^\s*(?:- )?([A-Za-z][A-Za-z0-9_.-]*)\s*(?:==|>=)\s*[0-9]", re.MULTILINE)


def test_every_version_is_pinned_once_in_the_catalogs_pins():
    """pins.txt is the one file with versions: the dev requirements take them as constraints, the Makefile reads
    torch's and llama-cpp-python's from it, the template renders them from the plan's `pins`."""
    pins = catalog.pins()
    elsewhere = [ROOT / "requirements-dev.txt", ROOT / "Makefile", ROOT / "pyproject.toml"]
    files = git(ROOT, "ls-files", "templates").splitlines()
    elsewhere += [ROOT / p for p in files if "/samples/" not in p and not p.endswith(".png")]  # pictures hold no pins
    elsewhere += list((ROOT / "generator" / "tuneforge" / "catalog").glob("*.yaml"))
    found = {str(p.relative_to(ROOT)): PINNED.findall(p.read_text()) for p in elsewhere}
    assert {path: names for path, names in found.items() if names} == {}
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-c generator/tuneforge/catalog/pins.txt" in dev
    assert {line for line in dev if line and not line.startswith(("#", "-"))} <= pins.keys()
    assert "$(shell sed -n 's/^llama-cpp-python==//p' $(PINS))" in (ROOT / "Makefile").read_text()
    for target in catalog.load("targets").values():
        assert set(target.get("runtime", {}).get("packages", [])) <= pins.keys()


def test_a_workspace_pins_what_the_catalog_pins(new_workspace):
    workspace = new_workspace(targets="pytorch,onnx-cpu,gguf,onnx-qnn", scenario="classification")
    lines = (workspace / "requirements.txt").read_text().splitlines()
    lines += (workspace / "olive" / "requirements-onnx-qnn.txt").read_text().splitlines()
    rendered = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, specifier = re.fullmatch(r"([A-Za-z0-9_.-]+)([<>=!~][^ ]*)(?:  #.*)?", line).groups()
            rendered[name] = specifier
    assert rendered == {name: catalog.pins()[name] for name in rendered}
    assert {"torch", "onnxruntime-genai", "llama-cpp-python", "scikit-learn", "onnxruntime-qnn"} <= rendered.keys()
