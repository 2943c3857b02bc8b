"""A Trainer whose loss reads only the logits it needs: those that predict an answer token.

The language-model head is the largest matrix of a small model, and most positions of a chat example
are prompt, whose logits nobody reads. Asking the model for the logits at answer positions alone
(transformers' `logits_to_keep`) saves that compute and the memory of the rest.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from transformers import Trainer

from finetune.encoding import IGNORE_INDEX


def answer_logps(model, inputs: dict, labels):
    """(log-probability of each labelled token, which positions hold a label, the model's outputs), asking the model
    for the logits at the positions that predict a label only. Shapes: [rows, those positions]."""
    targets = labels[:, 1:]
    positions = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    outputs = model(**inputs, logits_to_keep=positions, use_cache=False)
    wanted = targets[:, positions]
    logits = outputs.logits.float()
    token_logps = -F.cross_entropy(
        logits.flatten(0, 1), wanted.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view_as(wanted)
    return token_logps, wanted != IGNORE_INDEX, outputs


class AnswerOnlyTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # compute_loss below normalises by num_items_in_batch itself, so the Trainer must not
        # divide again by the gradient accumulation steps
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        token_logps, wanted, outputs = answer_logps(model, inputs, inputs.pop("labels"))
        loss = -token_logps.sum()
        count = num_items_in_batch if num_items_in_batch is not None else wanted.sum()
        loss = loss / torch.as_tensor(count, device=loss.device, dtype=loss.dtype)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every process's tokens; the gradients are averaged over processes
            loss = loss * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss


class LogsMeans(Trainer):
    """A Trainer that logs the mean of what its loss recorded since the last log (self.logged["train"] or
    ["eval"]: name -> values), beside the Trainer's own loss: the preference and GRPO trainers' rewards."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logged: dict[str, defaultdict] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def log(self, logs: dict, *args, **kwargs) -> None:
        split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        for key, values in self.logged[split].items():
            if values:
                logs[prefix + key] = round(sum(values) / len(values), 4)
        self.logged[split].clear()
        super().log(logs, *args, **kwargs)
