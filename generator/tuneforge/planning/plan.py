"""Resolve the user's answers and the defaults into a checked plan: every value with its origin,
the model's facts, the memory estimate per device, and what would fit when the choice does not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge import catalog
from tuneforge.planning import hardware
from tuneforge.planning.answers import DERIVED_KEYS, KEYS, Given, coerce
from tuneforge.planning.fit import Suggestion, leanest, smaller_models, what_fits
from tuneforge.planning.memory import Estimate, plan_memory, setup_for
from tuneforge.planning.models import resolve_model, tool_fallback
from tuneforge.planning.rules import Problem, check, unpacked_because

DEFAULT_ORIGINS = ("default", "detected")
# measured by bench/training.py --model smollm2 --examples 48 (SmolLM2-135M-Instruct, LoRA r16, batch 8, 2 cores):
# 247 against 175 tokens/s, peak 8.0 against 10.4 GB, loss 3.068 either way; PEFT, LLaMA-Factory and unsloth
# default to no dropout too
DROPOUT_WHY = "default: without dropout LoRA trained 41 % faster on a CPU with 22 % less memory, to the same loss"
# current models that fit each hardware's default memory: a small Qwen3 trains in fp32 on a CPU or a Mac, a 4B
# one with LoRA in bf16 on a 24 GB GPU (the plan's verdict says so, tests/generator/test_plan.py checks it)
DEFAULT_MODELS = {"cpu": "qwen3-0.6b", "mps": "qwen3-1.7b", "cuda": "qwen3-4b", "rocm": "qwen3-4b"}
# models that train on pictures (scenario=images): SmolVLM-256M in fp32 on a CPU or a Mac, Gemma 3 4B on a GPU
IMAGE_MODELS = {
    "cpu": "smolvlm-256m-instruct",
    "mps": "smolvlm-256m-instruct",
    "cuda": "gemma-3-4b-it",
    "rocm": "gemma-3-4b-it",
}
GPU_MEMORY_DEFAULTS = {"cuda": 24.0, "rocm": 64.0, "mps": 16.0}


@dataclass
class Plan:
    values: dict[str, Any]
    origins: dict[str, str]
    facts: dict
    precision: str
    memory: Estimate
    available_gb: float
    suggestions: list[Suggestion] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.memory.total_gb <= self.available_gb

    @property
    def verdict(self) -> str:
        """The memory verdict in a few words, as the form, the CLI and the workspace README say it."""
        if self.fits:
            return f"fits: about {self.memory.total_gb:g} of {self.available_gb:g} GB"
        return f"does not fit: needs about {self.memory.total_gb:g} GB, {self.available_gb:g} GB given"

    @property
    def explicit_answers(self) -> list[str]:
        """The answers the user chose rather than defaulted."""
        return [k for k in KEYS if self.origins.get(k, "default").split(":")[0] not in DEFAULT_ORIGINS]

    def derived(self) -> dict[str, Any]:
        """What the plan derives from the answers for the template: its attributes answers.DERIVED names."""
        return {key: getattr(self, key) for key in DERIVED_KEYS}

    @property
    def model_facts(self) -> dict:
        return dict(self.facts)

    @property
    def scenario_facts(self) -> dict:
        return catalog.load("scenarios")[self.values["scenario"]]

    @property
    def objective_facts(self) -> dict:
        return catalog.load("objectives")[self.values["objective"]]

    @property
    def technique_facts(self) -> dict:
        return catalog.load("techniques")[self.values["technique"]]

    @property
    def pins(self) -> dict[str, str]:
        return catalog.pins()

    def copier_data(self) -> dict[str, Any]:
        """The data the template renders from; recorded whole in the workspace's answers file."""
        return {**self.values, **self.derived()}

    @property
    def target_facts(self) -> dict[str, dict]:
        """The catalog's facts about each chosen target."""
        return {t: catalog.load("targets")[t] for t in self.values["targets"]}

    @property
    def onnx_targets(self) -> list[str]:
        return [t for t in self.values["targets"] if catalog.is_onnx(t)]

    @property
    def npu_targets(self) -> list[str]:
        """ONNX targets compiled to one static graph for an NPU (from the merged model, never separate adapters)."""
        return [t for t in self.onnx_targets if self.target_facts[t]["onnx"]["device"] == "npu"]

    @property
    def runtime_targets(self) -> list[str]:
        """ONNX targets whose machine needs other ONNX Runtime packages than requirements.txt's."""
        return [t for t in self.onnx_targets if "runtime" in self.target_facts[t]]

    @property
    def platforms(self) -> list[str]:
        """The cloud platforms the workspace gets deployment files for (deploy/<platform>/)."""
        found = [catalog.load("compute")[self.values["compute"]].get("platform")]
        found += [facts.get("platform") for facts in self.target_facts.values()]
        return [p for p in dict.fromkeys(found) if p]

    @property
    def instances(self) -> dict[str, dict]:
        """The GPU instance each cloud target serves on (by model size) and the cloud training job asks for."""
        chosen = {}
        for target, facts in self.target_facts.items():
            if "serving_instances" in facts:
                chosen[target] = next(
                    i
                    for i in facts["serving_instances"]
                    if self.facts["params_b"] <= i.get("up_to_params_b", float("inf"))
                )
        training = catalog.load("compute")[self.values["compute"]].get("training_instance")
        if training:
            chosen["training"] = training
        return chosen

    @property
    def include(self) -> dict[str, bool]:
        """One named switch per optional file or folder of the workspace (the template's file names read them)."""
        v, platforms, targets = self.values, self.platforms, self.values["targets"]
        return {
            "launcher": v["distributed"] != "none",
            "deepspeed_config": v["distributed"].startswith("deepspeed"),
            "fsdp_config": v["distributed"] == "fsdp",
            "onnx": bool(self.onnx_targets),
            "deploy": bool(platforms),
            "gguf": "gguf" in targets,
            "local_runtime": bool(self.onnx_targets) or "gguf" in targets,
            # serve.py, its OpenAI API and the playground: over the local runtimes, or PyTorch answering about pictures
            "serve": bool(self.onnx_targets) or "gguf" in targets or v["scenario"] == "images",
            "azureml": "azureml" in platforms,
            "azureml_job": v["compute"] == "azureml",
            "azureml_endpoint": "azureml-endpoint" in targets,
            "foundry": "foundry" in platforms,
            "kaito": "kaito" in platforms,
            "kaito_tuning": v["compute"] == "kaito",
            "kaito_inference": "kaito" in targets,
            "export_chat": "foundry" in platforms or "kaito" in platforms,
            "chat_template": "fallback_chat_template" in self.facts,
            "tools": v["scenario"] == "tools",
            # finetune/images.py and the sample pictures: conversations about images, through the model's processor
            "images": v["scenario"] == "images",
            # preference pairs and their losses: trained by a preference objective, scored by the scenario
            "preference": self.objective_facts["kind"] == "preference" or v["scenario"] == "preference",
            # sampling, rewards.py and the GRPO loss
            "grpo": self.objective_facts["kind"] == "reinforcement",
        }

    @property
    def memory_plan(self) -> dict:
        """The estimate the workspace README and setup.sh --check repeat."""
        return {
            **self.memory.as_dict(),
            "available_gb": self.available_gb,
            "fits": self.fits,
            "verdict": self.verdict,
            "suggestions": [str(s) for s in self.suggestions],
        }

    @property
    def resource_name(self) -> str:
        """The project name as Azure ML endpoints (3-32 characters with a suffix) and Kubernetes accept it."""
        name = self.values["project_name"].lower().replace("_", "-").replace(".", "-")
        return name[:28].rstrip("-")

    def as_dict(self) -> dict:
        return {
            "answers": {k: {"value": self.values[k], "origin": self.origins[k]} for k in KEYS},
            "model": self.facts,
            "precision": self.precision,
            "memory": self.memory_plan,
            "suggestions": [{"changes": s.changes, "total_gb": s.estimate.total_gb} for s in self.suggestions],
            "problems": [{"key": p.key, "reason": p.reason, "alternatives": p.alternatives} for p in self.problems],
        }


