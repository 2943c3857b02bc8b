"""Configurations that need GPUs, validated by DeepSpeed's and accelerate's own parsers."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
import yaml


@pytest.fixture
def cuda_workspace(new_workspace):
    def make(**answers):
        return new_workspace(**{"hardware": "cuda", "gpu_memory_gb": 80, "gpu_count": 4, **answers})

    return make


@pytest.mark.parametrize(
    "distributed, stage, offload",
    [
        ("deepspeed-zero1", 1, False),
        ("deepspeed-zero2", 2, False),
        ("deepspeed-zero3", 3, False),
        ("deepspeed-zero3-offload", 3, True),
    ],
)
@pytest.mark.parametrize("technique", ["lora", "qlora", "full"])
def test_deepspeed_config_is_accepted_by_deepspeed(cuda_workspace, distributed, stage, offload, technique):
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    workspace = cuda_workspace(distributed=distributed, technique=technique)
    config = json.loads((workspace / "configs" / "deepspeed.json").read_text())
    train = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())["training"]
    assert train["deepspeed"] == "configs/deepspeed.json" and train["bf16"] is True
    hf = HfTrainerDeepSpeedConfig(config)
    args = TrainingArguments(
        output_dir=str(workspace / "outputs"),
        use_cpu=True,
        per_device_train_batch_size=train["per_device_train_batch_size"],
        gradient_accumulation_steps=train["gradient_accumulation_steps"],
    )
    hf.trainer_config_process(args)
    parsed = DeepSpeedConfig(hf.config)  # pydantic models: unknown or mistyped keys raise
    assert parsed.zero_config.stage == stage
    assert (parsed.zero_config.offload_param is not None) == offload
    assert (parsed.zero_config.offload_optimizer is not None) == offload


def test_deepspeed_parser_would_catch_a_bad_key(cuda_workspace):
    from deepspeed.runtime.config import DeepSpeedConfig

    config = json.loads((cuda_workspace(distributed="deepspeed-zero2") / "configs" / "deepspeed.json").read_text())
    config["zero_optimization"]["stage3_bogus"] = 1
    config.update(
        train_batch_size=16,
        train_micro_batch_size_per_gpu=4,
        gradient_accumulation_steps=1,
        gradient_clipping=1.0,
        bf16={"enabled": True},
        fp16={"enabled": False},
    )
    with pytest.raises(Exception, match="stage3_bogus"):
        DeepSpeedConfig(config)


@pytest.mark.parametrize("num_nodes", [1, 2])
def test_fsdp_config_is_accepted_by_accelerate_launch(cuda_workspace, num_nodes):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    workspace = cuda_workspace(distributed="fsdp", num_nodes=num_nodes)
    path = workspace / "configs" / "accelerate_fsdp.yaml"
    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    assert set(yaml.safe_load(path.read_text())["fsdp_config"]) <= known
    args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "train.py"]))
    assert args.use_fsdp and args.num_processes == 4 * num_nodes and args.num_machines == num_nodes
    with mock.patch.dict(os.environ, prepare_multi_gpu_env(args)):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.activation_checkpointing is True
    train = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())["training"]
    assert train["gradient_checkpointing"] is False  # FSDP checkpoints activations itself


def test_cuda_qlora_config_builds_a_bitsandbytes_config(cuda_workspace, monkeypatch):
    """load_base_model turns the rendered quantization section into the BitsAndBytesConfig from_pretrained gets."""
    import torch

    from helpers.project import WORKSPACE_TEMPLATE

    monkeypatch.syspath_prepend(str(WORKSPACE_TEMPLATE))
    from finetune import modeling

    workspace = cuda_workspace(technique="qlora", distributed="none", gpu_count=1)
    config = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())
    received = {}
    monkeypatch.setattr(modeling, "model_class", lambda name: "the class for " + name)
    monkeypatch.setattr(modeling, "from_pretrained", lambda cls, name, **kwargs: received.update(name=name, **kwargs))
    modeling.load_base_model(config)
    quantization = received["quantization_config"]
    assert received["name"] == config["model"]["name_or_path"] and received["dtype"] == torch.bfloat16
    assert (
        quantization.load_in_4bit
        and quantization.bnb_4bit_quant_type == "nf4"
        and quantization.bnb_4bit_use_double_quant
    )
    assert (
        quantization.bnb_4bit_compute_dtype == torch.bfloat16 and quantization.bnb_4bit_quant_storage == torch.bfloat16
    )
