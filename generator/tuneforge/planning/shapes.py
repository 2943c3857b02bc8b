"""What a model's shape implies: the size of each linear layer, and its parameters in total and per token
(a mixture-of-experts model runs only some of its experts for each token)."""

from __future__ import annotations


def head_dim(shape: dict) -> int:
    return shape.get("head_dim") or shape["hidden_size"] // shape["num_attention_heads"]


def linear_sizes(shape: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear layer of one block, by the module names LoRA targets."""
    h, inter = shape["hidden_size"], shape["intermediate_size"]
    q = shape["num_attention_heads"] * head_dim(shape)
    kv = (shape.get("num_key_value_heads") or shape["num_attention_heads"]) * head_dim(shape)
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "qkv_proj": (h, q + 2 * kv),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
        "gate_up_proj": (h, 2 * inter),
    }


def tower_linear_sizes(tower: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear layer of one vision-tower block (SigLIP's: attention and a two-matrix MLP)."""
    h, inter = tower["hidden_size"], tower["intermediate_size"]
    return {
        "q_proj": (h, h),
        "k_proj": (h, h),
        "v_proj": (h, h),
        "out_proj": (h, h),
        "fc1": (h, inter),
        "fc2": (inter, h),
    }


def tower_parameters(tower: dict) -> int:
    """The weights of a vision tower's layers (hidden_size, intermediate_size, num_hidden_layers)."""
    return tower["num_hidden_layers"] * sum(i * o for i, o in tower_linear_sizes(tower).values())


def count_parameters(shape: dict, active: bool = False) -> int:
    """Parameters of a decoder-only transformer of this shape; active: those one token runs through."""
    sizes = linear_sizes(shape)
    h, layers, vocab = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"]
    attention = sum(i * o for name, (i, o) in sizes.items() if name in ("q_proj", "k_proj", "v_proj", "o_proj"))
    if shape.get("experts"):
        expert = 3 * h * shape["expert_intermediate_size"]
        used = shape["experts_per_token"] if active else shape["experts"]
        mlp = used * expert + h * shape["experts"]  # the experts and the router
    else:
        mlp = 3 * h * shape["intermediate_size"]
    embeddings = vocab * h * (1 if shape.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp + 2 * h) + embeddings + h
