"""GGUF for llama.cpp and Ollama: llama.cpp's own converters (models and LoRA adapters), its quantizer.

The converter (convert_hf_to_gguf.py) is not in the installed llama-cpp-python; it ships in that package's
source archive, at the same llama.cpp version as the runtime requirements.txt pins, so the two agree.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

CONVERTER_DIR = Path("outputs/llama.cpp")  # the converter, unpacked once
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/")


def pinned_package(requirements: Path = Path("requirements.txt")) -> str:
    """The llama-cpp-python pin of requirements.txt (llama-cpp-python==X)."""
    for line in requirements.read_text(encoding="utf-8").splitlines():
        if line.split("#")[0].strip().startswith("llama-cpp-python=="):
            return line.split("#")[0].strip()
    raise FileNotFoundError("requirements.txt pins no llama-cpp-python: regenerate with a gguf target")


def converter(source: str | None = None) -> Path:
    """convert_hf_to_gguf.py at the pinned version: unpacked before, or from source (the source archive, or
    a folder it was unpacked in), or from the archive pip downloads."""
    script = CONVERTER_DIR / "convert_hf_to_gguf.py"
    if all((CONVERTER_DIR / part).exists() for part in CONVERTER_PARTS):
        return script
    package = pinned_package()
    if source is None:
        downloads = Path("outputs/downloads")
        fetched = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                package,
                "-d",
                str(downloads),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        archives = sorted(downloads.glob("llama_cpp_python-*.tar.gz"))
        if fetched.returncode != 0 or not archives:
            raise FileNotFoundError(
                f"llama.cpp's converter comes in the source archive of {package}, which pip could not fetch here; "
                f"on a machine that reaches the package index run `pip download --no-deps --no-binary :all: {package}` "
                "and pass the archive: python export_gguf.py --llama-cpp-source llama_cpp_python-....tar.gz"
            )
        source = str(archives[-1])
    unpack(Path(source), CONVERTER_DIR)
    return script


def unpack(source: Path, into: Path) -> None:
    """The converter's files from vendor/llama.cpp/ of an archive or an unpacked folder."""
    if not source.exists():
        raise FileNotFoundError(f"{source} not found: give the llama-cpp-python source archive (.tar.gz) or its folder")
    staging = into.with_name(into.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if source.is_dir():
        found = next(iter(sorted(source.glob("**/vendor/llama.cpp/convert_hf_to_gguf.py"))), None)
        if found is None:
            raise FileNotFoundError(f"{source} holds no vendor/llama.cpp/convert_hf_to_gguf.py")
        staging.mkdir(parents=True)
        for part in CONVERTER_PARTS:
            if part.endswith("/"):
                shutil.copytree(found.parent / part, staging / part)
            else:
                shutil.copyfile(found.parent / part, staging / part)
    else:
        with tarfile.open(source) as archive:
            members = []
            for member in archive.getmembers():
                _, found, rest = member.name.partition("/vendor/llama.cpp/")
                if found and rest.startswith(CONVERTER_PARTS) and (member.isfile() or member.isdir()):
                    member.name = rest
                    members.append(member)
            if not any(m.name == "convert_hf_to_gguf.py" for m in members):
                raise FileNotFoundError(
                    f"{source} holds no vendor/llama.cpp/convert_hf_to_gguf.py: is it "
                    "llama-cpp-python's source archive?"
                )
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.10.12+ and 3.11.4+
            archive.extractall(staging, members=members, **safe)
    shutil.rmtree(into, ignore_errors=True)
    staging.rename(into)


def convert(model_dir: Path, out: Path, script: Path, log: Path, *options: str) -> Path:
    """The Hugging Face model (or, by convert_lora_to_gguf.py, adapter) in model_dir as one 16-bit GGUF file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as sink:
        done = subprocess.run(
            [sys.executable, str(script), str(model_dir), "--outfile", str(out), "--outtype", "f16", *options],
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(
            f"llama.cpp's {script.name} failed on {model_dir}: {tail[0] if tail else 'no output'} (log: {log})"
        )
    return out


def lora_refusal(adapter_config: dict) -> str | None:
    """Why llama.cpp's LoRA format cannot hold this PEFT adapter; None when it can."""
    if adapter_config.get("peft_type") != "LORA":
        return f"a {adapter_config.get('peft_type')} adapter is not a LoRA"
    if adapter_config.get("use_dora"):
        return "DoRA's magnitude vectors have no place in llama.cpp's LoRA format"
    if adapter_config.get("modules_to_save"):
        return "the adapter trains whole modules (modules_to_save) besides its LoRA matrices"
    if adapter_config.get("target_parameters"):
        return "it adapts the experts' fused weights (target_parameters), which llama.cpp's LoRA format does not hold"
    if adapter_config.get("exclude_modules"):
        return (
            "it adapts the language model of an image-text checkpoint, a case tuneforge has not checked llama.cpp's "
            "LoRA converter on"
        )
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        return "its rank or alpha differs between modules, and llama.cpp's format has one alpha"
    return None


def convert_lora(adapter_dir: Path, base_config_dir: Path, out: Path, script: Path, log: Path) -> Path:
    """A PEFT LoRA adapter as a GGUF LoRA file, by llama.cpp's convert_lora_to_gguf.py (base_config_dir: a folder
    with the base's config.json, such as the merged model). llama.cpp scales by alpha / r; an rsLoRA adapter's
    scale, alpha / sqrt(r), is written as the alpha that gives it."""
    settings = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    staging = out.with_name(".lora-staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if settings.pop("use_rslora", False):
            settings["lora_alpha"] = settings["lora_alpha"] * math.sqrt(settings["r"])
        (staging / "adapter_config.json").write_text(json.dumps(settings), encoding="utf-8")
        shutil.copyfile(adapter_dir / "adapter_model.safetensors", staging / "adapter_model.safetensors")
        return convert(staging, out, script.with_name("convert_lora_to_gguf.py"), log, "--base", str(base_config_dir))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def output_to(log: Path):
    """What C code prints (llama.cpp's quantizer, its loader) goes to log, not the terminal."""
    sys.stdout.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a", encoding="utf-8") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def quantize(f16: Path, kind: str, log: Path) -> Path:
    """f16 quantized to kind (Q8_0, Q4_K_M, ...) by llama.cpp's own quantizer; F16 is the file itself."""
    if kind == "F16":
        return f16
    import llama_cpp

    out = f16.with_name(f16.name.replace("-F16.gguf", f"-{kind}.gguf"))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
    with output_to(log):
        failed = llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), params)
    if failed:
        raise RuntimeError(f"llama.cpp could not quantize {f16} to {kind} (log: {log})")
    return out
