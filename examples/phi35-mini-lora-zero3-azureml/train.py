"""Fine-tune the model as configs/train.yaml says.

python train.py [--config configs/train.yaml] [--resume] [section.key=value ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

from finetune.batching import Collator
from finetune.config import ConfigError, load_config
from finetune.data import DataError
from finetune.doctor import examine
from finetune.encoding import build_datasets
from finetune.files import write_text
from finetune.modeling import add_adapter, count_trainable, load_base_model, load_tokenizer, stop_at_end_of_turn
from finetune.plot import plot_losses, plot_rewards
from finetune.quiet import quiet_libraries


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in training.output_dir"
    )
    # the deepspeed launcher passes the process's rank this way; the Trainer reads it from the environment
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    return parser.parse_args(argv)


def training_arguments(config: dict, has_eval: bool):
    import torch
    from transformers import TrainingArguments

    args = dict(config["training"])
    if args.get("bf16") and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        print("this GPU has no bf16 (compute capability < 8.0): training in fp16 instead", flush=True)
        args["bf16"], args["fp16"] = False, True
    if not has_eval:
        args["eval_strategy"] = "no"
    args["report_to"] = tracking(args.get("report_to", "none"))
    if args.get("gradient_checkpointing"):
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    args["ddp_find_unused_parameters"] = False
    args["remove_unused_columns"] = False
    args.setdefault("save_only_model", False)
    args.setdefault("dataloader_pin_memory", torch.cuda.is_available())  # pinning needs an accelerator
    # for train_tokens_per_second in metrics.json (GRPO's trainer counts its prompts and sampled answers itself)
    args.setdefault("include_num_input_tokens_seen", "no" if config.get("grpo") else "non_padding")
    return TrainingArguments(**args)


TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "none": None}


def tracking(tracker: str) -> str:
    """Check the experiment tracker and point it somewhere that works offline unless told otherwise."""
    if tracker not in TRACKERS:
        raise ConfigError(f"training.report_to must be one of {', '.join(TRACKERS)}, got {tracker!r}")
    module = TRACKERS[tracker]
    if module and importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"training.report_to={tracker} needs the {module} package: pip install -r requirements.txt, "
            "or training.report_to=none"
        )
    # Azure ML and an MLflow server set MLFLOW_TRACKING_URI; otherwise a local store beside the workspace, in
    # MLflow's file format, which needs no database (`mlflow ui --backend-store-uri mlruns` shows it)
    if tracker == "mlflow" and "MLFLOW_TRACKING_URI" not in os.environ:
        os.environ["MLFLOW_TRACKING_URI"] = Path("mlruns").resolve().as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if tracker == "wandb" and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")  # `wandb sync wandb/offline-run-*` uploads it later
    return tracker


def objective_parts(config: dict, tokenizer, seed: int) -> tuple[list, list, type, dict, str]:
    """(training rows, held-out rows, the Trainer, its arguments beyond the common ones, what a row is) for the
    config's objective: supervised, a preference one (preference:) or GRPO (grpo:)."""
    if config.get("preference"):  # finetune/preference*.py: in workspaces generated with a preference objective
        from finetune.preference import PairCollator, build_preference_datasets
        from finetune.preference_trainer import PreferenceTrainer

        rows = build_preference_datasets(config, tokenizer, seed)
        collator = PairCollator(tokenizer.pad_token_id)
        unit = "answers" if config["preference"]["objective"] == "kto" else "pairs"
        return *rows, PreferenceTrainer, {"data_collator": collator, "preference": config["preference"]}, unit
    if config.get("grpo"):  # finetune/grpo*.py and rewards.py: in workspaces generated with objective grpo
        import rewards
        from finetune.grpo import PromptCollator, build_grpo_datasets, reward_functions
        from finetune.grpo_trainer import GRPOTrainer

        train_rows, eval_rows, shared = build_grpo_datasets(config, tokenizer, seed)
        extra = {
            "data_collator": PromptCollator(tokenizer.pad_token_id),
            "grpo": config["grpo"],
            "rewards": reward_functions(rewards, config["grpo"]["rewards"]),
            "constants": shared,
        }
        return train_rows, eval_rows, GRPOTrainer, extra, "prompts"
    from finetune.trainer import AnswerOnlyTrainer

    data = config["data"]
    if data["format"] == "images":  # finetune/images.py: each batch's pixels made from its rows' pictures
        from finetune.images import ImageCollator

        if data.get("packing"):
            raise ConfigError("data.packing: conversations about pictures are not packed; set data.packing=false")

        return (
            *build_datasets(config, tokenizer, seed),
            AnswerOnlyTrainer,
            {"data_collator": ImageCollator(tokenizer.processor)},
            "conversations",
        )
    collator = Collator(tokenizer.pad_token_id, packing=data.get("packing", False), max_length=data["max_length"])
    return *build_datasets(config, tokenizer, seed), AnswerOnlyTrainer, {"data_collator": collator}, "examples"


