"""The merged model as GGUF files for llama.cpp and Ollama: llama.cpp's own converter turns it into a 16-bit GGUF
file, llama.cpp's quantizer makes each type gguf.quantizations lists (configs/train.yaml), and a Modelfile for
Ollama goes beside them; a LoRA run's adapter also becomes a GGUF LoRA file, in gguf/adapter/ beside its base
model in GGUF, for Ollama's ADAPTER.

    python export_gguf.py [--llama-cpp-source llama_cpp_python-X.tar.gz]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from finetune.quiet import quiet_libraries


def export_gguf(source: str | None = None) -> Path:
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
    merged = Path(config["merge"]["output_dir"])
    adapter_dir = Path(config["merge"]["adapter_dir"])
    out = Path(config["gguf"]["output_dir"])
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


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--llama-cpp-source",
        help="llama-cpp-python's source archive (or its unpacked folder), for a machine where pip cannot download it",
    )
    args = parser.parse_args(argv)
    try:
        print(f"gguf: GGUF files and Modelfile in {export_gguf(args.llama_cpp_source)}/")
    except (FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
