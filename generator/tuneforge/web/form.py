"""What the web form (`tuneforge ui`) shows and does, apart from HTTP: its questions, the live plan for the
answers typed so far (each bad answer's message beside its field), and Create / Update as the CLI does them.

The page sends only the answers the user set; everything else is the plan's default, exactly as with
`tuneforge new --set ...`, so the answers file records the same explicit answers.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge import catalog
from tuneforge.planning.answers import (
    BY_KEY,
    PRIORITIES,
    AnswerError,
    Given,
    coerce,
    explicit_answers,
    format_value,
    layer,
    slug_name,
)
from tuneforge.planning.plan import Plan, resolve
from tuneforge.planning.questions import HYPER, ORDER, relevant

GROUPS = [("Project", ORDER), ("Hyperparameters", HYPER)]  # the terminal form's order: main questions, then "customise"


class FormError(ValueError):
    """Input the form cannot act on: errors maps answer keys (or "dest") to the CLI's message for each."""

    def __init__(self, message: str, errors: dict[str, str] | None = None):
        super().__init__(message)
        self.errors = errors or {}


def _choice_title(key: str, option: str) -> str:
    section = {
        "technique": "techniques",
        "hardware": "hardware",
        "compute": "compute",
        "objective": "objectives",
        "targets": "targets",
        "scenario": "scenarios",
    }.get(key)
    if section:
        return catalog.load(section)[option].get("title", "")
    return PRIORITIES.get(option, "") if key == "priority" else ""


def questions() -> list[dict]:
    """The questions, grouped and ordered as the terminal form asks them, each with its help text and choices."""
    models = catalog.load("models")
    groups = []
    for title, keys in GROUPS:
        items = []
        for key in keys:
            spec = BY_KEY[key]
            item: dict[str, Any] = {"key": key, "kind": spec.kind, "help": spec.help}
            if spec.choices:
                item["choices"] = [{"value": o, "title": _choice_title(key, o)} for o in spec.choices()]
            if key == "model":
                item["choices"] = [
                    {"value": m, "title": f"{f['params_b']:g}B{', gated' if f.get('gated') else ''}"}
                    for m, f in models.items()
                ]
            if spec.minimum is not None:
                item["range"] = spec.range_text
            items.append(item)
        groups.append({"title": title, "questions": items})
    return groups


def _files_key(plan: Plan) -> str:
    # the template's file names read only these (tests/generator/test_one_source.py keeps file switches in `include`)
    return json.dumps([plan.include, plan.onnx_targets, plan.runtime_targets], sort_keys=True)


