"""This workspace's own checks: run `pytest` here. Offline and fast; smoke.py runs the real pipeline."""

from pathlib import Path

import pytest
import yaml

from finetune.config import ConfigError, load_config
from finetune.data import read_examples
from finetune.encoding import IGNORE_INDEX, encode
from finetune.tiny import build_tokenizer, corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "configs" / "train.yaml")


def test_train_config_loads_and_overrides(config):
    assert {"model", "data", "training", "merge"} <= config.keys()
    changed = load_config(ROOT / "configs" / "train.yaml", ["training.learning_rate=1e-5"])
    assert changed["training"]["learning_rate"] == 1e-5
    with pytest.raises(ConfigError, match="Did you mean"):
        load_config(ROOT / "configs" / "train.yaml", ["training.learnin_rate=1"])


def test_training_section_is_accepted_by_transformers(config):
    import train

    args = train.training_arguments(
        {
            **config,
            "training": {
                **config["training"],
                "bf16": False,
                "fp16": False,
                "output_dir": str(ROOT / "outputs" / "check"),
            },
        },
        True,
    )
    assert args.learning_rate == config["training"]["learning_rate"]


def test_sample_data_reads_and_has_answers_to_learn(config):
    data = config["data"]
    if not Path(data["path"]).exists() and not (ROOT / data["path"]).exists():
        pytest.skip(f"{data['path']} is not a local file")
    path = str(ROOT / data["path"])
    examples = read_examples(path, data["format"])
    tokenizer = build_tokenizer(corpus(path), 512)
    encoded = [encode(e, tokenizer, data["max_length"]) for e in examples]
    assert all(e is not None for e in encoded)
    assert all(any(label != IGNORE_INDEX for label in e["labels"]) for e in encoded)


def test_smoke_config_names_the_architecture(config):
    smoke = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    assert smoke["tiny_model"]["architecture"] == config["model"]["architecture"]
