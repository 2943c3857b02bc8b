"""Speed and quality of the optimized models against PyTorch, on the same prompts from the evaluation split.

    python benchmark.py [--new-tokens 128] [--prompts 4] [--parity-steps 32] [--threads N] [--smoke]

For PyTorch fp32 (the merged model), the int4 ONNX model of --target and each GGUF file export_gguf.py wrote:
first-token latency, decode tokens per second, size on disk, perplexity on the evaluation split, and how many of
the first 20 greedy tokens of each export are PyTorch's on the same prompts (an 8-bit export that agrees on fewer
than 90 % is said to fall below the gate). Checks that an fp32 ONNX export gives PyTorch's greedy tokens
(--parity-steps of them; exit 1 if not). Writes outputs/benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from finetune.config import load_config, smoke_path
from finetune.encoding import IGNORE_INDEX, build_datasets
from finetune.inference import Backend, PytorchBackend, backend_module
from finetune.quiet import quiet_libraries
from finetune.scoring import perplexity

HERE = Path(__file__).parent
# an export rounds every weight, so a near tie between two tokens may go the other way: of the first 20 greedy tokens
# of each prompt, an 8-bit export (GGUF Q8_0) should give PyTorch's (position by position) at least 90 % of the time
# on a trained model; 4-bit ones are reported, not gated (their agreement falls with the model's size). An
# undertrained model, whose next-token probabilities are flat, has near ties everywhere
AGREEMENT_TOKENS, AGREEMENT_GATE = 20, {"gguf_q8_0": 0.9}


def size_on_disk(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def prompt_ids(row: dict) -> list[int]:
    """The tokens before the answer; for plain text, where every token is learnt, the first half."""
    answer = next((i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX), len(row["input_ids"]))
    return row["input_ids"][: answer or max(1, len(row["input_ids"]) // 2)]


def measure(generate_step, ids: list[int], new_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, decode tokens per second after it) for one greedy generation."""
    start = time.perf_counter()
    steps = generate_step(ids)
    next(steps)
    first = time.perf_counter() - start
    count = 0
    decode_start = time.perf_counter()
    for _ in steps:
        count += 1
        if count >= new_tokens - 1:
            break
    return first, count / max(time.perf_counter() - decode_start, 1e-9)


