"""GRPO with verifiable rewards (objective grpo): the answers and their refusals, the plan's cost of sampling, the
reward functions and their errors, the loss against TRL's GRPOTrainer for each loss type, and the workspace training
for real on a tiny model whose reward rises."""

from __future__ import annotations

import json
import types

import pytest
import yaml

from finetune import grpo as losses
from helpers.workspace import run, run_json, save_tiny_base
from tuneforge.planning.answers import Given
from tuneforge.planning.plan import resolve

MACHINE = {"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": 64.0}


def plan(**answers):
    return resolve(Given(dict(answers)), detected=MACHINE)


# ---- the answers --------------------------------------------------------------------------------------------


def test_grpo_brings_a_scenario_whose_answers_can_be_checked():
    p = plan(objective="grpo")
    assert (p.values["scenario"], p.values["dataset_format"]) == ("classification", "classification"), p.origins
    assert not p.problems and p.include["grpo"] and not p.include["preference"]
    assert plan(objective="grpo", scenario="qa").values["dataset_format"] == "qa"
    assert p.values["learning_rate"] == pytest.approx(plan(scenario="classification").values["learning_rate"] / 10)


@pytest.mark.parametrize(
    "answers, key, words",
    [
        ({"objective": "grpo", "scenario": "chat"}, "objective", "have no such check"),
        ({"objective": "grpo", "scenario": "preference"}, "objective", "have no such check"),
        (
            {"objective": "grpo", "hardware": "cuda", "gpu_count": 2, "gpu_memory_gb": 80, "distributed": "fsdp"},
            "distributed",
            "FSDP shards",
        ),
        (
            {"objective": "grpo", "compute": "kaito", "model": "phi-3-mini-4k-instruct", "technique": "lora"},
            "compute",
            "supervised fine-tuning only",
        ),
    ],
)
def test_what_grpo_cannot_do_is_refused_with_what_works(answers, key, words):
    problems = [p for p in plan(**answers).problems if p.key == key]
    assert problems and words in problems[0].reason and problems[0].alternatives, plan(**answers).problems


def test_the_plan_counts_each_sampled_answer_and_their_kv_cache():
    sft, grpo = plan(scenario="classification", technique="full"), plan(objective="grpo", technique="full")
    assert grpo.memory.activations_gb == pytest.approx(4 * sft.memory.activations_gb, rel=0.02)
    assert grpo.memory.generation_gb > 0 == sft.memory.generation_gb
    assert grpo.memory.weights_gb == sft.memory.weights_gb  # no reference model
    from tuneforge.terminal.report import format_memory

    said = "\n".join(format_memory(grpo))
    assert "samples 4 answers per prompt" in said and "KV cache" in said, said


def test_train_yaml_and_rewards_py_hold_the_scenarios_rewards_only(new_workspace):
    workspace = new_workspace(objective="grpo", scenario="qa", targets="pytorch")
    config = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())
    assert config["grpo"]["rewards"] == {"answer_f1": 1.0, "length_penalty": 0.0}
    assert config["grpo"]["loss_type"] == "dapo" and config["grpo"]["beta"] == 0.0
    assert config["grpo"]["max_completion_length"] == max(config["generation"]["max_new_tokens"], 32)
    assert "preference" not in config and config["data"]["packing"] is False
    rewards = (workspace / "rewards.py").read_text()
    assert "def answer_f1(" in rewards and "def label_match(" not in rewards and "def thinking_format(" not in rewards
    assert not (workspace / "finetune" / "preference.py").exists() and (workspace / "finetune" / "grpo.py").is_file()
    assert "rewards.py" in (workspace / "README.md").read_text()
    sft = new_workspace(scenario="qa", targets="pytorch")
    assert not (sft / "rewards.py").exists() and not (sft / "finetune" / "grpo.py").exists()


# ---- the rewards ----------------------------------------------------------------------------------------------


def test_the_label_reward_gives_partial_credit_for_naming_the_label_alone(new_workspace):
    workspace = new_workspace(objective="grpo", targets="pytorch")
    said = ["Billing.", "This is a billing issue.", "billing or delivery?", "technical", ""]
    scores = run_json(
        workspace,
        "import json, sys, rewards; said = json.loads(sys.argv[1]); "
        "print(json.dumps(rewards.label_match([[]] * len(said), said, answer=['billing'] * len(said), "
        "labels=['account', 'billing', 'delivery', 'technical'])))",
        json.dumps(said),
    )
    assert scores == [1.0, 0.5, 0.0, 0.0, 0.0]


