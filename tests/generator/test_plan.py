"""Rules and defaults: impossible combinations are refused with reasons and alternatives; defaults
follow hardware, technique and priority; an explicit answer always wins."""

import pytest

from tuneforge.planning.answers import AnswerError, Given
from tuneforge.planning.fit import leanest
from tuneforge.planning.plan import resolve


def plan_for(**answers):
    given = Given()
    given.add(answers, "--set")
    return resolve(given)


@pytest.mark.parametrize(
    "answers, key, words, alternative",
    [
        ({"hardware": "mps", "technique": "qlora"}, "technique", "bitsandbytes", "technique=lora"),
        ({"hardware": "mps", "distributed": "deepspeed-zero2"}, "distributed", "MPS", "distributed=none"),
        ({"hardware": "cpu", "distributed": "fsdp"}, "distributed", "FSDP", "distributed=ddp"),
        (
            {"hardware": "cpu", "distributed": "deepspeed-zero3-offload"},
            "distributed",
            "offload",
            "distributed=deepspeed-zero3",
        ),
        ({"hardware": "cuda", "distributed": "ddp", "gpu_count": 1}, "distributed", "only one", "distributed=none"),
        ({"hardware": "cuda", "gpu_count": 4, "distributed": "none"}, "distributed", "4 devices", "distributed=ddp"),
        (
            {"compute": "foundry-serverless", "model": "qwen2.5-7b-instruct"},
            "compute",
            "does not offer",
            "model=phi-3-mini-4k-instruct",
        ),
        (
            {"compute": "foundry-serverless", "model": "phi-3-mini-4k-instruct", "technique": "dora"},
            "technique",
            "own LoRA",
            "technique=lora",
        ),
        ({"compute": "kaito", "model": "llama-3.2-1b-instruct"}, "compute", "no tuning preset", "compute=local"),
        (
            {"compute": "kaito", "model": "phi-3-mini-4k-instruct", "technique": "full"},
            "technique",
            "only lora and qlora",
            "technique=lora",
        ),
        (
            {"targets": "kaito", "model": "qwen2.5-0.5b-instruct"},
            "targets",
            "no inference preset",
            "targets=azureml-endpoint",
        ),
        (
            {"adapter_export": "adapters", "technique": "dora"},
            "adapter_export",
            "cannot be exported",
            "adapter_export=merged",
        ),
        (
            {"adapter_export": "adapters", "targets": "pytorch"},
            "adapter_export",
            "need an ONNX target",
            "targets=onnx-cpu",
        ),
        ({"max_length": 100000, "model": "qwen2.5-0.5b-instruct"}, "max_length", "at most", "max_length=32768"),
        (
            {"hardware": "cuda", "gpu_memory_gb": 2, "model": "phi-4", "technique": "lora"},
            "model",
            "leanest",
            "a smaller model",
        ),
        ({"compute": "azureml", "hardware": "mps"}, "hardware", "Azure ML", "hardware=cuda"),
        ({"scenario": "images", "model": "qwen3-0.6b"}, "model", "reads no pictures", "model=smolvlm-256m-instruct"),
        (
            {"scenario": "images", "model": "mistral-small-3.1-24b-instruct"},
            "model",
            "reads no pictures",
            "model=gemma-3-4b-it",
        ),
        ({"scenario": "images", "targets": "pytorch,gguf"}, "targets", "mmproj", "targets=pytorch"),
        ({"scenario": "images", "objective": "grpo"}, "objective", "no such check", "objective=sft"),
        ({"scenario": "images", "objective": "dpo"}, "objective", "preferred and rejected", "objective=sft"),
        ({"train_vision": "all", "model": "qwen3-0.6b"}, "train_vision", "no vision tower", "train_vision=none"),
        ({"scenario": "images", "packing": True}, "packing", "pictures go with its own row", "packing=false"),
        ({"objective": "kto", "packing": True}, "packing", "scored whole", "packing=false"),
        ({"objective": "grpo", "packing": True}, "packing", "grpo samples answers", "packing=false"),
        (
            {"train_vision": "projector", "model": "smolvlm-256m-instruct"},
            "train_vision",
            "holds no pictures",
            "scenario=images",
        ),
        (
            {"train_vision": "projector", "model": "mistral-small-3.1-24b-instruct", "scenario": "chat"},
            "train_vision",
            "no vision tower tuneforge knows",
            "model=smolvlm-256m-instruct",
        ),
        (
            {"scenario": "images", "train_vision": "all", "technique": "ia3"},
            "train_vision",
            "no place in the vision tower",
            "train_vision=projector",
        ),
    ],
)
def test_impossible_combinations_say_why_and_what_works(answers, key, words, alternative):
    plan = plan_for(**answers)
    problems = [p for p in plan.problems if p.key == key]
    assert problems, plan.problems
    assert words in problems[0].reason
    assert any(alternative in a for a in problems[0].alternatives), problems[0].alternatives


