"""GRPO training speed and memory: the workspace's GRPO (train.py, objective grpo) against TRL's GRPOTrainer, side by
side, on the same model, prompts, number of sampled answers and lengths.

    .venv/bin/python bench/grpo.py [--model tiny|smollm2] [--prompts 32] [--generations 4] [--completion 32]
                                   [--rounds 1]   # trl, the peer (bench/trl_peer.py), is in requirements-dev.txt

The prompts are the classification sample's support messages (system, instruction and message, as chat turns) and
the reward is the same exact label match for both. tiny is a ~21M-parameter Llama with random weights and a
32000-id vocabulary: it almost never samples its end token, so every answer runs to --completion tokens on both
sides and the token counts agree; smollm2 is the real SmolLM2-135M-Instruct of bench/real_models.py, whose answers
end where they end (each side's own count of prompt and answer tokens is used). LoRA r16 on all linear layers, alpha
32, no dropout, 4 prompts per step, beta 0, loss dapo, one pass over the prompts, fp32 on CPU; TRL with bf16 and
gradient checkpointing off (its best here). Reports prompt-and-answer tokens per second (sampling included: it is
most of a GRPO step) and the peak resident memory of each training process, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import real_models
from training import MEASURE, run, save_bench_model

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "templates" / "includes" / "samples" / "classification" / "messages.jsonl"
BIN = Path(sys.executable).parent
PROMPTS_PER_STEP = 4


def conversations(n: int) -> list[dict]:
    rows = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-grpo-"))
    os.environ.update(TUNEFORGE_CACHE_DIR=str(work / "cache"))
    ws = work / "ws"
    answers = {
        "objective": "grpo",
        "scenario": "classification",
        "dataset_format": "messages",
        "technique": "lora",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0,
        "per_device_train_batch_size": PROMPTS_PER_STEP,
        "gradient_accumulation_steps": 1,
        "max_length": 512,
        "num_train_epochs": 1,
        "learning_rate": 2e-5,
        "targets": "pytorch",
    }
    sets = [item for key, value in answers.items() for item in ("--set", f"{key}={value}")]
    subprocess.run(
        [str(BIN / "tuneforge"), "new", str(ws), "--defaults", "--no-detect", *sets],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    data = ws / "data" / "bench.jsonl"
    rows = conversations(args.prompts)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sys.path.insert(0, str(ws))
    if args.model == "tiny":
        tokenizer, params = save_bench_model(data, ws / "bench-model")
        model = ws / "bench-model"
    else:
        from transformers import AutoTokenizer

        model = real_models.checkpoint("smollm2")
        tokenizer = AutoTokenizer.from_pretrained(str(model))
        params = None
    peer_data = work / "peer.jsonl"  # TRL's shape: the prompt's turns, and the label its reward reads
    peer_data.write_text(
        "".join(json.dumps({"prompt": r["messages"][:-1], "answer": r["messages"][-1]["content"]}) + "\n" for r in rows)
    )
    prompt_tokens = sum(
        len(
            tokenizer(tokenizer.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True))[
                "input_ids"
            ]
        )
        for r in rows
    )
    print(
        f"model {args.model}"
        + (f" ({params / 1e6:.1f}M parameters)" if params else "")
        + f"; {len(rows)} prompts ({prompt_tokens / len(rows):.0f} tokens each), {args.generations} answers of at most "
        f"{args.completion} tokens to each, {PROMPTS_PER_STEP} prompts per step"
    )
    common = [
        f"grpo.num_generations={args.generations}",
        f"grpo.max_completion_length={args.completion}",
        "grpo.loss_type=dapo",
        "grpo.beta=0",
    ]
    ours_cmd = [
        sys.executable,
        "-c",
        MEASURE,
        "train.py",
        f"model.name_or_path={model}",
        "data.path=data/bench.jsonl",
        "data.eval_fraction=0",
        "training.save_strategy=no",
        "training.report_to=none",
        "training.output_dir=outputs/bench",
        "training.logging_steps=1",
        "training.warmup_steps=0",
        *common,
    ]
    peer_cmd = [
        sys.executable,
        str(ROOT / "bench" / "trl_peer.py"),
        "grpo",
        str(model),
        str(peer_data),
        str(work / "trl"),
        "0",
        json.dumps({"generations": args.generations, "completion": args.completion, "prompts": PROMPTS_PER_STEP}),
    ]
    found: dict[str, list[dict]] = {"tuneforge": [], "trl": []}
    for _ in range(args.rounds):
        ours = run(ours_cmd, ws)
        history = json.loads((ws / "outputs" / "bench" / "log_history.json").read_text())
        end = next(e for e in reversed(history) if "train_runtime" in e)
        metrics = json.loads((ws / "outputs" / "bench" / "metrics.json").read_text())
        ours.update(seconds=end["train_runtime"], tokens=metrics["train_tokens_per_second"] * end["train_runtime"])
        ours["rewards"] = [e["reward"] for e in history if "reward" in e]
        found["tuneforge"].append(ours)
        found["trl"].append(run(peer_cmd, ws))
    summary = {}
    for name, results in found.items():
        best = min(results, key=lambda r: r["seconds"])
        summary[name] = {
            "tokens_per_s": best["tokens"] / best["seconds"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        }
        rewards = best.get("rewards") or [0.0]
        print(
            f"{name:<10} {summary[name]['tokens_per_s']:8.0f} prompt-and-answer tokens/s   peak RSS "
            f"{summary[name]['peak_rss_mb']:6.0f} MB   {best['tokens']:.0f} tokens in {best['seconds']:.1f} s   mean reward "
            f"{sum(rewards) / len(rewards):.3f}"
        )
    speed = summary["tuneforge"]["tokens_per_s"] / summary["trl"]["tokens_per_s"]
    memory = summary["tuneforge"]["peak_rss_mb"] / summary["trl"]["peak_rss_mb"]
    print(f"speed {speed:.2f}x TRL (goal >= 1.5x), peak memory {memory:.2f}x TRL (goal <= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
