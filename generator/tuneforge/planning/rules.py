"""Which combinations of answers can work, and why not. Pure functions of resolved answers and facts.

Each rule returns Problems: the answer at fault, the reason, and what would work instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge import catalog


@dataclass(frozen=True)
class Problem:
    key: str
    reason: str
    alternatives: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.key}: {self.reason}"
        if self.alternatives:
            text += f" What would work: {'; '.join(self.alternatives)}."
        return text


def check(values: dict, facts: dict) -> list[Problem]:
    """Every problem with this combination (empty when it can work)."""
    problems: list[Problem] = []
    for rule in RULES:
        problems.extend(rule(values, facts))
    return problems


def _technique_on_hardware(v: dict, facts: dict) -> list[Problem]:
    hw = catalog.load("hardware")[v["hardware"]]
    if catalog.load("techniques")[v["technique"]]["quantized"] and not hw["quantization"]:
        return [
            Problem(
                "technique",
                f"{v['technique']} needs bitsandbytes 4-bit kernels, which {v['hardware']} does not have.",
                ["technique=lora (or dora) on mps", "hardware=cuda for qlora"],
            )
        ]
    return []


def _technique_on_experts(v: dict, facts: dict) -> list[Problem]:
    """transformers 5 keeps a mixture of experts' experts as fused tensors, not linear layers."""
    if not facts.get("moe"):
        return []
    if v["technique"] == "qlora":
        return [
            Problem(
                "technique",
                f"{facts['id']} is a mixture of experts: bitsandbytes quantizes linear layers only, so its "
                "experts (most of its weights) would stay 16-bit and QLoRA would save little.",
                [
                    "technique=lora (adapters on attention, experts frozen)",
                    "technique=full with distributed=deepspeed-zero3",
                ],
            )
        ]
    if v["technique"] == "ia3":
        return [
            Problem(
                "technique",
                f"{facts['id']} is a mixture of experts: IA3 scales feed-forward linear layers, and its "
                "experts are fused tensors that IA3 cannot adapt.",
                ["technique=lora"],
            )
        ]
    return []


def expert_techniques() -> list[str]:
    """The techniques PEFT can put on an MoE's expert parameters (the catalog's `experts`)."""
    return [t for t, facts in catalog.load("techniques").items() if facts["experts"]]


def _lora_on_experts(v: dict, facts: dict) -> list[Problem]:
    if not v["lora_experts"]:
        return []
    if not facts.get("moe"):
        return [
            Problem(
                "lora_experts",
                f"{facts['id']} is not a mixture of experts: it has no experts to adapt.",
                ["lora_experts=false", "model=qwen3-30b-a3b or gpt-oss-20b"],
            )
        ]
    if v["technique"] not in expert_techniques():
        return [
            Problem(
                "lora_experts",
                f"PEFT trains the experts' fused parameters with LoRA and rsLoRA only, not {v['technique']}.",
                ["technique=lora", "lora_experts=false"],
            )
        ]
    if v["lora_dropout"]:
        return [
            Problem(
                "lora_dropout",
                f"PEFT's LoRA on the experts' fused parameters has no dropout, so lora_dropout must "
                f"be 0 with lora_experts=true, not {v['lora_dropout']:g}.",
                ["lora_dropout=0"],
            )
        ]
    return []


def _thinking(v: dict, facts: dict) -> list[Problem]:
    if v["thinking"] == "keep" and not facts.get("thinking"):
        return [
            Problem(
                "thinking",
                f"{facts['id']}'s chat template has no thinking switch, so there are no reasoning blocks to keep.",
                ["thinking=off", "model=qwen3-0.6b"],
            )
        ]
    return []