@pytest.mark.parametrize(
    "answers",
    [
        {
            "hardware": "cpu",
            "gpu_memory_gb": 14,
            "model": "smollm3-3b",
        },  # on a CPU, QLoRA loads the weights in fp32 first
        {"hardware": "cuda", "gpu_memory_gb": 8, "model": "qwen3-32b"},
    ],
)
def test_what_cannot_fit_names_options_that_save_memory_and_smaller_models_that_fit(answers):
    plan = plan_for(**answers)
    problem = next(p for p in plan.problems if p.key == "model")
    lean = leanest(plan)
    assert lean.estimate.total_gb < plan.memory.total_gb and f"about {lean.estimate.total_gb:g} GB" in problem.reason
    if answers["hardware"] == "cpu":
        assert "technique" not in lean.changes, lean  # QLoRA costs more there: not among the leanest options
    named = [a for a in problem.alternatives if a.startswith("a smaller model such as ")]
    assert named, problem.alternatives
    models = named[0].removeprefix("a smaller model such as ").removesuffix(" with those options").split(" or ")
    for model in models:
        smaller = plan_for(**{**answers, **lean.changes, "model": model})
        assert smaller.fits and smaller.facts["params_b"] < plan.facts["params_b"], (model, smaller.memory.total_gb)


def test_the_default_plan_is_valid_and_fits():
    plan = plan_for()
    assert plan.problems == []
    assert plan.fits
    assert plan.values["hardware"] == "cpu" and plan.origins["hardware"] == "detected"
    assert plan.values["model"] == "qwen3-0.6b"


def test_defaults_follow_technique_and_hardware():
    full = plan_for(technique="full", hardware="cuda")
    assert full.values["learning_rate"] == 2e-5 and full.origins["learning_rate"] == "default: suits full"
    assert full.values["gradient_checkpointing"] is True
    assert full.precision == "bf16"
    assert plan_for(hardware="cpu").precision == "fp32"


def test_priority_steers_defaults_and_says_so():
    memory = plan_for(priority="memory", hardware="cuda")
    assert memory.values["technique"] == "qlora"
    assert memory.origins["technique"] == "default: priority=memory"
    assert memory.values["gradient_checkpointing"] is True
    scale = plan_for(priority="scale", hardware="cuda", gpu_count=8)
    assert scale.values["distributed"] == "deepspeed-zero3"
    assert scale.origins["distributed"] == "default: priority=scale"
    cost = plan_for(priority="cost")
    assert cost.values["lora_r"] == 8


def test_explicit_answers_win_over_priority():
    plan = plan_for(priority="memory", hardware="cuda", technique="lora", gradient_checkpointing=False)
    assert plan.values["technique"] == "lora" and plan.origins["technique"] == "--set"
    assert plan.values["gradient_checkpointing"] is False
    assert plan.explicit_answers == ["technique", "hardware", "priority", "gradient_checkpointing"]


def test_a_gpu_too_small_for_lora_defaults_to_qlora_and_says_why():
    plan = plan_for(hardware="cuda", gpu_memory_gb=12, model="llama-3.1-8b-instruct")
    assert plan.values["technique"] == "qlora"
    assert plan.origins["technique"].startswith("default: lora needs about")


def test_what_would_fit_when_the_choice_does_not():
    plan = plan_for(
        hardware="cuda",
        gpu_memory_gb=16,
        model="llama-3.1-8b-instruct",
        technique="lora",
        per_device_train_batch_size=8,
    )
    assert not plan.fits and not plan.problems
    assert plan.suggestions
    for suggestion in plan.suggestions:
        assert suggestion.estimate.total_gb <= 16
    assert any(s.changes.get("technique") == "qlora" for s in plan.suggestions)


def test_unknown_model_is_refused_with_a_close_match():
    with pytest.raises(AnswerError, match="Did you mean 'phi-4'"):
        plan_for(model="phi-5")


