"""The data doctor (finetune/doctor.py, check_data.py) catches every fault of a set of seeded bad datasets, all in
one run: errors by file:line, the rest as warnings; a clean dataset gets none."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from finetune.data import DataError
from finetune.doctor import describe, examine, histogram
from helpers.project import ROOT

SAMPLES = ROOT / "templates" / "includes" / "samples" / "chat" / "messages.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    from finetune.tiny import build_tokenizer, corpus

    return build_tokenizer(corpus(str(SAMPLES)) + ["plant " * 50], 400)


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def dataset(tmp_path, rows, raw: bytes | None = None, **data) -> dict:
    path = tmp_path / "data.jsonl"
    path.write_bytes(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows).encode())
    return {
        "data": {"path": str(path), "format": "messages", "max_length": 256, "eval_fraction": 0.0, **data},
        "training": {"seed": 42},
        "task": {"scenario": "chat"},
    }


def errors(config: dict, tokenizer) -> str:
    """The errors the doctor reports (a file it cannot read at all is one, raised)."""
    try:
        report = examine(config, tokenizer)
    except DataError as error:
        return str(error)
    assert report.errors
    return "\n".join(report.errors)


GOOD = [chat(f"How often should I water plant number {i}?", f"About once a week, number {i}.") for i in range(12)]


def test_a_clean_dataset_has_no_warnings_and_shows_what_is_trained(tmp_path, tokenizer):
    report = examine(dataset(tmp_path, GOOD), tokenizer)
    assert report.warnings == [] and report.examples == 12 and len(report.lengths) == 12
    assert "[[About once a week, number 0." in report.sample and "<|im_end|>" in report.sample.split("[[")[1]
    text = "\n".join(describe(report))
    assert "12 training and 0 held-out examples" in text and "no warnings" in text
    # the memory estimate counts rows that fill max_length; the doctor says what share these examples fill
    fill = sum(report.lengths) / 12 / 256
    assert f"an example fills {fill:.0%} of max_length on average" in text


def test_duplicates_are_named_with_both_lines(tmp_path, tokenizer):
    report = examine(dataset(tmp_path, GOOD + [GOOD[3]]), tokenizer)
    assert [(a.split(":")[-1], b.split(":")[-1]) for a, b in report.duplicates] == [("13", "4")]
    assert any("1 duplicate example(s)" in w for w in report.warnings)


def test_held_out_examples_that_are_also_trained_on(tmp_path, tokenizer):
    report = examine(dataset(tmp_path, GOOD + GOOD, eval_fraction=0.25), tokenizer)
    assert report.overlap and any("also trained on" in w for w in report.warnings)


def test_examples_longer_than_max_length_are_counted(tmp_path, tokenizer):
    long = [chat("Tell me about watering.", "plant " * 80)] + GOOD
    report = examine(dataset(tmp_path, long, max_length=64), tokenizer)
    assert [s.split(":")[-1] for s in report.truncated] == ["1"]
    assert any("longer than data.max_length=64" in w for w in report.warnings)
    assert any("<- cut at max_length" in line for line in histogram(report.lengths, 64))


def test_answers_beyond_max_length_are_counted_as_skipped(tmp_path, tokenizer):
    late = [chat("plant " * 80, "Yes.")] + GOOD
    report = examine(dataset(tmp_path, late, max_length=64), tokenizer)
    assert [s.split(":")[-1] for s in report.dropped] == ["1"]


def test_every_answer_cut_off_is_fatal(tmp_path, tokenizer):
    found = errors(dataset(tmp_path, [chat("plant " * 40, "Yes.")] * 2, max_length=16), tokenizer)
    assert "data.jsonl:1: every example is longer than data.max_length=16" in found


def test_a_chat_template_that_never_ends_the_answer_is_fatal(tmp_path, tokenizer):
    import copy

    broken = copy.deepcopy(tokenizer)
    broken.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    assert "data.jsonl:1: no example teaches the model to end its answer" in errors(dataset(tmp_path, GOOD), broken)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"messages": [}\n', r"data.jsonl:1: not valid JSON"),
        (json.dumps(GOOD[0]).encode() + b'\n{"text": "caf\xe9"}\n', r"data.jsonl:2: not UTF-8"),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode() + b"\n",
            r"data.jsonl:1: no assistant turn",
        ),
        (json.dumps(chat("hi", " ")).encode() + b"\n", r"data.jsonl:1: empty assistant turn"),
    ],
)
def test_unreadable_examples_are_fatal_with_file_and_line(tmp_path, tokenizer, raw, message):
    assert re.search(message, errors(dataset(tmp_path, [], raw=raw), tokenizer))


def test_every_problem_is_reported_in_one_run_errors_first(tmp_path, tokenizer):
    """An example without an answer, a duplicate, an over-long example and a line that is not JSON: all four named,
    by file and line, in one run; the errors before the warnings; train.py stops on them, naming both."""
    import train

    rows = [json.dumps(r) for r in [*GOOD, chat("Is this answered?", " "), GOOD[2], chat("Tell me.", "plant " * 80)]]
    config = dataset(tmp_path, [], raw=("\n".join([*rows, "{oops"]) + "\n").encode(), max_length=64)
    report = examine(config, tokenizer)
    assert [e.split(": ")[0].split(":")[-1] for e in report.errors] == ["13", "16"]
    assert "empty assistant turn" in report.errors[0] and "not valid JSON" in report.errors[1]
    assert [(a.split(":")[-1], b.split(":")[-1]) for a, b in report.duplicates] == [("14", "3")]
    assert [s.split(":")[-1] for s in report.truncated] == ["15"]
    warnings = [line for line in describe(report) if line.startswith("warning: ")]
    assert any("1 duplicate example(s)" in w for w in warnings) and any(
        "longer than data.max_length" in w for w in warnings
    )
    with pytest.raises(DataError) as stopped:
        train.check_data(config, tokenizer)
    assert str(stopped.value).splitlines() == report.errors


def check_data_py(tmp_path, config: dict, model: Path):
    """check_data.py, as a user runs it, on this config with the model (or tokenizer) folder given."""
    import subprocess

    path = tmp_path / "train.yaml"
    path.write_text(json.dumps({**config, "model": {"name_or_path": str(model)}}))
    return subprocess.run(
        [sys.executable, "check_data.py", "--config", str(path)],
        cwd=ROOT / "templates" / "workspace",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_data_py_exits_2_on_a_fatal_problem(tmp_path):
    result = check_data_py(tmp_path, dataset(tmp_path, [], raw=b"{oops\n"), tmp_path / "nope")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "error: model folder" in result.stderr


def test_check_data_py_prints_every_error_then_the_report_and_exits_2(tmp_path):
    from finetune.tiny import build_tokenizer, corpus

    rows = [json.dumps(r) for r in [*GOOD, chat("Is this answered?", " "), GOOD[2]]]
    build_tokenizer(corpus(str(SAMPLES)), 400).save_pretrained(tmp_path / "tok")
    data = dataset(tmp_path, [], raw=("\n".join([*rows, "{oops"]) + "\n").encode())
    result = check_data_py(tmp_path, data, tmp_path / "tok")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert [e.split(": ")[1].rsplit(":", 1)[-1] for e in errors] == ["13", "15"], result.stderr
    assert "2 error(s) above" in result.stderr and "1 duplicate example(s)" in result.stdout