def _tools(v: dict, facts: dict) -> list[Problem]:
    """A catalog model whose chat template has no tool calls takes its family's turns for the tools scenario,
    which it can only learn where its vocabulary has them (architectures.yaml's chat_format says it does)."""
    if (
        v["scenario"] != "tools"
        or facts.get("source") != "catalog"
        or catalog.load("models")[facts["id"]].get("tool_calls")
        or "chat_format" in catalog.load("architectures")[facts["architecture"]]
    ):
        return []
    able = sorted((f["params_b"], m) for m, f in catalog.load("models").items() if f.get("tool_calls"))[:3]
    return [
        Problem(
            "model",
            f"{facts['id']}'s chat template has no tool calls, and tuneforge's catalog has no turns with tool calls "
            "that its vocabulary holds.",
            [f"model={m}" for _, m in able] + ["a scenario other than tools"],
        )
    ]


def image_models() -> list[str]:
    """The catalog's models whose architecture trains on pictures (architectures.yaml's image_text.images), the
    smallest first."""
    architectures = catalog.load("architectures")
    models = catalog.load("models").items()
    able = [m for m, f in models if (architectures[f["architecture"]].get("image_text") or {}).get("images")]
    return sorted(able, key=lambda m: catalog.load("models")[m]["params_b"])


def _images(v: dict, facts: dict) -> list[Problem]:
    """Conversations about pictures need a model that reads them, and a target that keeps its vision tower."""
    if v["scenario"] != "images":
        return []
    problems = []
    if not (facts.get("image_text") or {}).get("images"):
        problems.append(
            Problem(
                "model",
                f"{facts['id']} reads no pictures: the images scenario needs an image-text model whose processor "
                "tuneforge knows.",
                [f"model={m}" for m in image_models()[:3]] + ["a scenario other than images"],
            )
        )
    others = [t for t in v["targets"] if t != "pytorch"]
    if others:
        problems.append(
            Problem(
                "targets",
                f"{', '.join(others)} would answer without the pictures: tuneforge does not yet export the vision tower "
                "and projector beside the language model (llama.cpp's mmproj file, ONNX Runtime GenAI's vision model), "
                "nor take pictures in the Azure ML endpoint's or KAITO's requests.",
                ["targets=pytorch (the merged model reads pictures, in chat.py --image, serve.py and eval.py)"],
            )
        )
    return problems


def trains_vision(facts: dict) -> bool:
    """Whether the catalog describes the model's vision tower well enough to train it (architectures.yaml)."""
    return bool((facts.get("image_text") or {}).get("tower_lora_modules"))


def _vision_training(v: dict, facts: dict) -> list[Problem]:
    """The vision tower and projector learn from pictures alone, of a model whose tower the catalog describes."""
    if v["train_vision"] == "none":
        return []
    if not trains_vision(facts):
        return [
            Problem(
                "train_vision",
                f"{facts['id']} has no vision tower tuneforge knows how to train.",
                ["train_vision=none"]
                + (["scenario=images (its default model reads pictures)"] if v["scenario"] != "images" else [])
                + [f"model={m}" for m in image_models()[:2]],
            )
        ]
    if v["scenario"] != "images":
        return [
            Problem(
                "train_vision",
                f"the {v['scenario']} scenario's data holds no pictures, so the vision tower and projector would "
                "learn nothing from it.",
                ["train_vision=none", "scenario=images"],
            )
        ]
    if v["technique"] == "ia3" and v["train_vision"] == "all":
        return [
            Problem(
                "train_vision",
                "IA3 scales the language model's feed-forward layers; it has no place in the vision tower.",
                ["technique=lora", "train_vision=projector"],
            )
        ]
    return []


