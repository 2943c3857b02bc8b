"""A tiny randomly initialised model of the chosen architecture, with a BPE tokenizer trained on the
workspace's own data, so that the whole pipeline can run offline in seconds."""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
REASONING_TOKENS = ["<think>", "</think>"]  # added tokens, not special: answers keep them, as Qwen3's do
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# ChatML with Qwen2.5's tool calls (hermes): the tools in the system turn, calls in <tool_call> tags, results in a
# user turn of <tool_response> blocks
TOOLS_CHAT_TEMPLATE = (
    "{%- set ns = namespace(messages=messages) %}{%- if tools %}{{ '<|im_start|>system\n' }}"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content + '\n\n' }}{%- set ns.messages = messages[1:] %}{%- endif %}"
    "{{ '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n<tools>' }}"
    "{%- for tool in tools %}{{ '\n' + (tool | tojson) }}{%- endfor %}"
    "{{ '\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags.<|im_end|>\n' }}{%- endif %}"
    "{%- for m in ns.messages %}{%- if m.role == 'tool' %}"
    "{%- if loop.first or ns.messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{%- endif %}"
    "{{ '\n<tool_response>\n' + m.content + '\n</tool_response>' }}"
    "{%- if loop.last or ns.messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\n' }}{%- endif %}"
    "{%- elif m.role == 'assistant' and m.tool_calls %}{{ '<|im_start|>assistant' + ('\n' + m.content if m.content else '') }}"
    '{%- for call in m.tool_calls %}{{ \'\n<tool_call>\n{"name": "\' + call.function.name + \'", "arguments": \' '
    "+ (call.function.arguments | tojson) + '}\n</tool_call>' }}{%- endfor %}{{ '<|im_end|>\n' }}"
    "{%- else %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)
# Qwen3's thinking behaviour without its tool calls: the last assistant turn carries a <think> block (empty
# when it has no reasoning), earlier ones lose theirs, and enable_thinking=false closes an empty block in the
# generation prompt
THINKING_CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) %}{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}"
    "{%- endif %}{%- endfor %}"
    "{%- for m in messages %}{%- if m.role == 'assistant' %}{%- set content = m.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') %}{%- endif %}"
    "{%- if loop.index0 > ns.last_user %}{{ '<|im_start|>assistant\n<think>\n' + reasoning + '\n</think>\n\n' + content }}"
    "{%- else %}{{ '<|im_start|>assistant\n' + content }}{%- endif %}{{ '<|im_end|>\n' }}"
    "{%- else %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}"
)

