"""Merge the trained adapter into the base model and save a standalone model with its tokenizer.

    python merge.py [--config configs/train.yaml] [section.key=value ...]

For QLoRA the adapter is merged into the base loaded in 16-bit, not into the 4-bit weights.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from finetune.config import ConfigError, load_config
from finetune.files import new_folder
from finetune.hub import base_model_of
from finetune.modeling import keep_base_files, load_base_of, load_tokenizer, stop_at_end_of_turn
from finetune.quiet import quiet_libraries


def merge(config: dict) -> Path:
    adapter_dir = Path(config["merge"]["adapter_dir"])
    output_dir = Path(config["merge"]["output_dir"])
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"{adapter_dir} not found: train first (python train.py)")
    tokenizer = load_tokenizer(str(adapter_dir), config["data"])
    base_name = base_model_of(adapter_dir) or config["model"]["name_or_path"]
    if not config.get("peft"):
        # full fine-tuning: the trained model is already standalone
        with new_folder(output_dir) as partial:
            shutil.copytree(
                adapter_dir, partial, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", "runs")
            )
            keep_base_files(base_name, partial)
        return output_dir
    from peft import PeftModel

    # the base the adapter was trained on, as peft recorded it (train.py model.name_or_path=... is then enough)
    base = load_base_of(adapter_dir, config)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    stop_at_end_of_turn(model, tokenizer)
    with new_folder(output_dir) as partial:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        keep_base_files(base_name, partial)
    return output_dir


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    try:
        out = merge(load_config(args.config, args.overrides))
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"merged model saved to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