def _objective(v: dict, facts: dict) -> list[Problem]:
    objective, scenario = v["objective"], v["scenario"]
    objectives = catalog.load("objectives")
    kind = objectives[objective]["kind"]
    preference = [o for o, f in objectives.items() if f["kind"] == "preference"]
    if kind == "supervised":
        if scenario == "preference":
            return [
                Problem(
                    "objective",
                    "the preference scenario's examples are pairs of answers (or answers marked good "
                    "or bad), which supervised fine-tuning cannot learn from.",
                    [f"objective={o}" for o in preference] + ["scenario=chat for supervised fine-tuning"],
                )
            ]
        return []
    problems = _reinforcement(v) if kind == "reinforcement" else _preference(v, objectives, preference)
    allowed = catalog.load("compute")[v["compute"]].get("objectives")
    if allowed and objective not in allowed["only"]:
        problems.append(
            Problem(
                "compute",
                f"{allowed['why']}, so it cannot run {objective}.",
                ["compute=azureml", "compute=local"]
                + [f"objective={o}" + (" with scenario=chat" if o == "sft" else "") for o in allowed["only"]],
            )
        )
    return problems


def _preference(v: dict, objectives: dict, preference: list[str]) -> list[Problem]:
    objective, scenario, fmt = v["objective"], v["scenario"], v["dataset_format"]
    if scenario != "preference":
        return [
            Problem(
                "objective",
                f"{objective} learns from preferred and rejected answers, which the {scenario} "
                "scenario's data does not hold.",
                ["scenario=preference", "objective=sft"],
            )
        ]
    if fmt not in objectives[objective]["formats"]:
        readers = [o for o in preference if fmt in objectives[o]["formats"]]
        return [
            Problem(
                "dataset_format",
                f"{objective} needs {' or '.join(objectives[objective]['formats'])} data, "
                f"and {fmt} examples have no rejected answer to compare with.",
                [f"objective={o}" for o in readers] + [f"dataset_format={f}" for f in objectives[objective]["formats"]],
            )
        ]
    return []


def _reinforcement(v: dict) -> list[Problem]:
    """GRPO: a reward function must be able to check the scenario's answers, and generation must run where the
    weights are sharded."""
    objective, scenario = v["objective"], v["scenario"]
    checked = [s for s, f in catalog.load("scenarios").items() if f.get("rewards")]
    problems = []
    if scenario not in checked:
        problems.append(
            Problem(
                "objective",
                f"{objective} learns from rewards that check each sampled answer against the example's own, and the "
                f"{scenario} scenario's answers have no such check (they are judged by "
                f"{catalog.load('scenarios')[scenario]['metric'].replace('_', ' ')}).",
                [f"scenario={s}" for s in checked] + ["objective=sft"],
            )
        )
    if v["distributed"] == "fsdp":
        problems.append(
            Problem(
                "distributed",
                f"{objective} samples answers every step, and the workspace generates with whole weights, which FSDP "
                "shards across devices.",
                ["distributed=ddp", "distributed=deepspeed-zero2", "distributed=deepspeed-zero3"],
            )
        )
    return problems


def _distributed_on_hardware(v: dict, facts: dict) -> list[Problem]:
    hw = catalog.load("hardware")[v["hardware"]]
    dist = v["distributed"]
    if dist not in hw["distributed"]:
        why = {
            "mps": "Apple's MPS backend is one device with no collective communication, so DeepSpeed, FSDP and DDP cannot run on it.",
            "cpu": "on CPU, FSDP has no working backend here and ZeRO-3 offload has nothing to offload to.",
        }.get(v["hardware"], f"{dist} does not run on {v['hardware']}.")
        return [Problem("distributed", why, [f"distributed={d}" for d in hw["distributed"]])]
    devices = v["gpu_count"] * v["num_nodes"]
    if dist in ("ddp", "fsdp") and devices < 2:
        return [
            Problem(
                "distributed",
                f"{dist} splits work over several devices but only one is given (gpu_count=1, num_nodes=1).",
                [
                    "distributed=none",
                    "gpu_count=2 or more",
                    "distributed=deepspeed-zero3-offload to save memory on one GPU",
                ],
            )
        ]
    if dist == "none" and devices > 1:
        return [
            Problem(
                "distributed",
                f"{devices} devices were given but distributed=none would use one.",
                ["distributed=ddp", "distributed=deepspeed-zero3", "gpu_count=1"],
            )
        ]
    if v["hardware"] == "mps" and (v["gpu_count"] > 1 or v["num_nodes"] > 1):
        return [Problem("gpu_count", "a Mac has one MPS device.", ["gpu_count=1", "num_nodes=1"])]
    return []


