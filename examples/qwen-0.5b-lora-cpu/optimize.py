"""Turn the fine-tuned model into optimized ONNX models with Olive, one for each target in olive/ (export_gguf.py
makes the GGUF files for llama.cpp and Ollama, where the workspace has that target).

    python optimize.py [--target onnx-cpu] [--precision fp16] [--smoke]
    python optimize.py --adapter outputs/run-legal [--name legal]   # one more adapter for the same ONNX base

Each olive/<target>.json is a complete Olive workflow; this script runs it, offline: the model builder
quantizes weights to int4 by round-to-nearest, and a pass that calibrates activations (the QNN recipe's
static quantization) reads outputs/calibration.jsonl, which this script writes from the training split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from finetune.quiet import quiet_libraries
from finetune.workflows import load_workflow, olive_run, quiet_olive

HERE = Path(__file__).parent


def check_inputs(config: dict) -> None:
    model = config["input_model"]
    for key in ("model_path", "adapter_path"):
        value = model.get(key)
        if value and value.startswith("outputs") and not Path(value).exists():
            step = "python merge.py" if key == "model_path" else "python train.py"
            raise FileNotFoundError(f"{value} not found: run `{step}` first")


def calibration_files(config: dict) -> list[str]:
    return [
        d["load_dataset_config"]["data_files"]
        for d in config.get("data_configs", [])
        if d.get("load_dataset_config", {}).get("data_name") == "json"
    ]


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
    if missing := missing_packages(path.stem):
        raise FileNotFoundError(
            f"{path.stem} needs {', '.join(missing)}, which is not installed here: "
            f"pip install -r olive/requirements-{path.stem}.txt (on the machine that runs it)"
        )
    config = load_workflow(path, smoke, precision=precision)
    device = config["systems"]["local_system"]["accelerators"][0]["device"]
    if precision == "fp16" and device == "cpu":
        raise FileNotFoundError(f"{path.stem} runs on the CPU, where the model builder makes int4 or fp32, not fp16")
    check_inputs(config)
    for calibration in calibration_files(config):
        write_calibration(calibration, config["input_model"]["model_path"])
    output_dir = Path(config["output_dir"])
    log = output_dir.parent / f"olive-{path.stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{path.stem}: optimizing with Olive (its log: {log})", flush=True)
    with quiet_olive(log):
        olive_run(config)
    if not any(output_dir.rglob("*.onnx")) and not any(output_dir.rglob("*.xml")):
        # Olive prunes a pass it judges invalid and ends without an error: say so, never "optimized"
        raise FileNotFoundError(f"{path.stem}: Olive made no model in {output_dir}; why is in its log, {log}")
    return output_dir


def add_adapter(path: Path, adapter: str, name: str, smoke: bool = False) -> Path:
    """Export another adapter (trained with this workspace's LoRA settings) for the ONNX base path's workflow
    made: the workflow runs again with it, and only its .onnx_adapter is kept, as <output_dir>/<name>.onnx_adapter.
    The base it builds must be byte for byte the one there, so any of its adapters can run on it."""
    import filecmp
    import shutil

    config = load_workflow(path, smoke)
    if "adapter_path" not in config["input_model"]:
        raise FileNotFoundError(
            f"olive/{path.stem}.json exports a merged model, which has no room for adapters: "
            "tuneforge update --set adapter_export=adapters, then python optimize.py"
        )
    output_dir = Path(config["output_dir"])
    if not (output_dir / "model.onnx").exists():
        raise FileNotFoundError(
            f"no ONNX base in {output_dir}: run python optimize.py{' --smoke' if smoke else ''} first"
        )
    if not (Path(adapter) / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} holds no adapter_config.json: give a folder train.py wrote")
    built = output_dir.parent / f".adapter-{name}-{path.stem}"
    shutil.rmtree(built, ignore_errors=True)
    config["input_model"]["adapter_path"] = str(adapter)
    config["output_dir"] = str(built)
    log = output_dir.parent / f"olive-{path.stem}-{name}.log"
    print(f"{path.stem}: exporting adapter {name} with Olive (its log: {log})", flush=True)
    try:
        with quiet_olive(log):
            olive_run(config)
        same = [f.name for f in output_dir.glob("model.onnx*")]
        if not same or filecmp.cmpfiles(output_dir, built, same, shallow=False)[0] != same:
            raise FileNotFoundError(
                f"{adapter} builds another base than {output_dir}: it was trained on another "
                "model or with other LoRA settings; export it on its own with python optimize.py"
            )
        target = output_dir / f"{name}.onnx_adapter"
        shutil.copyfile(built / "adapter_weights.onnx_adapter", target)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="one target (default: every olive/*.json)")
    parser.add_argument("--precision", choices=["int4", "fp16", "fp32"], help="override the workflow's precision")
    parser.add_argument("--smoke", action="store_true", help="optimize the smoke test's tiny model (see smoke.yaml)")
    parser.add_argument("--adapter", type=Path, help="export only this adapter folder, for a base optimized before")
    parser.add_argument("--name", help="with --adapter: the adapter's name (default: its folder's name)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    workflows = sorted((HERE / "olive").glob("*.json"))
    if args.target == "gguf" and (HERE / "export_gguf.py").exists():
        print("error: GGUF files are export_gguf.py's: python export_gguf.py", file=sys.stderr)
        return 2
    if args.target:
        if args.target not in [w.stem for w in workflows]:
            here = ", ".join(w.stem for w in workflows)
            print(f"error: no ONNX target {args.target} in this workspace; its targets: {here}", file=sys.stderr)
            return 2
        workflows = [w for w in workflows if w.stem == args.target]
    name = args.name or (args.adapter.resolve().name if args.adapter else None)
    if name is not None and (not name or not all(c.isalnum() or c in "-_." for c in name)):
        print(f"error: adapter name {name!r}: use letters, digits, '-', '_' or '.'", file=sys.stderr)
        return 2
    if args.adapter and not args.target:
        # the targets whose base takes separate adapters (the NPU recipes compile one merged graph)
        workflows = [w for w in workflows if "adapter_path" in json.loads(w.read_text(encoding="utf-8"))["input_model"]]
        if not workflows:
            print(
                "error: every olive/*.json here exports a merged model, which has no room for adapters: "
                "tuneforge update --set adapter_export=adapters, then python optimize.py",
                file=sys.stderr,
            )
            return 2
    for workflow in workflows:
        try:
            if args.adapter:
                print(f"{workflow.stem}: adapter in {add_adapter(workflow, str(args.adapter), name, args.smoke)}")
                continue
            out = run(workflow, smoke=args.smoke, precision=args.precision)
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{workflow.stem}: optimized model in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
