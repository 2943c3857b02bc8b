"""Nothing a user types or a crash does can run code, corrupt a workspace or leak a secret (generator side).

Each case is a probe from the hardening review: bad input exits 2 with one sentence naming the answer
and a way forward, and leaves nothing half-written; values are quoted for the language they land in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.project import ROOT, git, tuneforge

HOSTILE = "x\"; touch PWNED; echo \"$(touch PWNED2)`touch PWNED3`'; touch PWNED4; ' ‘; touch PWNED5"


def refused(capsys, *args: str) -> str:
    """Run tuneforge, expect exit 2 with one error line and no traceback; return the message."""
    assert tuneforge(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    return err


# -- 1. injection through names and paths ---------------------------------------------------------


@pytest.mark.parametrize(
    "name", ['x"; touch PWNED; echo "', "team: tune", "line\nbreak: 1", "ws$(id)", "1st", "", "a" * 64, "über"]
)
def test_an_unsafe_project_name_is_refused_with_the_rule(tmp_path, capsys, name):
    err = refused(capsys, "new", tmp_path / "ws", "--defaults", "--set", f"project_name={name}")
    assert "project_name" in err and ("letters, digits" in err or "must not be empty" in err)
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(
    "folder, expected",
    [
        ("ws$(id>&2)", "ws-id-2"),
        ("team: tune", "team-tune"),
        ("2024 run", "run"),
        ("$$$", "finetune"),
        ("my_tune.v2", "my_tune.v2"),
    ],
)
def test_the_folder_name_stays_free_and_the_project_name_is_made_safe(tmp_path, folder, expected):
    dest = tmp_path / folder
    assert tuneforge("new", dest, "--defaults") == 0
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["project_name"] == expected


@pytest.fixture
def hostile_model(tmp_path) -> Path:
    """A local model folder and data file whose paths hold shell, PowerShell and YAML syntax."""
    folder = tmp_path / HOSTILE / "model: x"
    folder.mkdir(parents=True)
    config = {
        "model_type": "qwen2",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 1000,
        "max_position_embeddings": 512,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_hostile_paths_are_quoted_in_every_language(tmp_path, hostile_model):
    data = hostile_model.parent / "data #1: 'x'.jsonl"
    data.write_text("")
    dest = tmp_path / "ws"
    assert (
        tuneforge(
            "new",
            dest,
            "--defaults",
            "--set",
            f"model={hostile_model}",
            "--set",
            f"dataset={data}",
            "--set",
            "compute=azureml",
            "--set",
            "targets=pytorch,onnx-cpu,azureml-endpoint",
            "--set",
            "adapter_export=adapters",
        )
        == 0
    )
    # YAML and JSON read back exactly what was given
    train = yaml.safe_load((dest / "configs" / "train.yaml").read_text())
    assert train["model"]["name_or_path"] == str(hostile_model.resolve())
    assert train["data"]["path"] == str(data)
    olive = json.loads((dest / "olive" / "onnx-cpu.json").read_text())
    assert olive["input_model"]["model_path"] == str(hostile_model.resolve())
    job = yaml.safe_load((dest / "deploy" / "azureml" / "job.yml").read_text())
    assert str(hostile_model.resolve()) in job["description"] and job["inputs"]["data"]["path"].endswith(str(data))
    for path in dest.rglob("*"):
        if path.suffix in (".yml", ".yaml") and ".git" not in path.parts:
            yaml.safe_load(path.read_text())
    # the shell script prints the path and runs nothing from it
    result = subprocess.run(
        ["bash", "setup.sh", "--check"], cwd=dest, capture_output=True, text=True, timeout=60, check=False
    )
    assert str(hostile_model.resolve()) in result.stdout
    assert not list(dest.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


def test_powershell_quoting_doubles_every_quote_powershell_knows():
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(ROOT / "templates"))
    macros = env.get_template("includes/quote.jinja").module
    assert str(macros.ps("it's ‘x’ $(y)")) == "'it''s ‘‘x’’ $(y)'"
    script = str(macros.sh(HOSTILE))
    out = subprocess.run(["bash", "-c", f"printf %s {script}"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.stdout == HOSTILE


def test_resource_names_are_what_azure_and_kubernetes_accept(tmp_path):
    import re

    dest = tmp_path / "ws"
    assert (
        tuneforge(
            "new",
            dest,
            "--defaults",
            "--set",
            "project_name=My_Very.Long_Project_Name_For_Azure_ML_Endpoints",
            "--set",
            "compute=azureml",
            "--set",
            "targets=pytorch,azureml-endpoint",
        )
        == 0
    )
    endpoint = yaml.safe_load((dest / "deploy" / "azureml" / "endpoint.yml").read_text())["name"]
    assert re.fullmatch(r"[a-z][a-z0-9-]{1,30}[a-z0-9]", endpoint), endpoint


# -- 4. numeric answers have the ranges the tools accept ----------------------------------------


@pytest.mark.parametrize(
    "pair, words",
    [
        ("lora_dropout=1.5", ["lora_dropout", "at most 0.9"]),
        ("learning_rate=nan", ["learning_rate", "finite"]),
        ("learning_rate=0", ["learning_rate", "above 0"]),
        ("num_train_epochs=inf", ["num_train_epochs", "finite"]),
        ("seed=100000000000000000000000", ["seed", "at most"]),
        ("seed=10^23", ["seed", "whole number"]),
        ("gpu_memory_gb=1e9", ["gpu_memory_gb", "at most 4096"]),
        ("gpu_memory_gb=inf", ["gpu_memory_gb", "finite"]),
        ("gpu_memory_gb=nan", ["gpu_memory_gb", "finite"]),
        ("gpu_count=999999", ["gpu_count", "at most 64"]),
        ("max_length=4", ["max_length", "at least 16"]),
    ],
)
def test_numbers_outside_what_the_tools_accept_are_refused(tmp_path, capsys, pair, words):
    err = refused(capsys, "new", tmp_path / "ws", "--defaults", "--set", "hardware=cuda", "--set", pair)
    for word in words:
        assert word in err
    assert not (tmp_path / "ws").exists()


# -- 5. bad files get a sentence, not a traceback ------------------------------------------------


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", ["not UTF-8"]),
        (b"model: phi-4\x00\x01", ["binary"]),
        (b"- a\n- b\n", ["mapping"]),
        (b"model: [unclosed\n", ["not valid YAML"]),
        (b"project_name: [a, b]\n", ["project_name", "single value"]),
        (
            (
                b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                b"project_name: *b\n"
            ),
            ["aliases"],
        ),
    ],
)
def test_a_bad_answers_file_is_named(tmp_path, capsys, content, words):
    answers = tmp_path / "answers.yml"
    answers.write_bytes(content)
    err = refused(capsys, "new", tmp_path / "ws", "--answers", answers)
    for word in words:
        assert word in err


def test_a_huge_answers_file_is_refused_quickly(tmp_path, capsys):
    answers = tmp_path / "answers.yml"
    answers.write_bytes(b"model: phi-4\n" + b"# padding\n" * 5_000_000)
    started = time.monotonic()
    err = refused(capsys, "new", tmp_path / "ws", "--answers", answers)
    assert "larger than 1 MB" in err and time.monotonic() - started < 5


@pytest.mark.parametrize(
    "content, words",
    [
        (b"[1, 2]", ["JSON list", "config.json is an object"]),
        (b"\xff\xfe\x00\x01binary", ["not UTF-8"]),
        (
            json.dumps(
                {
                    "model_type": "llama",
                    "hidden_size": 64,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 0,
                    "intermediate_size": 128,
                    "vocab_size": 100,
                }
            ).encode(),
            ["num_attention_heads=0", "positive"],
        ),
        (
            json.dumps(
                {
                    "model_type": "llama",
                    "hidden_size": 64,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 3,
                    "intermediate_size": 128,
                    "vocab_size": 100,
                }
            ).encode(),
            ["do not divide evenly"],
        ),
        (json.dumps({"model_type": ["llama"]}).encode(), ["architecture"]),
        (b"[" * 100_000, ["config.json"]),
    ],
)
def test_a_broken_local_model_config_is_named(tmp_path, capsys, content, words):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(content)
    err = refused(capsys, "new", tmp_path / "ws", "--defaults", "--set", f"model={model}")
    for word in words:
        assert word in err


@pytest.mark.parametrize("model", ["my org/my model", "org/model?x=1#y", "org/..", "org/model name"])
def test_a_malformed_hub_id_is_refused_before_any_request(tmp_path, capsys, monkeypatch, model):
    import urllib.request

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("no request may be made"))
    err = refused(capsys, "new", tmp_path / "ws", "--defaults", "--set", f"model={model}")
    assert "Hugging Face id" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_a_parent_that_cannot_be_written_is_named(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        err = refused(capsys, "new", locked / "ws", "--defaults")
        assert "cannot write" in err
    finally:
        locked.chmod(0o700)


def test_a_parent_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = refused(capsys, "new", tmp_path / "file" / "ws", "--defaults")
    assert "cannot write" in err


@pytest.mark.parametrize(
    "content, words",
    [
        (b"model: [unclosed\n", ["not valid YAML", "git checkout"]),
        (b"- a\n- b\n", ["mapping", "git checkout"]),
        (b"\x00\x01\x02\xff", ["not UTF-8", "git checkout"]),
    ],
)
def test_update_names_a_corrupted_answers_file(new_workspace, capsys, content, words):
    dest = new_workspace()
    (dest / ".copier-answers.yml").write_bytes(content)
    git(dest, "commit", "-qam", "broken")
    err = refused(capsys, "update", dest, "--defaults", "--set", "max_length=256")
    for word in words:
        assert word in err


# -- 6. --force and update never commit what is not theirs, nor lose or nest anything -----------


def test_force_never_commits_the_users_own_files(tmp_path):
    dest = tmp_path / "ws"
    dest.mkdir()
    (dest / ".env").write_text("HF_TOKEN=hf_secret\n")
    (dest / "notes.txt").write_text("mine\n")
    assert tuneforge("new", dest, "--defaults", "--force") == 0
    committed = git(dest, "ls-files").split()
    assert ".env" not in committed and "notes.txt" not in committed and "train.py" in committed
    assert "hf_secret" not in git(dest, "log", "-p")
    assert (dest / ".env").read_text() == "HF_TOKEN=hf_secret\n"
    # and the workspace's own .gitignore keeps secrets out of later commits too
    (dest / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    status = git(dest, "status", "--porcelain")
    assert ".env" not in status and "key.pem" not in status


def test_an_interrupted_force_render_puts_the_folder_back(tmp_path, monkeypatch, capsys):
    from tuneforge.rendering import render

    dest = tmp_path / "ws"
    dest.mkdir()
    (dest / "README.md").write_text("my own readme\n")
    (dest / "notes.txt").write_text("mine\n")
    before = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    real_git = render.git

    def interrupted_commit(cwd, *args, **kwargs):
        if args and args[0] == "commit":
            raise KeyboardInterrupt
        return real_git(cwd, *args, **kwargs)

    monkeypatch.setattr(render, "git", interrupted_commit)
    assert tuneforge("new", dest, "--defaults", "--force") == 130
    assert "nothing was changed" in capsys.readouterr().err
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == before
    assert (dest / "README.md").read_text() == "my own readme\n"
    assert not any(p.name.startswith(".ws.tuneforge-") for p in tmp_path.iterdir())


def test_update_refuses_while_conflict_markers_remain(new_workspace, capsys):
    from tuneforge.rendering.render import CONFLICT_MARKER

    dest = new_workspace()
    train = dest / "configs" / "train.yaml"
    train.write_text(train.read_text() + f"{CONFLICT_MARKER}\nmax_length: 1\n=======\n>>>>>>> after updating\n")
    for extra in ([], ["--force"]):
        err = refused(capsys, "update", dest, "--defaults", "--set", "max_length=256", *extra)
        assert "conflict markers" in err and "configs/train.yaml" in err
    assert train.read_text().count(CONFLICT_MARKER) == 1
    assert len(git(dest, "log", "--format=%s").splitlines()) == 1


def test_the_hostile_name_probe_from_the_issue_runs_nothing(tmp_path):
    """The exact commands of the report, as a user would type them in a shell."""
    tuneforge_bin = Path(sys.executable).parent / "tuneforge"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "generator")}
    command = [
        str(tuneforge_bin) if tuneforge_bin.exists() else sys.executable,
        *([] if tuneforge_bin.exists() else ["-m", "tuneforge"]),
    ]
    first = subprocess.run(
        [*command, "new", "ws", "--defaults", "--set", 'project_name=x"; touch PWNED; echo "'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 2 and "Traceback" not in first.stderr and not (tmp_path / "ws").exists()
    second = subprocess.run(
        [*command, "new", "ws$(id>&2)", "--defaults"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert "'ws$(id>&2)'" in second.stdout  # the next-step hint quotes the folder for the shell
    check = subprocess.run(
        ["bash", "setup.sh", "--check"], cwd=tmp_path / "ws$(id>&2)", capture_output=True, text=True, check=False
    )
    assert "uid=" not in check.stdout + check.stderr
    assert not list(tmp_path.rglob("PWNED"))
    shutil.rmtree(tmp_path / "ws$(id>&2)")
