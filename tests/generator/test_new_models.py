"""Late-2025 model families in the plan: each catalog entry's facts agree with its shape, a mixture of
experts is counted by total and active parameters, adapters train attention with the experts frozen, and
what cannot handle experts is refused with the reason."""

from __future__ import annotations

import json

import pytest

from tuneforge import catalog
from tuneforge.planning.answers import Given
from tuneforge.planning.memory import trainable_parameters
from tuneforge.planning.models import resolve_model, vision_parameters
from tuneforge.planning.plan import resolve
from tuneforge.planning.shapes import count_parameters, linear_sizes

MODELS = catalog.load("models")
NEW = [
    "qwen3-0.6b",
    "qwen3-1.7b",
    "qwen3-4b",
    "qwen3-8b",
    "qwen3-14b",
    "qwen3-32b",
    "qwen3-30b-a3b",
    "granite-3.3-2b-instruct",
    "granite-3.3-8b-instruct",
    "gemma-3-1b-it",
    "smollm3-3b",
    "phi-4-mini-reasoning",
    "gpt-oss-20b",
]


def plan_for(**answers):
    given = Given()
    given.add(answers, "--set")
    return resolve(given)


@pytest.mark.parametrize("model", NEW)
def test_each_new_entry_cites_its_source_and_its_parameters_follow_its_shape(model):
    facts = MODELS[model]
    assert facts["source"].startswith("https://huggingface.co/" + facts["hf_id"] + "/")
    assert facts["params_b"] == pytest.approx(count_parameters(facts["shape"]) / 1e9, abs=0.01)
    if "experts" in facts["shape"]:
        assert facts["active_params_b"] == pytest.approx(count_parameters(facts["shape"], active=True) / 1e9, abs=0.01)


@pytest.mark.parametrize("model, total, active", [("qwen3-30b-a3b", 30.5, 3.3), ("gpt-oss-20b", 20.9, 4.2)])
def test_a_mixture_of_experts_counts_total_and_active_parameters(model, total, active):
    # Qwen3-30B-A3B's model card: 30.5B in total, 3.3B activated (8 of 128 experts per token)
    facts = MODELS[model]
    assert facts["params_b"] == pytest.approx(total, abs=0.1) and facts["active_params_b"] == pytest.approx(
        active, abs=0.1
    )