def pytorch_steps(backend: PytorchBackend):
    import torch

    def steps(ids: list[int]):
        past, tokens = None, torch.tensor([ids])
        with torch.no_grad():
            while True:
                out = backend.model(input_ids=tokens, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tokens = out.logits[:, -1:].argmax(-1)
                yield int(tokens)

    return steps


def onnx_steps(backend: Backend, new_tokens: int):
    def steps(ids: list[int]):  # greedy (the backend's sampling is off), past the end token
        generator = backend._generator(ids, new_tokens, min_new_tokens=new_tokens)
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    return steps


def gguf_steps(backend: Backend):
    def steps(ids: list[int]):  # greedy, past the end token as the others
        yield from backend.model.generate(ids, reset=True, temp=0.0, top_k=1, repeat_penalty=1.0)

    return steps


def export_fp32(workflow: Path, smoke: bool, merged: str) -> Path:
    from finetune.workflows import load_workflow, olive_run

    config = load_workflow(workflow, smoke)
    config["input_model"] = {"type": "HfModel", "model_path": merged}
    config["passes"] = {"builder": {"type": "ModelBuilder", "precision": "fp32"}}
    out = Path(config["output_dir"] + "-fp32")
    config["output_dir"] = str(out)
    if not (out / "genai_config.json").exists():
        olive_run(config)
    return out


def gguf_files(config: dict, smoke: bool) -> list[Path]:
    """The quantized GGUF files of the merged model that export_gguf.py wrote."""
    folder = (smoke_path if smoke else Path)(config["gguf"]["output_dir"])
    return sorted(p for p in folder.glob("*.gguf") if not p.name.endswith("-F16.gguf"))


def gguf_kind(path: Path) -> str:
    return path.stem.rsplit("-", 1)[-1]


def models(args, config: dict, merged: str) -> dict:
    """name -> (backend, its greedy steps, size on disk in bytes), PyTorch first."""
    torch_backend = PytorchBackend(merged)
    found = {"pytorch_fp32": (torch_backend, pytorch_steps(torch_backend), size_on_disk(Path(merged), "*.safetensors"))}
    workflow = HERE / "olive" / f"{args.target}.json"
    if workflow.exists():  # an ONNX workspace, with finetune/workflows.py
        from finetune.workflows import load_workflow

        onnx_dir = Path(load_workflow(workflow, args.smoke)["output_dir"])
        if not onnx_dir.exists():
            raise FileNotFoundError(f"{onnx_dir} not found: run `python optimize.py` first")
        backend = backend_module("onnx").OnnxBackend(str(onnx_dir))
        found["onnx_int4"] = (backend, onnx_steps(backend, args.new_tokens), size_on_disk(onnx_dir))
    if "gguf" in config:
        files = gguf_files(config, args.smoke)
        if not files:
            raise FileNotFoundError("no GGUF files: run `python export_gguf.py` first")
        for path in files:
            backend = backend_module("gguf").GgufBackend(str(path), threads=args.threads)
            found[f"gguf_{gguf_kind(path).lower()}"] = (backend, gguf_steps(backend), path.stat().st_size)
    return found


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="onnx-cpu", help="the ONNX target to measure, if the workspace has it")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--parity-steps", type=int, default=32)
    parser.add_argument("--eval-examples", type=int, default=16)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="llama.cpp's threads (default: every core, as PyTorch and ONNX Runtime use)",
    )
    parser.add_argument("--smoke", action="store_true", help="benchmark the smoke test's tiny model (see smoke.yaml)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    config = load_config("configs/train.yaml")
    merged = str((smoke_path if args.smoke else Path)(config["merge"]["output_dir"]))
    try:
        if not Path(merged).exists():
            raise FileNotFoundError(f"{merged} not found: run `python merge.py` first")
        found = models(args, config, merged)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch_backend = found["pytorch_fp32"][0]
    _, eval_rows = build_datasets(config, torch_backend.tokenizer, config["training"]["seed"])
    if not eval_rows:
        print("error: the evaluation split is empty; raise data.eval_fraction", file=sys.stderr)
        return 2
    rows = eval_rows[: args.eval_examples]
    prompts = [prompt_ids(row) for row in eval_rows[: args.prompts]]

    report: dict = {
        "new_tokens": args.new_tokens,
        "prompts": len(prompts),
        "threads": args.threads,
        "tokens_scored": sum(label != IGNORE_INDEX for row in rows for label in row["labels"][1:]),
        "models": {},
    }
    for name, (backend, steps, size) in found.items():
        next(steps(prompts[0]))  # warm up
        timings = [measure(steps, p, args.new_tokens) for p in prompts]
        report["models"][name] = {
            "first_token_ms": 1000 * sum(t[0] for t in timings) / len(timings),
            "decode_tokens_per_s": sum(t[1] for t in timings) / len(timings),
            "size_mb": size / 1e6,
            "perplexity": perplexity(backend, rows),
        }
    reference = report["models"]["pytorch_fp32"]
    for measured in report["models"].values():
        measured["speed_ratio"] = measured["decode_tokens_per_s"] / reference["decode_tokens_per_s"]
        measured["size_ratio"] = measured["size_mb"] / reference["size_mb"]
        measured["perplexity_ratio"] = measured["perplexity"] / reference["perplexity"]

    if "onnx_int4" in found:
        fp32 = backend_module("onnx").OnnxBackend(
            str(export_fp32(HERE / "olive" / f"{args.target}.json", args.smoke, merged))
        )
        greedy = [torch_backend.generate_ids(prompt, args.parity_steps) for prompt in prompts]
        report["fp32_greedy_tokens_match"] = all(
            fp32.generate_ids(p, args.parity_steps)[: len(g)] == g for p, g in zip(prompts, greedy)
        )
    report["below_gate"] = []
    expected = [torch_backend.generate_ids(prompt, AGREEMENT_TOKENS) for prompt in prompts]
    for name, (backend, _, _) in found.items():  # each answer as long as PyTorch's (it stops at the end token)
        if name == "pytorch_fp32":
            continue
        same = sum(
            a == b
            for prompt, tokens in zip(prompts, expected)
            for a, b in zip(backend.generate_ids(prompt, len(tokens)), tokens)
        )
        agreement = report["models"][name]["greedy_agreement"] = same / max(1, sum(map(len, expected)))
        if agreement < AGREEMENT_GATE.get(name, 0):
            report["below_gate"].append(
                f"{name} gives PyTorch's greedy tokens {agreement:.0%} of the time, below the {AGREEMENT_GATE[name]:.0%} "
                "an 8-bit export keeps on a trained model: check that the merged model is the tuned one, or export "
                "F16 (gguf.quantizations in configs/train.yaml)"
            )

    out = (smoke_path if args.smoke else Path)("outputs/benchmark.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    if "fp32_greedy_tokens_match" in report:
        print(
            f"fp32 ONNX greedy tokens equal PyTorch's for {args.parity_steps} steps: {report['fp32_greedy_tokens_match']}"
        )
    for line in report["below_gate"]:
        print(f"below the gate: {line}")
    if reference["size_mb"] < 50:
        print(
            f"note: a {reference['size_mb']:.1f} MB model: at this size the times are mostly overhead, "
            "so the speed ratios say nothing about a real model; run it on the trained model for that"
        )
    print(f"written to {out}")
    return 0 if report.get("fp32_greedy_tokens_match", True) else 1


def print_table(report: dict) -> None:
    names = list(report["models"])
    rows = (
        ("first token (ms)", "first_token_ms", "{:.1f}"),
        ("decode (tokens/s)", "decode_tokens_per_s", "{:.1f}"),
        ("  against PyTorch", "speed_ratio", "{:.2f}x"),
        ("size on disk (MB)", "size_mb", "{:.1f}"),
        ("  against PyTorch", "size_ratio", "{:.0%}"),
        ("perplexity", "perplexity", "{:.3f}"),
        ("  against PyTorch", "perplexity_ratio", "{:.3f}x"),
        (f"greedy agreement ({AGREEMENT_TOKENS})", "greedy_agreement", "{:.0%}"),
    )
    print(f"{'':20}" + "".join(f"{name:>14}" for name in names))
    for label, key, form in rows:
        cells = [report["models"][name].get(key) for name in names]
        print(f"{label:20}" + "".join(f"{'-' if c is None else form.format(c):>14}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
