"""Render every examples/<name>.yml into examples/<name>/ (run after changing the template):

python examples/render.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "generator"))

from tuneforge import hardware, render  # noqa: E402
from tuneforge.answers import Given, read_answers_file  # noqa: E402
from tuneforge.plan import resolve  # noqa: E402


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
