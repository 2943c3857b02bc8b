"""Real results: the two real pretrained models tuned on scenarios whose data can show it, base against tuned on
the scenario's metric, then the tuned model through each export, held to the merged model it was made from.

    .venv/bin/python bench/real_results.py [--size small] [--workdir DIR] [--only CASE ...]

Each case generates a workspace for the model (bench/real_models.py: SmolLM2-135M-Instruct, Gemma 3 270M base)
and runs its README's steps offline, as a user does: check_data.py, train.py (timed), merge.py, optimize.py for
ONNX int4 (SmolLM2 only: onnxruntime-genai's builder does not take Gemma 3), export_gguf.py for GGUF Q8_0 and Q4_K_M, eval.py
(base, tuned and each export on the scenario's metric; eval.py says when an export falls more than 5 points
below the tuned model) and benchmark.py (size, decode speed, and how many of each export's first 20 greedy
tokens are the merged model's; it says when an 8-bit export agrees on under 90 %). Prints one table; writes
real_results.json in the work folder. --size small (the test's size): SmolLM2 on support messages only, Q8_0 only,
scored on the first 25 held-out messages with the first 2 shown, benchmark.py on 2 prompts of 24 tokens and 8 examples.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import real_models
import yaml
from cpu_backends import source_archive
from text_workspace import bench_env, step

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# name: (model, answers, train.py overrides); support: 150 labelled support messages of our own making (five
# intents, bench/support_data.py) with 50 more held out; chat: the default scenario's sample data (houseplants);
# tools: the tools scenario's sample (54 conversations, 5 held out)
CASES = {
    "smollm2-classification": (
        "smollm2",
        {"scenario": "classification", "dataset": "support", "dataset_format": "classification"},
        ["training.max_steps=20", "training.learning_rate=1e-3", "training.per_device_train_batch_size=8"],
    ),
    "smollm2-chat": ("smollm2", {"scenario": "chat"}, []),
    # the tools scenario's sample (plant-shop tools; SmolLM2's template has none, so the catalog's ChatML turns)
    "smollm2-tools": ("smollm2", {"scenario": "tools"}, []),
    # GRPO on the same support intents: the label reward on 4 sampled answers to each of 4 prompts a step
    "smollm2-grpo": (
        "smollm2",
        {"objective": "grpo", "scenario": "classification", "dataset": "support", "dataset_format": "classification"},
        ["training.max_steps=48", "training.learning_rate=1e-4", "training.per_device_train_batch_size=4"],
    ),
    "gemma3-270m-classification": (
        "gemma3-270m",
        {"scenario": "classification", "dataset": "support", "dataset_format": "classification"},
        ["training.max_steps=40", "training.learning_rate=5e-4", "training.per_device_train_batch_size=8"],
    ),
}
QUICK = [
    "training.gradient_accumulation_steps=1",
    "training.logging_steps=2",
    "training.eval_strategy=no",
    "training.save_strategy=no",
    "training.report_to=none",
]


def support_data(work: Path) -> Path:
    folder = work / "support"
    if not (folder / "train.jsonl").exists():
        step([sys.executable, str(ROOT / "bench" / "support_data.py"), str(folder)], ROOT, os.environ)
    return folder


def run_case(name: str, work: Path, env: dict, small: bool) -> dict:
    model, answers, overrides = CASES[name]
    onnx = model == "smollm2"
    types = ["Q8_0"] if small else ["Q8_0", "Q4_K_M"]
    answers = {
        "model": str(real_models.checkpoint(model)),
        "targets": ",".join(["pytorch", *(["onnx-cpu"] if onnx else []), "gguf"]),
        "gguf_types": ",".join(types),
        **answers,
    }
    support = support_data(work) if answers.get("dataset") == "support" else None
    if support:
        answers["dataset"] = str(support / "train.jsonl")
    ws = work / name
    if not ws.exists():
        sets = [f"--set={k}={v}" for k, v in answers.items()]
        step([str(BIN / "tuneforge"), "new", str(ws), "--defaults", *sets], ROOT, env)
        if support:  # held out whole, as the README says to do with a test file of one's own
            config = ws / "configs" / "train.yaml"
            config.write_text(config.read_text().replace("eval_path: null", f"eval_path: {support / 'test.jsonl'}", 1))
    python = sys.executable
    step([python, "check_data.py"], ws, env)
    start = time.perf_counter()
    step([python, "train.py", *QUICK, *overrides], ws, env)
    train_s = time.perf_counter() - start
    step([python, "merge.py"], ws, env)
    if onnx:
        step([python, "optimize.py", "--target", "onnx-cpu"], ws, env)
    step([python, "export_gguf.py", "--llama-cpp-source", str(source_archive())], ws, env)
    # eval.py scores base, tuned and each export (the first GGUF type; the others one by one after)
    names = {"onnx": "onnx_int4", "gguf": f"gguf_{types[0].lower()}"}
    step([python, "eval.py", *(["--limit", "25", "--show", "2"] if small else [])], ws, env)
    report = json.loads((ws / "eval" / "report.json").read_text())
    metric = report["metric"]
    scores = {names.get(n, n): s[metric] for n, s in report["models"].items()}
    below = {names.get(n, n): why for n, why in report["below_gate"].items()}
    gguf_dir = ws / yaml.safe_load((ws / "configs" / "train.yaml").read_text())["gguf"]["output_dir"]
    for kind in types[1:]:
        gguf = next(gguf_dir.glob(f"*-{kind}.gguf"))
        only = ["--no-onnx"] if onnx else []
        step([python, "eval.py", *only, "--gguf", str(gguf), "--out", f"eval/{kind}"], ws, env)
        other = json.loads((ws / "eval" / kind / "report.json").read_text())
        scores[f"gguf_{kind.lower()}"] = other["models"]["gguf"][metric]
        below.update({f"gguf_{kind.lower()}": why for n, why in other["below_gate"].items() if n == "gguf"})
    sizes = (
        ["--prompts", "2", "--new-tokens", "24", "--parity-steps", "20", "--eval-examples", "8"]
        if small
        else ["--prompts", "4", "--new-tokens", "64"]
    )
    step([python, "benchmark.py", *sizes], ws, env)
    measured = json.loads((ws / "outputs" / "benchmark.json").read_text())
    return {
        "case": name,
        "metric": metric,
        "examples": report["examples"],
        "train_s": round(train_s, 1),
        "scores": scores,
        "below_gate": [f"{n}: {why}" for n, why in below.items()] + measured["below_gate"],
        "exports": {
            ("tuned" if n == "pytorch_fp32" else n): {
                "agreement": m.get("greedy_agreement"),
                "size_mb": round(m["size_mb"], 1),
                "decode_tokens_per_s": round(m["decode_tokens_per_s"], 1),
            }
            for n, m in measured["models"].items()
        },
    }


def print_table(results: list[dict]) -> None:
    for r in results:
        print(
            f"\n{r['case']}: {r['metric']} on {r['examples']} held-out examples; train.py {r['train_s']:.0f} s on this machine"
        )
        print(f"{'':<14}{'metric':>10}{'agreement':>11}{'size MB':>10}{'tokens/s':>10}")
        for name, value in r["scores"].items():
            e = r["exports"].get(name, {})
            agreement = "-" if e.get("agreement") is None else f"{e['agreement']:.0%}"
            size = f"{e['size_mb']:.0f}" if e else "-"
            speed = f"{e['decode_tokens_per_s']:.0f}" if e else "-"
            print(f"{name:<14}{value:>10.4g}{agreement:>11}{size:>10}{speed:>10}")
        for line in r["below_gate"]:
            print(f"  below the gate: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["full", "small"], default="full")
    parser.add_argument("--only", nargs="+", choices=list(CASES), help="these cases")
    parser.add_argument("--workdir", type=Path, help="keep the workspaces here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tuneforge-bench-real-"))
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    try:
        names = args.only or (["smollm2-classification"] if args.size == "small" else list(CASES))
        results = []
        for name in names:  # each case's result kept, so that a second run with --workdir goes on where one stopped
            done = work / f"{name}.{args.size}.json"
            if not done.exists():
                done.write_text(json.dumps(run_case(name, work, env, args.size == "small"), indent=2) + "\n")
            results.append(json.loads(done.read_text()))
    except real_models.Unavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(results)
    (work / "real_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\ndetails: {work / 'real_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
