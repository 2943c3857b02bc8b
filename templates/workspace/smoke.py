"""Run the whole pipeline offline on a tiny random model of the same architecture, in under a minute on a CPU.

    python smoke.py [--keep-going]

Builds the tiny model and a tokenizer trained on data/, trains a few steps with this workspace's
technique and launcher, merges, optimizes to ONNX where the workspace has an ONNX target, chats, and
scores base against tuned with eval.py.
Exits 0 only if every step worked.

Each step is the script the README runs, with the same arguments. A `python SCRIPT` step runs in this process,
as python runs a script (SCRIPT as __main__, its arguments in sys.argv), so that torch and transformers are
imported once for the whole run rather than once per step (they take most of a step's time on a tiny model);
a step under a launcher (torchrun, deepspeed, accelerate) runs as its own processes.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import yaml

from finetune.config import load_config, smoke_base, smoke_path
from finetune.inference import backend_names

HERE = Path(__file__).parent


def launcher_executable(name: str) -> str:
    """python is this interpreter; torchrun and deepspeed come from PATH or from beside it."""
    if name == "python":
        return sys.executable
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def steps(smoke: dict, train_config: dict) -> list[tuple[str, list[str]]]:
    """Each step's name and command; the tiny model's files sit where the workspace's config puts the real ones,
    under the smoke config's output_dir (finetune.config.smoke_path), where optimize.py --smoke finds them."""
    out = Path(smoke["output_dir"])
    base = smoke_base(out)
    run = smoke_path(train_config["training"]["output_dir"], out)
    merged = smoke_path(train_config["merge"]["output_dir"], out)
    model_overrides = [f"model.name_or_path={base}", f"training.output_dir={run}"]
    launcher = [launcher_executable(smoke["launcher"][0]), *smoke["launcher"][1:]]
    if smoke["launcher"][0] in ("torchrun", "deepspeed"):
        # a free port, so that two smoke runs on one machine do not collide on the default 29500
        launcher.insert(1, f"--master_port={free_port()}")
    data_overrides = [o for o in smoke["train_overrides"] if o.startswith("data.")]  # the data as training sees it
    plan = [
        ("check data", [sys.executable, "check_data.py", f"model.name_or_path={base}", *data_overrides]),
        ("train", [*launcher, "train.py", *model_overrides, *smoke["train_overrides"]]),
        (
            "merge",
            [
                sys.executable,
                "merge.py",
                f"model.name_or_path={base}",
                "model.torch_dtype=float32",
                f"merge.adapter_dir={run}",
                f"merge.output_dir={merged}",
            ],
        ),
    ]
    # only the CPU workflow can run here; the other targets' workflows need their hardware
    workflow = HERE / "olive" / "onnx-cpu.json"
    onnx_cpu = workflow.exists()
    onnx_dir = smoke_path(json.loads(workflow.read_text(encoding="utf-8"))["output_dir"], out) if onnx_cpu else None
    if onnx_cpu:
        plan.append(("optimize", [sys.executable, "optimize.py", "--smoke", "--target", "onnx-cpu"]))
    chat_model = ["--model", str(merged)]
    if train_config["generation"].get("example_image"):  # a conversation about a picture: chat.py shows it one
        chat_model += ["--image", train_config["generation"]["example_image"]]
    plan.append(
        (
            "chat",
            [
                sys.executable,
                "chat.py",
                "--backend",
                "pytorch",
                *chat_model,
                "--prompt",
                train_config["generation"]["example_prompt"],
                "--max-new-tokens",
                "16",
            ],
        )
    )
    if onnx_cpu:
        plan.append(
            (
                "chat onnx",
                [
                    sys.executable,
                    "chat.py",
                    "--backend",
                    "onnx",
                    "--model",
                    str(onnx_dir),
                    "--prompt",
                    train_config["generation"]["example_prompt"],
                    "--max-new-tokens",
                    "16",
                ],
            )
        )
    onnx_model = ["--onnx", str(onnx_dir)] if onnx_cpu else ["--no-onnx"] if "onnx" in backend_names() else []
    no_gguf = ["--no-gguf"] if "gguf" in backend_names() else []
    # the smoke test makes no GGUF model (llama.cpp's converter needs the model's real tokenizer, not the tiny one)
    plan.append(
        (
            "eval",
            [
                sys.executable,
                "eval.py",
                "--base",
                str(base),
                "--tuned",
                str(merged),
                *onnx_model,
                *no_gguf,
                "--limit",
                "4",
                "--out",
                str(out / "eval"),
            ],
        )
    )
    return plan


def run_step(command: list[str]) -> bool:
    """Whether the step worked: `python SCRIPT ARGS` run here, anything else (a launcher) as a process."""
    if command[0] != sys.executable:
        return subprocess.run(command, cwd=HERE, check=False).returncode == 0
    script, *args = command[1:]
    saved = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(str(HERE / script), run_name="__main__")
    except SystemExit as done:
        if done.code not in (None, 0) and not isinstance(done.code, int):
            print(done.code, file=sys.stderr)  # as python prints sys.exit("message")
        return done.code in (None, 0)
    except Exception:  # noqa: BLE001  the step failed: its traceback as python prints it, and on to the report
        traceback.print_exc()
        return False
    finally:
        sys.argv = saved
        sys.stdout.flush()
        sys.stderr.flush()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--keep-going", action="store_true", help="run every step even after one fails")
    args = parser.parse_args(argv)
    smoke = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    os.chdir(HERE)  # the steps' paths are the workspace's
    train_config = load_config("configs/train.yaml")
    # offline, on the CPU (DeepSpeed too), here and in each step: set before torch and transformers are imported
    os.environ.update(
        {
            "DS_ACCELERATOR": "cpu",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OLIVE_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    from finetune.tiny import save_tiny_model

    started = time.time()
    base = smoke_base(smoke["output_dir"])
    prompts = [
        train_config["data"].get("system_prompt") or "",
        (train_config.get("task") or {}).get("instruction") or "",
    ]
    save_tiny_model(
        smoke["tiny_model"],
        train_config["data"]["path"],
        smoke["tokenizer_vocab_size"],
        base,
        extra_texts=prompts,
        thinking=smoke.get("thinking_template", False),
        tools=smoke.get("tools_template", False),
        end_of_turn=train_config["data"].get("end_of_turn"),
        images=smoke.get("images_template", False),
    )
    results = [("tiny model", True, time.time() - started)]
    print(f"[smoke] tiny {smoke['tiny_model']['architecture']} model at {base}", flush=True)
    plan = steps(smoke, train_config)
    for name, command in plan:
        print(f"[smoke] {name}: {' '.join(command)}", flush=True)
        t0 = time.time()
        ok = run_step(command)
        results.append((name, ok, time.time() - t0))
        if not ok and not args.keep_going:
            break
    print("\n[smoke] step          result  seconds")
    for name, ok, seconds in results:
        print(f"[smoke] {name:<13} {'ok' if ok else 'FAILED':<7} {seconds:7.1f}")
    passed = all(ok for _, ok, _ in results) and len(results) == len(plan) + 1
    print(f"[smoke] {'passed' if passed else 'FAILED'} in {time.time() - started:.0f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
