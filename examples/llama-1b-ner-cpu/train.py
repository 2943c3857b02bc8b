"""Fine-tune the model as configs/train.yaml says.

    python train.py [--config configs/train.yaml] [--resume] [section.key=value ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

from finetune.config import ConfigError, load_config
from finetune.data import Collator, DataError, build_datasets
from finetune.modeling import add_adapter, count_trainable, load_base_model, load_tokenizer
from finetune.plot import plot_losses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in training.output_dir")
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
    if args.get("report_to", "auto") == "auto":
        args["report_to"] = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    if args.get("gradient_checkpointing"):
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    args["ddp_find_unused_parameters"] = False
    args["remove_unused_columns"] = False
    args.setdefault("save_only_model", False)
    args.setdefault("include_num_input_tokens_seen", "non_padding")  # for train_tokens_per_second in metrics.json
    return TrainingArguments(**args)


def train(config: dict, resume: bool = False) -> dict:
    from transformers import set_seed

    from finetune.trainer import AnswerOnlyTrainer

    seed = config["training"]["seed"]
    set_seed(seed)
    tokenizer = load_tokenizer(config["model"]["name_or_path"])
    train_set, eval_set = build_datasets(config, tokenizer, seed)
    args = training_arguments(config, has_eval=bool(eval_set))
    model = load_base_model(config)
    model.config.use_cache = False
    model = add_adapter(model, config, args.gradient_checkpointing)
    trainable, total = count_trainable(model)
    if args.process_index == 0:
        print(f"training {trainable:,} of {total:,} parameters on {len(train_set)} examples "
              f"({len(eval_set)} held out)", flush=True)
    trainer = AnswerOnlyTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set or None,
        data_collator=Collator(tokenizer.pad_token_id, packing=config["data"].get("packing", False),
                               max_length=config["data"]["max_length"]),
        processing_class=tokenizer,
    )
    resume_from = resume and _last_checkpoint(args.output_dir)
    trainer.train(resume_from_checkpoint=resume_from or None)
    trainer.save_model(args.output_dir)
    metrics = {"train_loss": next((e["train_loss"] for e in reversed(trainer.state.log_history) if "train_loss" in e), None),
               "global_step": trainer.state.global_step}
    if eval_set:
        eval_loss = trainer.evaluate()["eval_loss"]
        metrics.update(eval_loss=eval_loss, eval_perplexity=math.exp(min(eval_loss, 50)))
    metrics.update(peak_memory(), train_tokens_per_second=_tokens_per_second(trainer))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.output_dir)
        out = Path(args.output_dir)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")
        plot = plot_losses(trainer.state.log_history, out / "loss.png")
        print(f"saved to {out}/ (metrics.json{', loss.png' if plot else ''}): {json.dumps(metrics)}", flush=True)
    return metrics


def peak_memory() -> dict:
    """The most accelerator memory this process held, to set against tuneforge's estimate (GPU only)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_gpu_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
            "peak_gpu_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2)}


def _tokens_per_second(trainer) -> float | None:
    runtime = next((e["train_runtime"] for e in reversed(trainer.state.log_history) if "train_runtime" in e), None)
    tokens = getattr(trainer.state, "num_input_tokens_seen", 0)
    return round(tokens / runtime, 1) if runtime and tokens else None


def _last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(output_dir).is_dir():
        return None
    last = get_last_checkpoint(output_dir)
    if last is None:
        print(f"no checkpoint in {output_dir}; starting from scratch", flush=True)
    return last


def main(argv: list[str] | None = None) -> int:
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