class _Resolver:
    """Fills in each answer in dependency order, remembering why each value was chosen."""

    def __init__(self, given: Given):
        self.given = given
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def take(self, key: str, default: Any, why: str = "default") -> Any:
        if key in self.given.values:
            self.values[key] = coerce(key, self.given.values[key])
            self.origins[key] = self.given.origins.get(key, "given")
        else:
            self.values[key] = coerce(key, default)
            self.origins[key] = why
        return self.values[key]


def resolve(given: Given, detected: dict | None = None) -> Plan:
    """Resolve answers into a plan. Raises AnswerError for an unknown key, value or model."""
    for key in given.values:
        if key not in KEYS:
            coerce(key, given.values[key])  # raises with the list of known keys
    r = _Resolver(given)
    r.take("priority", "quality")
    hw, devices = _take_machine(r, detected or hardware.detect())
    if "images" in (given.values.get("scenario"), given.values.get("dataset_format")):
        r.take("model", IMAGE_MODELS[hw], f"default: reads pictures (scenario=images) and suits {hw}")
    else:
        r.take("model", DEFAULT_MODELS[hw], f"default: suits {hw}")
    facts = resolve_model(r.values["model"])
    precision = catalog.load("hardware")[hw]["precision"]
    _take_data(r, given)
    if r.values["scenario"] == "tools":
        facts = tool_fallback(facts)
    _take_training(r, given, facts, precision, devices)
    compute = r.take("compute", "local")
    r.take(
        "report_to",
        *(("mlflow", "default: compute=azureml logs to its MLflow") if compute == "azureml" else ("tensorboard",)),
    )
    if r.values["scenario"] == "images":
        r.take("targets", ["pytorch"], "default: scenario=images exports the merged model, which reads pictures")
    elif catalog.load("architectures")[facts["architecture"]]["onnx"]:
        r.take("targets", ["pytorch", "onnx-cpu"])
    else:
        r.take("targets", ["pytorch"], f"default: the model builder cannot export {facts['architecture']} to ONNX")
    r.take("adapter_export", "merged")
    gguf = catalog.load("targets")["gguf"]["gguf"]
    if facts["params_b"] < gguf["small_models"]["below_params_b"]:
        small = gguf["small_models"]
        r.take(
            "gguf_types",
            list(small["default"]),
            f"default: 4-bit types lose too much of a model under {small['below_params_b']:g}B parameters",
        )
    else:
        r.take("gguf_types", list(gguf["default"]))
    # most data has no reasoning in its answers: train and answer as the template's thinking switch set off does
    r.take("thinking", "off")
    # the tower already reads pictures: most tuning teaches the language model what to say about them
    r.take("train_vision", "none")
    r.take("project_name", "finetune")

    values = {k: r.values[k] for k in KEYS}
    estimate = plan_memory(facts, setup_for(values, precision, devices), catalog.load("hardware")[hw])
    plan = Plan(values, {k: r.origins[k] for k in KEYS}, facts, precision, estimate, values["gpu_memory_gb"])
    plan.problems = check(values, facts)
    if not plan.fits and not plan.problems:
        plan.suggestions = what_fits(plan)
        if not plan.suggestions:
            lean = leanest(plan)
            still = f" and still about {lean.estimate.total_gb:g} GB with the leanest options ({lean})" if lean else ""
            smaller = smaller_models(plan, lean.changes if lean else {})
            alternatives = (
                [f"a smaller model such as {' or '.join(smaller)}{' with those options' if lean else ''}"]
                if smaller
                else []
            )
            plan.problems.append(
                Problem(
                    "model",
                    f"{facts['id']} needs about {estimate.total_gb:g} GB per device{still}, but only "
                    f"{plan.available_gb:g} GB is given.",
                    [*alternatives, "more or larger GPUs (gpu_count, gpu_memory_gb)"],
                )
            )
    return plan