def test_adapters_on_a_mixture_of_experts_train_attention_and_leave_the_experts_frozen():
    plan = plan_for(
        model="qwen3-30b-a3b", technique="lora", lora_r=16, targets="pytorch", hardware="cuda", gpu_memory_gb=80
    )
    assert plan.facts["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    shape = plan.facts["shape"]
    sizes = linear_sizes(shape)
    assert sizes["q_proj"] == (2048, 32 * 128) and sizes["k_proj"] == (2048, 4 * 128)  # head_dim, not hidden/heads
    attention = (
        shape["num_hidden_layers"]
        * 16
        * sum(i + o for name, (i, o) in sizes.items() if name in ("q_proj", "k_proj", "v_proj", "o_proj"))
    )
    assert plan.memory.trainable_params == attention
    # the weights are all 30.5B parameters, whatever a token uses
    assert plan.memory.weights_gb == pytest.approx(30.53e9 * 2 / 1024**3, rel=0.01)


@pytest.mark.parametrize("technique, words", [("qlora", "quantizes linear layers only"), ("ia3", "fused tensors")])
def test_what_cannot_handle_experts_is_refused_with_the_reason(technique, words):
    plan = plan_for(model="qwen3-30b-a3b", technique=technique, targets="pytorch", hardware="cuda", gpu_memory_gb=80)
    problem = next(p for p in plan.problems if p.key == "technique")
    assert words in problem.reason and problem.alternatives[0].startswith("technique=lora")


@pytest.mark.parametrize(
    "model, config",
    [
        (
            "qwen3-30b-a3b",
            {"model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
        ),
        ("gpt-oss-20b", {"model_type": "gpt_oss", "num_local_experts": 4, "num_experts_per_tok": 2}),
    ],
)
def test_lora_on_the_experts_trains_what_the_plan_counts(model, config, tmp_path):
    """lora_experts=true: PEFT's LoRA on the fused expert weights (target_parameters) of a tiny model of the
    architecture trains exactly as many parameters as the plan's memory estimate counts."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        **config,
    )
    (tmp_path / "config.json").write_text(json.dumps(shape))
    plan = plan_for(model=str(tmp_path), technique="lora", lora_r=4, lora_experts=True, targets="pytorch")
    facts = resolve_model(model)
    assert not plan.problems and plan.facts["lora_target_parameters"] == facts["lora_target_parameters"]
    tiny = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{k: v for k, v in shape.items()}))
    adapted = get_peft_model(
        tiny,
        LoraConfig(r=4, target_modules=facts["lora_target_modules"], target_parameters=facts["lora_target_parameters"]),
    )
    assert plan.memory.trainable_params == sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    attention_only = plan_for(model=str(tmp_path), technique="lora", lora_r=4, targets="pytorch")
    assert attention_only.memory.trainable_params < plan.memory.trainable_params


@pytest.mark.parametrize(
    "answers, words",
    [
        ({"model": "qwen3-0.6b"}, "not a mixture of experts"),
        ({"model": "qwen3-30b-a3b", "technique": "dora"}, "LoRA and rsLoRA only, not dora"),
        ({"model": "qwen3-30b-a3b", "lora_dropout": 0.1}, "no dropout"),
    ],
)
def test_lora_on_experts_is_refused_where_there_are_none_or_peft_cannot(answers, words):
    plan = plan_for(lora_experts=True, targets="pytorch", gpu_memory_gb=400, **answers)
    assert any(p.key in ("lora_experts", "lora_dropout") and words in p.reason for p in plan.problems), plan.problems
    assert not plan_for(lora_experts=False, targets="pytorch", gpu_memory_gb=400, **answers).problems


def test_an_architecture_the_model_builder_cannot_export_is_refused_for_onnx():
    plan = plan_for(
        model="qwen3-30b-a3b", technique="lora", targets="pytorch,onnx-cpu", hardware="cuda", gpu_memory_gb=80
    )
    assert any(p.key == "targets" and "qwen3_moe" in p.reason for p in plan.problems)
    assert not plan_for(model="qwen3-0.6b", targets="pytorch,onnx-cpu").problems


@pytest.mark.parametrize(
    "config, experts, per_token, width",
    [
        (
            {"model_type": "qwen3_moe", "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 96},
            8,
            2,
            96,
        ),
        ({"model_type": "gpt_oss", "num_local_experts": 4, "num_experts_per_tok": 2}, 4, 2, 512),
    ],
)
def test_a_local_mixture_of_experts_reads_each_familys_own_config_keys(tmp_path, config, experts, per_token, width):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "hidden_size": 256,
                "num_hidden_layers": 4,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "head_dim": 64,
                "intermediate_size": 512,
                "vocab_size": 1000,
                "max_position_embeddings": 1024,
                **config,
            }
        )
    )
    plan = plan_for(model=str(tmp_path), targets="pytorch")
    shape = plan.facts["shape"]
    assert (shape["experts"], shape["experts_per_token"], shape["expert_intermediate_size"]) == (
        experts,
        per_token,
        width,
    )
    assert plan.facts["moe"] is True and plan.facts["active_params_b"] < plan.facts["params_b"]
    assert plan.facts["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_lora_counts_follow_the_modules_it_adapts():
    # Phi-3's fused qkv_proj takes one LoRA pair where q, k and v take three
    shape = MODELS["phi-3-mini-4k-instruct"]["shape"]
    fused = trainable_parameters(shape, "lora", 8, 0, ["qkv_proj"])
    split = trainable_parameters(shape, "lora", 8, 0, ["q_proj", "k_proj", "v_proj"])
    assert fused == 32 * 8 * (3072 + 3 * 3072) and split == 32 * 8 * 3 * (3072 + 3072)


def test_gpt_oss_trains_with_the_attention_transformers_has_for_it(new_workspace):
    workspace = new_workspace(model="gpt-oss-20b", targets="pytorch", gpu_memory_gb=400)
    assert "attn_implementation: eager" in (workspace / "configs" / "train.yaml").read_text()
    assert (
        "attn_implementation: sdpa"
        in (new_workspace(model="qwen3-0.6b", targets="pytorch") / "configs" / "train.yaml").read_text()
    )


@pytest.mark.parametrize(
    "hub_says, gated", [({"gated": "manual"}, True), ({"gated": False}, False), ({}, None), (None, None)]
)
def test_a_hub_model_is_gated_as_the_hub_says_or_unknown(monkeypatch, hub_says, gated):
    """Not in the catalog: its facts come from its config.json, and whether it is gated from the hub's model API."""
    import io
    import urllib.error
    import urllib.request

    from tuneforge.planning.models import _hub_facts, resolve_model

    _hub_facts.cache_clear()  # each case asks the hub afresh

    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 1000,
        "max_position_embeddings": 2048,
    }

    asked = []

    def urlopen(request, timeout):
        url = request.full_url
        asked.append(url)
        if url.endswith("/config.json"):
            return io.BytesIO(json.dumps(config).encode())
        assert url == "https://huggingface.co/api/models/someone/tiny-llama"
        if hub_says is None:
            raise urllib.error.URLError("the hub did not answer")
        return io.BytesIO(json.dumps(hub_says).encode())

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    facts = resolve_model("someone/tiny-llama")
    assert facts["source"] == "hub" and facts["gated"] is gated
    assert resolve_model("someone/tiny-llama") == facts and len(asked) == 2  # asked once per process, not per plan


IMAGE_TEXT = {
    "gemma-3-4b-it": 0.42,
    "gemma-3-12b-it": 0.42,
    "gemma-3-27b-it": 0.42,
    "mistral-small-3.1-24b-instruct": 0.43,
}


@pytest.mark.parametrize("model, tower", IMAGE_TEXT.items())
def test_an_image_text_entry_counts_its_language_model_and_its_vision_tower(model, tower):
    """Gemma 3 4B-27B and Mistral Small 3.1 are image-text checkpoints: the shape is the language model's
    (config.json's text_config), the parameters add the vision tower (about 0.4B, SigLIP or Pixtral)."""
    facts = MODELS[model]
    assert (
        facts["source"].startswith("https://huggingface.co/" + facts["hf_id"] + "/")
        and "text_config" in facts["source"]
    )
    assert facts["params_b"] - count_parameters(facts["shape"]) / 1e9 == pytest.approx(tower, abs=0.05)
    image_text = resolve_model(model)["image_text"]
    assert (image_text["tower"], image_text["projector"]) == ("vision_tower", "multi_modal_projector")
    if "tower_shape" in image_text:  # the tower the plan counts when train_vision trains it is the one counted here
        assert vision_parameters(image_text["tower_shape"]) / 1e9 == pytest.approx(tower, abs=0.02)


def test_an_image_text_config_json_counts_its_tower_and_its_tied_embeddings():
    """google/gemma-3-4b-it's config.json names neither tie_word_embeddings (transformers ties Gemma 3's) nor a
    parameter count: read as a local or hub model, it comes to the model card's 4.3B."""
    from tuneforge.planning.models import facts_from_config

    config = {
        "model_type": "gemma3",
        "mm_tokens_per_image": 256,
        "text_config": {
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "model_type": "gemma3_text",
            "num_hidden_layers": 34,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "vocab_size": 262208,
        },
        "vision_config": {
            "hidden_size": 1152,
            "image_size": 896,
            "intermediate_size": 4304,
            "model_type": "siglip_vision_model",
            "num_attention_heads": 16,
            "num_hidden_layers": 27,
            "patch_size": 14,
        },
    }
    facts = facts_from_config(config, "google/gemma-3-4b-it", "hub")
    assert facts["shape"]["tie_word_embeddings"] is True and facts["params_b"] == pytest.approx(4.3, abs=0.02)
    assert facts["shape"] == MODELS["gemma-3-4b-it"]["shape"]


TINY_IMAGE_TEXT = {
    "gemma3": {
        "model_type": "gemma3",
        "mm_tokens_per_image": 4,
        "text_config": {"model_type": "gemma3_text", "sliding_window": 64},
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
    },
    "mistral3": {
        "model_type": "mistral3",
        "tie_word_embeddings": False,
        "text_config": {"model_type": "mistral"},
        "vision_config": {
            "model_type": "pixtral",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 16,
            "image_size": 28,
            "patch_size": 14,
        },
    },
}


@pytest.mark.parametrize("architecture", TINY_IMAGE_TEXT)
@pytest.mark.parametrize("technique", ["lora", "full"])
def test_a_local_image_text_model_trains_its_language_model_as_the_plan_counts(
    tmp_path, monkeypatch, architecture, technique
):
    """A local image-text checkpoint: the plan reads the language model's shape from text_config, and the
    workspace's own loading code (modeling.add_adapter with the rendered configs/train.yaml) trains exactly the
    parameters the plan counts, none of them in the vision tower or projector."""
    import yaml
    from transformers import AutoConfig, AutoModelForImageTextToText

    from helpers.project import ROOT, tuneforge

    monkeypatch.syspath_prepend(str(ROOT / "templates" / "workspace"))
    from finetune import modeling

    config = json.loads(json.dumps(TINY_IMAGE_TEXT[architecture]))
    config["text_config"].update(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
    )
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    answers = {"model": str(tmp_path / "model"), "technique": technique, "lora_r": 4, "targets": "pytorch"}
    plan = plan_for(**answers)
    assert not plan.problems and plan.facts["shape"]["hidden_size"] == 64 and plan.facts["architecture"] == architecture
    assert tuneforge("new", tmp_path / "ws", "--defaults", *[f"--set={k}={v}" for k, v in answers.items()]) == 0
    train = yaml.safe_load((tmp_path / "ws" / "configs" / "train.yaml").read_text())
    tiny = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config))
    tower = sum(p.numel() for n, p in tiny.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n)
    trained = modeling.add_adapter(tiny, train, gradient_checkpointing=False)
    names = [n for n, p in trained.named_parameters() if p.requires_grad]
    assert tower and names and not [n for n in names if "vision_tower" in n or "multi_modal_projector" in n]
    counted = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    # LoRA's count is exact; a full fine-tune's counts two norms a layer (Gemma 3 has four, and q and k norms)
    assert counted == (
        plan.memory.trainable_params if technique == "lora" else pytest.approx(plan.memory.trainable_params, rel=0.01)
    )


