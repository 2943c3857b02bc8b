"""The pieces PytorchBackend hands to transformers' generate(): each token as it comes, a way to stop it early,
OpenAI's frequency and presence penalties, and the raw logits each token was drawn from (for log probabilities)."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer


class TokenQueue(BaseStreamer):
    """Puts each new token id on a queue (generate() first passes the prompt, which is skipped)."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.tokens.put(int(value.reshape(-1)[0]))

    def end(self) -> None:
        pass  # the caller's thread puts the end marker, also when generate() raises


class Cancelled(StoppingCriteria):
    """Stops generation at the next token once the event is set (the answer ended, or its reader left)."""

    def __init__(self, event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Penalties(LogitsProcessor):
    """OpenAI's penalties on the tokens generated so far: frequency x their count, plus presence once each."""

    def __init__(self, prompt_length: int, frequency: float, presence: float):
        self.prompt_length, self.frequency, self.presence = prompt_length, frequency, presence

    def __call__(self, input_ids, scores):
        generated = input_ids[0, self.prompt_length :]
        if generated.numel():
            tokens, counts = generated.unique(return_counts=True)
            scores[0, tokens] -= self.frequency * counts.to(scores.dtype) + self.presence
        return scores


class LogitsRecorder:
    """Records the output head's last row at each forward pass: the raw logits of each new token in turn."""

    def __init__(self, model):
        self.rows: list = []
        head = model.get_output_embeddings()
        self.hook = head.register_forward_hook(lambda _m, _i, out: self.rows.append(out[0, -1].detach().float()))

    def remove(self) -> None:
        self.hook.remove()