def _take_machine(r: _Resolver, detected: dict) -> tuple[str, int]:
    """The hardware, its devices and their memory (detected, or typical for hardware not detected); how they share work."""
    hw = r.take("hardware", detected["hardware"], "detected")
    same_hw = hw == detected["hardware"]
    r.take("gpu_count", detected["gpu_count"] if same_hw else 1, "detected" if same_hw else "default")
    if same_hw and detected["gpu_memory_gb"] is not None:
        r.take("gpu_memory_gb", detected["gpu_memory_gb"], "detected")
    else:
        unknown = " (not reported by the driver; set gpu_memory_gb)" if same_hw else ""
        r.take(
            "gpu_memory_gb",
            GPU_MEMORY_DEFAULTS.get(hw, hardware.system_memory_gb()),
            f"default: typical {hw} device{unknown}",
        )
    r.take("num_nodes", 1)
    devices = r.values["gpu_count"] * r.values["num_nodes"]
    priority = r.values["priority"]
    if devices > 1 and priority in ("scale", "memory") and hw != "cpu":
        r.take("distributed", "deepspeed-zero3", f"default: priority={priority}")
    elif devices > 1:
        r.take("distributed", "ddp", "default: several devices")
    else:
        r.take("distributed", "none")
    return hw, devices


def _take_data(r: _Resolver, given: Given) -> None:
    """The data, the scenario it serves, its format and what training optimises on it."""
    r.take("dataset", "data/sample.jsonl")
    scenario = r.take("scenario", *_scenario_default(given))
    fmt = r.take(
        "dataset_format", catalog.load("scenarios")[scenario]["formats"][0], f"default: suits scenario={scenario}"
    )
    r.take("objective", *_objective_default(scenario, fmt))


