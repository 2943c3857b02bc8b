"""Turn the fine-tuned model into optimized models for local runtimes: ONNX with Olive, for each target in
olive/, and GGUF for llama.cpp and Ollama when configs/train.yaml has a gguf section.

    python optimize.py [--target onnx-cpu] [--precision fp16] [--smoke]
    python optimize.py --adapter outputs/run-legal [--name legal]   # one more adapter for the same ONNX base
    python optimize.py --target gguf [--llama-cpp-source llama_cpp_python-X.tar.gz]

Each olive/<target>.json is a complete Olive workflow; this script runs it, offline: the model builder
quantizes weights to int4 by round-to-nearest, and a pass that calibrates activations (the QNN recipe's
static quantization) reads outputs/calibration.jsonl, which this script writes from the training split.
GGUF: llama.cpp's own converter turns the merged model into a 16-bit GGUF file, llama.cpp's quantizer makes
each type gguf.quantizations lists, and a Modelfile for Ollama goes beside them; a LoRA run's adapter also
becomes a GGUF LoRA file, in gguf/adapter/ beside its base model in GGUF, for Ollama's ADAPTER.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from finetune.config import smoke_base, smoke_path
from finetune.quiet import quiet_libraries

HERE = Path(__file__).parent
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


def olive_run(config: dict) -> None:
    from olive.telemetry.telemetry import Telemetry
    from olive.workflows import run

    # Olive 0.13 queues a heartbeat before it reads OLIVE_DISABLE_TELEMETRY (set in main), and sends it at exit
    # (offline it retries for about 10 s before the process may end): with the variable set, no heartbeat either
    if os.environ.get("OLIVE_DISABLE_TELEMETRY") == "1":
        Telemetry._log_heartbeat = lambda self, metadata=None: None
    run(config)  # olive consumes parts of the dict


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


def export_gguf(smoke: bool = False, source: str | None = None) -> Path:
    """The merged model as GGUF files (gguf.quantizations), its tokenizer files and an Ollama Modelfile; for a
    LoRA run also, in adapter/, the base model and the adapter as a GGUF LoRA file, with a Modelfile for both."""
    from transformers import GenerationConfig

    from finetune import gguf
    from finetune.config import load_config
    from finetune.hub import ModelUnavailable
    from finetune.inference import model_name
    from finetune.modelfile import modelfile, read_tool_turns, read_turns
    from finetune.modeling import load_tokenizer

    config = load_config("configs/train.yaml")
    place = smoke_path if smoke else Path
    merged = place(config["merge"]["output_dir"])
    adapter_dir = place(config["merge"]["adapter_dir"])
    out = place(config["gguf"]["output_dir"])
    if not (merged / "config.json").exists():
        raise FileNotFoundError(f"{merged} not found: run python merge.py first")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "gguf.log"
    log.write_text("", encoding="utf-8")
    script = gguf.converter(source)
    name = model_name(config["model"]["name_or_path"])
    print(f"gguf: converting {merged} with llama.cpp's converter (its log: {log})", flush=True)
    f16 = gguf.convert(merged, out / f"{name}-tuned-F16.gguf", script, log)
    kinds = config["gguf"]["quantizations"]
    files = [gguf.quantize(f16, kind, log) for kind in kinds]
    if "F16" not in kinds:
        f16.unlink()
    tokenizer = load_tokenizer(str(merged))
    tokenizer.save_pretrained(out)  # chat.py and serve.py build prompts with it, as in training
    end_ids = GenerationConfig.from_pretrained(merged).eos_token_id
    end_ids = end_ids if isinstance(end_ids, list) else [end_ids]
    system = config["data"].get("system_prompt")
    kwargs = config["data"].get("chat_template_kwargs")
    turns = read_turns(tokenizer, end_ids, kwargs, with_system=bool(system))
    tools = read_tool_turns(tokenizer, turns, kwargs) if turns and config.get("tools") else None
    if turns and config.get("tools") and tools is None:
        print("gguf: the Modelfile's template has no tools: the chat template does not write them turn by turn")
    # Ollama's context: at least what training saw, at most what the model reads
    context = min(
        max(config["data"]["max_length"], 4096),
        json.loads((merged / "config.json").read_text()).get("max_position_embeddings", 4096),
    )

    def write_modelfile(folder: Path, model: Path, adapter: Path | None = None) -> None:
        generation = config.get("generation", {})
        text = modelfile(model.name, turns, system, generation, context, adapter and adapter.name, tools)
        (folder / "Modelfile").write_text(text, encoding="utf-8")

    write_modelfile(out, files[0])
    if config.get("peft") and (adapter_dir / "adapter_config.json").exists():
        settings = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        why = gguf.lora_refusal(settings)
        if why is None:
            try:
                base, lora = export_lora_gguf(
                    config, adapter_dir, merged, tokenizer, out / "adapter", name, kinds[0], script, log
                )
                write_modelfile(base.parent, base, lora)
            except ModelUnavailable as error:  # the base model is needed in GGUF too
                why = str(error)
        if why:
            print(f"gguf: no GGUF LoRA file, as {why}; the merged model's GGUF files carry the fine-tune", flush=True)
    return out


def export_lora_gguf(
    config: dict, adapter_dir: Path, merged: Path, tokenizer, out: Path, name: str, kind: str, script: Path, log: Path
) -> tuple[Path, Path]:
    """The base model the adapter was trained on as GGUF (quantized to kind), and the adapter as a GGUF LoRA file;
    tokenizer: the merged model's, with the chat template training used."""
    import shutil

    from finetune import gguf
    from finetune.modeling import keep_base_files, load_base_of

    shutil.rmtree(out, ignore_errors=True)
    staging = out / ".base"
    print(f"gguf: converting the base model and the adapter in {adapter_dir} for {out}/", flush=True)
    load_base_of(adapter_dir, config).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    keep_base_files(str(merged), staging)
    f16 = gguf.convert(staging, out / f"{name}-F16.gguf", script, log)
    shutil.rmtree(staging)
    base = gguf.quantize(f16, kind, log)
    if base != f16:
        f16.unlink()
    lora = gguf.convert_lora(adapter_dir, merged, out / f"{name}-tuned-LoRA-F16.gguf", script, log)
    return base, lora


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


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="one target (default: every olive/*.json)")
    parser.add_argument("--precision", choices=["int4", "fp16", "fp32"], help="override the workflow's precision")
    parser.add_argument("--smoke", action="store_true", help="optimize the smoke test's tiny model (see smoke.yaml)")
    parser.add_argument("--adapter", type=Path, help="export only this adapter folder, for a base optimized before")
    parser.add_argument("--name", help="with --adapter: the adapter's name (default: its folder's name)")
    parser.add_argument(
        "--llama-cpp-source",
        help="gguf: llama-cpp-python's source archive (or its unpacked folder), "
        "for a machine where pip cannot download it",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    from finetune.config import load_config

    workflows = sorted((HERE / "olive").glob("*.json"))
    with_gguf = "gguf" in load_config("configs/train.yaml")
    here = [w.stem for w in workflows] + (["gguf"] if with_gguf else [])
    if args.target:
        if args.target not in here:
            print(f"error: no target {args.target} in this workspace; its targets: {', '.join(here)}", file=sys.stderr)
            return 2
        workflows = [w for w in workflows if w.stem == args.target]
        with_gguf = args.target == "gguf"
    if with_gguf and not args.adapter:
        try:
            print(f"gguf: GGUF files and Modelfile in {export_gguf(args.smoke, args.llama_cpp_source)}/")
        except (FileNotFoundError, RuntimeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
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
