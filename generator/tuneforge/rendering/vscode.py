"""Opening a workspace in VS Code, for `tuneforge new --open` and the web form's Open button."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def open_in_vscode(dest: Path) -> str:
    """Open the folder in VS Code (its `code` command, never a shell); what happened, in a sentence."""
    code = shutil.which("code")
    if code is None:
        return (
            f"VS Code's `code` command is not on PATH; open the folder {dest.resolve()} in VS Code "
            "(File > Open Folder), or enable `code` via the command palette: 'Shell Command: Install code in PATH'."
        )
    subprocess.Popen([code, str(dest)], env=os.environ.copy())
    return f"opened {dest} in VS Code"
