"""What every generation backend shares: the settings of one answer, stop sequences cut out of the streamed text,
and log probabilities in the shape the OpenAI API returns them. Pure Python: no model library is imported here."""

from __future__ import annotations

from dataclasses import dataclass, field

# the optional settings each backend honours (serve.py refuses a request that needs one its backend lacks)
LOGPROBS, PENALTIES, GRAMMAR = "logprobs", "penalties", "grammar"


@dataclass
class Settings:
    """How one answer is generated, beyond its token limit: a request's own (serve.py) or the config's (chat.py).
    sampling: temperature and top_p (empty: greedy); stop: texts that end the answer, left out of it; seed: the
    sampler's; penalties: OpenAI's frequency and presence penalties; top_logprobs: None for no log probabilities,
    else how many alternatives each token lists; json_schema: None, or the schema a grammar holds the answer to
    ({} for any JSON object)."""

    sampling: dict = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    top_logprobs: int | None = None
    json_schema: dict | None = None

    def needs(self) -> set[str]:
        """The optional settings this answer asks of its backend."""
        wanted = set()
        if self.top_logprobs is not None:
            wanted.add(LOGPROBS)
        if self.frequency_penalty or self.presence_penalty:
            wanted.add(PENALTIES)
        if self.json_schema is not None:
            wanted.add(GRAMMAR)
        return wanted


class StopText:
    """Cuts streamed text at the first stop sequence: text that may be the start of one is held back until the
    next piece shows whether it is."""

    def __init__(self, stops: tuple[str, ...] | list[str] = ()):
        self.stops = [stop for stop in stops if stop]
        self.held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """(the text that is surely answer, whether a stop sequence was reached)."""
        text = self.held + piece
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if found:
            self.held = ""
            return text[: min(found)], True
        keep = max((k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """What was held back, at the end of an answer no stop sequence ended."""
        text, self.held = self.held, ""
        return text


def logprob_entry(logits, token: int, top: int, text_of) -> dict:
    """The chosen token's log probability, and its top alternatives, as OpenAI's logprobs.content lists them,
    from that step's logits (any array of floats over the vocabulary); text_of: token id -> its text."""
    import numpy as np

    values = np.asarray(logits, dtype=np.float64).reshape(-1)
    shifted = values - values.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    best = np.argsort(-logprobs)[:top] if top else []
    return {
        **_token(text_of(token), logprobs[token]),
        "top_logprobs": [_token(text_of(int(i)), logprobs[i]) for i in best],
    }


def _token(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": max(float(logprob), -9999.0), "bytes": list(text.encode("utf-8"))}
