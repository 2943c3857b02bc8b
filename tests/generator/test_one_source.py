"""Each fact about targets and platforms is said once, in the catalog; the plan derives from it and the
template's file names and files only read what the plan derived."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers.project import ROOT
from tuneforge import catalog
from tuneforge.planning.answers import DERIVED_KEYS, Given
from tuneforge.planning.plan import resolve

WORKSPACE = ROOT / "templates" / "workspace"
SEGMENT = re.compile(r"\{%.*?%\}")


def template_paths() -> list[Path]:
    return [p.relative_to(WORKSPACE) for p in WORKSPACE.rglob("*") if "__pycache__" not in p.parts]


def plan_for(**answers):
    given = Given()
    given.add({"hardware": "cpu", **answers}, "--set")
    return resolve(given)


def test_each_optional_path_reads_one_named_switch_of_the_plan():
    """copier-uv's rule: a file name holds one named boolean (or a loop over a list the plan derived), no logic."""
    switches = set(plan_for().include)
    used = set()
    for path in template_paths():
        for tag in SEGMENT.findall(str(path)):
            if "yield" in tag:
                assert re.fullmatch(r"\{% (yield target from (onnx_targets|runtime_targets)|endyield) %\}", tag), (
                    path,
                    tag,
                )
                continue
            found = re.fullmatch(r"\{% (?:if include\.(\w+)|endif) %\}", tag)
            assert found, (path, tag)
            if found.group(1):
                assert found.group(1) in switches, (path, tag)
                used.add(found.group(1))
    assert used == switches, f"switches no file reads: {switches - used}"


# deciding by a target's name what kind of target it is: its prefix, a list of names, or whether one name is among
# the chosen targets (per-target content, a target's own Olive workflow or README section, may read its own name)
BY_NAME = re.compile(
    r"""startswith\(\s*["']onnx-|\[\s*["']onnx-\w+["']\s*,\s*["']onnx-|["']onnx-\w+["']\s+(?:not\s+)?in\s+targets\b"""
)


def sources() -> list[Path]:
    """Every file of ours that holds code: the generator, the whole template, the benchmarks and the tests."""
    folders = [ROOT / "generator", ROOT / "templates", ROOT / "bench", ROOT / "tests"]
    return [
        f
        for folder in folders
        for f in folder.rglob("*")
        if f.is_file()
        and "__pycache__" not in f.parts
        and f.suffix in (".py", ".jinja", ".yml", ".yaml", ".sh", ".js")
        and f != Path(__file__)
    ]


def test_no_code_decides_by_a_targets_name_what_the_catalog_says():
    """Which targets are ONNX, NPU, or need their own runtime or build comes from catalog/targets.yaml alone."""
    files = sources()
    assert any(f.suffix == ".py" and "workspace" in f.parts for f in files) and any("bench" in f.parts for f in files)
    offenders = [
        str(f.relative_to(ROOT))
        for f in files
        if BY_NAME.search(f.read_text(encoding="utf-8")) or BY_NAME.search(str(f))
    ]
    assert not offenders


@pytest.mark.parametrize(
    "code",
    [
        '"onnx-cuda" in targets',
        "t.startswith('onnx-')",
        '["onnx-cpu", "onnx-cuda"]',
        '{{ "-gpu" if "onnx-cuda" in targets else "" }}',
        "'onnx-qnn' not in targets",
    ],
)
def test_the_name_check_finds_each_way_of_deciding_by_name(code):
    assert BY_NAME.search(code)


TECHNIQUE_SET = re.compile(
    r"[\(\[\{]\s*[\"'](?:%s)[\"']\s*,\s*[\"'](?:%s)[\"']" % (("|".join(catalog.load("techniques")),) * 2)
)


def test_the_generator_reads_technique_sets_from_the_catalog():
    """Which techniques train adapters, fit MoE experts, have a leaner 4-bit form, or a platform takes are catalog
    facts (techniques.yaml, compute.yaml, targets.yaml); no planning code lists technique names."""
    offenders = [
        f"{f.relative_to(ROOT)}: {m.group(0)}"
        for f in (ROOT / "generator").rglob("*.py")
        for m in TECHNIQUE_SET.finditer(f.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert TECHNIQUE_SET.search('if tech not in ("lora", "qlora"):') and TECHNIQUE_SET.search("['dora', 'full']")


@pytest.mark.parametrize("model, instance", [("qwen2.5-0.5b-instruct", 0), ("phi-3-medium-4k-instruct", 1)])
def test_cloud_instances_follow_the_model_size_as_the_catalog_says(model, instance):
    plan = plan_for(
        model=model,
        targets=["pytorch", "azureml-endpoint", "kaito"],
        compute="kaito",
        technique="lora",
        hardware="cuda",
        gpu_memory_gb=80.0,
    )
    targets = catalog.load("targets")
    assert plan.instances["azureml-endpoint"] == targets["azureml-endpoint"]["serving_instances"][instance]
    assert plan.instances["kaito"] == targets["kaito"]["serving_instances"][instance]
    assert plan.instances["training"] == catalog.load("compute")["kaito"]["training_instance"]


def test_the_workspace_renders_the_instances_and_runtimes_the_plan_derived(new_workspace):
    workspace = new_workspace(
        model="phi-3-mini-4k-instruct",
        targets="pytorch,azureml-endpoint,kaito,onnx-qnn,onnx-directml",
        gpu_memory_gb=64,
    )
    recorded = yaml.safe_load((workspace / ".copier-answers.yml").read_text())
    assert set(DERIVED_KEYS) <= set(recorded)
    deployment = yaml.safe_load((workspace / "deploy" / "azureml" / "deployment.yml").read_text())
    assert deployment["instance_type"] == recorded["instances"]["azureml-endpoint"]["type"]
    inference = yaml.safe_load((workspace / "deploy" / "kaito" / "inference-workspace.yaml").read_text())
    assert inference["resource"]["instanceType"] == recorded["instances"]["kaito"]["type"]
    for target in ("onnx-qnn", "onnx-directml"):
        runtime = catalog.load("targets")[target]["runtime"]
        text = (workspace / "olive" / f"requirements-{target}.txt").read_text()
        pinned = [name + catalog.pins()[name] for name in runtime["packages"]]
        assert [line for line in text.splitlines() if line and not line.startswith("#")] == pinned
        assert ("pip uninstall" in text) == runtime["replaces_cpu_build"]


def test_the_derived_values_are_the_ones_the_answers_file_sets_apart():
    """Plan.derived() is what copier_data adds to the answers; answers.DERIVED_KEYS is what reading an answers
    file leaves out again: one list, in step."""
    plan = resolve(Given({}), detected={"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": 16.0})
    assert list(plan.derived()) == DERIVED_KEYS
    assert plan.copier_data() == {**plan.values, **plan.derived()}