def test_a_reward_function_that_fails_is_named_with_its_prompt():
    prompts = [[{"role": "user", "content": "Label: I was charged twice"}]] * 2

    def raises(prompts, completions, **columns):
        raise KeyError("label")

    def short(prompts, completions, **columns):
        return [1.0]

    def not_a_number(prompts, completions, **columns):
        return [1.0, float("nan")]

    for function, words in [
        (raises, "raises raised KeyError"),
        (short, "one number per answer (2), got 1"),
        (not_a_number, "returned nan"),
    ]:
        with pytest.raises(losses.RewardError) as caught:
            losses.score({function.__name__: (function, 1.0)}, prompts, ["billing", "x"], {})
        assert words in str(caught.value) and "I was charged twice" in str(caught.value), caught.value
    module = types.SimpleNamespace(label_match=lambda p, c, **k: [1.0] * len(c))
    with pytest.raises(losses.ConfigError, match="label_macth, which rewards.py does not define"):
        losses.reward_functions(module, {"label_macth": 1.0})
    with pytest.raises(losses.ConfigError, match="every reward function off"):
        losses.reward_functions(module, {"label_match": 0})


def test_rewards_are_weighted_and_advantages_are_relative_to_the_group():
    import torch

    functions = {
        "one": (lambda p, c, **k: [1.0, 0.0, 0.0, 1.0], 1.0),
        "two": (lambda p, c, **k: [0.0, 1.0, 0.0, 0.0], 0.5),
    }
    total, found = losses.score(functions, [[]] * 4, ["a", "b", "c", "d"], {})
    assert total.tolist() == [1.0, 0.5, 0.0, 1.0] and found["two"] == [0.0, 1.0, 0.0, 0.0]
    centred = losses.advantages(total, group=2, scale=False)
    assert centred.tolist() == [0.25, -0.25, -0.5, 0.5]
    scaled = losses.advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), group=2)
    assert scaled[0] == pytest.approx(0.5 / (0.5**0.5 + 1e-4)) and scaled[2:].tolist() == [0.0, 0.0]


# ---- the loss against TRL's ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trl_peer(tmp_path_factory):
    """A tiny model and TRL's GRPOTrainer around it, with prompts and answers of the same length."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from finetune.tiny import save_tiny_model

    folder = tmp_path_factory.mktemp("grpo-peer")
    sample = str(folder / "sample.jsonl")
    (folder / "sample.jsonl").write_text(json.dumps({"text": "the plant needs water once a week"}) + "\n")
    spec = {
        "architecture": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    }
    save_tiny_model(spec, sample, 300, folder / "tiny")
    model = AutoModelForCausalLM.from_pretrained(str(folder / "tiny"), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tiny"))
    torch.manual_seed(0)
    prompts, answers = torch.randint(3, 200, (4, 6)), torch.randint(3, 200, (4, 5))
    mask = torch.ones_like(answers)
    mask[1, 3:] = 0  # two answers ended early
    mask[3, 1:] = 0
    return model, tokenizer, folder, prompts, answers, mask, GRPOConfig, GRPOTrainer, Dataset


@pytest.mark.parametrize("loss_type, beta", [("dapo", 0.0), ("grpo", 0.04), ("dr_grpo", 0.0), ("bnpo", 0.04)])
def test_the_loss_is_trls_for_each_loss_type(trl_peer, loss_type, beta):
    import torch

    from finetune.grpo_trainer import GRPOTrainer as Ours

    model, tokenizer, folder, prompts, answers, mask, GRPOConfig, GRPOTrainer, Dataset = trl_peer
    peer = GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **kwargs: [0.0] * len(completions),
        args=GRPOConfig(
            output_dir=str(folder / loss_type),
            report_to="none",
            use_cpu=True,
            bf16=False,
            loss_type=loss_type,
            beta=beta,
            temperature=0.7,
            max_completion_length=8,  # longer than these answers: dr_grpo divides by it, not by their width
            num_generations=2,
            per_device_train_batch_size=4,
        ),
        train_dataset=Dataset.from_list([{"prompt": "water"}] * 4),
        processing_class=tokenizer,
    )
    peer.current_gradient_accumulation_steps = 1  # as its training loop sets it
    model.train()
    sample = {"prompt_ids": prompts, "prompt_mask": torch.ones_like(prompts), "completion_ids": answers}
    sample["completion_mask"] = mask
    settings = types.SimpleNamespace(grpo={"temperature": 0.7})
    logps = Ours.completion_logps(settings, model, sample)
    torch.manual_seed(1)
    old = logps.detach() + 0.3 * torch.randn_like(logps)  # a policy some updates back: the clip range acts
    ref = logps.detach() + 0.2 * torch.randn_like(logps)
    advantage = torch.tensor([1.0, -1.0, 0.5, -0.5])
    inputs = {
        **sample,
        "advantages": advantage,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    theirs = peer._compute_loss(model, inputs)
    mine, stats = losses.loss(
        logps, old, advantage, mask, loss_type, 0.2, 0.2, 8, tokens=mask.sum(), beta=beta, ref_logps=ref
    )
    assert float(mine) == pytest.approx(float(theirs), rel=1e-5, abs=1e-6)
    assert 0 < stats["clip_ratio"] < 1 and ("kl" in stats) == bool(beta)
    mine.backward()  # and it trains: gradients reach the weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()


# ---- the workspace, for real ---------------------------------------------------------------------------------

# a reward a tiny random model can learn in a few steps: the share of the letter e in what it says
TOY_REWARD = """

