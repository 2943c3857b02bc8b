"""Render every pair of choices that some valid workspace can hold; check each workspace: no leftover Jinja, every JSON/YAML/TOML parses, every Python file compiles, and the file
set is exactly what the answers call for."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from helpers.combos import all_pairs, every_pair, pairs_of, plan_or_none, random_valid_rows, row_id
from helpers.project import ROOT
from tuneforge import catalog
from tuneforge.planning.answers import DERIVED_KEYS, DISTRIBUTED, KEYS
from tuneforge.rendering import render

ROWS = {row_id(r): r for r in all_pairs()[0]}
ALWAYS = {
    ".copier-answers.yml",
    ".gitignore",
    "README.md",
    "requirements.txt",
    "train.py",
    "merge.py",
    "smoke.py",
    "chat.py",
    "eval.py",
    "ruff.toml",
    "configs/train.yaml",
    "configs/smoke.yaml",
    "data/sample.jsonl",
    "data/README.md",
    "finetune/__init__.py",
    "finetune/config.py",
    "finetune/data.py",
    "finetune/modeling.py",
    "finetune/plot.py",
    "finetune/tiny.py",
    "finetune/inference.py",
    "finetune/decoding.py",
    "finetune/torch_generation.py",
    "finetune/metrics.py",
    "finetune/scoring.py",
    "finetune/trainer.py",
    "finetune/files.py",
    "finetune/hub.py",
    "finetune/doctor.py",
    "finetune/quiet.py",
    "check_data.py",
    "finetune/encoding.py",
    "finetune/batching.py",
    "tests/test_workspace.py",
    "pytest.ini",
    ".vscode/launch.json",
    ".vscode/tasks.json",
    ".vscode/extensions.json",
    ".vscode/settings.json",
    ".devcontainer/devcontainer.json",
    "setup.sh",
    "setup.ps1",
}


def expected_files(values: dict, facts: dict | None = None) -> set[str]:
    files = set(ALWAYS)
    if "fallback_chat_template" in (facts or {}):  # the turns a model without a (tool-calling) template learns
        files.add("configs/chat_template.jinja")
    onnx = [t for t in values["targets"] if catalog.is_onnx(t)]
    if values["distributed"].startswith("deepspeed"):
        files.add("configs/deepspeed.json")
    if values["distributed"] == "fsdp":
        files.add("configs/accelerate_fsdp.yaml")
    if values["distributed"] != "none":
        files.add("launch.sh")
    if onnx or "gguf" in values["targets"]:
        files.add("benchmark.py")
    if onnx or "gguf" in values["targets"] or values["scenario"] == "images":
        files |= {
            "serve.py",
            "finetune/openai_api.py",
            "playground/index.html",
            "playground/playground.js",
            "playground/playground.css",
        }
    if "gguf" in values["targets"]:
        files |= {"export_gguf.py", "finetune/gguf.py", "finetune/modelfile.py", "finetune/gguf_backend.py"}
    if values["objective"] in ("dpo", "orpo", "kto", "simpo") or values["scenario"] == "preference":
        files |= {"finetune/preference.py", "finetune/preference_trainer.py", "finetune/losses.py"}
    if values["objective"] == "grpo":
        files |= {"finetune/grpo.py", "finetune/grpo_trainer.py", "rewards.py"}
    if values["scenario"] == "tools":
        files |= {"finetune/tool_calls.py"}
    if values["scenario"] == "images":
        pictures = SOURCE / "data" / "{% if include.images %}images{% endif %}"
        files |= {"finetune/images.py", *(f"data/images/{p.name}" for p in pictures.glob("*.png"))}
    if onnx:
        files |= {f"olive/{t}.json" for t in onnx} | {
            "optimize.py",
            "finetune/onnx_backend.py",
            "finetune/workflows.py",
        }
        # the targets that run on another machine's ONNX Runtime build
        files |= {f"olive/requirements-{t}.txt" for t in onnx if "runtime" in catalog.load("targets")[t]}
    compute, targets = values["compute"], values["targets"]
    if compute == "azureml" or "azureml-endpoint" in targets:
        files |= {".amlignore", "deploy/azureml/conda.yml", "deploy/azureml/submit.py"}
    if compute == "azureml":
        files.add("deploy/azureml/job.yml")
    if "azureml-endpoint" in targets:
        files |= {"deploy/azureml/endpoint.yml", "deploy/azureml/deployment.yml", "deploy/azureml/score.py"}
    if compute == "foundry-serverless":
        files |= {"deploy/foundry/finetune.yml", "deploy/foundry/submit.py"}
    if compute == "kaito":
        files |= {"deploy/kaito/tuning-config.yaml", "deploy/kaito/tuning-workspace.yaml"}
    if "kaito" in targets:
        files.add("deploy/kaito/inference-workspace.yaml")
    if compute in ("foundry-serverless", "kaito") or "kaito" in targets:
        files.add("export_chat.py")
    return files


def render_plan(plan, dest: Path) -> set[str]:
    render.render_plain(dest, plan.copier_data())
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}


SOURCE = ROOT / "templates" / "workspace"
# a Jinja expression or statement that reads an answer or a derived value (chat templates read only their own names)
OUR_SYNTAX = re.compile(
    r"(\{\{|\{%)-?\s*(?:if |elif |for \w+ in |set \w+ = )?(?:not )?("
    + "|".join(map(re.escape, [*KEYS, *DERIVED_KEYS, "_copier_conf"]))
    + r")\b"
)


def rendered_name(source: Path) -> str:
    """The path a template file renders to: its switches ({% if include.x %}...{% endif %}) taken out."""
    return re.sub(r"\{% (?:if include\.\w+|endif) %\}", "", source.relative_to(SOURCE).as_posix())


SOURCES = {rendered_name(p): p for p in SOURCE.rglob("*") if p.is_file() and "{% yield" not in str(p)}


def check_files(root: Path, files: set[str]) -> None:
    for name in files:
        path = root / name
        source = SOURCES.get(name, SOURCE / name)
        if name.endswith(".png"):  # the images scenario's sample pictures
            assert path.read_bytes() == source.read_bytes(), f"{name} is not copied as it is"
            continue
        text = path.read_text(encoding="utf-8").replace("${{", "")  # Azure ML's own ${{inputs.x}}
        if source.is_file() and not source.with_name(source.name + ".jinja").exists():
            # copied as it is, chat templates and all; but a template that lost its .jinja suffix reads our answers
            assert path.read_bytes() == source.read_bytes(), f"{name} is not copied as it is"
            assert not OUR_SYNTAX.search(text), f"{name} reads answers but is copied as it is: name it {name}.jinja"
        elif name not in (".copier-answers.yml", "configs/chat_template.jinja"):  # these hold a chat template's Jinja
            assert "{{" not in text and "{%" not in text, f"{name} holds template syntax that was not rendered"
        if name.endswith(".json"):
            json.loads(re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*', lambda m: m.group(1) or "", text))
        elif name.endswith((".yaml", ".yml")):
            yaml.safe_load(text)
        elif name.endswith(".ini"):
            __import__("configparser").ConfigParser().read_string(text)
        elif name.endswith(".toml"):
            tomllib.loads(text)
        elif name.endswith(".py"):
            compile(text, name, "exec")
        elif name.endswith(".sh"):
            subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_render_combination(row, tmp_path):
    plan = plan_or_none(row)
    files = render_plan(plan, tmp_path / "ws")
    assert files == expected_files(plan.values, plan.facts)
    check_files(tmp_path / "ws", files)
    train = yaml.safe_load((tmp_path / "ws" / "configs" / "train.yaml").read_text())
    technique = plan.values["technique"]
    assert ("peft" in train) == (technique != "full")
    assert ("quantization" in train) == (technique == "qlora")
    assert train["model"]["name_or_path"] == plan.facts["hf_id"]
    if technique in ("lora", "qlora", "dora", "rslora"):
        assert train["peft"]["target_modules"] == plan.facts["lora_target_modules"]
        assert train["peft"]["use_dora"] == (technique == "dora")
        assert train["peft"]["use_rslora"] == (technique == "rslora")
    if plan.values["distributed"] != "none":
        launch = (tmp_path / "ws" / "launch.sh").read_text()
        launcher = {"ddp": "torchrun", "fsdp": "accelerate launch"}.get(plan.values["distributed"], "deepspeed")
        if plan.values["distributed"].startswith("deepspeed") and plan.values["num_nodes"] > 1:
            launcher = "torchrun"
        assert f"exec {launcher}" in launch and ("--node_rank" in launch or "--machine_rank" in launch) == (
            plan.values["num_nodes"] > 1
        )
    assert train["training"].get("deepspeed") == (
        "configs/deepspeed.json" if plan.values["distributed"].startswith("deepspeed") else None
    )


def test_the_matrix_covers_every_technique_hardware_and_distributed_mode():
    rows = ROWS.values()
    assert {r["technique"] for r in rows} == set(catalog.load("techniques"))
    assert {r["hardware"] for r in rows} == set(catalog.load("hardware"))
    assert {r["distributed"] for r in rows} == set(DISTRIBUTED)


def test_all_pairs_drops_no_pair_a_valid_workspace_can_hold():
    """Every pair is covered or placed in no row; each pair placed in none is refused by the rules on its own, and
    no valid row drawn at random holds one (the pairs an earlier all_pairs dropped are named)."""
    rows, unplaced = all_pairs()
    covered = set().union(*map(pairs_of, rows))
    assert covered | unplaced == every_pair() and not covered & unplaced
    assert all(plan_or_none(row) is not None for row in rows)
    for (a, va), (b, vb) in unplaced:
        assert plan_or_none({a: va, b: vb}) is None, f"{a}={va}, {b}={vb} is valid on its own but in no row"
    missed = {pair for row in random_valid_rows(300) for pair in pairs_of(row)} - covered
    assert not missed, sorted(missed)[:5]
    for pair in [
        (("technique", "ia3"), ("hardware", "cpu")),
        (("technique", "lora"), ("distributed", "ddp")),
        (("technique", "full"), ("distributed", "fsdp")),
    ]:
        assert pair in covered


def test_the_leftover_check_tells_our_template_syntax_from_a_chat_template():
    assert OUR_SYNTAX.search((SOURCE / "configs" / "train.yaml.jinja").read_text())
    assert OUR_SYNTAX.search((SOURCE / "README.md.jinja").read_text())
    for name in ("finetune/tiny.py",):
        text = (SOURCE / name).read_text()
        assert "{{" in text and not OUR_SYNTAX.search(text), name


def rows_holding_every_python_file() -> list[dict]:
    """Few rows whose workspaces hold, together, every Python file a workspace can have (greedy cover)."""
    files = {
        name: {f for f in expected_files(plan_or_none(row).values) if f.endswith((".py", ".toml"))}
        for name, row in ROWS.items()
    }
    left, chosen = set().union(*files.values()), []
    while left:
        name = max(sorted(files), key=lambda n: len(files[n] & left))
        chosen.append(ROWS[name])
        left -= files[name]
    return chosen


def test_rendered_workspaces_pass_ruff_check_and_format(tmp_path):
    """A workspace passes the linter and formatter its user is likely to run (ruff, with the ruff.toml it ships)."""
    ruff = Path(sys.executable).parent / "ruff"
    rows = rows_holding_every_python_file()
    assert len(rows) <= 6
    for i, row in enumerate(rows):
        workspace = tmp_path / f"ws{i}"
        render_plan(plan_or_none(row), workspace)
        for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
            result = subprocess.run([str(ruff), *command], cwd=workspace, capture_output=True, text=True, check=False)
            assert result.returncode == 0, (row_id(row), result.stdout[-3000:] + result.stderr[-2000:])


def test_a_workspace_offers_only_the_backends_of_its_targets(new_workspace):
    """Without the gguf target there is no llama.cpp code and no option that leads to it: chat.py and eval.py do
    not offer it, and the server names only what this workspace has."""
    workspace = new_workspace(targets="pytorch,onnx-cpu")
    assert (workspace / "finetune" / "onnx_backend.py").is_file()
    assert not (workspace / "finetune" / "gguf_backend.py").exists()
    probe = (
        "from finetune.inference import backend_names, load_backend\n"
        "print(backend_names())\n"
        "try:\n    load_backend('gguf', None, {})\nexcept FileNotFoundError as error:\n    print(error)\n"
    )
    shown = subprocess.run([sys.executable, "-c", probe], cwd=workspace, capture_output=True, text=True, check=True)
    names, refusal = shown.stdout.splitlines()
    assert names == "['pytorch', 'onnx']"
    assert "no gguf backend" in refusal and "tuneforge update" in refusal
    help_of = {
        script: subprocess.run(
            [sys.executable, script, "--help"], cwd=workspace, capture_output=True, text=True, check=True
        ).stdout
        for script in ("chat.py", "eval.py")
    }
    assert "--backend {pytorch,onnx}" in help_of["chat.py"]
    assert "\n  --no-onnx" in help_of["eval.py"] and "\n  --gguf" not in help_of["eval.py"]
