"""Speed and quality of the ONNX model against PyTorch, on the same prompts from the evaluation split.

    python benchmark.py [--new-tokens 128] [--prompts 4] [--parity-steps 32] [--smoke]

Reports first-token latency, decode tokens per second and size on disk for PyTorch fp32 (merged model)
and the int4 ONNX model; checks that an fp32 ONNX export gives the same greedy tokens as PyTorch; and
compares the int4 model's perplexity on the evaluation split with PyTorch's. Writes outputs/benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from finetune.config import load_config
from finetune.encoding import IGNORE_INDEX, build_datasets
from finetune.inference import OnnxBackend, PytorchBackend
from finetune.quiet import quiet_libraries
from finetune.scoring import perplexity
from optimize import load_workflow

HERE = Path(__file__).parent


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


def onnx_steps(backend: OnnxBackend, new_tokens: int):
    def steps(ids: list[int]):
        params = backend.og.GeneratorParams(backend.model)
        params.set_search_options(max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens, do_sample=False)
        generator = backend.og.Generator(backend.model, params)
        if backend.adapters is not None:
            generator.set_active_adapter(backend.adapters, "tuned")
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    return steps


def export_fp32(workflow: Path, smoke: bool, merged: str) -> Path:
    from olive.workflows import run as olive_run

    config = load_workflow(workflow, smoke)
    config["input_model"] = {"type": "HfModel", "model_path": merged}
    config["passes"] = {"builder": {"type": "ModelBuilder", "precision": "fp32"}}
    out = Path(config["output_dir"] + "-fp32")
    config["output_dir"] = str(out)
    if not (out / "genai_config.json").exists():
        olive_run(config)
    return out


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="onnx-cpu")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--parity-steps", type=int, default=32)
    parser.add_argument("--eval-examples", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="benchmark the smoke test's tiny model (outputs/smoke/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    config = load_config("configs/train.yaml")
    workflow = HERE / "olive" / f"{args.target}.json"
    if not workflow.exists():
        print(f"error: no olive/{args.target}.json", file=sys.stderr)
        return 2
    onnx_dir = Path(load_workflow(workflow, args.smoke)["output_dir"])
    merged = "outputs/smoke/merged" if args.smoke else config["merge"]["output_dir"]
    for needed, step in ((merged, "python merge.py"), (onnx_dir, "python optimize.py")):
        if not Path(needed).exists():
            print(f"error: {needed} not found: run `{step}` first", file=sys.stderr)
            return 2

    torch_backend = PytorchBackend(merged)
    onnx_backend = OnnxBackend(str(onnx_dir))
    fp32_backend = OnnxBackend(str(export_fp32(workflow, args.smoke, merged)))
    _, eval_rows = build_datasets(config, torch_backend.tokenizer, config["training"]["seed"])
    if not eval_rows:
        print("error: the evaluation split is empty; raise data.eval_fraction", file=sys.stderr)
        return 2
    rows = eval_rows[: args.eval_examples]
    prompts = [prompt_ids(row) for row in eval_rows[: args.prompts]]

    report: dict = {"new_tokens": args.new_tokens, "prompts": len(prompts)}
    for name, steps in (("pytorch_fp32", pytorch_steps(torch_backend)), ("onnx_int4", onnx_steps(onnx_backend, args.new_tokens))):
        steps(prompts[0]).__next__()  # warm up
        timings = [measure(steps, p, args.new_tokens) for p in prompts]
        report[name] = {"first_token_ms": 1000 * sum(t[0] for t in timings) / len(timings),
                        "decode_tokens_per_s": sum(t[1] for t in timings) / len(timings)}
    report["pytorch_fp32"]["size_mb"] = size_on_disk(Path(merged), "*.safetensors") / 1e6
    report["onnx_int4"]["size_mb"] = size_on_disk(onnx_dir) / 1e6
    report["speedup"] = report["onnx_int4"]["decode_tokens_per_s"] / report["pytorch_fp32"]["decode_tokens_per_s"]
    report["size_ratio"] = report["onnx_int4"]["size_mb"] / report["pytorch_fp32"]["size_mb"]

    matches = []
    for prompt in prompts:
        reference = torch_backend.generate_ids(prompt, args.parity_steps)
        exported = fp32_backend.generate_ids(prompt, args.parity_steps)[: len(reference)]
        matches.append(reference == exported)
    report["fp32_greedy_tokens_match"] = all(matches)

    tokens = sum(label != IGNORE_INDEX for row in rows for label in row["labels"][1:])
    report["perplexity"] = {"pytorch_fp32": perplexity(torch_backend, rows), "onnx_int4": perplexity(onnx_backend, rows), "tokens": tokens}
    report["perplexity"]["ratio"] = report["perplexity"]["onnx_int4"] / report["perplexity"]["pytorch_fp32"]

    out = Path("outputs/smoke/benchmark.json" if args.smoke else "outputs/benchmark.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    pt, ox = report["pytorch_fp32"], report["onnx_int4"]
    print(f"                      PyTorch fp32   ONNX int4")
    print(f"first token (ms)      {pt['first_token_ms']:12.1f}   {ox['first_token_ms']:9.1f}")
    print(f"decode (tokens/s)     {pt['decode_tokens_per_s']:12.1f}   {ox['decode_tokens_per_s']:9.1f}   {report['speedup']:.1f}x")
    print(f"size on disk (MB)     {pt['size_mb']:12.1f}   {ox['size_mb']:9.1f}   {report['size_ratio']:.0%}")
    print(f"perplexity            {report['perplexity']['pytorch_fp32']:12.2f}   {report['perplexity']['onnx_int4']:9.2f}"
          f"   {report['perplexity']['ratio'] - 1:+.1%}")
    print(f"fp32 ONNX greedy tokens equal PyTorch's for {args.parity_steps} steps: {report['fp32_greedy_tokens_match']}")
    if report["pytorch_fp32"]["size_mb"] < 50:
        print(f"note: a {report['pytorch_fp32']['size_mb']:.1f} MB model: at this size the times are mostly overhead, "
              "so the speed ratio says nothing about a real model; run it on the trained model for that")
    print(f"written to {out}")
    return 0 if report["fp32_greedy_tokens_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