@dataclass
class Form:
    """One form session: the machine planned for, where Create writes (or the workspace Update changes),
    and the answers that come before the page's (--set, --answers, or the workspace's own explicit answers)."""

    detected: dict
    dest: Path | None = None
    start: Given = field(default_factory=Given)
    workspace: bool = False  # dest is an existing workspace: the form updates it
    _files: dict[str, list[str]] = field(default_factory=dict)
    _files_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_workspace(cls, dest: Path, detected: dict, start: Given) -> Form:
        """A form over an existing workspace: its explicit answers come first, as `tuneforge update` takes them."""
        from tuneforge.rendering.render import read_workspace_answers

        given = layer((explicit_answers(read_workspace_answers(dest)), "previous answers"), start)
        return cls(detected, dest, given, workspace=True)

    def given(self, answers: dict[str, Any], dest: Path | None) -> tuple[Given, dict[str, str]]:
        """The start answers with the page's on top; the message for each answer that cannot be read."""
        if not isinstance(answers, dict):
            raise FormError("'answers' must be an object of answer keys and values")
        read: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for key, value in answers.items():
            try:
                read[key] = coerce(key, value)
            except AnswerError as error:
                errors[error.key] = str(error)
        named = {"project_name": slug_name(dest.resolve().name)} if dest is not None and not self.workspace else {}
        return layer((named, "DEST folder name"), self.start, (read, "form")), errors

    def plan(self, answers: dict[str, Any], dest: Path | None = None) -> tuple[Plan, dict[str, str]]:
        """The plan for these answers, leaving out (with its message) each answer the plan cannot take."""
        given, errors = self.given(answers, dest)
        for _ in range(len(given.values) + 1):
            try:
                return resolve(given, detected=self.detected), errors
            except AnswerError as error:  # an unknown model, say: shown beside its field, planned without it
                errors[error.key] = str(error)
                if error.key not in given.values:
                    raise
                del given.values[error.key]
        raise AssertionError("unreachable: each round removes one answer")

    def files(self, plan: Plan) -> list[str]:
        """The files the workspace would hold, rendered once per set of file switches."""
        from tuneforge.rendering.render import render_files

        key = _files_key(plan)
        with self._files_lock:  # one render at a time: a burst of changes does not run several at once
            if key not in self._files:
                self._files[key] = render_files(plan.copier_data())
        return self._files[key]

    def view(self, answers: dict[str, Any], dest: str | None = None, with_files: bool = True) -> dict:
        """Everything the page shows for these answers."""
        folder = self.destination(dest, required=False)
        plan, errors = self.plan(answers, folder)
        memory = plan.memory
        return {
            "values": {k: plan.values[k] for k in BY_KEY},
            "shown": {k: format_value(v) for k, v in plan.values.items()},
            "origins": plan.origins,
            "relevant": [k for k in BY_KEY if relevant(k, plan)],
            "errors": errors,
            "problems": plan.as_dict()["problems"],
            "model": {
                "id": plan.facts["id"],
                "hf_id": plan.facts["hf_id"],
                "params_b": plan.facts["params_b"],
                "architecture": plan.facts["architecture"],
            },
            "precision": plan.precision,
            "memory": {
                "parts": [{"name": name, "gb": gb} for name, gb in memory.parts()],
                "total_gb": memory.total_gb,
                "available_gb": plan.available_gb,
                "devices": plan.values["gpu_count"] * plan.values["num_nodes"],
                "trainable_params": memory.trainable_params,
            },
            "fits": plan.fits,
            "verdict": plan.verdict,
            "suggestions": [
                {"changes": s.changes, "label": str(s), "total_gb": s.estimate.total_gb} for s in plan.suggestions
            ],
            "files": self.files(plan) if with_files and not plan.problems else [],
            "dest": str(folder) if folder else None,
        }

    def destination(self, dest: str | None, required: bool = True) -> Path | None:
        if self.workspace or (self.dest is not None and not dest):
            return self.dest
        if dest is None or not str(dest).strip():
            if required:
                raise FormError("dest: choose the folder to create the workspace in", {"dest": "choose a folder"})
            return None
        text = str(dest).strip()
        if any(ord(c) < 32 for c in text):
            raise FormError("dest: the folder name holds a control character", {"dest": "remove the control character"})
        return Path(text).expanduser()

    def checked_plan(self, answers: dict[str, Any], dest: Path | None) -> Plan:
        """The plan for Create and Update: refused, with the CLI's messages, when an answer is bad or it cannot work."""
        plan, errors = self.plan(answers, dest)
        if errors:
            raise FormError(next(iter(errors.values())), errors)
        if plan.problems:
            raise FormError(
                "this combination cannot work: " + "; ".join(str(p) for p in plan.problems),
                {p.key: p.reason for p in plan.problems},
            )
        return plan

    def create(self, answers: dict[str, Any], dest: str | None) -> dict:
        """Render the workspace exactly as `tuneforge new` does (one git commit, the same answers file)."""
        from tuneforge.rendering.render import render_workspace

        if self.workspace:
            raise FormError(f"{self.dest} is already a workspace: update it instead")
        folder = self.destination(dest)
        plan = self.checked_plan(answers, folder)
        render_workspace(folder, plan.copier_data())
        self.dest, self.workspace = folder.resolve(), True
        self.start = Given(
            {k: plan.values[k] for k in plan.explicit_answers}, {k: "previous answers" for k in plan.explicit_answers}
        )
        return {
            "dest": str(self.dest),
            "message": f"created {self.dest}/ ({plan.values['model']}, {plan.values['technique']}, "
            f"{plan.values['hardware']})",
            "verdict": plan.verdict,
        }

    def preview_update(self, answers: dict[str, Any]) -> dict:
        """What `tuneforge update` would change, done on a copy of the workspace: the same 3-way merge."""
        self._need_workspace()
        with tempfile.TemporaryDirectory(prefix="tuneforge-preview-") as scratch:
            copy = Path(scratch) / self.dest.name
            shutil.copytree(self.dest, copy, symlinks=True, ignore=_ignored_by_git(self.dest))
            result = self._update(copy, answers)
            from tuneforge.rendering.render import git

            git(copy, "add", "-A")
            diff = git(copy, "diff", "--cached", "--stat", "--patch", "HEAD")
        return {**result, "diff": diff}

    def apply_update(self, answers: dict[str, Any]) -> dict:
        self._need_workspace()
        return self._update(self.dest, answers)

    def _need_workspace(self) -> None:
        if not self.workspace:
            raise FormError("there is no workspace to update yet: create one first")

    def _update(self, folder: Path, answers: dict[str, Any]) -> dict:
        from tuneforge.rendering.render import update_workspace

        result = update_workspace(folder, self.checked_plan(answers, folder).copier_data())
        return {
            "changed": result.changed,
            "removed": result.removed,
            "conflicts": result.conflicts,
            "kept": result.kept,
        }


def _ignored_by_git(root: Path):
    """A copytree filter that skips what git ignores (a virtual environment, trained models): the preview
    needs only what git sees."""
    from tuneforge.rendering.render import git

    listed = git(root, "ls-files", "--others", "--ignored", "--exclude-standard", "--directory", "-z", check=False)
    ignored = {(root / p.rstrip("/")).resolve() for p in listed.split("\0") if p}

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if (Path(folder) / n).resolve() in ignored]

    return ignore
