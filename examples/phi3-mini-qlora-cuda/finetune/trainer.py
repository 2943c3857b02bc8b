"""A Trainer whose loss reads only the logits it needs: those that predict an answer token.

The language-model head is the largest matrix of a small model, and most positions of a chat example
are prompt, whose logits nobody reads. Asking the model for the logits at answer positions alone
(transformers' `logits_to_keep`) saves that compute and the memory of the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

from finetune.encoding import IGNORE_INDEX


class AnswerOnlyTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # compute_loss below normalises by num_items_in_batch itself, so the Trainer must not
        # divide again by the gradient accumulation steps
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        targets = labels[:, 1:]
        wanted = targets != IGNORE_INDEX
        positions = wanted.any(dim=0).nonzero().squeeze(-1)  # the positions whose logits predict a label
        outputs = model(**inputs, logits_to_keep=positions, use_cache=False)
        logits = outputs.logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets[:, positions].reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else wanted.sum()
        loss = loss / torch.as_tensor(count, device=loss.device, dtype=loss.dtype)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every process's tokens; the gradients are averaged over processes
            loss = loss * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss
