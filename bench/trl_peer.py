"""The peer for bench/training.py (sft) and bench/preference.py (dpo): TRL's SFTTrainer or DPOTrainer on the same
model, data and hyperparameters, LoRA r16 on all linear layers, in fp32 on the CPU with gradient checkpointing off
(TRL's best on a CPU: its defaults, bf16 autocast and checkpointing on, run tens of times slower here). Run by those
benchmarks in its own process; needs `pip install trl==1.16.0`.

    python bench/trl_peer.py sft|dpo MODEL DATA OUTPUT_DIR [LORA_DROPOUT]
"""

from __future__ import annotations

import json
import resource
import sys


def main(mode: str, model_path: str, data_path: str, output_dir: str, lora_dropout: str = "0.05") -> None:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

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
    config = (
        SFTConfig(**common, learning_rate=2e-4) if mode == "sft" else DPOConfig(**common, learning_rate=2e-5, beta=0.1)
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=float(lora_dropout), target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = (SFTTrainer if mode == "sft" else DPOTrainer)(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
    )
    result = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": result.metrics["train_runtime"], "peak_rss_mb": peak_mb, "losses": losses}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
