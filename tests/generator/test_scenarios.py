"""Scenarios are first-class answers: each renders its own sample data, prompt, metric and README section;
a data format that cannot express the scenario is refused before anything is written."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers.project import ROOT, tuneforge
from tuneforge import catalog

SCENARIOS = catalog.load("scenarios")
METRIC_LIBRARIES = {
    "classification": ["scikit-learn"],
    "ner": ["scikit-learn", "seqeval"],
    "translation": ["sacrebleu"],
    "summarization": ["rouge-score"],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_scenario_renders_its_sample_prompt_metric_and_readme(new_workspace, scenario):
    facts = SCENARIOS[scenario]
    workspace = new_workspace(scenario=scenario, targets="pytorch")
    config = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())
    assert config["data"]["format"] == facts["formats"][0]
    assert config["task"]["scenario"] == scenario
    assert config["task"].get("instruction") == facts.get("instruction")
    assert config["eval"]["metric"] == facts["metric"]
    assert config["generation"]["max_new_tokens"] == facts["generation"]["max_new_tokens"]
    assert config["data"]["system_prompt"] == facts["system"]
    sample = ROOT / "templates" / "includes" / "samples" / scenario / f"{facts['formats'][0]}.jsonl"
    assert (workspace / "data" / "sample.jsonl").read_text() == sample.read_text()
    requirements = (workspace / "requirements.txt").read_text()
    for library in ["scikit-learn", "seqeval", "sacrebleu", "rouge-score"]:
        assert (f"\n{library}==" in requirements) == (library in METRIC_LIBRARIES.get(scenario, []))
    readme = (workspace / "README.md").read_text()
    first_section = readme.split("\n## ")[1]
    assert first_section.startswith(f"Scenario: {facts['title']}")
    assert facts["meaning"] in first_section and facts["data"] in first_section
    assert config["generation"]["example_prompt"] == facts["chat_prompt"]


@pytest.mark.parametrize(
    "scenario, fmt",
    [
        ("ner", "messages"),
        ("classification", "text"),
        ("domain", "prompt-completion"),
        ("translation", "qa"),
        ("chat", "ner"),
    ],
)
def test_a_format_that_cannot_express_the_scenario_is_refused(tmp_path, capsys, scenario, fmt):
    dest = tmp_path / "ws"
    assert tuneforge("new", dest, "--defaults", "--set", f"scenario={scenario}", "--set", f"dataset_format={fmt}") == 2
    err = capsys.readouterr().err
    assert f"the {fmt} format cannot express the {scenario} scenario" in err
    assert f"dataset_format={SCENARIOS[scenario]['formats'][0]}" in err  # what would work
    assert not dest.exists()


def test_every_allowed_format_renders_matching_sample_data(new_workspace):
    for scenario, facts in SCENARIOS.items():
        for fmt in facts["formats"][1:]:
            workspace = new_workspace(scenario=scenario, dataset_format=fmt, targets="pytorch")
            sample = ROOT / "templates" / "includes" / "samples" / scenario / f"{fmt}.jsonl"
            assert (workspace / "data" / "sample.jsonl").read_text() == sample.read_text()
            break  # one non-default format per scenario keeps this quick; test_scenario_code reads them all


def test_plan_says_the_format_default_comes_from_the_scenario(capsys):
    assert tuneforge("plan", "--defaults", "--json", "--set", "scenario=translation") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["answers"]["dataset_format"] == {
        "value": "translation",
        "origin": "default: suits scenario=translation",
    }
    assert tuneforge("plan", "--defaults", "--json", "--set", "dataset_format=text") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["answers"]["scenario"] == {"value": "domain", "origin": "default: suits dataset_format=text"}


def test_an_explicit_scenario_wins_over_the_format_hint(capsys):
    assert tuneforge("plan", "--defaults", "--json", "--set", "dataset_format=text", "--set", "scenario=creative") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["answers"]["scenario"]["value"] == "creative" and not plan["problems"]