# ChatML whose user turns may hold pictures: each image part becomes the model's own placeholder (PLACEHOLDER),
# which its processor expands into image tokens, as the real template's image parts do
IMAGES_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "{{ 'PLACEHOLDER' }}{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus(data_path: str) -> list[str]:
    """Every string in the data file, whatever its format."""
    texts: list[str] = []

    def walk(value):
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    text = Path(data_path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        walk(json.loads(text))
    else:
        for line in text.splitlines():
            if line.strip():
                walk(json.loads(line))
    return texts + ["system", "user", "assistant"]


def build_tokenizer(
    texts: list[str],
    vocab_size: int,
    thinking: bool = False,
    tools: bool = False,
    special: list[str] = (),
    named: dict[str, str] | None = None,
):
    """A byte-level BPE tokenizer trained on the texts, with ChatML's special tokens and those given (named: special
    tokens the tokenizer knows by name, such as an image-text model's boi_token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys([*SPECIAL_TOKENS, *special, *(named or {}).values()])),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
        model_specific_special_tokens=dict(named or {}),
    )
    fast.add_tokens(REASONING_TOKENS)
    fast.chat_template = TOOLS_CHAT_TEMPLATE if tools else THINKING_CHAT_TEMPLATE if thinking else CHAT_TEMPLATE
    return fast


def build_model(spec: dict, tokenizer):
    import torch
    from transformers import AutoConfig

    from finetune.modeling import class_for

    spec = dict(spec)
    architecture = spec.pop("architecture")
    processor = spec.pop("processor", None)
    spec.setdefault("max_position_embeddings", 512)
    if architecture == "phi3":
        # equal lengths keep the ONNX builder off the LongRoPE variant
        spec["original_max_position_embeddings"] = spec["max_position_embeddings"]
        spec["rope_scaling"] = None
    spec.setdefault("vocab_size", len(tokenizer))  # may be larger: a padded vocabulary, as real models have
    tokens = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if processor:  # the config's ids of the image tokens the tiny tokenizer holds
        tokens |= {key: tokenizer.convert_tokens_to_ids(token) for key, token in processor["config_ids"].items()}
    if "text_config" in spec:
        # an image-text model: the language model's shape goes into text_config, a tiny vision tower beside it
        text = spec.pop("text_config")
        outer = {
            k: spec.pop(k)
            for k in ("vision_config", "mm_tokens_per_image", "scale_factor", "tie_word_embeddings")
            if k in spec
        }
        ids = {k: tokens.pop(k) for k in list(tokens) if k not in ("bos_token_id", "eos_token_id", "pad_token_id")}
        spec = {**outer, **ids, "text_config": {**spec, **text, **tokens}}
    config = AutoConfig.for_model(architecture, **tokens, **spec)
    torch.manual_seed(0)
    model = class_for(config.model_type).from_config(config, dtype=torch.float32)
    for weight in model.parameters():
        if weight.dim() > 1 and not weight.any():
            # a matrix initialised to zeros (Gemma 3's image projection), to be learnt in pre-training: a random one
            # instead, or the tiny model would see every picture as the same nothing
            torch.nn.init.normal_(weight, std=0.02)
    return model


def save_tiny_model(
    spec: dict,
    data_path: str,
    vocab_size: int,
    out: Path,
    extra_texts: list[str] = (),
    thinking: bool = False,
    tools: bool = False,
    end_of_turn: str | None = None,
    images: bool = False,
) -> Path:
    """A tiny model and a tokenizer trained on the data (and on extra texts such as the prompts it will see);
    thinking: a chat template with a thinking switch, tools: one that writes tool calls, as the real model's has;
    end_of_turn: the token that ends an answer in the workspace's own chat template, one token as in the real
    model's vocabulary; images: the model's processor beside them (spec's processor: its class, its image
    tokens), and a template that places pictures."""
    texts = corpus(data_path) + [t for t in extra_texts if t]
    processor = spec.get("processor") if images else None
    special = [end_of_turn] if end_of_turn else []
    if processor:  # its image tokens, in the vocabulary the tiny model's embeddings cover
        special += [*processor.get("special", []), *processor["config_ids"].values()]
    tokenizer = build_tokenizer(texts, vocab_size, thinking, tools, special, (processor or {}).get("tokens"))
    saved = with_processor(tokenizer, processor) if processor else tokenizer
    model = build_model(spec if processor else {k: v for k, v in spec.items() if k != "processor"}, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    saved.save_pretrained(out)
    return out


def with_processor(tokenizer, spec: dict):
    """The model's processor around the tokenizer, as its class builds it from the tokenizer's named image tokens
    and an image processor at the tiny tower's size; its chat template places each picture."""
    import transformers

    images = dict(spec["image_processor"])
    image_processor = getattr(transformers, images.pop("class"))(**images)
    extra = {k: v for k, v in spec.items() if k not in ("class", "image_processor", "tokens", "special", "config_ids")}
    processor = getattr(transformers, spec["class"])(image_processor=image_processor, tokenizer=tokenizer, **extra)
    placeholder = processor.image_token
    tokenizer.chat_template = IMAGES_CHAT_TEMPLATE.replace("PLACEHOLDER", placeholder)
    processor.chat_template = tokenizer.chat_template
    return processor
