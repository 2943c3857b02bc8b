"""The peer for bench/training.py (sft), bench/preference.py (dpo) and bench/grpo.py (grpo): TRL's SFTTrainer,
DPOTrainer or GRPOTrainer on the same model, data and hyperparameters, LoRA r16 on all linear layers, in fp32 on the CPU with gradient checkpointing off
(TRL's best on a CPU: its defaults, bf16 autocast and checkpointing on, run tens of times slower here). Run by those
benchmarks in its own process; needs `pip install trl==1.16.0`.

    python bench/trl_peer.py sft|dpo|grpo MODEL DATA OUTPUT_DIR [LORA_DROPOUT] [GRPO_SETTINGS_JSON]
"""

from __future__ import annotations

import json
import re
import resource
import string
import sys


def label_match(completions, answer, **kwargs) -> list[float]:
    """bench/grpo.py's reward, as the workspace's rewards.label_match computes it: 1 when the first line is the label,
    0.5 when the answer names it and no other label of the data's set, else 0."""
    scores = []
    for said, label in zip((c[0]["content"] if isinstance(c, list) else c for c in completions), answer):
        first = said.strip().splitlines()[0].strip().strip(string.punctuation + " ").lower() if said.strip() else ""
        named = {other for other in LABELS if re.search(rf"\b{re.escape(other)}\b", said.lower())}
        scores.append(1.0 if first == label.lower() else 0.5 if named == {label.lower()} else 0.0)
    return scores


LABELS: set[str] = set()


def grpo_config(common: dict, settings: str):
    from trl import GRPOConfig

    s = json.loads(settings)
    return GRPOConfig(
        **{**common, "per_device_train_batch_size": s["prompts"] * s["generations"]},  # TRL counts answers
        learning_rate=2e-5,
        num_generations=s["generations"],
        max_completion_length=s["completion"],
        loss_type="dapo",
        beta=0.0,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )


def main(
    mode: str, model_path: str, data_path: str, output_dir: str, lora_dropout: str = "0.05", settings: str = "{}"
) -> None:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, GRPOTrainer, SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32")
    dataset = load_dataset("json", data_files=data_path, split="train")
    common = {
        "output_dir": output_dir,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": 1,
        "max_length": 512,
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 42,
        "bf16": False,
        "gradient_checkpointing": False,
        "use_cpu": True,
    }
    if mode == "grpo":
        common.pop("max_length")
        common["logging_steps"] = 1
    config = {
        "sft": lambda: SFTConfig(**common, learning_rate=2e-4),
        "dpo": lambda: DPOConfig(**common, learning_rate=2e-5, beta=0.1),
        "grpo": lambda: grpo_config(common, settings),
    }[mode]()
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=float(lora_dropout), target_modules="all-linear", task_type="CAUSAL_LM"
    )
    if mode == "grpo":
        LABELS.update(label.lower() for label in dataset["answer"])
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=label_match,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
        )
    else:
        trainer = (SFTTrainer if mode == "sft" else DPOTrainer)(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
        )
    result = trainer.train()
    history = trainer.state.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = {"seconds": result.metrics["train_runtime"], "peak_rss_mb": peak_mb, "losses": losses}
    if mode == "grpo":  # its own count of prompt and answer tokens, and the rewards
        found["tokens"] = next(e["num_tokens"] for e in reversed(history) if "num_tokens" in e)
        found["rewards"] = [e["reward"] for e in history if "reward" in e]
    print(json.dumps(found))


if __name__ == "__main__":
    main(*sys.argv[1:7])
