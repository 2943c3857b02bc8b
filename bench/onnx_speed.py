"""ONNX speed and quality on a ~100M-parameter model: a generated workspace's benchmark.py on a random Llama.

    .venv/bin/python bench/onnx_speed.py

Builds a 97M-parameter Llama (random weights, 32000-id vocabulary), puts it where merge.py would, runs the
workspace's optimize.py (Olive ModelBuilder, int4 RTN) and benchmark.py (greedy decoding of 128 tokens).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-onnx-"))
    env = {**os.environ, "TUNEFORGE_CACHE_DIR": str(work / "cache"), "TUNEFORGE_NO_DETECT": "1", "HF_HUB_OFFLINE": "1",
           "OLIVE_DISABLE_TELEMETRY": "1"}
    ws = work / "ws"
    subprocess.run([str(BIN / "tuneforge"), "new", str(ws), "--defaults", "--set", "model=llama-3.2-1b-instruct",
                    "--set", "targets=pytorch,onnx-cpu"], check=True, env=env, stdout=subprocess.DEVNULL)
    build = ("from pathlib import Path; from finetune.tiny import build_model, build_tokenizer, corpus; "
             "t = build_tokenizer(corpus('data/sample.jsonl'), 2000); "
             "m = build_model({'architecture': 'llama', 'hidden_size': 768, 'num_hidden_layers': 12, 'num_attention_heads': 12, "
             "'num_key_value_heads': 4, 'intermediate_size': 2048, 'max_position_embeddings': 1024, 'vocab_size': 32000, "
             "'tie_word_embeddings': False}, t); "
             "print(f'{sum(p.numel() for p in m.parameters()) / 1e6:.1f}M parameters'); "
             "m.save_pretrained('outputs/merged'); t.save_pretrained('outputs/merged')")
    for command in ([sys.executable, "-c", build], [sys.executable, "optimize.py"],
                    [sys.executable, "benchmark.py", "--new-tokens", "128", "--prompts", "2", "--parity-steps", "32"]):
        result = subprocess.run(command, cwd=ws, env=env, capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if "parameters" in line or "  " in line or ":" in line]
        print("\n".join(line for line in lines if not line.startswith("[")))
        if result.returncode not in (0, 1):
            print(result.stderr[-3000:])
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
