"""The project's paths, and its commands as the tests call them."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the workspace template's own code, which tests/workspace/ imports as a workspace does (its conftest)
WORKSPACE_TEMPLATE = ROOT / "templates" / "workspace"


def sets(answers: dict) -> list[str]:
    """--set KEY=VALUE arguments for these answers (lists comma-separated, booleans as true or false)."""
    args = []
    for key, value in answers.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        args += ["--set", f"{key}={value}"]
    return args


def tuneforge(*args: str) -> int:
    """The tuneforge command in this process; its exit status."""
    from tuneforge.cli import main

    return main([str(a) for a in args])


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
