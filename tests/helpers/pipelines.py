"""The end-to-end runs of `make test`: each a workspace that smoke.py runs whole (tiny model, check data, train,
merge, ONNX export and benchmark where it has the target, chat, eval), once per test run, shared by every test
that reads it (through tests/helpers/cache.py).

A covering design rather than products: every architecture with LoRA (or another adapter), QLoRA and full
fine-tuning; DoRA, whose targets are LoRA's, on one model of each layout (Llama, SmolLM3 with ONNX, and each mixture
of experts: the CI budget); and on those same runs every
value of the other dimensions at least once, spread over different architectures and techniques: every scenario
(with its data format and metric), each plain data format, both ONNX modes (merged, separate adapters), the
launchers (torchrun's two processes, DeepSpeed ZeRO-2 and ZeRO-3), each train_vision, thinking=keep on each architecture whose
template has the switch, and lora_experts on each mixture of experts. tests/e2e/test_pipelines_e2e.py checks the
table covers them. The preference objectives train in tests/workspace/test_preference.py, GRPO in one run here and in
tests/workspace/test_grpo.py, GGUF in
tests/e2e/test_gguf_e2e.py, two real pretrained models in tests/e2e/test_real_models_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import cache
from helpers.workspace import run

# name -> answers; "steps": train that long (30: long enough for the loss to fall, which is then checked);
# "thinking": the data's answers open with reasoning and the run is long enough to learn it
PIPELINES = {
    # the older architectures, one technique each, and a plain data format each
    "qwen2-lora-domain-onnx": {
        "model": "qwen2.5-0.5b-instruct",
        "technique": "lora",
        "scenario": "domain",
        "dataset_format": "text",
        "targets": "pytorch,onnx-cpu",
        "steps": 30,
    },
    "phi3-qlora-prompt-completion-onnx-adapters": {
        "model": "phi-3-mini-4k-instruct",
        "technique": "qlora",
        "dataset_format": "prompt-completion",
        "targets": "pytorch,onnx-cpu",
        "adapter_export": "adapters",
        "gpu_memory_gb": 64,
        "steps": 30,
    },
    "llama-dora-alpaca": {
        "model": "llama-3.2-1b-instruct",
        "technique": "dora",
        "dataset_format": "alpaca",
        "targets": "pytorch",
        "steps": 30,
    },
    "llama-lora-qa-onnx-adapters": {
        "model": "llama-3.2-1b-instruct",
        "technique": "lora",
        "scenario": "qa",
        "targets": "pytorch,onnx-cpu",
        "adapter_export": "adapters",
    },
    "phi4mini-rslora-summarization": {
        "model": "phi-4-mini-instruct",
        "technique": "rslora",
        "scenario": "summarization",
        "targets": "pytorch",
        "gpu_memory_gb": 64,
        "steps": 30,
    },
    "mistral-ia3-creative": {
        "model": "mistral-7b-v0.3",
        "technique": "ia3",
        "scenario": "creative",
        "targets": "pytorch",
        "gpu_memory_gb": 64,
        "steps": 30,
    },
    # Qwen3: each launcher, the thinking switch kept, and the default chat workspace with ONNX (served by test_serve)
    "qwen3-lora-chat-onnx": {"model": "qwen3-0.6b", "technique": "lora", "targets": "pytorch,onnx-cpu"},
    "qwen3-lora-thinking-onnx": {
        "model": "qwen3-0.6b",
        "technique": "lora",
        "thinking": "keep",
        "targets": "pytorch,onnx-cpu",
    },
    "qwen3-lora-ddp-translation": {
        "model": "qwen3-0.6b",
        "technique": "lora",
        "distributed": "ddp",
        "gpu_count": 2,
        "scenario": "translation",
        "targets": "pytorch",
        "steps": 30,
    },
    "qwen3-lora-zero2-classification": {
        "model": "qwen3-0.6b",
        "technique": "lora",
        "distributed": "deepspeed-zero2",
        "scenario": "classification",
        "targets": "pytorch",
        "steps": 30,
    },
    "qwen3-lora-zero3-ner": {
        "model": "qwen3-0.6b",
        "technique": "lora",
        "distributed": "deepspeed-zero3",
        "scenario": "ner",
        "targets": "pytorch",
        "steps": 30,
    },
    "qwen3-full-text": {
        "model": "qwen3-0.6b",
        "technique": "full",
        "dataset_format": "text",
        "targets": "pytorch",
        "steps": 30,
    },
    "qwen3-qlora": {"model": "qwen3-0.6b", "technique": "qlora", "targets": "pytorch", "gpu_memory_gb": 400},
    # mixtures of experts: LoRA on every expert beside attention, the thinking switch on Qwen3-MoE
    "qwen3moe-lora-experts-thinking": {
        "model": "qwen3-30b-a3b",
        "technique": "lora",
        "lora_experts": True,
        "thinking": "keep",
        "targets": "pytorch",
        "gpu_memory_gb": 400,
    },
    "qwen3moe-dora": {"model": "qwen3-30b-a3b", "technique": "dora", "targets": "pytorch", "gpu_memory_gb": 400},
    "qwen3moe-full": {"model": "qwen3-30b-a3b", "technique": "full", "targets": "pytorch", "gpu_memory_gb": 400},
    "gptoss-lora-experts": {
        "model": "gpt-oss-20b",
        "technique": "lora",
        "lora_experts": True,
        "targets": "pytorch",
        "gpu_memory_gb": 400,
        "steps": 30,
    },
    "gptoss-dora": {"model": "gpt-oss-20b", "technique": "dora", "targets": "pytorch", "gpu_memory_gb": 400},
    "gptoss-full": {"model": "gpt-oss-20b", "technique": "full", "targets": "pytorch", "gpu_memory_gb": 400},
    # Gemma 3 (text), SmolLM3 and Granite; ONNX where the model builder exports them
    # (LoRA on Gemma 3 text: the real Gemma 3 270M in tests/e2e/test_real_models_e2e.py)
    "gemma3text-qlora": {"model": "gemma-3-1b-it", "technique": "qlora", "targets": "pytorch", "gpu_memory_gb": 400},
    "gemma3text-full": {"model": "gemma-3-1b-it", "technique": "full", "targets": "pytorch", "gpu_memory_gb": 400},
    "smollm3-lora-thinking-onnx": {
        "model": "smollm3-3b",
        "technique": "lora",
        "thinking": "keep",
        "targets": "pytorch,onnx-cpu",
        "gpu_memory_gb": 64,
    },
    # tool calls through the catalog's ChatML turns (SmolLM3's own template drops earlier turns' calls), scored
    # on PyTorch and ONNX alike
    "smollm3-qlora-tools-onnx": {
        "model": "smollm3-3b",
        "technique": "qlora",
        "scenario": "tools",
        "targets": "pytorch,onnx-cpu",
        "gpu_memory_gb": 400,
    },
    # GRPO: sampled tool calls rewarded by the scenario's own check, on a quantized base (tests/workspace/test_grpo.py
    # trains one until its reward rises)
    "qwen2-qlora-grpo-tools": {
        "model": "qwen2.5-0.5b-instruct",
        "technique": "qlora",
        "scenario": "tools",
        "objective": "grpo",
        "targets": "pytorch",
    },
    "smollm3-dora-onnx": {
        "model": "smollm3-3b",
        "technique": "dora",
        "targets": "pytorch,onnx-cpu",
        "gpu_memory_gb": 64,
    },
    "smollm3-full": {"model": "smollm3-3b", "technique": "full", "targets": "pytorch", "gpu_memory_gb": 400},
    "granite-lora": {
        "model": "granite-3.3-2b-instruct",
        "technique": "lora",
        "targets": "pytorch",
        "gpu_memory_gb": 400,
    },
    "granite-qlora-preference-onnx": {
        "model": "granite-3.3-2b-instruct",
        "technique": "qlora",
        "scenario": "preference",
        "targets": "pytorch,onnx-cpu",
        "gpu_memory_gb": 64,
    },
    "granite-full": {
        "model": "granite-3.3-2b-instruct",
        "technique": "full",
        "targets": "pytorch",
        "gpu_memory_gb": 400,
    },
    # the image-text models: their language model trains on text (the vision tower and projector keep their weights),
    # or on conversations about pictures through the model's processor (scenario images), with the projector
    # (train_vision=projector) or the tower too (all)
    "gemma3-lora": {"model": "gemma-3-4b-it", "technique": "lora", "targets": "pytorch", "gpu_memory_gb": 400},
    "gemma3-qlora": {"model": "gemma-3-4b-it", "technique": "qlora", "targets": "pytorch", "gpu_memory_gb": 400},
    "gemma3-full-images": {  # long enough to learn the sample's answers, which only the pictures tell apart
        "model": "gemma-3-4b-it",
        "technique": "full",
        "scenario": "images",
        "train_vision": "projector",
        "targets": "pytorch",
        "gpu_memory_gb": 400,
        "steps": 240,
    },
    "smolvlm-qlora-images": {  # the tower's LoRA on 4-bit layers, the projector kept in 16 bits to train in full
        "model": "smolvlm-256m-instruct",
        "technique": "qlora",
        "scenario": "images",
        "train_vision": "all",
        "targets": "pytorch",
    },
    "mistral3-lora": {
        "model": "mistral-small-3.1-24b-instruct",
        "technique": "lora",
        "targets": "pytorch",
        "gpu_memory_gb": 400,
    },
    "mistral3-qlora": {
        "model": "mistral-small-3.1-24b-instruct",
        "technique": "qlora",
        "targets": "pytorch",
        "gpu_memory_gb": 400,
    },
    "mistral3-full": {
        "model": "mistral-small-3.1-24b-instruct",
        "technique": "full",
        "targets": "pytorch",
        "gpu_memory_gb": 400,
    },
}


def answers(name: str) -> dict:
    """The pipeline's answers to tuneforge new (without the run's own settings)."""
    return {k: v for k, v in PIPELINES[name].items() if k not in ("steps",)}


def smoked(name: str, new_workspace) -> tuple[Path, str]:
    """(workspace, smoke.py's output) after smoke.py passed in the pipeline's workspace; made once per test run."""
    spec = PIPELINES[name]
    rendered = new_workspace(f"render-{name}", **answers(name))

    def build(folder: Path) -> None:
        cache.copy_of(rendered, folder / "ws")
        workspace = folder / "ws"
        if spec.get("thinking") == "keep":
            learn_to_reason(workspace)
        elif spec.get("steps"):
            lengthen(workspace, spec["steps"])
        result = run(workspace, "smoke.py")
        (folder / "smoke.log").write_text(result.stdout + "\n" + result.stderr[-6000:])
        assert result.returncode == 0 and "[smoke] passed" in result.stdout, (
            result.stdout[-4000:] + result.stderr[-4000:]
        )
        if "onnx-cpu" in spec["targets"].split(","):  # the same models measured side by side, fp32 parity first
            tokens = (
                ["--new-tokens", "8", "--parity-steps", "20"]
                if spec.get("thinking")
                else ["--new-tokens", "16", "--parity-steps", "16"]
            )
            bench = run(workspace, "benchmark.py", "--smoke", "--prompts", "2", *tokens)
            assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
        if spec.get("scenario") == "images" and spec.get("steps"):  # what the trained model answers about each picture
            smoke = workspace / "outputs" / "smoke"
            scored = run(
                workspace,
                "eval.py",
                "--split",
                "train",
                "--show",
                "50",
                *("--base", str(smoke / "base"), "--tuned", str(smoke / "merged"), "--out", str(smoke / "eval-train")),
            )
            assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]

    folder = cache.cached(f"smoked-{name}", cache.key_of(rendered), build)
    return folder / "ws", (folder / "smoke.log").read_text()


def edit_smoke(workspace: Path, replacements: dict[str, str]) -> None:
    """configs/smoke.yaml with each text replaced (each must be there)."""
    smoke = workspace / "configs" / "smoke.yaml"
    text = smoke.read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    smoke.write_text(text)


def lengthen(workspace: Path, steps: int) -> None:
    edit_smoke(
        workspace,
        {
            "training.max_steps=8": f"training.max_steps={steps}",
            "training.eval_steps=4": f"training.eval_steps={steps // 2}",
            "training.save_steps=4": f"training.save_steps={steps // 2}",
        },
    )


def learn_to_reason(workspace: Path) -> None:
    """Answers that open with a <think> block, and a run long and fast enough for the adapter to learn it: weights
    10x the default initialisation, since with LoRA the random head stays frozen, and at 0.02 its logits cannot move
    far from uniform (over 60 steps the loss went from 6.24 to 6.0 on SmolLM3 and 5.9 on Qwen3; at 0.2: 2.5)."""
    data = workspace / "data" / "sample.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    for row in rows:
        for message in row["messages"]:
            if message["role"] == "assistant":
                message["content"] = "<think>\nThe user asks about a plant.\n</think>\n\n" + message["content"]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    edit_smoke(
        workspace,
        {
            "training.max_steps=8": "training.max_steps=60",
            "training.learning_rate=0.001": "training.learning_rate=0.01",
            "  intermediate_size: 128\n": "  intermediate_size: 128\n  initializer_range: 0.2\n",
        },
    )
