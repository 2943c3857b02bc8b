"""How close tuneforge's memory estimate comes to the peak memory training really takes.

    .venv/bin/python bench/plan_accuracy.py [--size small] [--steps 3] [--only NAME]

Trains generated workspaces on thirteen CPU configurations (Llama-shaped models of 20M to 500M parameters with a
32000-id vocabulary; LoRA, QLoRA and full fine-tuning; batch and length varied; packing, gradient checkpointing
and LoRA dropout on and off), the figures in the catalog's hardware.yaml are fitted on, and seven held out on the two
real pretrained models (bench/real_models.py: SmolLM2-135M-Instruct, tied 49k-id embeddings; Gemma 3 270M, a
262k-id vocabulary) and on a random model of SmolVLM-256M's shape with pictures (its vision tower frozen, and trained
with train_vision=all), for a few steps each, with the workspace's own train.py on rows that fill
max_length, and sets the plan's estimate (`tuneforge plan`, the same numbers the README and the form show)
against the peak resident memory of the training process. On a CUDA machine the same command compares
against torch.cuda.max_memory_reserved (train.py writes it to metrics.json).

Goal, on each group: mean absolute error within 15 %, never underestimating by more than 10 %. The estimate is
for rows that fill max_length, as these do; shorter examples take less (the workspace's check_data.py says how
much of max_length a dataset fills).
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

import real_models

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VOCAB = 32000
MODELS = {  # name: Llama shape; parameters with the 32000-id vocabulary and untied embeddings
    "20m": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 688,
    },
    "60m": {
        "hidden_size": 512,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "intermediate_size": 1376,
    },
    "150m": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_key_value_heads": 4,
        "intermediate_size": 2048,
    },
    "500m": {
        "hidden_size": 1280,
        "num_hidden_layers": 20,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "intermediate_size": 3456,
    },
}
# SmolVLM-256M's shape (the catalog's smolvlm-256m-instruct and its idefics3 tower), random, with the smoke test's
# processor at the workspace's 512-pixel setting (64 image tokens a picture) and its 49,280-id vocabulary
SMOLVLM = {
    "architecture": "idefics3",
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49280,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
    "text_config": {"model_type": "llama", "head_dim": 64},
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
    },
    "scale_factor": 4,
}
PICTURES = {"scenario": "images", "dataset_format": "images", "packing": False}
CASES = {  # name: (model, answers)
    "20m-lora-b4-512": ("20m", {"technique": "lora", "per_device_train_batch_size": 4, "max_length": 512}),
    "20m-full-b8-256-nopack": (
        "20m",
        {"technique": "full", "per_device_train_batch_size": 8, "max_length": 256, "packing": False},
    ),
    "60m-lora-b2-1024-ckpt": (
        "60m",
        {"technique": "lora", "per_device_train_batch_size": 2, "max_length": 1024, "gradient_checkpointing": True},
    ),
    "60m-qlora-b4-512": ("60m", {"technique": "qlora", "per_device_train_batch_size": 4, "max_length": 512}),
    "150m-lora-b4-512": ("150m", {"technique": "lora", "per_device_train_batch_size": 4, "max_length": 512}),
    "150m-lora-b4-512-dropout": (
        "150m",
        {"technique": "lora", "per_device_train_batch_size": 4, "max_length": 512, "lora_dropout": 0.05},
    ),
    "150m-full-b2-512-ckpt": (
        "150m",
        {"technique": "full", "per_device_train_batch_size": 2, "max_length": 512, "gradient_checkpointing": True},
    ),
    "150m-lora-b2-1024-ckpt": (
        "150m",
        {"technique": "lora", "per_device_train_batch_size": 2, "max_length": 1024, "gradient_checkpointing": True},
    ),
    "150m-qlora-b2-1024-ckpt": (
        "150m",
        {"technique": "qlora", "per_device_train_batch_size": 2, "max_length": 1024, "gradient_checkpointing": True},
    ),
    "150m-lora-b1-256-ckpt": (
        "150m",
        {"technique": "lora", "per_device_train_batch_size": 1, "max_length": 256, "gradient_checkpointing": True},
    ),
    "150m-lora-b1-1024-ckpt": (
        "150m",
        {"technique": "lora", "per_device_train_batch_size": 1, "max_length": 1024, "gradient_checkpointing": True},
    ),
    "500m-lora-b2-512": ("500m", {"technique": "lora", "per_device_train_batch_size": 2, "max_length": 512}),
    "500m-full-b1-256-ckpt": (
        "500m",
        {"technique": "full", "per_device_train_batch_size": 1, "max_length": 256, "gradient_checkpointing": True},
    ),
    # held out: real pretrained models (bench/real_models.py), never used to fit the catalog's figures
    "smollm2-lora-r16-b8-128": (
        "smollm2",
        {"technique": "lora", "lora_r": 16, "per_device_train_batch_size": 8, "max_length": 128},
    ),
    "smollm2-lora-r32-b2-128": (
        "smollm2",
        {"technique": "lora", "lora_r": 32, "per_device_train_batch_size": 2, "max_length": 128},
    ),
    "smollm2-lora-b4-512": ("smollm2", {"technique": "lora", "per_device_train_batch_size": 4, "max_length": 512}),
    "smollm2-full-b4-256": ("smollm2", {"technique": "full", "per_device_train_batch_size": 4, "max_length": 256}),
    "smollm2-qlora-b4-256": ("smollm2", {"technique": "qlora", "per_device_train_batch_size": 4, "max_length": 256}),
    "gemma3-270m-lora-b8-128": (
        "gemma3-270m",
        {"technique": "lora", "per_device_train_batch_size": 8, "max_length": 128},
    ),
    "gemma3-270m-lora-b2-512-ckpt": (
        "gemma3-270m",
        {"technique": "lora", "per_device_train_batch_size": 2, "max_length": 512, "gradient_checkpointing": True},
    ),
    # held out: conversations about the images scenario's sample pictures, the vision tower frozen or trained
    "smolvlm-lora-b8-96-images": (
        "smolvlm",
        {"technique": "lora", "per_device_train_batch_size": 8, "max_length": 96, **PICTURES},
    ),
    "smolvlm-lora-b8-96-images-tower": (
        "smolvlm",
        {"technique": "lora", "per_device_train_batch_size": 8, "max_length": 96, "train_vision": "all", **PICTURES},
    ),
}
SMALL = ["20m-lora-b4-512", "20m-full-b8-256-nopack"]  # --size small: a check of this script
# runs a script and prints the peak resident memory of its process
MEASURE = (
    "import json, resource, runpy, sys; sys.argv = sys.argv[1:]\ncode = 0\n"
    "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e:\n    code = e.code or 0\n"
    "print('BENCH ' + json.dumps({'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))\n"
    "sys.exit(code)"
)


def tuneforge(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "tuneforge"), *args], env=env, capture_output=True, text=True, check=True)


def build_model(folder: Path, shape: dict, env: dict) -> None:
    """A random Llama of this shape with a tokenizer trained on the rows it will see (weights do not change memory)."""
    spec = {
        "architecture": "llama",
        "vocab_size": VOCAB,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        **shape,
    }
    code = (
        "import json, sys; from pathlib import Path; from finetune.tiny import build_model, build_tokenizer, corpus; "
        "t = build_tokenizer(corpus(sys.argv[1]), 4000); "
        "m = build_model(json.loads(sys.argv[2]), t); m.save_pretrained(sys.argv[3]); t.save_pretrained(sys.argv[3])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(folder.parents[1] / "rows.jsonl"), json.dumps(spec), str(folder)],
        cwd=ROOT / "templates" / "workspace",
        env=env,
        check=True,
        capture_output=True,
    )


def build_image_model(folder: Path, env: dict) -> None:
    """A random model of SmolVLM-256M's shape, its tokenizer trained on the images scenario's sample conversations."""
    from tuneforge import catalog

    spec = {**SMOLVLM, "processor": catalog.load("architectures")["idefics3"]["tiny"]["processor"]}
    code = (
        "import json, sys; from pathlib import Path; from finetune.tiny import save_tiny_model; "
        "save_tiny_model(json.loads(sys.argv[1]), sys.argv[2], 4000, Path(sys.argv[3]), images=True)"
    )
    sample = ROOT / "templates" / "includes" / "samples" / "images" / "images.jsonl"
    subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec), str(sample), str(folder)],
        cwd=ROOT / "templates" / "workspace",
        env=env,
        check=True,
        capture_output=True,
    )


def rows(path: Path, count: int = 64) -> None:
    """Plain-text rows long enough that every one fills max_length after tokenization."""
    rng = random.Random(0)
    words = "water light soil root leaf pot stem bloom seed shade frost sun rain clay moss fern".split()  # noqa: SIM905  reads as words
    path.write_text(
        "".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(3000))}) + "\n" for _ in range(count))
    )


def run_case(name: str, work: Path, env: dict, steps: int) -> dict:
    model, answers = CASES[name]
    if model in real_models.MODELS:
        folder = real_models.checkpoint(model)
    else:
        folder = work / "models" / model
        if not folder.exists():
            build_image_model(folder, env) if model == "smolvlm" else build_model(folder, MODELS[model], env)
    sets = [
        f"--set={k}={str(v).lower() if isinstance(v, bool) else v}"
        for k, v in {
            "model": str(folder),
            "hardware": "cpu",
            "scenario": "domain",
            "dataset_format": "text",
            "targets": "pytorch",
            "gradient_accumulation_steps": 1,
            "packing": True,
            "gradient_checkpointing": False,
            **answers,
        }.items()
    ]
    plan = json.loads(
        subprocess.run(
            [str(BIN / "tuneforge"), "plan", "--defaults", "--json", *sets],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    ws = work / name
    if not ws.exists():
        tuneforge("new", str(ws), "--defaults", *sets, env=env)
    if answers.get("scenario") != "images":  # pictures: the scenario's own sample, most rows 85 tokens
        (ws / "data" / "sample.jsonl").write_text((work / "rows.jsonl").read_text())
    command = [
        sys.executable,
        "-c",
        MEASURE,
        "train.py",
        f"training.max_steps={steps}",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.report_to=none",
        "data.eval_fraction=0",
        "training.logging_steps=1",
    ]
    result = subprocess.run(command, cwd=ws, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{name}: train.py failed\n{result.stderr[-3000:]}")
    measured = json.loads(next(line for line in reversed(result.stdout.splitlines()) if line.startswith("BENCH "))[6:])
    metrics = json.loads((ws / "outputs" / "run" / "metrics.json").read_text())
    peak = metrics.get("peak_gpu_reserved_gb") or measured["peak_rss_gb"]
    estimate = plan["memory"]["total_gb"]
    return {
        "case": name,
        "params_m": round(plan["model"]["params_b"] * 1000),
        "estimate_gb": estimate,
        "measured_gb": round(peak, 2),
        "error": round((estimate - peak) / peak, 3),
        "parts": {
            k: plan["memory"][k] for k in ("weights_gb", "optimizer_gb", "activations_gb", "logits_gb", "overhead_gb")
        },
    }


def held_out(case: str) -> bool:
    return CASES[case][0] in (*real_models.MODELS, "smolvlm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["full", "small"], default="full")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="these cases")
    parser.add_argument("--workdir", type=Path, help="keep models and workspaces here for a second run")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tuneforge-bench-plan-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TUNEFORGE_CACHE_DIR": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT / "templates" / "workspace"),
    }
    if not (work / "rows.jsonl").exists():
        rows(work / "rows.jsonl")
    names = args.only if args.only else (SMALL if args.size == "small" else list(CASES))
    results = []
    print(f"{'case':<26} {'params':>7} {'estimate':>9} {'measured':>9} {'error':>7}")
    for name in names:
        result = run_case(name, work, env, args.steps)
        results.append(result)
        print(
            f"{name:<26} {result['params_m']:>6}M {result['estimate_gb']:>8.2f}G {result['measured_gb']:>8.2f}G "
            f"{result['error']:>+7.1%}",
            flush=True,
        )
    for title, group in (
        ("random models (the catalog's figures are fitted on these)", [r for r in results if not held_out(r["case"])]),
        ("real models (held out)", [r for r in results if held_out(r["case"])]),
    ):
        if group:
            errors = [r["error"] for r in group]
            print(
                f"{title}: mean absolute error {sum(abs(e) for e in errors) / len(errors):.1%} (goal <= 15%), "
                f"largest underestimate {min(errors):+.1%} (goal >= -10%), largest overestimate {max(errors):+.1%}"
            )
    (work / "plan_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"details: {work / 'plan_accuracy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