def letter_e(prompts, completions, **columns) -> list[float]:
    return [said.count("e") / max(len(said), 1) for said in completions]
"""


@pytest.mark.slow
def test_grpo_trains_a_tiny_model_whose_reward_rises_and_resumes(new_workspace):
    # full fine-tuning: a tiny random model's frozen head keeps LoRA's answers near uniform for longer than a test runs
    workspace = new_workspace(objective="grpo", technique="full", targets="pytorch")
    save_tiny_base(workspace)
    with open(workspace / "rewards.py", "a") as f:
        f.write(TOY_REWARD)
    config = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())
    config["grpo"]["rewards"] = {"letter_e": 1.0, "label_match": 0.0}
    (workspace / "configs" / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    smoke = yaml.safe_load((workspace / "configs" / "smoke.yaml").read_text())
    keep = ("training.max_steps", "training.eval_steps", "training.save_steps", "training.learning_rate")
    overrides = [o for o in smoke["train_overrides"] if not o.startswith(keep)]
    common = [
        "model.name_or_path=outputs/smoke/base",
        *overrides,
        "training.learning_rate=0.003",
        "training.save_steps=12",
        "training.eval_steps=24",
        "grpo.max_completion_length=12",
        "grpo.num_generations=8",
    ]
    first = run(workspace, "train.py", *common, "training.max_steps=12")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    resumed = run(workspace, "train.py", *common, "training.max_steps=24", "--resume")
    assert resumed.returncode == 0 and "resuming from outputs/run/checkpoint-12" in resumed.stdout, (
        resumed.stdout[-3000:] + resumed.stderr[-3000:]
    )
    history = json.loads((workspace / "outputs" / "run" / "log_history.json").read_text())
    rewards = [e["rewards/letter_e/mean"] for e in history if "rewards/letter_e/mean" in e]
    assert len(rewards) == 24, history[-3:]
    assert sum(rewards[-6:]) / 6 > sum(rewards[:6]) / 6 + 0.02, rewards
    assert all("completions/mean_length" in e and "clip_ratio" in e for e in history if "reward" in e)
    metrics = json.loads((workspace / "outputs" / "run" / "metrics.json").read_text())
    assert "eval_reward" in metrics and "eval_perplexity" not in metrics and metrics["train_tokens_per_second"] > 0
    assert (workspace / "outputs" / "run" / "reward.png").is_file()

    scored = run(workspace, "eval.py", "--base", "outputs/smoke/base", "--tuned", "outputs/run", "--out", "ev")
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    models = json.loads((workspace / "ev" / "report.json").read_text())["models"]
    assert models["tuned"]["reward/letter_e"] > models["base"]["reward/letter_e"], models
    assert "accuracy" in models["tuned"] and "reward/label_match" not in models["tuned"]

    (workspace / "rewards.py").write_text(
        (workspace / "rewards.py").read_text() + "\n\ndef broken(p, c, **k):\n    return 1\n"
    )
    config["grpo"]["rewards"] = {"broken": 1.0}
    (workspace / "configs" / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    refused = run(workspace, "train.py", *common, "training.max_steps=2", "training.output_dir=outputs/broken")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "rewards.py: broken must return one number per answer" in refused.stderr, refused.stderr[-2000:]


@pytest.mark.slow
def test_grpo_trains_in_two_processes(new_workspace):
    """DDP: each process samples for its own prompts; dapo's token count is averaged over the processes."""
    workspace = new_workspace(objective="grpo", technique="lora", distributed="ddp", gpu_count=2, targets="pytorch")
    result = run(workspace, "smoke.py")
    assert result.returncode == 0 and "[smoke] passed" in result.stdout, result.stdout[-4000:] + result.stderr[-3000:]
    history = json.loads((workspace / "outputs" / "smoke" / "run" / "log_history.json").read_text())
    assert len([e for e in history if "rewards/label_match/mean" in e]) == 8, history[-2:]
