"""Training speed and memory: the workspace's train.py against TRL's SFTTrainer, side by side, and against the machine.

    .venv/bin/python bench/training.py [--model tiny|smollm2|gemma3-270m] [--examples 160] [--rounds 2]
                                       [--lora-dropout P]   # trl, the peer, is in requirements-dev.txt

The same model and the same variable-length chat examples (built from the workspace's sample Q&A) for both: tiny is
a ~21M-parameter Llama (random weights, a 32000-id vocabulary, BPE tokenizer trained on the data), where the
vocabulary and per-step costs dominate; smollm2 and gemma3-270m are the real pretrained models of
bench/real_models.py, with their own tokenizers and chat templates. LoRA r16 on all linear layers, alpha 32, batch
8, max length 512, one epoch, fp32 on CPU; TRL with bf16 and gradient checkpointing off (its best here; its
defaults run tens of times slower on this CPU). --lora-dropout: both runs' LoRA dropout (default: the plan's).

Reports non-padding tokens per second and peak resident memory of each training process, the machine's fp32
matrix-multiply peak measured in the same run, and each run's utilisation of it: achieved FLOP/s over the peak,
counting 4 FLOPs per token per frozen weight a token passes through (every linear layer's forward product and its
input gradient; the output head's too), as LoRA training of a frozen base costs; the adapters' own FLOPs, attention
scores and elementwise work are left out, so this is a lower bound of the work done.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import real_models
import yaml

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
    parser.add_argument("--model", choices=["tiny", *real_models.MODELS], default="tiny")
    parser.add_argument("--examples", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lora-dropout", type=float, help="both runs' LoRA dropout (default: the plan's)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-train-"))
    os.environ.update(TUNEFORGE_CACHE_DIR=str(work / "cache"))
    ws = work / "ws"
    model = "llama-3.2-1b-instruct" if args.model == "tiny" else str(real_models.checkpoint(args.model))
    answers = {
        "model": model,
        "technique": "lora",
        "lora_r": 16,
        "lora_alpha": 32,
        "packing": "true",
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "max_length": 512,
        "num_train_epochs": 1,
        "targets": "pytorch",
        **({} if args.lora_dropout is None else {"lora_dropout": args.lora_dropout}),
    }
    sets = [f"--set={k}={v}" for k, v in answers.items()]
    subprocess.run(
        [str(BIN / "tuneforge"), "new", str(ws), "--defaults", "--no-detect", *sets],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    dropout = yaml.safe_load((ws / "configs" / "train.yaml").read_text())["peft"]["lora_dropout"]
    data = ws / "data" / "bench.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in chat_examples(args.examples)))
    sys.path.insert(0, str(ws))
    from transformers import AutoConfig, AutoTokenizer

    from finetune.data import read_examples
    from finetune.encoding import encode

    if args.model == "tiny":
        model_dir = ws / "bench-model"
        tokenizer, _ = save_bench_model(data, model_dir)
    else:
        model_dir = Path(model)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    flops_per_token = 4 * frozen_weights_per_token(AutoConfig.from_pretrained(model_dir))
    tokens = [len(encode(e, tokenizer, 512)["input_ids"]) for e in read_examples(str(data), "messages")]
    total = sum(tokens)
    print(
        f"model {args.model} ({flops_per_token / 4 / 1e6:.0f}M weights per token); {len(tokens)} examples, {total} "
        f"tokens ({total / len(tokens):.0f} on average, {min(tokens)} to {max(tokens)}); LoRA dropout {dropout}"
    )

    ours_cmd = [
        sys.executable,
        "-c",
        MEASURE,
        "train.py",
        f"model.name_or_path={model_dir}",
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
        str(model_dir),
        str(data),
        str(work / "trl"),
        str(dropout),
    ]
    summary = compare(ours_cmd, peer_cmd, ws, args.rounds, total, memory_goal=0.7)
    peak = matmul_peak()
    print(f"machine: fp32 matmul peak {peak / 1e9:.0f} GFLOP/s on {torch_threads()} threads (2048 x 2048, best of 10)")
    for name, measured in summary.items():
        achieved = measured["tokens_per_s"] * flops_per_token
        print(f"{name:<10} {achieved / 1e9:6.1f} GFLOP/s = {achieved / peak:.0%} of the peak")
    return 0


def frozen_weights_per_token(config) -> int:
    """Weights of the linear layers one token passes through: every decoder layer's projections and the output head
    (the input embedding is a lookup)."""
    text = getattr(config, "text_config", None) or config
    h, layers, inter = text.hidden_size, text.num_hidden_layers, text.intermediate_size
    heads, kv = text.num_attention_heads, getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or h // heads
    attention = h * head_dim * (2 * heads + 2 * kv)
    return layers * (attention + 3 * h * inter) + text.vocab_size * h


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """The best fp32 FLOP/s of a square matrix product on this machine, as PyTorch runs it."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


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


def compare(ours_cmd: list[str], peer_cmd: list[str], ws: Path, rounds: int, tokens: int, memory_goal: float) -> dict:
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
    return summary


if __name__ == "__main__":
    sys.exit(main())
