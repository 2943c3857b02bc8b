"""Preference training speed and memory: the workspace's DPO (train.py, objective dpo) against TRL's
DPOTrainer with its defaults, side by side.

    .venv/bin/python bench/preference.py [--pairs 160] [--rounds 2]   # TRL, the peer (bench/trl_peer.py), is in requirements-dev.txt

Same ~21M-parameter Llama (random weights, a 32000-id vocabulary, BPE tokenizer trained on the data), same pairs
(the preference sample's concise and rambling answers after zero to three earlier turns), LoRA r16 on all linear
layers, beta 0.1, batch 8 pairs, max length 512, one epoch, fp32 on CPU. Reports chosen-plus-rejected tokens per
second and peak resident memory of each training process, and each one's first and last logged loss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from training import MEASURE, compare, save_bench_model

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "templates" / "includes" / "samples" / "preference" / "preference.jsonl"
BIN = Path(sys.executable).parent


def pairs(n: int, seed: int = 0) -> list[dict]:
    """Conversational pairs: a prompt of zero to three earlier exchanges and a question, a chosen and a rejected answer."""
    rows = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        earlier = rng.sample(rows, rng.choice([1, 2, 3, 4]))
        *context, last = earlier
        prompt = [
            m
            for r in context
            for m in ({"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]})
        ]
        prompt.append({"role": "user", "content": last["prompt"]})
        out.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": last["chosen"]}],
                "rejected": [{"role": "assistant", "content": last["rejected"]}],
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-dpo-"))
    os.environ.update(TUNEFORGE_CACHE_DIR=str(work / "cache"))
    ws = work / "ws"
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
            "objective=dpo",
            "--set",
            "technique=lora",
            "--set",
            "lora_r=16",
            "--set",
            "lora_alpha=32",
            "--set",
            "per_device_train_batch_size=8",
            "--set",
            "gradient_accumulation_steps=1",
            "--set",
            "max_length=512",
            "--set",
            "num_train_epochs=1",
            "--set",
            "learning_rate=2e-5",
            "--set",
            "targets=pytorch",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    data = ws / "data" / "bench.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs(args.pairs)))
    sys.path.insert(0, str(ws))
    from finetune.data import read_examples
    from finetune.preference import encode_preferences

    tokenizer, params = save_bench_model(data, ws / "bench-model")
    rows = encode_preferences(read_examples(str(data), "preference"), tokenizer, {"max_length": 512}, "dpo")
    total = sum(len(r["first"]["input_ids"]) + len(r["second"]["input_ids"]) for r in rows)
    print(
        f"model {params / 1e6:.1f}M parameters; {len(rows)} pairs, {total} tokens chosen and rejected together "
        f"({total / len(rows):.0f} per pair)"
    )

    ours_cmd = [
        sys.executable,
        "-c",
        MEASURE,
        "train.py",
        "model.name_or_path=bench-model",
        "data.path=data/bench.jsonl",
        "data.system_prompt=null",
        "data.eval_fraction=0",
        "training.save_strategy=no",
        "training.report_to=none",
        "training.output_dir=outputs/bench",
        "training.logging_steps=5",
        "training.warmup_steps=0",
    ]
    peer_cmd = [
        sys.executable,
        str(ROOT / "bench" / "trl_peer.py"),
        "dpo",
        str(ws / "bench-model"),
        str(data),
        str(work / "trl"),
        str(yaml.safe_load((ws / "configs" / "train.yaml").read_text())["peft"]["lora_dropout"]),  # the same dropout
    ]
    compare(ours_cmd, peer_cmd, ws, args.rounds, total, memory_goal=0.8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
