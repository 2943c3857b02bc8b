"""Preference training speed and memory: the workspace's DPO (train.py, objective dpo) against TRL's
DPOTrainer with its defaults, side by side.

    .venv/bin/python bench/preference.py [--pairs 160] [--rounds 2]      # trl, the peer, is in requirements-dev.txt

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

from training import MEASURE, run

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
        prompt = [m for r in context for m in ({"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]})]
        prompt.append({"role": "user", "content": last["prompt"]})
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": last["chosen"]}],
                    "rejected": [{"role": "assistant", "content": last["rejected"]}]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-dpo-"))
    os.environ.update(TUNEFORGE_CACHE_DIR=str(work / "cache"), TUNEFORGE_NO_DETECT="1")
    ws = work / "ws"
    subprocess.run([str(BIN / "tuneforge"), "new", str(ws), "--defaults", "--set", "model=llama-3.2-1b-instruct",
                    "--set", "objective=dpo", "--set", "technique=lora", "--set", "lora_r=16", "--set", "lora_alpha=32",
                    "--set", "per_device_train_batch_size=8", "--set", "gradient_accumulation_steps=1",
                    "--set", "max_length=512", "--set", "num_train_epochs=1", "--set", "learning_rate=2e-5",
                    "--set", "targets=pytorch"], check=True, stdout=subprocess.DEVNULL)
    data = ws / "data" / "bench.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs(args.pairs)))
    sys.path.insert(0, str(ws))
    from finetune.preference import encode_preferences
    from finetune.data import read_examples
    from finetune.tiny import build_model, build_tokenizer, corpus

    tokenizer = build_tokenizer(corpus(str(data)), 8000)
    model = build_model({"architecture": "llama", "hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 4,
                         "num_key_value_heads": 2, "intermediate_size": 688, "max_position_embeddings": 1024,
                         "vocab_size": 32000, "tie_word_embeddings": False}, tokenizer)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(ws / "bench-model")
    tokenizer.save_pretrained(ws / "bench-model")
    rows = encode_preferences(read_examples(str(data), "preference"), tokenizer, {"max_length": 512}, "dpo")
    total = sum(len(r["first"]["ids"]) + len(r["second"]["ids"]) for r in rows)
    print(f"model {params / 1e6:.1f}M parameters; {len(rows)} pairs, {total} tokens chosen and rejected together "
          f"({total / len(rows):.0f} per pair)")

    ours_cmd = [sys.executable, "-c", MEASURE, "train.py", "model.name_or_path=bench-model", "data.path=data/bench.jsonl",
                "data.system_prompt=null", "data.eval_fraction=0", "training.save_strategy=no", "training.report_to=none",
                "training.output_dir=outputs/bench", "training.logging_steps=5", "training.warmup_steps=0"]
    peer_cmd = [sys.executable, str(ROOT / "bench" / "trl_dpo_peer.py"), str(ws / "bench-model"), str(data), str(work / "trl")]
    results: dict[str, list[dict]] = {"tuneforge": [], "trl": []}
    for _ in range(args.rounds):
        ours = run(ours_cmd, ws)
        history = json.loads((ws / "outputs" / "bench" / "log_history.json").read_text())
        ours["seconds"] = next(e["train_runtime"] for e in reversed(history) if "train_runtime" in e)
        ours["losses"] = [e["loss"] for e in history if "loss" in e]
        results["tuneforge"].append(ours)
        results["trl"].append(run(peer_cmd, ws))
    summary = {}
    for name, found in results.items():
        best = min(found, key=lambda r: r["seconds"])
        summary[name] = {"tokens_per_s": total / best["seconds"], "peak_rss_mb": max(r["peak_rss_mb"] for r in found)}
        shown = best["losses"]
        trend = f"   loss {shown[0]:.4f} -> {shown[-1]:.4f}" if shown else ""
        print(f"{name:<10} {summary[name]['tokens_per_s']:8.0f} tokens/s   peak RSS {summary[name]['peak_rss_mb']:6.0f} MB{trend}")
    speed = summary["tuneforge"]["tokens_per_s"] / summary["trl"]["tokens_per_s"]
    memory = summary["tuneforge"]["peak_rss_mb"] / summary["trl"]["peak_rss_mb"]
    print(f"speed {speed:.2f}x TRL (goal >= 1.5x), peak memory {memory:.2f}x TRL (goal <= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
