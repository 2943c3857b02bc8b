"""Turn the fine-tuned model into an optimized ONNX model with Olive, for each target in olive/.

    python optimize.py [--target onnx-cpu] [--precision fp16] [--smoke]

Each olive/<target>.json is a complete Olive workflow; this script runs it, offline: the model builder
quantizes weights to int4 by round-to-nearest, and a pass that calibrates activations (the QNN recipe's
static quantization) reads outputs/calibration.jsonl, which this script writes from the training split.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from finetune.quiet import quiet_libraries

HERE = Path(__file__).parent
PATH_KEYS = (("input_model", "model_path"), ("input_model", "adapter_path"), ("cache_dir",), ("output_dir",))


def load_workflow(path: Path, smoke: bool = False, base_model: str | None = None, precision: str | None = None) -> dict:
    """The workflow in path; with smoke, every outputs/ path moves under outputs/smoke/; precision
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
                node[keys[-1]] = "outputs/smoke/" + value[len("outputs/"):]
        if "adapter_path" in config["input_model"]:
            config["input_model"]["model_path"] = base_model or "outputs/smoke/base"
    return config


def check_inputs(config: dict) -> None:
    model = config["input_model"]
    for key in ("model_path", "adapter_path"):
        value = model.get(key)
        if value and value.startswith("outputs") and not Path(value).exists():
            step = "python merge.py" if key == "model_path" else "python train.py"
            raise FileNotFoundError(f"{value} not found: run `{step}` first")


def calibration_files(config: dict) -> list[str]:
    return [d["load_dataset_config"]["data_files"] for d in config.get("data_configs", [])
            if d.get("load_dataset_config", {}).get("data_name") == "json"]


def write_calibration(path: str, model_path: str, limit: int = 64) -> None:
    """The training split as the model will see it (chat template applied), one {"text"} per line."""
    from finetune.config import load_config
    from finetune.data import load_splits
    from finetune.encoding import with_system
    from finetune.modeling import load_tokenizer

    config = load_config("configs/train.yaml")
    tokenizer = load_tokenizer(model_path)
    train, _ = load_splits(config, config["training"]["seed"])
    system = config["data"].get("system_prompt")
    rows = []
    for example in train[:limit]:
        if example.text is not None:
            rows.append({"text": example.text})
            continue
        rows.append({"text": tokenizer.apply_chat_template(with_system(example.messages, system), tokenize=False)})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def missing_packages(target: str) -> list[str]:
    """The packages olive/requirements-<target>.txt pins that are not installed here."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = HERE / "olive" / f"requirements-{target}.txt"
    if not requirements.exists():
        return []
    missing = []
    for line in requirements.read_text().splitlines():
        name = line.split("#")[0].split("==")[0].strip()
        if name:
            try:
                version(name)
            except PackageNotFoundError:
                missing.append(name)
    return missing


def run(path: Path, smoke: bool = False, precision: str | None = None) -> Path:
    from olive.workflows import run as olive_run

    if missing := missing_packages(path.stem):
        raise FileNotFoundError(f"{path.stem} needs {', '.join(missing)}, which is not installed here: "
                                f"pip install -r olive/requirements-{path.stem}.txt (on the machine that runs it)")
    config = load_workflow(path, smoke, precision=precision)
    check_inputs(config)
    for calibration in calibration_files(config):
        write_calibration(calibration, config["input_model"]["model_path"])
    output_dir = Path(config["output_dir"])
    log = output_dir.parent / f"olive-{path.stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{path.stem}: optimizing with Olive (its log: {log})", flush=True)
    with quiet_olive(log):
        olive_run(config)  # olive consumes parts of the dict
    return output_dir


@contextlib.contextmanager
def quiet_olive(log: Path):
    """Olive's INFO lines and the model builder's prints go to a file, not the terminal; its errors still show."""
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
            with contextlib.redirect_stdout(out):
                yield
        finally:
            logger.handlers, logger.propagate = handlers, propagate


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="one target (default: every olive/*.json)")
    parser.add_argument("--precision", choices=["int4", "fp16", "fp32"], help="override the workflow's precision")
    parser.add_argument("--smoke", action="store_true", help="optimize the smoke test's tiny model (outputs/smoke/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    workflows = sorted((HERE / "olive").glob("*.json"))
    if args.target:
        workflows = [w for w in workflows if w.stem == args.target]
        if not workflows:
            print(f"error: no olive/{args.target}.json; targets here: "
                  f"{', '.join(w.stem for w in sorted((HERE / 'olive').glob('*.json')))}", file=sys.stderr)
            return 2
    for workflow in workflows:
        try:
            out = run(workflow, smoke=args.smoke, precision=args.precision)
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{workflow.stem}: optimized model in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
