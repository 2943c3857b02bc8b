"""Render every examples/<name>.yml into examples/<name>/ (run after changing the template):

python examples/render.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "generator"))

from tuneforge.planning import hardware
from tuneforge.planning.answers import Given, read_answers_file
from tuneforge.planning.plan import resolve
from tuneforge.rendering import render


def render_example(answers_file: Path, dest: Path) -> None:
    given = Given()
    given.add(read_answers_file(answers_file), f"answers file {answers_file.name}")
    plan = resolve(given, detected=hardware.TYPICAL)
    if plan.problems:
        raise SystemExit(f"{answers_file}: " + "; ".join(map(str, plan.problems)))
    if dest.exists():
        shutil.rmtree(dest)
    render.render_plain(dest, plan.copier_data())


def main() -> int:
    for answers_file in sorted(HERE.glob("*.yml")):
        render_example(answers_file, HERE / answers_file.stem)
        print(f"rendered {answers_file.stem}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
