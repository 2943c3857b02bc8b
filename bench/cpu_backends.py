"""Which CPU backend to run: PyTorch fp32, ONNX Runtime GenAI int4 and llama.cpp Q4_K_M and Q8_0, side by side in
one run, on a ~170M-parameter model with a real vocabulary (the vocabulary changes the answer: with 128k ids the
embedding and output tables are most of a small model).

    .venv/bin/python bench/cpu_backends.py [--vocab llama-bpe|qwen2] [--train-steps 40] [--workdir DIR] [--size tiny]

Generates a domain-adaptation workspace (text, full fine-tuning, CPU, targets onnx-cpu and gguf) and gives it
about 900 paragraphs of English prose from the installed packages' descriptions. Builds a Llama of 12 layers,
hidden size 768, 4 KV heads, tied embeddings, with the real tokenizer of --vocab (llama.cpp's
models/ggml-vocab-<vocab>.gguf from llama-cpp-python's source archive in .venv/sdist, read by transformers
offline): 174M parameters with Llama 3's 128,256 ids. Trains it from random weights for a few steps with the
workspace's train.py (so that perplexity means something), then runs merge.py, optimize.py (Olive ModelBuilder
int4 RTN), export_gguf.py (llama.cpp's converter and quantizer) and benchmark.py (greedy decoding of 128 tokens from 4 held-out
prompts, every core; perplexity on 32 held-out paragraphs). With --workdir a second run reuses what the first built.
About 12 minutes on 2 cores, 4 of them training.

Measured on 2 cores (2026-11-30; 40 training steps, held-out perplexity about 4200, so only the ratios count):
                      PyTorch fp32   ONNX int4   llama.cpp Q4_K_M   llama.cpp Q8_0
    decode (tokens/s)    10.3-11.6   53.6-57.4          59.7-70.4        45.1-56.7
    first token (ms)       351-371     162-199              51-65            52-68
    size (MB)                  696         188                134              193
    perplexity              4215.9      4228.6             4218.0           4216.1
llama.cpp Q4_K_M decodes 1.1-1.25x faster than the workspace's ONNX model and answers the first token 3x sooner,
from a smaller file, at the same perplexity; the README recommends the gguf target for a CPU. Why ONNX is slower,
looked into with the model builder of onnxruntime-genai 0.14.1 called on the same merged model (not through Olive):
accuracy level 4 (int8 activations) is already the workspace's; block size 128 instead of 32 decodes 6 % faster
(59.5 tokens/s, 110 MB); sharing the tied embedding table with the output layer (int4_algo_config=rtn) stores it
once, 127 MB instead of 188 MB, at the same speed (the table is read once per token by the output layer either
way). Through Olive 0.13 the table cannot be shared: its ModelBuilder pass replaces the builder's make_embedding
with its own, which writes the embedding separately. Neither closes the gap in first-token latency, which is
ONNX Runtime GenAI's generator set-up and prompt pass on these short prompts (20-38 tokens).
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

from text_workspace import bench_env, prose, step, text_workspace, train_and_merge

from tuneforge import catalog

SPEC = {
    "architecture": "llama",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "intermediate_size": 2048,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
TINY = {
    **SPEC,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
}  # --size tiny: the same steps on a 2-layer model, so that a test can run it


def source_archive() -> Path:
    found = sorted((Path(sys.prefix) / "sdist").glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise SystemExit(f"no llama-cpp-python source archive in {Path(sys.prefix) / 'sdist'}: run make")
    return found[-1]


def vocabulary(name: str, into: Path) -> Path:
    """llama.cpp's vocabulary file ggml-vocab-<name>.gguf, out of the source archive, in into."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source_archive()) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(f"/models/ggml-vocab-{name}.gguf"))
        member.name = Path(member.name).name
        archive.extractall(into, members=[member], filter="data")
    return into / member.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--vocab", choices=["llama-bpe", "qwen2"], default="llama-bpe", help="whose tokenizer: Llama 3's or Qwen2's"
    )
    parser.add_argument(
        "--train-steps", type=int, default=40, help="optimizer steps of 4 packed sequences of 256 tokens"
    )
    parser.add_argument("--workdir", type=Path, help="keep the workspace here; steps already done are skipped")
    parser.add_argument(
        "--size", choices=["full", "tiny"], default="full", help="tiny: a 2-layer model, to check the script"
    )
    args = parser.parse_args()
    tiny = args.size == "tiny"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tuneforge-bench-cpu-"))
    env = bench_env(work)
    ws = work / "ws"
    if not ws.exists():
        text_workspace(
            ws, env, prose()[: 60 if tiny else None], targets="pytorch,onnx-cpu,gguf", batch_size=4, learning_rate=0.001
        )
    if not (ws / "bench-model").exists():
        vocab = vocabulary(args.vocab, work / "vocab")
        build = (
            "import json, sys; from transformers import AutoTokenizer; from finetune.tiny import build_model\n"
            "t = AutoTokenizer.from_pretrained(sys.argv[1], gguf_file=sys.argv[2])\n"
            "t.pad_token = t.pad_token or t.eos_token\n"
            "t.chat_template = sys.argv[3]  # llama.cpp's vocabulary file has none: ChatML, from the catalog\n"
            f"m = build_model(json.loads({json.dumps(json.dumps(TINY if tiny else SPEC))}), t)\n"
            "print(f'model: {sum(p.numel() for p in m.parameters()) / 1e6:.1f}M parameters, {len(t)} token ids')\n"
            "m.save_pretrained('bench-model'); t.save_pretrained('bench-model')"
        )
        chatml = catalog.load("chat_formats")["chatml"]["template"]
        step([sys.executable, "-c", build, str(vocab.parent), vocab.name, chatml], ws, env)
    if not (ws / "outputs" / "merged").exists():
        train_and_merge(ws, env, args.train_steps, warmup=0.1, logging_steps=10)
    if not (ws / "outputs" / "onnx" / "onnx-cpu").exists():
        step(
            [sys.executable, "optimize.py", "--target", "onnx-cpu"], ws, env, show=lambda line: not line.startswith("[")
        )
    if not list((ws / "outputs" / "gguf").glob("*.gguf")):
        step([sys.executable, "export_gguf.py", "--llama-cpp-source", str(source_archive())], ws, env)
    sizes = (
        ["--new-tokens", "16", "--prompts", "2", "--parity-steps", "8", "--eval-examples", "4"]
        if tiny
        else ["--new-tokens", "128", "--prompts", "4", "--parity-steps", "32", "--eval-examples", "32"]
    )
    step([sys.executable, "benchmark.py", *sizes], ws, env, show=lambda line: not line.startswith("["))
    print(f"workspace: {ws}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
