"""Load the tokenizer and the model as the config says: dtype, 4-bit quantization, PEFT adapter."""

from __future__ import annotations

import re

import torch

from finetune.config import VISION_TRAINING
from finetune.hub import base_model_of, from_pretrained, model_file

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(name_or_path: str, data: dict | None = None):
    """The model's tokenizer, with the config's data.chat_template where it sets one (the turns the workspace gives
    a base model, or a model whose own template has no tool calls); one with no template at all needs it. For
    conversations about pictures (data.format images) the model's processor comes with it, as tokenizer.processor."""
    from transformers import AutoTokenizer

    from finetune.encoding import use_chat_template

    tokenizer = from_pretrained(AutoTokenizer, name_or_path)
    if (data or {}).get("chat_template") or not getattr(tokenizer, "chat_template", None):
        use_chat_template(tokenizer, name_or_path, data or {})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (data or {}).get("format") == "images":  # finetune/images.py: what turns pictures into the model's inputs
        from finetune.images import load_processor

        tokenizer.processor = load_processor(name_or_path, tokenizer, data)
    return tokenizer


def stop_at_end_of_turn(model, tokenizer) -> None:
    """The model's generation settings end an answer at the tokenizer's end token too, where it is another
    (the end_of_turn a base model took from data.chat_template): llama.cpp, Ollama and vLLM read them."""
    end = tokenizer.eos_token_id
    ends = model.generation_config.eos_token_id
    ends = [] if ends is None else ends if isinstance(ends, list) else [ends]
    if end is not None and end not in ends:
        model.generation_config.eos_token_id = [*ends, end]


def keep_base_files(source: str, folder) -> None:
    """The files of the model source (a folder or hub id) that saving the model and tokenizer does not write, into
    folder where missing: the SentencePiece model of a tokenizer that has one (Phi-3, Llama 2, Mistral 7B; transformers
    writes tokenizer.json only, and llama.cpp's converter reads tokenizer.model), and an image-text model's image
    processor settings, so that the saved model still reads images."""
    import shutil
    from pathlib import Path

    for name in ("tokenizer.model", "preprocessor_config.json", "processor_config.json"):
        target = Path(folder) / name
        if not target.exists() and (found := model_file(source, name)):
            shutil.copyfile(found, target)


def model_class(name_or_path: str):
    """The transformers class that loads the model: AutoModelForCausalLM, or AutoModelForImageTextToText for an
    image-text checkpoint AutoModelForCausalLM has no class for (Mistral Small 3.x). Either way the language
    model is what trains and answers; a vision tower loads beside it and keeps its weights."""
    from transformers import AutoConfig

    return class_for(from_pretrained(AutoConfig, name_or_path).model_type)


def class_for(model_type: str):
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForImageTextToText


def vision_trained(config: dict) -> tuple[str, ...]:
    """Which of an image-text model's vision parts train (configs/train.yaml's vision.train, checked by
    finetune.config): none, the projector, or the projector and the tower; () for a text model."""
    vision = config.get("vision")
    return VISION_TRAINING[vision["train"]] if vision else ()


def frozen(config: dict) -> str | None:
    """The modules training leaves as they are (an image-text model's vision tower and projector, unless vision.train
    trains them), as the regular expression PEFT's exclude_modules matches against module names; None when none."""
    vision, trained = config.get("vision") or {}, vision_trained(config)
    names = [vision[part] for part in ("tower", "projector") if vision and part not in trained]
    return within(names) if names else None


def within(names: list[str]) -> str:
    """A regular expression for the modules of these names and everything inside them, wherever they sit."""
    return rf"(.*\.)?({'|'.join(map(re.escape, names))})(\..*)?"


def lora_targets(config: dict) -> list[str] | str:
    """The modules LoRA adapts: peft.target_modules, and with vision.train all also vision.tower_lora_modules inside
    the tower (one regular expression, so that neither list reaches into the other's part of the model)."""
    modules, vision = config["peft"]["target_modules"], config.get("vision") or {}
    if "tower" not in vision_trained(config):
        return modules
    parts = "|".join(map(re.escape, (vision["tower"], vision["projector"])))
    language = "|".join(map(re.escape, modules))
    tower = "|".join(map(re.escape, vision["tower_lora_modules"]))
    return rf"(?!(.*\.)?({parts})\.)(.*\.)?({language})|(.*\.)?{re.escape(vision['tower'])}\.(.*\.)?({tower})"


