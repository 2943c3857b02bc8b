"""Training speed and memory: the workspace's train.py against TRL's SFTTrainer, side by side.

    .venv/bin/python bench/training.py [--examples 160] [--rounds 2]      # trl, the peer, is in requirements-dev.txt

Same ~21M-parameter Llama (random weights, a 32000-id vocabulary, BPE tokenizer trained on the data), same 160 variable-length
chat examples, LoRA r16 on all linear layers, batch 8, max length 512, one epoch, fp32 on CPU.
Reports non-padding tokens per second and peak resident memory of each training process.
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

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "templates" / "includes" / "samples" / "chat" / "messages.jsonl"
BIN = Path(sys.executable).parent
# runs a script and prints its process's peak resident memory
MEASURE = (
    "import json, resource, runpy, sys; sys.argv = sys.argv[1:]\ncode = 0\n"
    "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e:\n    code = e.code or 0\n"
    "print('BENCH ' + json.dumps({'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    "sys.exit(code)"
)


def chat_examples(n: int, seed: int = 0) -> list[dict]:
    """Chat examples of one to four turns built from the workspace's sample Q&A, so lengths vary."""
    lines = SAMPLES.read_text().splitlines()
    pairs = [json.loads(line)["messages"][1:] for line in lines]
    system = json.loads(lines[0])["messages"][0]
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        turns = [m for pair in rng.sample(pairs, rng.choice([2, 3, 4, 5, 6])) for m in pair]
        examples.append({"messages": [system, *turns]})
    return examples


def run(command: list[str], cwd: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(cwd)}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{result.stderr[-3000:]}")
    return json.loads(
        next(line for line in reversed(result.stdout.splitlines()) if line.startswith(("BENCH ", "{"))).removeprefix(
            "BENCH "
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-train-"))
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
            "technique=lora",
            "--set",
            "lora_r=16",
            "--set",
            "lora_alpha=32",
            "--set",
            "packing=true",
            "--set",
            "per_device_train_batch_size=8",
            "--set",
            "gradient_accumulation_steps=1",
            "--set",
            "max_length=512",
            "--set",
            "num_train_epochs=1",
            "--set",
            "targets=pytorch",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    data = ws / "data" / "bench.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in chat_examples(args.examples)))
    sys.path.insert(0, str(ws))
    from finetune.data import read_examples
    from finetune.encoding import encode

    tokenizer, params = save_bench_model(data, ws / "bench-model")
    tokens = [len(encode(e, tokenizer, 512)["input_ids"]) for e in read_examples(str(data), "messages")]
    total = sum(tokens)
    print(
        f"model {params / 1e6:.1f}M parameters; {len(tokens)} examples, {total} tokens "
        f"({total / len(tokens):.0f} on average, {min(tokens)} to {max(tokens)})"
    )

    ours_cmd = [
        sys.executable,
        "-c",
        MEASURE,
        "train.py",
        "model.name_or_path=bench-model",
        "data.path=data/bench.jsonl",
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
        "sft",
        str(ws / "bench-model"),
        str(data),
        str(work / "trl"),
    ]
    compare(ours_cmd, peer_cmd, ws, args.rounds, total, memory_goal=0.7)
    return 0


def save_bench_model(data: Path, out: Path):
    """A BPE tokenizer trained on the data and a ~21M-parameter Llama with a real model's vocabulary (32000 ids; the
    tokenizer uses the first few thousand), so that the language-model head weighs what it weighs in practice."""
    from finetune.tiny import build_model, build_tokenizer, corpus

    tokenizer = build_tokenizer(corpus(str(data)), 8000)
    model = build_model(
        {
            "architecture": "llama",
            "hidden_size": 256,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 688,
            "max_position_embeddings": 1024,
            "vocab_size": 32000,
            "tie_word_embeddings": False,
        },
        tokenizer,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return tokenizer, sum(p.numel() for p in model.parameters())


def compare(ours_cmd: list[str], peer_cmd: list[str], ws: Path, rounds: int, tokens: int, memory_goal: float) -> None:
    """Run the workspace and TRL in turn, each round; print the best speed, the peak memory and the ratios."""
    results: dict[str, list[dict]] = {"tuneforge": [], "trl": []}
    for _ in range(rounds):
        ours = run(ours_cmd, ws)
        # the same span for both: the Trainer's own train_runtime
        history = json.loads((ws / "outputs" / "bench" / "log_history.json").read_text())
        ours["seconds"] = next(e["train_runtime"] for e in reversed(history) if "train_runtime" in e)
        ours["losses"] = [e["loss"] for e in history if "loss" in e]
        results["tuneforge"].append(ours)
        results["trl"].append(run(peer_cmd, ws))
    summary = {}
    for name, found in results.items():
        best = min(found, key=lambda r: r["seconds"])
        summary[name] = {"tokens_per_s": tokens / best["seconds"], "peak_rss_mb": max(r["peak_rss_mb"] for r in found)}
        trend = f"   loss {best['losses'][0]:.4f} -> {best['losses'][-1]:.4f}" if best.get("losses") else ""
        print(
            f"{name:<10} {summary[name]['tokens_per_s']:8.0f} non-padding tokens/s   peak RSS "
            f"{summary[name]['peak_rss_mb']:6.0f} MB{trend}"
        )
    speed = summary["tuneforge"]["tokens_per_s"] / summary["trl"]["tokens_per_s"]
    memory = summary["tuneforge"]["peak_rss_mb"] / summary["trl"]["peak_rss_mb"]
    print(f"speed {speed:.2f}x TRL (goal >= 1.5x), peak memory {memory:.2f}x TRL (goal <= {memory_goal}x)")


if __name__ == "__main__":
    sys.exit(main())