def test_hub_id_of_a_catalog_model_maps_to_it():
    plan = plan_for(model="microsoft/Phi-3-mini-4k-instruct")
    assert plan.facts["id"] == "phi-3-mini-4k-instruct"


def test_unknown_hub_id_offline_says_why():
    with pytest.raises(AnswerError, match="HF_HUB_OFFLINE"):
        plan_for(model="someone/some-model")


def test_local_model_folder_gives_the_architecture(tmp_path):
    import json

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 256,
                "num_hidden_layers": 4,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "intermediate_size": 512,
                "vocab_size": 1000,
                "max_position_embeddings": 1024,
            }
        )
    )
    plan = plan_for(model=str(tmp_path))
    assert plan.facts["architecture"] == "llama" and plan.facts["source"] == "local"
    assert plan.facts["lora_target_modules"][0] == "q_proj"
    assert plan.values["max_length"] == 512


def test_local_model_with_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(AnswerError, match="'bert' is not supported"):
        plan_for(model=str(tmp_path))


def _fake_tool(folder, name: str, output: str) -> None:
    tool = folder / name
    tool.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")  # printf: a shell builtin, as PATH holds nothing else
    tool.chmod(0o755)


@pytest.mark.this_machine
def test_rocm_gpus_and_their_memory_come_from_rocm_smi_or_are_said_unknown(tmp_path, monkeypatch):
    from tuneforge.planning import hardware

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here: only the fake rocm-smi
    _fake_tool(
        tmp_path,
        "rocm-smi",
        '{"card0": {"VRAM Total Memory (B)": "206141652992", "VRAM Total Used Memory (B)": "0"},'
        ' "card1": {"VRAM Total Memory (B)": "206141652992", "VRAM Total Used Memory (B)": "0"}}',
    )
    assert hardware.detect() == {"hardware": "rocm", "gpu_count": 2, "gpu_memory_gb": 192.0}
    _fake_tool(tmp_path, "rocm-smi", "WARNING: no JSON from this driver")
    machine = hardware.detect()
    assert machine == {"hardware": "rocm", "gpu_count": 1, "gpu_memory_gb": None}
    plan = resolve(Given({}), detected=machine)
    assert plan.values["gpu_memory_gb"] == 64.0 and "not reported by the driver" in plan.origins["gpu_memory_gb"]


def test_pictures_bring_a_model_that_reads_them_and_an_export_that_keeps_its_vision_tower():
    plan = plan_for(scenario="images")
    assert not plan.problems, plan.problems
    assert plan.values["model"] == "smolvlm-256m-instruct"
    assert plan.origins["model"] == "default: reads pictures (scenario=images) and suits cpu"
    assert plan.values["targets"] == ["pytorch"] and plan.values["dataset_format"] == "images"
    assert plan.values["packing"] is False and "pictures" in plan.origins["packing"] and plan_for().values["packing"]
    assert plan.include["images"] and not plan_for().include["images"]
    assert plan_for(dataset_format="images").values["model"] == "smolvlm-256m-instruct"
    on_a_gpu = plan_for(scenario="images", hardware="cuda", gpu_memory_gb=24)
    assert on_a_gpu.values["model"] == "gemma-3-4b-it" and not on_a_gpu.problems


@pytest.mark.parametrize("technique", ["lora", "full"])
def test_training_the_projector_and_the_tower_adds_their_weights_and_the_towers_activations(technique):
    """train_vision=projector adds the projector's weights (SigLIP's 1152 features into Gemma 3 4B's 2560) to what
    trains; all adds the tower's (LoRA r on six matrices a layer, or all of them) and the activations of every
    picture's 4096 patches through its 27 layers; none leaves the estimate as a text run's."""
    answers = {"scenario": "images", "model": "gemma-3-4b-it", "hardware": "cuda", "gpu_memory_gb": 80}
    none, projector, tower = (
        plan_for(**answers, technique=technique, train_vision=v).memory for v in ("none", "projector", "all")
    )
    assert projector.trainable_params - none.trainable_params == 1152 * 2560
    h, i, layers, r = 1152, 4304, 27, plan_for(**answers).values["lora_r"]
    weights = layers * (4 * h * h + 2 * h * i) if technique == "full" else layers * r * (8 * h + 2 * (h + i))
    assert tower.trainable_params - projector.trainable_params == weights
    assert projector.activations_gb == none.activations_gb < tower.activations_gb
    assert none.total_gb < projector.total_gb < tower.total_gb
