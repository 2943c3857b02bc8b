"""Olive workflows (olive/<target>.json) as optimize.py and benchmark.py run them: read with the smoke run's paths or
another precision, and run offline and quietly (Olive's log to a file, its errors to the terminal)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from finetune.config import smoke_base, smoke_path

PATH_KEYS = (("input_model", "model_path"), ("input_model", "adapter_path"), ("cache_dir",), ("output_dir",))


def load_workflow(path: Path, smoke: bool = False, base_model: str | None = None, precision: str | None = None) -> dict:
    """The workflow in path; with smoke, every outputs/ path moves where smoke.py's run keeps it; precision
    overrides the model builder's (fp16 for CUDA, say) and writes beside the default output."""
    config = json.loads(path.read_text(encoding="utf-8"))
    if precision and "builder" in config["passes"] and precision != config["passes"]["builder"]["precision"]:
        config["passes"]["builder"]["precision"] = precision
        config["passes"]["builder"].pop("int4_accuracy_level", None)
        config["output_dir"] += f"-{precision}"
    if smoke:
        for keys in PATH_KEYS:
            node = config
            for key in keys[:-1]:
                node = node[key]
            value = node.get(keys[-1])
            if isinstance(value, str) and value.startswith("outputs/"):
                node[keys[-1]] = str(smoke_path(value))
        if "adapter_path" in config["input_model"]:
            config["input_model"]["model_path"] = base_model or str(smoke_base())
    return config


def olive_run(config: dict) -> None:
    from olive.telemetry.telemetry import Telemetry
    from olive.workflows import run

    # Olive 0.13 queues a heartbeat before it reads OLIVE_DISABLE_TELEMETRY (set in main), and sends it at exit
    # (offline it retries for about 10 s before the process may end): with the variable set, no heartbeat either
    if os.environ.get("OLIVE_DISABLE_TELEMETRY") == "1":
        Telemetry._log_heartbeat = lambda self, metadata=None: None
    run(config)  # olive consumes parts of the dict


@contextlib.contextmanager
def quiet_olive(log: Path):
    """Olive's INFO lines and the model builder's prints and progress bars go to a file, not the terminal; its errors
    still show."""
    import logging

    logger = logging.getLogger("olive")
    handlers, propagate = list(logger.handlers), logger.propagate
    with open(log, "w", encoding="utf-8") as out:
        file_handler = logging.StreamHandler(out)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        error_handler = logging.StreamHandler(sys.stderr)
        error_handler.setLevel(logging.ERROR)
        logger.handlers, logger.propagate = [file_handler, error_handler], False
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):  # its progress bars too
                yield
        finally:
            logger.handlers, logger.propagate = handlers, propagate
