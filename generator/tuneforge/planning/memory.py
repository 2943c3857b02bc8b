"""Estimate peak training memory per device, and find what would fit when the choice does not.

The model (see shared ANCHORS): weights + trainable parameters x optimizer bytes + activations +
logits + device context, with ZeRO sharding or offloading optimizer state and weights. Calibrated
against LLaMA-Factory's rule of thumb, unsloth's minimums and torchtune's measurements (tests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tuneforge import catalog
from tuneforge.planning.shapes import count_parameters, linear_sizes, tower_linear_sizes, tower_parameters

GB = 1024**3
NF4_BYTES = 0.55  # 4-bit weights plus quantization constants (double quantization)


@dataclass(frozen=True)
class Setup:
    technique: str
    precision: str  # fp32, bf16, fp16
    batch: int
    max_length: int
    gradient_checkpointing: bool
    distributed: str
    devices: int  # data-parallel devices in total (gpu_count x num_nodes)
    lora_r: int
    hardware: str
    sequences: int = 1  # sequences per example through the model each step (2 for preference pairs, GRPO's group)
    generates: bool = False  # each step first samples its sequences (GRPO): a KV cache for all of them
    lora_experts: bool = False  # LoRA also on a mixture of experts' expert projections
    lora_dropout: float = 0.0  # an adapter's dropout keeps one more copy of each adapted layer's input
    train_vision: str = "none"  # an image-text model's projector (and vision tower) training too


@dataclass(frozen=True)
class Estimate:
    weights_gb: float
    trainable_params: int
    optimizer_gb: float
    activations_gb: float
    logits_gb: float
    overhead_gb: float
    total_gb: float
    generation_gb: float = 0.0  # the KV cache while sampling; it is freed before the backward pass needs activations

    def as_dict(self) -> dict:
        return asdict(self)

    def parts(self) -> list[tuple[str, float]]:
        """What the total adds up, each part by the name the terminal and the web form show it under."""
        names = {
            "weights_gb": "weights",
            "optimizer_gb": "optimizer and gradients",
            "activations_gb": "activations",
            "logits_gb": "logits",
            "overhead_gb": "runtime",
        }
        return [(name, getattr(self, attr)) for attr, name in names.items()]


def trainable_parameters(
    shape: dict, technique: str, lora_r: int, total_params: float, targets: list[str], expert_targets: list[str] = ()
) -> int:
    """targets: the linear layers an adapter adapts; expert_targets: a mixture of experts' fused expert projections
    LoRA also adapts (PEFT's target_parameters: one A and B of rank r per expert); the router stays frozen."""
    if technique == "full":
        return int(total_params)
    sizes = linear_sizes(shape)
    if technique == "ia3":  # one scaling vector for keys, values and the feed-forward output's input
        return shape["num_hidden_layers"] * (2 * sizes["k_proj"][1] + shape["intermediate_size"])
    adapted = [sizes[name] for name in targets if name in sizes]
    per_layer = sum(lora_r * (i + o) for i, o in adapted)
    if expert_targets:  # each expert's projections are the sizes of a dense block with the expert's width
        expert = linear_sizes({**shape, "intermediate_size": shape["expert_intermediate_size"]})
        per_layer += sum(shape["experts"] * lora_r * sum(expert[t.rsplit(".", 1)[-1]]) for t in expert_targets)
    if technique == "dora":
        per_layer += sum(o for _, o in adapted)
    return shape["num_hidden_layers"] * per_layer


def vision_trainable(image_text: dict, text_hidden: int, setup: Setup) -> int:
    """The weights train_vision adds: the projector in full (its input width by the language model's), and with
    all the vision tower's too (LoRA on its tower_lora_modules, or every weight with full fine-tuning)."""
    if setup.train_vision == "none":
        return 0
    tower = image_text["tower_shape"]
    trained = tower["projector_inputs"] * text_hidden
    if setup.train_vision == "all" and setup.technique == "full":
        trained += tower_parameters(tower)
    elif setup.train_vision == "all":
        sizes = tower_linear_sizes(tower)
        trained += (
            tower["num_hidden_layers"] * setup.lora_r * sum(sum(sizes[m]) for m in image_text["tower_lora_modules"])
        )
    return trained


def tower_activations(tower: dict, setup: Setup, copies: int, act_bytes: int) -> float:
    """What the backward pass through a training vision tower keeps: one picture per example (its patches through
    every tower layer), as the language model's layers keep their tokens; nothing when the tower is frozen."""
    if setup.train_vision != "all":
        return 0
    patches = setup.batch * setup.sequences * tower["patches"]
    layer = patches * tower["hidden_size"] * act_bytes
    if setup.gradient_checkpointing:
        return layer * tower["num_hidden_layers"] + layer * copies
    return layer * copies * tower["num_hidden_layers"]


def setup_for(values: dict, precision: str, devices: int) -> Setup:
    """The Setup a plan's answers describe."""
    objective = catalog.load("objectives")[values.get("objective", "sft")]
    return Setup(
        technique=values["technique"],
        precision=precision,
        batch=values["per_device_train_batch_size"],
        max_length=values["max_length"],
        gradient_checkpointing=values["gradient_checkpointing"],
        distributed=values.get("distributed", "none"),
        devices=devices,
        lora_r=values["lora_r"],
        hardware=values["hardware"],
        sequences=sequences(objective),
        generates=objective.get("generates", False),
        lora_experts=values.get("lora_experts", False),
        lora_dropout=values.get("lora_dropout", 0.0),
        train_vision=values.get("train_vision", "none"),
    )


def sequences(objective: dict) -> int:
    """Sequences per example through the model each step: the objective's own, or the answers GRPO samples."""
    return objective["settings"]["num_generations"]["value"] if objective.get("generates") else objective["sequences"]


def plan_memory(facts: dict, setup: Setup, device: dict) -> Estimate:
    """device: the hardware's catalog entry (its overhead and how it spends memory on attention and logits)."""
    shape = facts["shape"]
    overhead_gb = device["device_overhead_gb"]
    params = facts["params_b"] * 1e9
    h, layers, vocab = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"]
    embed = vocab * h * (1 if shape.get("tie_word_embeddings") else 2)
    stage = _zero_stage(setup.distributed)
    shards = setup.devices if setup.distributed != "none" else 1
    offload = setup.distributed == "deepspeed-zero3-offload"
    half = 4 if setup.precision == "fp32" else 2

    if setup.technique == "qlora" and not device.get("quantized_load_full"):
        weights = embed * 2 + (params - embed) * NF4_BYTES
    else:
        weights = params * half
    if setup.technique == "qlora":
        # 4-bit layers dequantized to fp32 for each matmul, where those copies stay resident
        weights += device.get("dequantized_copies", 0) * (params - embed) * 4
    if stage == 3 or setup.distributed == "fsdp":
        weights /= shards
    if offload:
        weights = weights * 0.1  # only the layer being computed is gathered on the device

    # an image-text model's vision tower and projector keep their weights unless train_vision trains them
    language = count_parameters(shape) if facts.get("image_text") else params
    image_text = facts.get("image_text") or {}
    tower = image_text.get("tower_shape")
    trainable = trainable_parameters(
        shape,
        setup.technique,
        setup.lora_r,
        language,
        facts["lora_target_modules"],
        facts.get("lora_target_parameters", []) if setup.lora_experts else [],
    ) + (vision_trainable(image_text, h, setup) if tower else 0)
    if setup.technique == "full":
        # grads in the training dtype, AdamW moments in fp32 (and fp32 master weights for 16-bit)
        grads = trainable * half
        states = trainable * (8 if setup.precision == "fp32" else 12)
    else:
        # adapters are trained in fp32 whatever the base's dtype
        grads = trainable * 4
        states = trainable * 8
    if stage >= 1 or setup.distributed == "fsdp":
        states /= shards
    if stage >= 2 or setup.distributed == "fsdp":
        grads /= shards
    if offload:
        states, grads = 0, grads / shards
    optimizer = grads + states

    tokens = setup.batch * setup.max_length * setup.sequences
    act_bytes = 2 if setup.precision != "fp32" else 4
    # copies of the hidden state each layer keeps for the backward pass, per token; adapters keep more, and more
    # again with dropout (its copy of each adapted layer's input)
    copies = device.get("activation_copies", 17)
    if setup.technique != "full":
        copies += device.get("adapter_activation_copies", 0)
        copies += device.get("dropout_activation_copies", 0) if setup.lora_dropout else 0
    every_layer = tokens * h * copies * act_bytes * layers
    # attention probabilities, where attention does not run in a fused kernel
    attention = device.get("attention_copies", 0) * tokens * shape["num_attention_heads"] * setup.max_length * 4
    if setup.gradient_checkpointing:
        # layer inputs kept for every layer, one layer's full activations recomputed at a time; where the
        # allocator keeps freed blocks (glibc on CPU), part of the full activations stays resident all the same
        activations = tokens * h * act_bytes * layers + tokens * h * copies * act_bytes + attention
        activations = max(activations, device.get("checkpoint_resident", 0) * (every_layer + attention * layers))
    else:
        activations = every_layer + attention * layers
    if tower:
        activations += tower_activations(tower, setup, copies, act_bytes)
    logits = (
        tokens * vocab * 4 * device.get("logits_copies", 1)
    )  # fp32 logits (on GPU their gradient reuses the buffer)
    # sampling holds keys and values of every layer for every sequence, before the training pass needs activations
    generation = tokens * layers * 2 * linear_sizes(shape)["k_proj"][1] * act_bytes if setup.generates else 0
    total = weights + optimizer + max(activations + logits, generation) + overhead_gb * GB
    return Estimate(
        weights_gb=_gb(weights),
        trainable_params=int(trainable),
        optimizer_gb=_gb(optimizer),
        activations_gb=_gb(activations),
        logits_gb=_gb(logits),
        overhead_gb=overhead_gb,
        total_gb=_gb(total),
        generation_gb=_gb(generation),
    )


def _zero_stage(distributed: str) -> int:
    if distributed.startswith("deepspeed-zero"):
        return int(distributed[len("deepspeed-zero")])
    return 0


def _gb(value: float) -> float:
    return round(value / GB, 2)
