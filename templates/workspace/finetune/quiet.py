"""Known noise from the libraries, silenced by category and module where it starts, so that every other
warning still shows. Each entry says why it is noise."""

from __future__ import annotations

import logging
import warnings

NOISE = [
    # arguments transformers renames for its v6 and calls with the old name itself
    {"category": FutureWarning, "module": r"(transformers|peft|accelerate|trl)\b"},
    # int4 rounding of an all-zero block divides 0 by 0, and the quantizer stores those blocks as zero anyway
    {"category": RuntimeWarning, "module": r"onnxruntime\.quantization"},
]


# DeepSpeed (imported by transformers and accelerate whenever it is installed) says on every start of a machine
# without a GPU that it falls back to the CPU
LOG_NOISE = {"DeepSpeed": "Setting accelerator to CPU"}


class _Without(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_libraries() -> None:
    for entry in NOISE:
        warnings.filterwarnings("ignore", **entry)
    for name, text in LOG_NOISE.items():
        logging.getLogger(name).addFilter(_Without(text))
    # bitsandbytes looks for an optional faster CPU kernel package and says so when it is absent
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
