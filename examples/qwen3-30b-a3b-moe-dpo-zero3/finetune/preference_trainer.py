"""A Trainer for preference objectives (DPO, ORPO, KTO, SimPO) on the rows of finetune/preference.py.

Two things keep it lean. Like the supervised trainer, it asks the model for the logits at answer positions
only (`logits_to_keep`). And the reference model's log-probabilities, which DPO and KTO compare against,
are computed once, before the first step, with the model as it is before training (the base with the
adapter switched off, or the full model's first state), then kept in a small table and saved beside the
checkpoints for --resume: no second model is held in memory and no reference pass runs per step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path

import torch

from finetune import losses
from finetune.config import ConfigError
from finetune.trainer import LogsMeans, answer_logps

REFERENCE_FILE = "reference_logps.pt"


def sequence_logps(model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the labelled tokens' log-probabilities, their count) per sequence."""
    token_logps, wanted, _ = answer_logps(model, {"input_ids": input_ids, "attention_mask": attention_mask}, labels)
    return token_logps.sum(-1), wanted.sum(-1)


def fingerprint(rows: list[dict]) -> str:
    """What the reference table was computed for: the sequences of every row, by index."""
    text = json.dumps(sorted((r["index"], r["first"]["input_ids"], r["second"]["input_ids"]) for r in rows))
    return hashlib.sha256(text.encode()).hexdigest()


class PreferenceTrainer(LogsMeans):
    def __init__(self, *args, preference: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.preference = preference
        self.objective = preference["objective"]
        self.reference: torch.Tensor | None = None  # [rows, 2]: the reference log-probability of each row's sequences
        self.model_accepts_loss_kwargs = False  # the loss is a mean over examples; the Trainer divides by accumulation

    # ---- the reference ----------------------------------------------------------------------------------

    def rows(self) -> list[dict]:
        return list(self.train_dataset) + list(self.eval_dataset or [])

    def ensure_reference(self, model) -> None:
        if self.reference is not None or self.objective not in ("dpo", "kto"):
            return
        rows = self.rows()
        stamp = fingerprint(rows)
        saved = Path(self.args.output_dir) / REFERENCE_FILE
        if saved.is_file():
            table = torch.load(saved)
            if table.get("fingerprint") == stamp:
                self.reference = table["logps"]
                return
        unwrapped = self.accelerator.unwrap_model(model)
        adapter_off = getattr(unwrapped, "disable_adapter", None)
        if self.state.global_step > 0 and adapter_off is None:
            raise ConfigError(
                f"cannot resume: {saved} (the reference log-probabilities of the model before training) is "
                "missing or was computed for other data; train again without --resume"
            )
        self.reference = self.compute_reference(model, rows, adapter_off() if adapter_off else contextlib.nullcontext())
        if self.is_world_process_zero():
            saved.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"fingerprint": stamp, "logps": self.reference}, saved)

    def compute_reference(self, model, rows: list[dict], adapter_off) -> torch.Tensor:
        table = torch.zeros(max(row["index"] for row in rows) + 1, 2)
        size = self.args.per_device_eval_batch_size
        was_training = model.training
        model.eval()
        with torch.no_grad(), adapter_off:
            for start in range(0, len(rows), size):
                batch = self._prepare_inputs(self.data_collator(rows[start : start + size]))
                sums, _ = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
                table[batch["index"].cpu()] = sums.float().view(2, -1).t().cpu()
        model.train(was_training)
        return table

    # ---- the loss -----------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.ensure_reference(model)
        index, desirable = inputs.pop("index"), inputs.pop("desirable", None)
        n = index.numel()
        settings = self.preference
        if self.objective == "kto":
            first = {k: v[:n] for k, v in inputs.items()}
            logps, _ = sequence_logps(model, **first)
            with torch.no_grad():  # the mismatched answers only estimate the reference point
                mismatched, _ = sequence_logps(model, **{k: v[n:] for k, v in inputs.items()})
            ref = self.reference[index.cpu()].to(logps.device)
            kl = (mismatched - ref[:, 1]).float().mean().reshape(1)  # each process's estimate, averaged over all
            kl = self.accelerator.gather_for_metrics(kl).mean().clamp(min=0)
            per_example, first_reward, second_reward = losses.kto(
                logps,
                ref[:, 0],
                kl,
                desirable,
                settings["beta"],
                settings["desirable_weight"],
                settings["undesirable_weight"],
            )
            extra = {"kl": kl.item()}
        else:
            extra = {}
            sums, counts = sequence_logps(model, **inputs)
            chosen, rejected = sums[:n], sums[n:]
            means = sums / counts.clamp(min=1)
            if self.objective == "dpo":
                ref = self.reference[index.cpu()].to(sums.device)
                per_example, first_reward, second_reward = losses.dpo(
                    chosen, rejected, ref[:, 0], ref[:, 1], settings["beta"]
                )
            elif self.objective == "simpo":
                per_example, first_reward, second_reward = losses.simpo(
                    means[:n], means[n:], settings["beta"], settings["gamma"]
                )
            else:
                nll = -chosen.sum() / counts[:n].sum().clamp(min=1)
                per_example, first_reward, second_reward = losses.orpo(means[:n], means[n:], nll, settings["beta"])
                extra = {"nll": nll.item()}
        loss = per_example.mean()
        self.record(model.training, first_reward, second_reward, extra)
        return (loss, {}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ---- what is logged -----------------------------------------------------------------------------------

    def record(self, training: bool, chosen, rejected, extra: dict) -> None:
        log = self.logged["train" if training else "eval"]
        chosen, rejected = chosen.float(), rejected.float()
        if self.objective == "kto":  # unpaired: each answer is desirable or not
            log["rewards/chosen"] += [v for v in chosen.tolist() if not math.isnan(v)]
            log["rewards/rejected"] += [v for v in rejected.tolist() if not math.isnan(v)]
        else:
            log["rewards/chosen"] += chosen.tolist()
            log["rewards/rejected"] += rejected.tolist()
            log["rewards/margins"] += (chosen - rejected).tolist()
            log["rewards/accuracies"] += (chosen > rejected).float().tolist()
        for key, value in extra.items():
            log[key].append(value)
