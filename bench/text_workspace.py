"""What the CPU benchmarks share: a generated domain-adaptation workspace (plain text, full fine-tuning, CPU) on
prose or other paragraphs, its model trained from random weights by its own train.py and merged."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

BIN = Path(sys.executable).parent


def prose() -> list[str]:
    """Paragraphs of English prose from the long descriptions in the installed packages' METADATA files."""
    paragraphs, seen = [], set()
    site = sysconfig.get_paths()["purelib"]
    for path in sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA"))):
        text = Path(path).read_text(encoding="utf-8", errors="ignore")
        body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
        for block in re.split(r"\n\s*\n", body):
            paragraph = " ".join(block.split())
            letters = sum(c.isalpha() or c == " " for c in paragraph)
            if 200 <= len(paragraph) <= 1500 and letters > 0.9 * len(paragraph) and paragraph not in seen:
                seen.add(paragraph)
                paragraphs.append(paragraph)
    return paragraphs


def step(command: list[str], cwd: Path, env: dict, show=lambda line: True) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    print("\n".join(line for line in result.stdout.splitlines() if show(line)), flush=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:2])} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def bench_env(work: Path) -> dict:
    """Offline, with the template cache in the bench's folder."""
    return {
        **os.environ,
        "TUNEFORGE_CACHE_DIR": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
        "OLIVE_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def text_workspace(
    ws: Path, env: dict, paragraphs: list[str], targets: str, batch_size: int, learning_rate: float
) -> None:
    """A Llama workspace for domain adaptation on plain text (full fine-tuning, packed rows of 256 tokens, CPU)
    whose data is the paragraphs; the model is put in bench-model/ by the caller."""
    subprocess.run(
        [
            str(BIN / "tuneforge"),
            "new",
            str(ws),
            "--defaults",
            "--no-detect",
            "--set",
            "model=llama-3.2-1b-instruct",
            "--set",
            "scenario=domain",
            "--set",
            "dataset_format=text",
            "--set",
            "technique=full",
            "--set",
            "hardware=cpu",
            "--set",
            f"targets={targets}",
            "--set",
            "max_length=256",
            "--set",
            "packing=true",
            "--set",
            f"per_device_train_batch_size={batch_size}",
            "--set",
            "gradient_accumulation_steps=1",
            "--set",
            f"learning_rate={learning_rate}",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    (ws / "data" / "sample.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs))
    print(f"data: {len(paragraphs)} paragraphs, {sum(map(len, paragraphs)) / 1e3:.0f}k characters", flush=True)


def train_and_merge(ws: Path, env: dict, steps: int, warmup: float, logging_steps: int) -> None:
    """bench-model/ trained from its random weights by the workspace's train.py, then merge.py."""
    step(
        [
            sys.executable,
            "train.py",
            "model.name_or_path=bench-model",
            f"training.max_steps={steps}",
            "training.eval_strategy=no",
            "training.save_strategy=no",
            "training.report_to=none",
            f"training.warmup_steps={warmup}",
            f"training.logging_steps={logging_steps}",
        ],
        ws,
        env,
        show=lambda line: "loss" in line or "tokens" in line,
    )
    step([sys.executable, "merge.py"], ws, env)
