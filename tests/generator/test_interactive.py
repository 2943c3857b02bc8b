"""The questionary flow, driven in-process through a prompt_toolkit pipe."""

from __future__ import annotations

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from helpers.project import git, tuneforge
from tuneforge.planning.answers import Given
from tuneforge.rendering import render
from tuneforge.terminal.prompts import ask

ENTER, DOWN, SPACE = "\r", "\x1b[B", " "


def run_flow(keys: str, given: dict | None = None, previous: dict | None = None):
    g = Given()
    g.add(given or {}, "--set")
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        return ask(g, previous=previous, io={"input": pipe, "output": DummyOutput()})


def tree(root) -> dict:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def test_accepting_every_default_gives_the_scripted_workspace(tmp_path):
    plan = run_flow(ENTER * 30, given={"project_name": "same"})
    render.render_workspace(tmp_path / "asked", plan.copier_data())
    assert tuneforge("new", tmp_path / "scripted", "--defaults", "--set", "project_name=same") == 0
    asked, scripted = tree(tmp_path / "asked"), tree(tmp_path / "scripted")
    assert asked.keys() == scripted.keys()
    differing = [k for k in asked if asked[k] != scripted[k]]
    # the asked answers are recorded as the user's own choices; everything else is identical
    assert differing == [".copier-answers.yml"]


def test_choosing_answers_by_keys():
    # priority: quality -> memory (two down); then accept the rest
    plan = run_flow(DOWN + ENTER + ENTER * 30, given={"project_name": "p"})
    assert plan.values["priority"] == "memory"
    assert plan.values["technique"] == "qlora"  # the memory priority's default, offered first
    assert plan.origins["technique"] == "asked"


def test_bad_typed_input_is_asked_again():
    # hyperparameters: customise, then a learning rate that is not a number, corrected
    # twelve questions apply on a CPU machine (priority, scenario, hardware, model, technique, distributed, compute,
    # targets, adapter_export, dataset, dataset_format, and thinking for the default Qwen3); "y" answers the confirm at once
    keys = ENTER * 12 + "y" + "\x7f" * 10 + "fast" + ENTER + "\x7f" * 4 + "3e-4" + ENTER + ENTER * 20
    plan = run_flow(keys, given={"project_name": "p"})
    assert plan.values["learning_rate"] == pytest.approx(3e-4)


def test_choices_that_cannot_work_are_disabled_with_the_reason(monkeypatch):
    import questionary

    seen = {}
    real_select = questionary.select

    def spy(message, choices, **kwargs):
        seen[message] = choices
        return real_select(message, choices=choices, **kwargs)

    monkeypatch.setattr(questionary, "select", spy)
    run_flow(ENTER * 30, given={"project_name": "p", "hardware": "mps"})
    technique = {c.value: c.disabled for c in seen["Fine-tuning technique"]}
    assert technique["lora"] is None
    assert "bitsandbytes" in technique["qlora"]
    compute = {c.value: c.disabled for c in seen["Where training runs"]}
    assert "no tuning preset" in compute["kaito"]


def test_update_asks_with_the_previous_answers_as_defaults(new_workspace):
    dest = new_workspace(technique="dora", model="llama-3.2-1b-instruct")
    previous = render.read_workspace_answers(dest)
    from tuneforge.planning.answers import user_answers
    from tuneforge.planning.questions import ORDER

    plan = run_flow(ENTER * 30, previous={k: v for k, v in user_answers(previous).items() if k in ORDER})
    assert plan.values["technique"] == "dora" and plan.values["model"] == "llama-3.2-1b-instruct"
    assert git(dest, "status", "--porcelain") == ""


UP = "\x1b[A"
BIG_ON_SMALL = {
    "project_name": "p",
    "hardware": "cuda",
    "gpu_memory_gb": 8,
    "model": "llama-3.1-8b-instruct",
    "technique": "lora",
}


def test_each_sized_choice_shows_whether_it_fits(monkeypatch):
    import questionary

    seen = {}
    real_select = questionary.select

    def spy(message, choices, **kwargs):
        seen[message] = {c.value if isinstance(c.value, str) else repr(c.value): c.title for c in choices}
        return real_select(message, choices=choices, **kwargs)

    monkeypatch.setattr(questionary, "select", spy)
    run_flow(ENTER * 40, given={"project_name": "p", "hardware": "cuda", "gpu_memory_gb": 12})
    models = seen["Model: a catalog id, a Hugging Face id, or a local folder with config.json"]
    assert "fits: about" in models["qwen2.5-0.5b-instruct"]
    assert "does not fit: needs about" in models["llama-3.1-8b-instruct"]
    techniques = seen["Fine-tuning technique"]
    assert "does not fit" in techniques["full"] and "fits: about" in techniques["qlora"]
    assert seen["What now?"]["write"] == "write the workspace"


def test_the_summary_offers_what_fits_and_taking_it_makes_it_fit():
    plan = run_flow(ENTER * 40, given=BIG_ON_SMALL)
    assert plan.fits  # the summary's default, when it does not fit, is the first thing that would
    assert plan.values["model"] == "llama-3.1-8b-instruct" and plan.values["technique"] == "lora"


def _summary_choice(keys: str, given: dict):
    from tuneforge.terminal.prompts import _Flow, summary

    g = Given()
    g.add(given, "--set")
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        flow = _Flow(g, {}, {"input": pipe, "output": DummyOutput()})
        return summary(flow, flow.current())


def test_the_summary_lets_the_user_quit_or_change_an_answer(capsys):
    assert _summary_choice(ENTER, {"project_name": "p"}) == "write"
    assert "fits" in capsys.readouterr().out
    assert _summary_choice(DOWN + ENTER, {"project_name": "p"}) == "change"
    assert _summary_choice(UP + ENTER, {"project_name": "p"}) == "quit"
    changes = _summary_choice(ENTER, BIG_ON_SMALL)
    assert isinstance(changes, dict) and changes  # the first suggestion, offered first
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "What would fit" in out


def test_quitting_at_the_summary_writes_nothing(tmp_path, monkeypatch):
    from tuneforge.terminal import prompts

    monkeypatch.setattr(prompts, "summary", lambda flow, plan: "quit")
    with pytest.raises(prompts.Quit):
        run_flow(ENTER * 40, given={"project_name": "p"})


def test_changing_an_answer_at_the_summary_asks_it_again(monkeypatch):
    from tuneforge.terminal import prompts

    choices = iter(["change", "write"])
    monkeypatch.setattr(prompts, "summary", lambda flow, plan: next(choices))
    # the twelve questions with their defaults, no customising; at "Which answer?" the first (priority): memory
    plan = run_flow(ENTER * 12 + "n" + ENTER + DOWN + ENTER + ENTER * 10, given={"project_name": "p"})
    assert plan.values["priority"] == "memory"