def _technique_on_compute(compute: str, tech: str) -> list[Problem]:
    """A compute platform that runs only some techniques (compute.yaml's `techniques`)."""
    allowed = catalog.load("compute")[compute].get("techniques")
    if not allowed or tech in allowed["only"]:
        return []
    alternatives = [f"technique={t}" for t in allowed["only"]] + [allowed["instead"]]
    return [Problem("technique", allowed["why"].format(technique=tech) + ".", alternatives)]


def _compute_platform(v: dict, facts: dict) -> list[Problem]:
    compute, tech, model = v["compute"], v["technique"], facts["id"]
    kaito = facts.get("kaito") or {}
    if compute == "kaito":
        problems = []
        if not kaito.get("tuning"):
            tunable = [m for m, f in catalog.load("models").items() if (f.get("kaito") or {}).get("tuning")]
            problems.append(
                Problem(
                    "compute",
                    f"KAITO has no tuning preset for {model}.",
                    [f"model={m}" for m in tunable[:4]] + ["compute=local"],
                )
            )
        return problems + _technique_on_compute(compute, tech)
    if compute == "foundry-serverless":
        problems = []
        if not facts.get("foundry"):
            offered = [m for m, f in catalog.load("models").items() if f.get("foundry")]
            problems.append(
                Problem(
                    "compute",
                    f"Azure AI Foundry serverless fine-tuning does not offer {model}.",
                    [f"model={m}" for m in offered[:4]] + ["compute=azureml"],
                )
            )
        problems += _technique_on_compute(compute, tech)
        if v["dataset_format"] == "text":
            problems.append(
                Problem(
                    "dataset_format",
                    "serverless fine-tuning takes chat examples (prompts and answers), not plain text.",
                    ["compute=azureml or local for continued training on text", "scenario=chat"],
                )
            )
        return problems
    if compute == "azureml" and v["hardware"] not in ("cuda", "cpu"):
        return [
            Problem(
                "hardware",
                f"Azure ML compute clusters offer NVIDIA GPUs (or CPUs), not {v['hardware']}.",
                ["hardware=cuda", "compute=local"],
            )
        ]
    return []


def _targets(v: dict, facts: dict) -> list[Problem]:
    problems = []
    onnx = [t for t in v["targets"] if catalog.is_onnx(t)]
    architecture = catalog.load("architectures")[facts["architecture"]]
    if not v["targets"]:
        problems.append(Problem("targets", "choose at least one target.", ["targets=pytorch", "targets=onnx-cpu"]))
    if onnx and not architecture["onnx"]:
        gguf = ["targets=pytorch,gguf"] if architecture.get("gguf") else []
        problems.append(
            Problem(
                "targets",
                f"ONNX Runtime GenAI's model builder cannot export {facts['architecture']}.",
                ["targets=pytorch", *gguf],
            )
        )
    if "gguf" in v["targets"] and not architecture.get("gguf"):
        problems.append(
            Problem(
                "targets",
                f"llama.cpp's converter cannot convert {facts['architecture']} to GGUF.",
                ["targets=pytorch", "targets=onnx-cpu"],
            )
        )
    if "gguf" in v["targets"] and not v["gguf_types"]:
        problems.append(
            Problem("gguf_types", "the gguf target needs at least one quantization type.", ["gguf_types=Q8_0,Q4_K_M"])
        )
    if "kaito" in v["targets"] and not facts.get("kaito"):
        with_preset = [m for m, f in catalog.load("models").items() if f.get("kaito")]
        problems.append(
            Problem(
                "targets",
                f"KAITO has no inference preset for {facts['id']}.",
                [f"model={m}" for m in with_preset[:3]] + ["targets=azureml-endpoint"],
            )
        )
    serves = catalog.load("targets")["kaito"]["techniques"]
    if "kaito" in v["targets"] and v["technique"] not in serves["only"]:
        problems.append(
            Problem(
                "targets",
                f"{serves['why']}; {v['technique']} gives none it can load.",
                ["technique=lora", "targets=azureml-endpoint"],
            )
        )
    if v["adapter_export"] == "adapters":
        if not catalog.load("techniques")[v["technique"]]["onnx_adapter"]:
            problems.append(
                Problem(
                    "adapter_export",
                    f"{v['technique']} adapters cannot be exported as ONNX adapter files.",
                    ["adapter_export=merged", "technique=lora"],
                )
            )
        if not onnx:
            problems.append(
                Problem(
                    "adapter_export",
                    "separate ONNX adapters need an ONNX target.",
                    ["adapter_export=merged", "targets=onnx-cpu"],
                )
            )
    return problems


