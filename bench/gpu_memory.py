"""Peak GPU memory and training speed of generated workspaces on a real GPU, against tuneforge's estimate.

    python bench/gpu_memory.py prepare            # here: render the workspaces and the plan's estimates into gpu/
    python bench/gpu_memory.py run --out DIR      # on the GPU machine: train each workspace a few steps, write DIR/gpu_memory.json

Each workspace trains its own train.py on a randomly initialised model of the real architecture and size
(weights do not change memory or speed), on text rows of max_length tokens, batch 4, bf16, gradient
checkpointing: the plan's setting. The report sets the measured peak (torch's max reserved) against the
plan's estimate for the same answers.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / "gpu"
CASES = {  # name: answers
    "llama-1b-lora": {"model": "llama-3.2-1b-instruct", "technique": "lora"},
    "phi35-mini-lora": {"model": "phi-3.5-mini-instruct", "technique": "lora"},
    "phi35-mini-qlora": {"model": "phi-3.5-mini-instruct", "technique": "qlora"},
}
COMMON = {
    "hardware": "cuda",
    "gpu_count": 1,
    "gpu_memory_gb": 141,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_length": 2048,
    "gradient_checkpointing": True,
    "targets": ["pytorch"],
    "project_name": "gpu",
}


def prepare(workspaces: Path = GPU_DIR) -> None:
    sys.path.insert(0, str(ROOT / "generator"))
    from tuneforge.planning.answers import Given
    from tuneforge.planning.plan import resolve
    from tuneforge.rendering import render

    workspaces.mkdir(parents=True, exist_ok=True)
    estimates = {}
    for name, answers in CASES.items():
        given = Given()
        given.add({**COMMON, **answers}, "bench")
        plan = resolve(given)
        dest = workspaces / name
        if dest.exists():
            subprocess.run(["rm", "-rf", str(dest)], check=True)
        render.render_workspace(dest, plan.copier_data())
        estimates[name] = {
            "estimate_gb": plan.memory.total_gb,
            "parts": plan.memory.as_dict(),
            "shape": plan.facts["shape"],
            "architecture": plan.facts["architecture"],
        }
        print(f"{name}: estimate {plan.memory.total_gb} GB")
    (workspaces / "plan.json").write_text(json.dumps(estimates, indent=2) + "\n")


def long_rows(path: Path, words: list[str], rows: int, words_per_row: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(words_per_row))}) + "\n")


def build_model(workspace: Path, shape: dict, architecture: str, out: Path, layers: int | None = None) -> None:
    """A random model of the real shape, in bf16, with the workspace's own tiny tokenizer."""
    sys.path.insert(0, str(workspace))
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from finetune.tiny import build_tokenizer, corpus

    tokenizer = build_tokenizer(corpus(str(workspace / "data" / "sample.jsonl")), 512)
    spec = {**shape, **({"num_hidden_layers": layers} if layers else {})}
    extra = (
        {"original_max_position_embeddings": 4096, "max_position_embeddings": 4096, "rope_scaling": None}
        if architecture == "phi3"
        else {}
    )
    config = AutoConfig.for_model(
        architecture,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec,
        **extra,
    )
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    sys.path.remove(str(workspace))
    for name in [m for m in sys.modules if m == "finetune" or m.startswith("finetune.")]:
        del sys.modules[name]


# --tiny: every step of `run` on a model of a few thousand parameters, to check this script without a GPU
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 1024,
}


def run(
    out: Path, layers: int | None = None, max_length: int = 2048, workspaces: Path = GPU_DIR, tiny: bool = False
) -> None:
    estimates = json.loads((workspaces / "plan.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in CASES:
        workspace = workspaces / name
        model_dir = workspaces / "models" / name
        started = time.time()
        shape = {**estimates[name]["shape"], **(TINY if tiny else {})}
        build_model(workspace, shape, estimates[name]["architecture"], model_dir, layers)
        words = (workspace / "data" / "sample.jsonl").read_text().split()
        long_rows(workspace / "data" / "long.jsonl", words, 32, 2600)
        command = [
            sys.executable,
            "train.py",
            f"model.name_or_path={model_dir}",
            "data.path=data/long.jsonl",
            "data.format=text",
            "data.eval_fraction=0",
            "training.max_steps=6",
            "training.save_strategy=no",
            "training.eval_strategy=no",
            "training.report_to=none",
            "training.logging_steps=1",
            "training.output_dir=outputs/run",
            f"data.max_length={max_length}",
        ]
        import torch

        if not torch.cuda.is_available():
            command += ["training.bf16=false", "model.torch_dtype=float32"]  # the quick CPU check of this script
        result = subprocess.run(command, cwd=workspace, capture_output=True, text=True, check=False)
        entry = {
            "estimate_gb": estimates[name]["estimate_gb"],
            "seconds": round(time.time() - started, 1),
            "returncode": result.returncode,
        }
        if result.returncode == 0:
            metrics = json.loads((workspace / "outputs" / "run" / "metrics.json").read_text())
            entry.update({k: v for k, v in metrics.items() if k.startswith(("peak_", "train_tokens"))})
            if "peak_gpu_reserved_gb" in entry:
                entry["measured_over_estimate"] = round(entry["peak_gpu_reserved_gb"] / entry["estimate_gb"], 2)
        else:
            entry["error"] = result.stderr[-3000:]
        report[name] = entry
        print(name, json.dumps(entry), flush=True)
    (out / "gpu_memory.json").write_text(json.dumps(report, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "run"])
    parser.add_argument("--out", default=str(GPU_DIR))
    parser.add_argument(
        "--layers", type=int, help="fewer layers than the real model (a quick check of this script on CPU)"
    )
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument(
        "--workspaces", default=str(GPU_DIR), help="where prepare renders the workspaces and run finds them"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="run: a tiny model of each architecture (a check of this script)"
    )
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(Path(args.workspaces))
    else:
        run(Path(args.out), args.layers, args.max_length, Path(args.workspaces), tiny=args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