def _take_training(r: _Resolver, given: Given, facts: dict, precision: str, devices: int) -> None:
    """The technique and hyperparameters: a GPU's defaults are larger, and LoRA gives way to QLoRA where it would not fit."""
    hw, priority = r.values["hardware"], r.values["priority"]
    gpu = hw in ("cuda", "rocm")
    r.take(
        "gradient_checkpointing",
        gpu or priority == "memory",
        "default: priority=memory" if priority == "memory" else "default",
    )
    r.take("per_device_train_batch_size", 4 if gpu else 2)
    r.take("gradient_accumulation_steps", 4 if gpu else 2)
    length = 2048 if gpu else 512
    needed = catalog.load("scenarios")[r.values["scenario"]].get("max_length", 0)
    why = f"default: scenario={r.values['scenario']} needs {needed}" if needed > length else "default"
    r.take("max_length", min(max(length, needed), facts["context_length"]), why)
    r.take(
        "lora_r",
        {"quality": 32, "cost": 8}.get(priority, 16),
        f"default: priority={priority}" if priority in ("quality", "cost") else "default",
    )
    technique_default, why = "lora", "default"
    if priority == "memory" and catalog.load("hardware")[hw]["quantization"]:
        technique_default, why = "qlora", "default: priority=memory"
    elif gpu and "technique" not in given.values:
        lora_fit = plan_memory(
            facts, setup_for({**r.values, "technique": "lora"}, precision, devices), catalog.load("hardware")[hw]
        )
        if lora_fit.total_gb > r.values["gpu_memory_gb"]:
            technique_default, why = "qlora", f"default: lora needs about {lora_fit.total_gb:g} GB"
    technique = r.take("technique", technique_default, why)
    r.take("lora_alpha", 2 * r.values["lora_r"], "default: 2 x lora_r")
    r.take("lora_experts", False)  # attention only: the common choice, and the cheaper one
    if r.values["lora_experts"]:
        r.take("lora_dropout", 0.0, "default: lora_experts=true (PEFT's LoRA on parameters has no dropout)")
    else:
        r.take("lora_dropout", 0.0, DROPOUT_WHY)
    objective = r.values["objective"]
    scale = catalog.load("objectives")[objective]["learning_rate_scale"]
    r.take(
        "learning_rate",
        float(f"{catalog.load('techniques')[technique]['learning_rate'] * scale:.3g}"),
        f"default: suits {technique}" + (f" and objective={objective}" if scale != 1 else ""),
    )
    r.take("num_train_epochs", 3)
    r.take("max_steps", -1)
    unpacked = unpacked_because(r.values)
    r.take("packing", not unpacked, f"default: {unpacked}" if unpacked else "default")
    r.take("seed", 42)


def _scenario_default(given: Given) -> tuple[str, str]:
    """chat, unless the format given can only mean another scenario (text: domain; a task's own format: that task)
    or the objective given brings its own (a preference one: preference; grpo: one whose answers can be checked)."""
    objective = given.values.get("objective", "sft")
    brings = catalog.load("objectives").get(objective, {}).get("scenario")
    if brings and not given.values.get("dataset_format"):
        return brings, f"default: suits objective={objective}"
    if brings == "preference":
        return "preference", f"default: suits objective={objective}"
    fmt = given.values.get("dataset_format")
    for scenario, facts in catalog.load("scenarios").items():
        if fmt and fmt == facts["formats"][0] and fmt not in catalog.load("scenarios")["chat"]["formats"]:
            return scenario, f"default: suits dataset_format={fmt}"
    return "chat", "default"


def _objective_default(scenario: str, fmt: str) -> tuple[str, str]:
    """sft, except for preference data: the first objective that reads its format."""
    if scenario != "preference":
        return "sft", "default"
    for objective, facts in catalog.load("objectives").items():
        if fmt in facts["formats"]:
            return objective, f"default: suits dataset_format={fmt}"
    return "dpo", "default"