def unpacked_because(v: dict) -> str | None:
    """Why a run's examples cannot be packed into shared rows (train.py's data.packing), or None where they can."""
    if catalog.load("objectives")[v["objective"]]["kind"] == "preference":
        return "preference pairs are scored whole, each answer beside its prompt"
    if v["objective"] != "sft":
        return f"{v['objective']} samples answers to whole prompts"
    if v["scenario"] == "images":
        return "each conversation's pictures go with its own row"
    return None


def _hyperparameters(v: dict, facts: dict) -> list[Problem]:
    problems = []
    why = unpacked_because(v)
    if v["packing"] and why:
        problems.append(Problem("packing", f"rows cannot be packed here: {why}.", ["packing=false"]))
    if v["max_length"] > facts["context_length"]:
        problems.append(
            Problem(
                "max_length",
                f"{facts['id']} reads at most {facts['context_length']} tokens.",
                [f"max_length={facts['context_length']}"],
            )
        )
    if v["max_steps"] == 0:
        problems.append(Problem("max_steps", "0 steps trains nothing.", ["max_steps=-1 (all epochs)", "max_steps=100"]))
    if v["max_steps"] < 0 and v["num_train_epochs"] <= 0:
        problems.append(
            Problem("num_train_epochs", "with max_steps=-1 at least some epochs are needed.", ["num_train_epochs=3"])
        )
    return problems


WHY_NOT = {  # why a format cannot express a scenario
    "text": "plain text has no prompt and answer to tell apart",
    "ner": "it holds tagged words, not {scenario} examples",
}


def _format_for_scenario(v: dict, facts: dict) -> list[Problem]:
    scenario, fmt = v["scenario"], v["dataset_format"]
    formats = catalog.load("scenarios")[scenario]["formats"]
    if fmt in formats:
        return []
    if scenario == "ner":
        why = "entity-level F1 needs a BIO tag on every word, which only the ner format ({tokens, tags}) holds"
    elif scenario == "domain":
        why = "continued training learns every token of raw text, which only the text format holds"
    else:
        why = WHY_NOT.get(fmt, "it holds the fields of another task").format(scenario=scenario)
    return [
        Problem(
            "dataset_format",
            f"the {fmt} format cannot express the {scenario} scenario: {why}.",
            [f"dataset_format={f}" for f in formats]
            + [
                f"scenario={s}" for s, f2 in catalog.load("scenarios").items() if fmt in f2["formats"] and s != scenario
            ][:3],
        )
    ]


RULES = [
    _technique_on_hardware,
    _technique_on_experts,
    _lora_on_experts,
    _thinking,
    _tools,
    _images,
    _vision_training,
    _objective,
    _distributed_on_hardware,
    _compute_platform,
    _targets,
    _hyperparameters,
    _format_for_scenario,
]
