"""Running a generated workspace's own scripts, and reading what they leave."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


def run(workspace: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """python ARGS in the workspace, with this interpreter (the suite's .venv) first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout)


def losses(run_dir: Path) -> list[float]:
    """The training losses train.py logged in run_dir."""
    history = json.loads((run_dir / "log_history.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry]


def jsonc(path: Path):
    """Parse JSON with // comments, as VS Code does."""
    text = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*', lambda m: m.group(1) or "", path.read_text())
    return json.loads(text)