def trained_whole(config: dict) -> list[str] | None:
    """Modules an adapter run trains in full and saves beside the adapter (PEFT's modules_to_save): the projector
    when vision.train trains it; None when there are none."""
    return [config["vision"]["projector"]] if "projector" in vision_trained(config) else None


def load_base_model(config: dict, for_training: bool = True):
    """The base model, quantized to 4 bits when the config has a quantization section."""
    from transformers import BitsAndBytesConfig

    model_cfg = config["model"]
    dtype = DTYPES[model_cfg.get("torch_dtype", "float32")]
    kwargs = {"dtype": dtype, "attn_implementation": model_cfg.get("attn_implementation", "sdpa")}
    quant = config.get("quantization")
    whole = trained_whole(config)
    if quant and for_training:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quant.get("load_in_4bit", True),
            bnb_4bit_quant_type=quant.get("bnb_4bit_quant_type", "nf4"),
            bnb_4bit_use_double_quant=quant.get("bnb_4bit_use_double_quant", True),
            bnb_4bit_compute_dtype=DTYPES[quant.get("bnb_4bit_compute_dtype", "bfloat16")],
            bnb_4bit_quant_storage=dtype,
            # a projector that trains in full stays in 16 bits, as the output head does (transformers matches each
            # name from the start of a module's, so the pattern reaches it wherever it sits)
            llm_int8_skip_modules=["lm_head", within(whole)] if whole else None,
        )
    return from_pretrained(model_class(model_cfg["name_or_path"]), model_cfg["name_or_path"], **kwargs)


def load_base_of(adapter_dir, config: dict):
    """The base model the adapter in adapter_dir was trained on (as peft recorded it, else the config's), to merge
    into or export: a QLoRA base is loaded in 16 bits, not 4."""
    model = {**config["model"], "name_or_path": base_model_of(adapter_dir) or config["model"]["name_or_path"]}
    if config.get("quantization") and model.get("torch_dtype") != "float32":
        model["torch_dtype"] = "bfloat16"
    return load_base_model({**config, "model": model}, for_training=False)


def add_adapter(model, config: dict, gradient_checkpointing: bool):
    """Wrap the model for training: k-bit preparation for QLoRA, then the PEFT adapter if configured."""
    from peft import IA3Config, LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.get("quantization"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                # bitsandbytes repacks 4-bit weights for its CPU inference kernel at the first eval-mode pass, in a
                # layout its training pass cannot read: a model that trains on after sampling or evaluating keeps them
                module.support_avx512bf16_for_cpu = False
    elif gradient_checkpointing:
        model.enable_input_require_grads()
    peft_cfg = config.get("peft")
    keep = frozen(config)
    if not peft_cfg:
        for name, parameter in model.named_parameters():
            if keep and re.fullmatch(keep, name):
                parameter.requires_grad_(False)
        return model
    if peft_cfg["method"] == "ia3":
        adapter = IA3Config(
            task_type="CAUSAL_LM",
            target_modules=peft_cfg["target_modules"],
            feedforward_modules=peft_cfg["feedforward_modules"],
            exclude_modules=keep,
            modules_to_save=trained_whole(config),
        )
    else:
        adapter = LoraConfig(
            task_type="CAUSAL_LM",
            r=peft_cfg["lora_r"],
            lora_alpha=peft_cfg["lora_alpha"],
            lora_dropout=peft_cfg["lora_dropout"],
            target_modules=lora_targets(config),
            exclude_modules=keep,
            modules_to_save=trained_whole(config),
            use_dora=peft_cfg.get("use_dora", False),
            use_rslora=peft_cfg.get("use_rslora", False),
            target_parameters=peft_cfg.get("target_parameters"),  # a mixture of experts' fused expert weights
        )
    return get_peft_model(model, adapter)


def count_trainable(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
