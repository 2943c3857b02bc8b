"""Generated workspaces run for real: smoke.py trains a tiny model of the chosen architecture with the chosen
technique and launcher on the scenario's data, merges, optimizes to ONNX where chosen, chats, and scores base
against tuned with eval.py, offline on CPU (tests/helpers/pipelines.py lists the runs and what each covers)."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers.pipelines import PIPELINES, answers, smoked
from helpers.project import ROOT
from helpers.workspace import losses, run
from tuneforge import catalog
from tuneforge.planning import hardware
from tuneforge.planning.answers import Given
from tuneforge.planning.plan import resolve

pytestmark = pytest.mark.slow

SCENARIOS = yaml.safe_load((ROOT / "generator" / "tuneforge" / "catalog" / "scenarios.yaml").read_text())
METRICS = {
    "chat": {"perplexity", "mean_words", "distinct_2", "repetition"},
    "domain": {"perplexity"},
    "creative": {"perplexity", "mean_words", "distinct_2", "repetition"},
    "classification": {"accuracy", "macro_f1"},
    "ner": {"entity_f1", "precision", "recall"},
    "translation": {"bleu", "chrf"},
    "qa": {"exact_match", "f1"},
    "summarization": {"rougeL"},
    "preference": {"preference_accuracy", "margin", "mean_words", "distinct_2", "repetition"},
    "tools": {"call_accuracy", "valid_calls", "answer_f1"},
    "images": {"exact_match", "f1"},
}


def test_the_runs_cover_every_scenario_format_technique_architecture_launcher_and_mode():
    """The covering design holds each value of each dimension at least once (the plan derives what is not given)."""
    plans = {
        name: resolve(Given(answers(name) | {"targets": PIPELINES[name]["targets"].split(",")}), dict(hardware.TYPICAL))
        for name in PIPELINES
    }
    assert not [name for name, plan in plans.items() if plan.problems]
    seen = {
        key: {str(plan.values[key]) for plan in plans.values()}
        for key in (
            "scenario",
            "technique",
            "distributed",
            "thinking",
            "lora_experts",
            "adapter_export",
            "train_vision",
        )
    }
    assert seen["scenario"] == set(SCENARIOS)
    assert seen["technique"] == set(catalog.load("techniques"))
    assert {"none", "ddp", "deepspeed-zero2", "deepspeed-zero3"} <= seen["distributed"]
    assert seen["thinking"] == {"off", "keep"} and seen["lora_experts"] == {"True", "False"}
    assert seen["adapter_export"] == {"merged", "adapters"} and seen["train_vision"] == {"none", "projector", "all"}
    formats = {plan.values["dataset_format"] for plan in plans.values()}
    assert {"messages", "text", "alpaca", "prompt-completion"} <= formats
    architectures = {plan.facts["architecture"] for plan in plans.values()}
    assert architectures == set(catalog.load("architectures"))


@pytest.mark.parametrize("name", PIPELINES)
def test_smoke_passes_and_each_step_did_its_part(new_workspace, name):
    spec = PIPELINES[name]
    workspace, log = smoked(name, new_workspace)
    smoke = workspace / "outputs" / "smoke"
    recorded = yaml.safe_load((workspace / ".copier-answers.yml").read_text())
    history = losses(smoke / "run")
    assert len(history) == (60 if spec.get("thinking") else spec.get("steps", 8))
    if spec.get("steps") or spec.get("thinking"):  # long enough for the loss to fall
        first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
        assert last < first - 0.05, history
    assert (smoke / "run" / "loss.png").stat().st_size > 1000
    assert (smoke / "merged" / "config.json").exists() and (smoke / "merged" / "tokenizer_config.json").exists()
    assert "model>" in log
    onnx = "onnx-cpu" in recorded["targets"]
    assert log.count("model>") == (2 if onnx else 1)  # PyTorch (and ONNX) both answered

    scenario = recorded["scenario"]
    report = json.loads((smoke / "eval" / "report.json").read_text())
    assert report["scenario"] == scenario and report["metric"] == SCENARIOS[scenario]["metric"]
    assert set(report["models"]) == ({"base", "tuned", "onnx"} if onnx else {"base", "tuned"})
    config = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())
    rewards = {name for name, weight in config.get("grpo", {"rewards": {}})["rewards"].items() if weight}
    rewarded = {"reward", *(f"reward/{name}" for name in rewards)} if rewards else set()  # GRPO: each reward's mean
    for model, scores in report["models"].items():
        assert set(scores) == METRICS[scenario] | rewarded, model
    if rewards:  # each step logs each reward function's mean over the sampled answers, and the run plots the total
        logged = json.loads((smoke / "run" / "log_history.json").read_text())
        assert all(f"rewards/{name}/mean" in e for e in logged if "loss" in e for name in rewards), logged[-2]
        assert (smoke / "run" / "reward.png").stat().st_size > 1000
    assert report["broken"] == {}
    assert (smoke / "eval" / "report.png").stat().st_size > 1000
    if scenario != "domain":
        assert report["answers"] and all("tuned" in a and a["reference"] for a in report["answers"])

    if onnx:
        exported = smoke / "onnx" / "onnx-cpu"
        assert (exported / "genai_config.json").exists()
        assert "Saving model." not in log  # the model builder's progress bars go to Olive's log, not the terminal
        assert bool(list(exported.glob("*.onnx_adapter"))) == (recorded["adapter_export"] == "adapters")
        benchmark = json.loads((smoke / "benchmark.json").read_text())
        assert benchmark["fp32_greedy_tokens_match"] is True and "gguf_q8_0_greedy_tokens_same" not in benchmark
        assert set(benchmark["models"]) == {"pytorch_fp32", "onnx_int4"}
        assert benchmark["models"]["onnx_int4"]["decode_tokens_per_s"] > 0
        if not spec.get("thinking"):
            assert benchmark["models"]["onnx_int4"]["perplexity_ratio"] == pytest.approx(1.0, abs=0.1)
    image_text = catalog.load("architectures")[recorded["model_facts"]["architecture"]].get("image_text")
    if image_text:
        the_vision_parts_train_as_asked(smoke, recorded["technique"], image_text, recorded["train_vision"])
    if scenario == "images":
        pictures_were_trained_on_and_shown(workspace, smoke, log, learnt=bool(spec.get("steps")))
    if recorded["lora_experts"]:
        the_experts_have_adapters(smoke)
    if spec.get("thinking"):
        reasoning_is_learnt_and_kept_alike(workspace, log)


def the_vision_parts_train_as_asked(smoke, technique: str, image_text: dict, train: str) -> None:
    """An image-text model: the merged model is the whole image-text checkpoint again, its language model changed;
    the vision tower and projector keep the base's weights to the bit unless train_vision trained them, and then
    changed (an adapter run saves the projector whole beside its LoRA, and LoRA on the tower for train_vision=all)."""
    from safetensors.torch import load_file

    base, merged = (load_file(str(smoke / folder / "model.safetensors")) for folder in ("base", "merged"))
    assert sorted(merged) == sorted(base)
    assert json.loads((smoke / "merged" / "config.json").read_text())["architectures"][0].endswith(
        "ForConditionalGeneration"
    )

    def part_of(name: str, module: str) -> bool:  # saved as the hub's checkpoints are: vision_tower.…, language_model.…
        return module in name.split(".")

    trained = {"none": [], "projector": ["projector"], "all": ["projector", "tower"]}[train]
    for part in ("tower", "projector"):
        names = [name for name in base if part_of(name, image_text[part])]
        changed = [name for name in names if not base[name].equal(merged[name])]
        assert names and bool(changed) == (part in trained), (part, train, changed[:3])
    language = [name for name in base if part_of(name, "language_model") or part_of(name, "text_model")]
    assert any(not base[name].equal(merged[name]) for name in language)
    if technique != "full":
        adapter = load_file(str(smoke / "run" / "adapter_model.safetensors"))
        for part in ("tower", "projector"):
            assert any(part_of(name, image_text[part]) for name in adapter) == (part in trained), (part, train)


COLOURS = {"Red.", "Green.", "Blue.", "Yellow."}


def pictures_were_trained_on_and_shown(workspace, smoke, log: str, learnt: bool) -> None:
    """Conversations about pictures: the data doctor opened them, the merged model keeps the processor that reads
    them, and chat.py asked it about one. After a long run the tuned model answers what only the picture tells: the
    sample asks "What colour is the shape?" of 12 pictures, 3 of each colour, so a model blind to them gets at most
    a quarter of those right (and at most about 0.26 of all the sample's answers)."""
    assert "--image data/images/red_circle.png" in log
    assert "pictures, 64-64 pixels wide" in log  # check_data.py's report of the sample's pictures
    for folder in ("run", "merged"):
        assert json.loads((smoke / folder / "processor_config.json").read_text())["image_processor"], folder
    if not learnt:
        return
    report = json.loads((smoke / "eval-train" / "report.json").read_text())  # made with the run (helpers.pipelines)
    colours = [a for a in report["answers"] if a["reference"] in COLOURS]
    assert len(colours) >= 9  # the held-out split takes a few
    right = sum(a["tuned"] == a["reference"] for a in colours) / len(colours)
    assert right >= 0.5 and report["models"]["tuned"]["exact_match"] >= 0.5, (right, report["models"])


def the_experts_have_adapters(smoke) -> None:
    """lora_experts=true: the adapter holds LoRA weights for the fused expert projections besides attention's."""
    from safetensors import safe_open

    with safe_open(str(smoke / "run" / "adapter_model.safetensors"), "pt") as adapter:
        names = list(adapter.keys())
    assert any(".mlp.experts." in n and "lora_A" in n for n in names) and any("q_proj.lora_A" in n for n in names), (
        names[:8]
    )


def reasoning_is_learnt_and_kept_alike(workspace, log: str) -> None:
    """thinking=keep: answers learnt with <think> blocks; the adapter and the merged model give the same first 20
    greedy tokens, reasoning tags included (and the fp32 ONNX export too, where there is one: benchmark.json)."""
    assert "[[<think>" in log and "no warnings" in log  # the reasoning is learnt, none missing
    compare = run(
        workspace,
        "-c",
        (
            "import json; from finetune.config import load_config; from finetune.inference import PytorchBackend\n"
            "kw = {'enable_thinking': True}\n"
            "adapter, merged = (PytorchBackend(p, template_kwargs=kw) for p in ('outputs/smoke/run', 'outputs/smoke/merged'))\n"
            "system = load_config('configs/train.yaml')['data']['system_prompt']\n"
            "ids = merged.prompt_ids([{'role': 'system', 'content': system},\n"
            "                         {'role': 'user', 'content': 'How often should I water a snake plant?'}])\n"
            "a, m = adapter.generate_ids(ids, 20), merged.generate_ids(ids, 20)\n"
            "print(json.dumps({'same': a == m, 'text': merged.tokenizer.decode(m)}))"
        ),
    )
    assert compare.returncode == 0, compare.stderr[-3000:]
    outcome = json.loads(compare.stdout.strip().splitlines()[-1])
    assert outcome["same"] and outcome["text"].startswith("<think>"), outcome
