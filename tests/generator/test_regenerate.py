"""tuneforge update: a 3-way merge that keeps the user's edits."""

from __future__ import annotations

import shutil

from helpers.project import ROOT, git, tuneforge


def update(dest, *args) -> int:
    return tuneforge("update", dest, "--defaults", *args)


def test_an_edit_survives_an_unrelated_answer_change(new_workspace):
    dest = new_workspace()
    readme = dest / "README.md"
    readme.write_text(readme.read_text() + "\n## Our team's notes\nAsk Dana before changing the data.\n")
    git(dest, "commit", "-qam", "notes")
    assert update(dest, "--set", "max_length=256") == 0
    assert "Ask Dana before changing the data." in readme.read_text()
    assert "max_length: 256" in (dest / "configs" / "train.yaml").read_text()
    assert "max_length: 256" in (dest / ".copier-answers.yml").read_text()


def test_an_edit_in_a_changed_file_merges_when_lines_differ(new_workspace):
    dest = new_workspace()
    train = dest / "configs" / "train.yaml"
    train.write_text(train.read_text().replace("logging_steps: 10", "logging_steps: 5"))
    git(dest, "commit", "-qam", "log more often")
    assert update(dest, "--set", "learning_rate=5e-5") == 0
    text = train.read_text()
    assert "logging_steps: 5" in text and "learning_rate: 5e-05" in text


def test_a_conflicting_edit_is_marked_and_listed(new_workspace, capsys):
    dest = new_workspace()
    train = dest / "configs" / "train.yaml"
    train.write_text(train.read_text().replace("max_length: 512", "max_length: 300"))
    git(dest, "commit", "-qam", "mine")
    assert update(dest, "--set", "max_length=1024") == 1
    text = train.read_text()
    assert "<<<<<<< before updating" in text and "max_length: 300" in text and "max_length: 1024" in text
    assert "configs/train.yaml" in capsys.readouterr().err


def test_a_dropped_feature_loses_its_files_unless_edited(new_workspace, capsys):
    dest = new_workspace(distributed="deepspeed-zero2", targets="onnx-cpu,onnx-cuda")
    assert (dest / "configs" / "deepspeed.json").exists() and (dest / "olive" / "onnx-cuda.json").exists()
    cuda = dest / "olive" / "onnx-cuda.json"
    cuda.write_text(cuda.read_text().replace('"log_severity_level": 1', '"log_severity_level": 0'))
    git(dest, "commit", "-qam", "quieter")
    assert update(dest, "--set", "distributed=none", "--set", "targets=onnx-cpu") == 0
    assert not (dest / "configs" / "deepspeed.json").exists()
    assert cuda.exists() and '"log_severity_level": 0' in cuda.read_text()
    assert "kept olive/onnx-cuda.json" in capsys.readouterr().err
    assert "deepspeed" not in (dest / "configs" / "train.yaml").read_text()


def test_a_dirty_workspace_is_refused_unless_forced(new_workspace, capsys):
    dest = new_workspace()
    (dest / "train.py").write_text((dest / "train.py").read_text() + "# wip\n")
    before = (dest / "configs" / "train.yaml").read_text()
    assert update(dest, "--set", "max_length=256") == 2
    assert "uncommitted changes" in capsys.readouterr().err
    assert (dest / "configs" / "train.yaml").read_text() == before
    assert (dest / "train.py").read_text().endswith("# wip\n")
    assert update(dest, "--set", "max_length=256", "--force") == 0
    assert (dest / "train.py").read_text().endswith("# wip\n")
    assert "Your changes before tuneforge update" in git(dest, "log", "--format=%s")


def test_bad_new_answers_change_nothing(new_workspace, capsys):
    dest = new_workspace()
    assert update(dest, "--set", "hardware=mps", "--set", "technique=qlora") == 2
    assert git(dest, "status", "--porcelain") == ""


def test_defaults_follow_new_choices_but_explicit_answers_stay(new_workspace):
    dest = new_workspace(learning_rate=3e-4, lora_r=4)
    assert update(dest, "--set", "technique=full") == 0
    answers = (dest / ".copier-answers.yml").read_text()
    assert "learning_rate: 0.0003" in answers  # the user chose it, so it stays
    assert "lora_r: 4" in answers
    fresh = new_workspace(technique="lora")
    assert update(fresh, "--set", "technique=full") == 0
    assert "learning_rate: 2e-05" in (fresh / "configs" / "train.yaml").read_text()  # a default: follows technique


def test_update_after_the_template_changed(new_workspace, tmp_path, monkeypatch):
    template = tmp_path / "template"
    shutil.copytree(ROOT / "templates", template)
    monkeypatch.setenv("TUNEFORGE_TEMPLATE", str(template))
    dest = new_workspace()
    readme = dest / "README.md"
    readme.write_text(readme.read_text() + "\nOur own line.\n")
    git(dest, "commit", "-qam", "ours")
    old_commit = (dest / ".copier-answers.yml").read_text().split("_commit: ")[1].split("\n")[0]
    merge = template / "workspace" / "merge.py"
    merge.write_text(
        merge.read_text().replace('"""Merge the trained adapter', '"""Merge (new in this version) the trained adapter')
    )
    assert update(dest) == 0
    assert "new in this version" in (dest / "merge.py").read_text()
    assert "Our own line." in readme.read_text()
    new_commit = (dest / ".copier-answers.yml").read_text().split("_commit: ")[1].split("\n")[0]
    assert new_commit != old_commit


def test_not_a_workspace(tmp_path, capsys):
    assert update(tmp_path) == 2
    assert "not a tuneforge workspace" in capsys.readouterr().err


def test_editor_settings_and_tasks_keep_the_users_edits_through_an_update(new_workspace):
    """.vscode/ is rendered into the workspace like every file, so update merges it: a setting and a task of the
    user's own stay next to the tasks a new target brings, with no conflict."""
    import json

    dest = new_workspace(targets="pytorch")
    settings, tasks = dest / ".vscode" / "settings.json", dest / ".vscode" / "tasks.json"
    settings.write_text(settings.read_text().replace("{\n", '{\n  "editor.rulers": [100],\n', 1))
    tasks.write_text(
        tasks.read_text().replace(
            '"tasks": [\n',
            '"tasks": [\n    {"label": "our lint", "type": "shell", '
            '"command": "ruff check .", "problemMatcher": []},\n',
            1,
        )
    )
    git(dest, "commit", "-qam", "our editor set-up")
    assert update(dest, "--set", "targets=pytorch,onnx-cpu") == 0
    merged_settings = json.loads(settings.read_text())
    merged_tasks = json.loads(tasks.read_text().split("\n", 1)[1])  # after the comment line
    assert merged_settings["editor.rulers"] == [100] and merged_settings["python.testing.pytestEnabled"] is True
    labels = [task["label"] for task in merged_tasks["tasks"]]
    assert labels[0] == "our lint" and "optimize" in labels and "serve" in labels
