"""Preference tuning (objective dpo, orpo, kto, simpo): the answers and their refusals, the plan's cost, the data
formats and their errors, the losses against TRL's own, and the workspace training for real on tiny models."""

from __future__ import annotations

import json
import types

import pytest
import yaml

from finetune import losses as preference_losses
from finetune.data import DataError, read_examples
from helpers.project import ROOT
from helpers.workspace import losses, run
from tuneforge import catalog
from tuneforge.planning.answers import Given
from tuneforge.planning.plan import resolve

MACHINE = {"hardware": "cpu", "gpu_count": 1, "gpu_memory_gb": 64.0}
PREFERENCE = ["dpo", "orpo", "kto", "simpo"]


def plan(**answers):
    return resolve(Given(dict(answers)), detected=MACHINE)


# ---- the answers --------------------------------------------------------------------------------------------


def test_preference_data_or_a_preference_objective_brings_the_other():
    p = plan(scenario="preference")
    assert (p.values["objective"], p.values["dataset_format"]) == ("dpo", "preference") and not p.problems
    p = plan(objective="kto")
    assert (p.values["scenario"], p.values["dataset_format"]) == ("preference", "preference") and not p.problems
    assert plan(scenario="preference", dataset_format="kto").values["objective"] == "kto"
    assert plan().values["objective"] == "sft"


@pytest.mark.parametrize(
    "answers, key, words",
    [
        ({"scenario": "preference", "objective": "sft"}, "objective", "supervised fine-tuning cannot learn from"),
        ({"scenario": "chat", "objective": "dpo"}, "objective", "preferred and rejected answers"),
        ({"objective": "dpo", "dataset_format": "kto"}, "dataset_format", "no rejected answer"),
        (
            {
                "objective": "orpo",
                "compute": "foundry-serverless",
                "model": "phi-3-mini-4k-instruct",
                "technique": "lora",
            },
            "compute",
            "supervised only",
        ),
        (
            {"objective": "kto", "compute": "kaito", "model": "phi-3-mini-4k-instruct", "technique": "lora"},
            "compute",
            "supervised fine-tuning only",
        ),
    ],
)
def test_what_a_preference_objective_cannot_do_is_refused_with_what_works(answers, key, words):
    problems = [p for p in plan(**answers).problems if p.key == key]
    assert problems and words in problems[0].reason and problems[0].alternatives, plan(**answers).problems


def test_the_plan_counts_two_sequences_and_no_reference_model():
    sft, dpo = plan(scenario="chat", technique="full"), plan(scenario="preference", technique="full")
    assert dpo.memory.activations_gb == pytest.approx(2 * sft.memory.activations_gb, rel=0.02)
    assert dpo.memory.logits_gb == pytest.approx(2 * sft.memory.logits_gb, rel=0.02)
    assert dpo.memory.weights_gb == sft.memory.weights_gb  # the reference is a table of log-probabilities, not a model
    from tuneforge.terminal.report import format_memory

    assert "no second model" in "\n".join(format_memory(dpo)) and "sequences" not in "\n".join(format_memory(sft))


def test_the_learning_rate_default_follows_the_objective():
    assert plan(scenario="preference").values["learning_rate"] == pytest.approx(plan().values["learning_rate"] / 10)


def test_train_yaml_carries_the_objective_and_its_settings(new_workspace):
    for objective in PREFERENCE:
        config = yaml.safe_load(
            (new_workspace(objective=objective, targets="pytorch") / "configs" / "train.yaml").read_text()
        )
        settings = catalog.load("objectives")[objective]["settings"]
        assert config["preference"] == {"objective": objective, **{k: s["value"] for k, s in settings.items()}}
        assert config["data"]["packing"] is False and config["eval"]["metric"] == "preference_accuracy"
    assert "preference" not in yaml.safe_load((new_workspace(targets="pytorch") / "configs" / "train.yaml").read_text())


# ---- the data ------------------------------------------------------------------------------------------------