def train(config: dict, resume: bool = False) -> dict:
    from transformers import set_seed

    seed = config["training"]["seed"]
    set_seed(seed)
    tokenizer = load_tokenizer(config["model"]["name_or_path"], config["data"])
    check_data(config, tokenizer, first=is_first_process())
    train_set, eval_set, trainer_class, extra, unit = objective_parts(config, tokenizer, seed)
    args = training_arguments(config, has_eval=bool(eval_set))
    model = load_base_model(config)
    stop_at_end_of_turn(model, tokenizer)
    model.config.use_cache = False
    model = add_adapter(model, config, args.gradient_checkpointing)
    trainable, total = count_trainable(model)
    if args.process_index == 0:
        objective = (config.get("preference") or {}).get("objective") or ("grpo" if config.get("grpo") else None)
        what = f"{objective} on {len(train_set)} {unit}" if objective else f"{len(train_set)} {unit}"
        print(f"training {trainable:,} of {total:,} parameters, {what} ({len(eval_set)} held out)", flush=True)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set or None,
        processing_class=tokenizer,
        **extra,
    )
    resume_from = resume and last_complete_checkpoint(args.output_dir, speak=args.process_index == 0)
    already = tokens_seen(resume_from) if resume_from else 0  # read now: training may rotate that checkpoint away
    trainer.train(resume_from_checkpoint=resume_from or None)
    trainer.save_model(args.output_dir)
    metrics = {
        "train_loss": next((e["train_loss"] for e in reversed(trainer.state.log_history) if "train_loss" in e), None),
        "global_step": trainer.state.global_step,
    }
    if eval_set:
        scores = trainer.evaluate()
        metrics["eval_loss"] = scores["eval_loss"]
        if config.get("preference"):  # how often the held-out chosen answer wins, and by how much
            metrics.update({k: v for k, v in scores.items() if k.startswith("eval_rewards/")})
        elif config.get("grpo"):  # the held-out prompts' sampled answers: their reward, and each function's
            metrics.update({k: v for k, v in scores.items() if k == "eval_reward" or k.endswith("/mean")})
        else:
            metrics["eval_perplexity"] = math.exp(min(scores["eval_loss"], 50))
    metrics.update(peak_memory(), train_tokens_per_second=_tokens_per_second(trainer, already))
    if trainer.is_world_process_zero():
        getattr(tokenizer, "processor", tokenizer).save_pretrained(
            args.output_dir
        )  # with a processor: it and its tokenizer
        out = Path(args.output_dir)
        write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text(out / "log_history.json", json.dumps(trainer.state.log_history, indent=2) + "\n")
        plots = [plot_losses(trainer.state.log_history, out / "loss.png")]
        if config.get("grpo"):
            plots.append(plot_rewards(trainer.state.log_history, out / "reward.png"))
        charts = "".join(f", {p.name}" for p in plots if p)
        print(f"saved to {out}/ (metrics.json{charts}): {json.dumps(metrics)}", flush=True)
    return metrics


def check_data(config: dict, tokenizer, first: bool = True) -> None:
    """The data doctor on the first 2000 examples: its errors stop here, all of them named, before a model is
    loaded."""
    report = examine(config, tokenizer, limit=2000)
    if report.errors:
        raise DataError("\n".join(report.errors))
    if first:
        for warning in report.warnings:
            print(f"data warning: {warning} (python check_data.py shows more)", flush=True)


def is_first_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def peak_memory() -> dict:
    """The most accelerator memory this process held, to set against tuneforge's estimate (GPU only)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "peak_gpu_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "peak_gpu_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2),
    }


def _tokens_per_second(trainer, already: int = 0) -> float | None:
    """Tokens trained in this run (not those before a resume) over this run's time."""
    runtime = next((e["train_runtime"] for e in reversed(trainer.state.log_history) if "train_runtime" in e), None)
    tokens = getattr(trainer.state, "num_input_tokens_seen", 0) - already
    return round(tokens / runtime, 1) if runtime and tokens > 0 else None


def tokens_seen(checkpoint: str) -> int:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)


WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None. The Trainer writes trainer_state.json last, so a
    save that was killed part-way has none, or a cut-short one."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "it has no trainer_state.json (its save was interrupted)"
    try:
        json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (ValueError, KeyError, TypeError):
        return "its trainer_state.json is cut short or unreadable (its save was interrupted)"
    deepspeed = any(folder.glob("global_step*"))
    if not deepspeed and not any((folder / name).is_file() for name in WEIGHTS):
        return "it holds no model weights"
    if not deepspeed and not (folder / "optimizer.pt").is_file():
        return "it holds no optimizer state (saved with save_only_model)"
    return None


def last_complete_checkpoint(output_dir: str, speak: bool = True) -> str | None:
    """The newest checkpoint in output_dir that can be resumed from; incomplete ones are named and skipped."""
    say = (lambda text: print(text, flush=True)) if speak else (lambda text: None)
    folder = Path(output_dir)
    steps = (
        sorted(
            (int(m.group(1)), p)
            for p in folder.glob("checkpoint-*")
            if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
        )
        if folder.is_dir()
        else []
    )
    for _, checkpoint in reversed(steps):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            say(f"resuming from {checkpoint}")
            return str(checkpoint)
        say(f"skipping {checkpoint}: {problem}")
    say(f"no complete checkpoint in {output_dir}; starting from scratch")
    return None


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        train(config, resume=args.resume)
    except (ConfigError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
