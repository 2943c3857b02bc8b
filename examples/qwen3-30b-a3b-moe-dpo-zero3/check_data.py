"""Check the training data before training: what the model will see, and what is wrong with it.

    python check_data.py [--config configs/train.yaml] [section.key=value ...]

Takes the same config and overrides as train.py and loads only the tokenizer. Reports the examples, their
token lengths, what max_length cuts, duplicates, held-out examples that are also trained on, answers that
never teach the model to stop, and one example with the trained tokens marked: every problem in one run, errors
first (each named by file:line). Exit 2 if there is an error, 0 otherwise; warnings do not stop training.
"""

from __future__ import annotations

import argparse
import sys

from finetune.config import ConfigError, load_config
from finetune.data import DataError
from finetune.doctor import describe, examine
from finetune.modeling import load_tokenizer
from finetune.quiet import quiet_libraries


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        report = examine(config, load_tokenizer(config["model"]["name_or_path"], config["data"]))
    except (ConfigError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr, flush=True)
    print("\n".join(describe(report)), flush=True)
    if report.errors:
        print(f"{len(report.errors)} error(s) above: training stops until they are fixed", file=sys.stderr)
    return 2 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
