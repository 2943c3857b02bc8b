"""Generation speed: `tuneforge new --defaults` against a plain `copier copy` of the same template with
the same answers, side by side in one run; and the start-up time of `tuneforge --help`.

    .venv/bin/python bench/generation.py [--rounds 7]

Both generators run as fresh processes, alternating, from the same warm template cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "generator"))
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-"))
    env = {**os.environ, "TUNEFORGE_CACHE_DIR": str(work / "cache")}
    os.environ.update(env)

    import yaml

    from tuneforge.planning import hardware
    from tuneforge.planning.answers import Given
    from tuneforge.planning.plan import resolve
    from tuneforge.rendering import render

    template = render.versioned_template()
    answers = work / "answers.yml"
    answers.write_text(yaml.safe_dump(resolve(Given(), detected=hardware.TYPICAL).copier_data()))

    ours, plain, helps = [], [], []
    for i in range(args.rounds):
        ours.append(timed([str(BIN / "tuneforge"), "new", str(work / f"ours{i}"), "--defaults", "--no-detect"], env))
        plain.append(
            timed(
                [
                    str(BIN / "copier"),
                    "copy",
                    "--defaults",
                    "--quiet",
                    "--overwrite",
                    "--vcs-ref",
                    template.tag,
                    "--data-file",
                    str(answers),
                    str(template.repo),
                    str(work / f"plain{i}"),
                ],
                env,
            )
        )
        helps.append(timed([str(BIN / "tuneforge"), "--help"], env))
    shutil.rmtree(work, ignore_errors=True)
    o, p, h = statistics.median(ours), statistics.median(plain), statistics.median(helps)
    print(f"tuneforge new --defaults   median {o:.3f} s  (min {min(ours):.3f})")
    print(f"copier copy (same answers) median {p:.3f} s  (min {min(plain):.3f})")
    print(f"ratio tuneforge / copier   {o / p:.2f}x   (goal <= 1.3x)")
    print(f"tuneforge --help           median {h:.3f} s   (goal < 0.3 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