@pytest.mark.parametrize("model", IMAGE_TEXT)
def test_an_image_text_model_is_refused_for_onnx_with_the_reason(model):
    plan = plan_for(model=model, targets="pytorch,onnx-cpu", hardware="cuda", gpu_memory_gb=400)
    assert any(p.key == "targets" and MODELS[model]["architecture"] in p.reason for p in plan.problems), plan.problems


def test_a_model_without_an_onnx_export_defaults_to_the_targets_it_has():
    """The default targets are PyTorch and ONNX CPU where the builder exports the architecture, PyTorch alone
    where it cannot (said as the reason); asking for ONNX anyway names what works, GGUF included."""
    plan = plan_for(model="gemma-3-4b-it", hardware="cuda", gpu_memory_gb=80)
    assert (
        plan.values["targets"] == ["pytorch"]
        and "cannot export gemma3" in plan.origins["targets"]
        and not plan.problems
    )
    assert plan_for(model="qwen3-0.6b").values["targets"] == ["pytorch", "onnx-cpu"]
    refused = plan_for(model="gemma-3-4b-it", hardware="cuda", gpu_memory_gb=80, targets="onnx-cpu")
    assert next(p for p in refused.problems if p.key == "targets").alternatives == [
        "targets=pytorch",
        "targets=pytorch,gguf",
    ]