def write(tmp_path, rows: list) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_pairs_read_as_text_conversations_or_an_implicit_prompt(tmp_path):
    user, answer = {"role": "user", "content": "Hi?"}, lambda text: [{"role": "assistant", "content": text}]
    rows = [
        {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Well, hello there, friend."},
        {
            "prompt": [{"role": "system", "content": "Be brief."}, user],
            "chosen": answer("Hello."),
            "rejected": answer("Yo"),
        },
        {"chosen": [user, *answer("Hello.")], "rejected": [user, *answer("Yo")]},
    ]
    examples = read_examples(write(tmp_path, rows), "preference")
    assert [(e.messages[-2]["content"], e.reference, e.rejected) for e in examples] == [
        ("Hi?", "Hello.", "Well, hello there, friend."),
        ("Hi?", "Hello.", "Yo"),
        ("Hi?", "Hello.", "Yo"),
    ]
    assert examples[1].messages[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    "fmt, row, words",
    [
        ("preference", {"prompt": "Hi?", "chosen": "Hello."}, "missing or empty 'rejected'"),
        ("preference", {"prompt": "Hi?", "chosen": "Hello.", "rejected": " Hello. "}, "the same answer"),
        (
            "preference",
            {"prompt": [{"role": "assistant", "content": "Hi"}], "chosen": "a", "rejected": "b"},
            "must be the user's",
        ),
        (
            "preference",
            {"prompt": "Hi?", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
            "must be the assistant's",
        ),
        (
            "preference",
            {
                "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                "rejected": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "c"}],
            },
            "same conversation",
        ),
        ("kto", {"prompt": "Hi?", "completion": "Hello.", "label": "yes"}, "'label' must be true"),
        ("kto", {"prompt": "", "completion": "Hello.", "label": True}, "missing or empty 'prompt'"),
    ],
)
def test_malformed_preference_data_is_named_by_file_and_line(tmp_path, fmt, row, words):
    good = (
        {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Yo"}
        if fmt == "preference"
        else {"prompt": "Hi?", "completion": "Hello.", "label": True}
    )
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: ") as error:
        read_examples(write(tmp_path, [good, row]), fmt)
    assert words in str(error.value)


# ---- the losses ----------------------------------------------------------------------------------------------


def test_orpo_and_simpo_losses_are_trls():
    import torch
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    chosen, rejected = torch.tensor([-0.5, -1.2, -0.3]), torch.tensor([-0.9, -0.8, -2.0])  # mean log-probabilities
    device = types.SimpleNamespace(device="cpu")
    theirs = ORPOTrainer.odds_ratio_loss(types.SimpleNamespace(beta=0.1, accelerator=device), chosen, rejected)[0]
    assert torch.allclose(
        preference_losses.orpo(chosen, rejected, torch.tensor(0.0), 0.1)[0], -theirs
    )  # theirs: the term subtracted
    cpo = types.SimpleNamespace(
        beta=2.0, simpo_gamma=1.0, loss_type="simpo", label_smoothing=0.0, alpha=0.0, accelerator=device
    )
    assert torch.allclose(
        preference_losses.simpo(chosen, rejected, 2.0, 1.0)[0], CPOTrainer.cpo_loss(cpo, chosen, rejected)[0]
    )


def test_kto_pulls_desirable_answers_up_and_undesirable_ones_down():
    import torch

    logps = torch.tensor([-1.0, -1.0], requires_grad=True)
    loss, chosen, rejected = preference_losses.kto(
        logps, torch.tensor([-1.0, -1.0]), torch.tensor(0.0), torch.tensor([True, False]), 0.1, 1.0, 1.0
    )
    loss.sum().backward()
    assert logps.grad[0] < 0 < logps.grad[1]  # descending raises the desirable answer and lowers the other
    assert chosen.isnan().tolist() == [False, True] and rejected.isnan().tolist() == [True, False]


def test_dpo_loss_and_reference_match_trls_dpo_trainer(tmp_path):
    """Same model, same pairs: the workspace's loss (reference table computed before the weights move) equals
    TRL's DPOTrainer loss (its reference a frozen copy made at start)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainingArguments
    from trl import DPOConfig, DPOTrainer

    from finetune.modeling import load_tokenizer
    from finetune.preference import PairCollator, build_preference_datasets
    from finetune.preference_trainer import PreferenceTrainer
    from finetune.tiny import save_tiny_model

    sample = str(ROOT / "templates" / "includes" / "samples" / "preference" / "preference.jsonl")
    spec = {
        "architecture": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    save_tiny_model(spec, sample, 300, tmp_path / "tiny")
    tokenizer = load_tokenizer(str(tmp_path / "tiny"))
    config = {
        "data": {
            "path": sample,
            "format": "preference",
            "max_length": 128,
            "eval_fraction": 0.0,
            "system_prompt": None,
        },
        "task": {"scenario": "preference"},
        "preference": {"objective": "dpo", "beta": 0.1},
    }
    rows, _ = build_preference_datasets(config, tokenizer, 42)
    collate = PairCollator(tokenizer.pad_token_id)
    batch = collate(rows[:4])
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "tiny"), dtype=torch.float32).eval()
    ours = PreferenceTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path / "a"), report_to="none", use_cpu=True),
        train_dataset=rows[:4],
        data_collator=collate,
        preference=config["preference"],
    )
    ours.ensure_reference(model)
    peer = DPOTrainer(
        model=model,
        args=DPOConfig(output_dir=str(tmp_path / "b"), report_to="none", beta=0.1, bf16=False, use_cpu=True),
        train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
        processing_class=tokenizer,
    )
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(torch.randn_like(weight) * 0.02)  # the policy moves away from the reference
        theirs = peer._compute_loss(
            model,
            {
                "input_ids": batch["input_ids"],
                "attention_mask": batch["attention_mask"],
                "completion_mask": (batch["labels"] != -100).long(),
            },
            False,
        )
        mine = ours.compute_loss(model, dict(batch))
    assert abs(float(theirs) - 0.6931) > 0.01  # the reference differs from the moved policy
    assert float(mine) == pytest.approx(float(theirs), abs=1e-5)
    assert (tmp_path / "a" / "reference_logps.pt").is_file()  # kept for --resume


# ---- the workspace, for real ---------------------------------------------------------------------------------


def tiny_training(workspace, *extra: str, steps: int = 20):
    if not (workspace / "tiny").is_dir():
        save = run(
            workspace,
            "-c",
            "import yaml; from finetune.tiny import save_tiny_model; "
            "s = yaml.safe_load(open('configs/smoke.yaml')); "
            "save_tiny_model(s['tiny_model'], 'data/sample.jsonl', 512, __import__('pathlib').Path('tiny'))",
        )
        assert save.returncode == 0, save.stderr
    smoke = yaml.safe_load((workspace / "configs" / "smoke.yaml").read_text())
    overrides = [
        o
        for o in smoke["train_overrides"]
        if not o.startswith(("training.max_steps", "training.eval_steps", "training.save_steps"))
    ]
    return run(
        workspace,
        "train.py",
        "model.name_or_path=tiny",
        "training.output_dir=outputs/run",
        *overrides,
        f"training.max_steps={steps}",
        "training.eval_steps=1000",
        "training.save_steps=10",
        *extra,
    )


@pytest.mark.slow
# each objective once and each adapter technique once (full fine-tuning below); DPO on QLoRA is also the
# granite-qlora-preference-onnx pipeline's run (tests/helpers/pipelines.py)
@pytest.mark.parametrize(
    "objective, technique, fmt",
    [
        ("dpo", "lora", "preference"),
        ("orpo", "qlora", "preference"),
        ("kto", "lora", "kto"),
        ("simpo", "dora", "preference"),
    ],
)
def test_each_objective_trains_and_its_loss_falls(new_workspace, objective, technique, fmt):
    workspace = new_workspace(objective=objective, technique=technique, dataset_format=fmt, targets="pytorch")
    result = tiny_training(workspace, steps=16)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    history = losses(workspace / "outputs" / "run")
    assert len(history) == 16 and sum(history[-5:]) / 5 < sum(history[:5]) / 5 - 0.01, history
    metrics = json.loads((workspace / "outputs" / "run" / "metrics.json").read_text())
    assert "eval_rewards/chosen" in metrics and "eval_perplexity" not in metrics
    if (objective, technique) == ("dpo", "lora"):  # the tuned model prefers the chosen answers more than the base does
        scored = run(
            workspace,
            "eval.py",
            "--split",
            "train",
            "--base",
            "tiny",
            "--tuned",
            "outputs/run",
            "--out",
            "ev",
        )
        assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
        base, tuned = (
            json.loads((workspace / "ev" / "report.json").read_text())["models"][m] for m in ("base", "tuned")
        )
        assert tuned["preference_accuracy"] > base["preference_accuracy"] and tuned["margin"] > base["margin"], (
            base,
            tuned,
        )


@pytest.mark.slow
def test_full_dpo_resumes_with_its_reference_and_refuses_without_it(new_workspace):
    workspace = new_workspace(objective="dpo", technique="full", targets="pytorch")
    first = tiny_training(workspace, "training.save_steps=4", steps=4)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = workspace / "outputs" / "run"
    reference = (run_dir / "reference_logps.pt").read_bytes()
    resumed = tiny_training(workspace, "training.save_steps=4", "--resume", steps=8)
    assert resumed.returncode == 0 and "resuming from outputs/run/checkpoint-4" in resumed.stdout, resumed.stderr[
        -3000:
    ]
    assert (run_dir / "reference_logps.pt").read_bytes() == reference  # read, not recomputed from moved weights
    assert len(losses(run_dir)) == 8
    (run_dir / "reference_logps.pt").unlink()
    refused = tiny_training(workspace, "training.save_steps=4", "--resume", steps=12)
    assert (
        refused.returncode == 2
        and "reference log-probabilities" in refused.stderr
        and "Traceback" not in refused.stderr
    )


@pytest.mark.slow
def test_kto_trains_in_two_processes(new_workspace):
    """DDP: each process estimates KTO's reference point on its own batch; the processes average them."""
    workspace = new_workspace(objective="kto", technique="lora", distributed="ddp", gpu_count=2, targets="pytorch")
    result = run(workspace, "smoke.py")
    assert result.returncode == 0 and "[smoke] passed" in result.stdout, result.stdout[-4000:] + result.stderr[-3000:]
    assert "'kl'" in result.stdout + result.stderr
