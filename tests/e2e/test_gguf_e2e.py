"""The gguf target for real: tiny models with real tokenizers (Llama 3's, Qwen2's and Phi-3's, from llama.cpp's
vocabulary files) are trained with LoRA, merged, converted by llama.cpp's own converters (the merged model, and the
adapter as a GGUF LoRA file beside its base), quantized, and answered by llama.cpp with PyTorch's greedy tokens;
chat.py, serve.py, eval.py and benchmark.py take the gguf backend; the Modelfile carries the template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers.project import ROOT
from helpers.real_tokenizer import extract, llama_cpp_source
from helpers.workspace import call, run, run_json, serving

pytestmark = pytest.mark.slow

# Meta-Llama-3-8B-Instruct's chat template (its tokenizer_config.json): simpler than Llama 3.2's (tools, dates)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3 = (
    "import sys; from transformers import AutoTokenizer\n"
    "tok = AutoTokenizer.from_pretrained(sys.argv[1], gguf_file='ggml-vocab-llama-bpe.gguf')\n"
    "tok.chat_template, tok.eos_token, tok.pad_token = sys.argv[2], '<|eot_id|>', '<|end_of_text|>'\n"
    "tok.save_pretrained('tiny'); open('tiny/end_ids', 'w').write('128001 128009')\n"
)
# a tiny model of the workspace's architecture for the tokenizer in tiny/ (vocab_size: a padded vocabulary, as Phi-3's)
TINY = (
    "import yaml; from pathlib import Path; from transformers import AutoTokenizer, GenerationConfig\n"
    "from finetune.tiny import build_model\n"
    "tok = AutoTokenizer.from_pretrained('tiny'); size = Path('tiny/vocab_size')\n"
    "spec = dict(yaml.safe_load(open('configs/smoke.yaml'))['tiny_model'], **({'vocab_size': int(size.read_text())} if size.exists() else {}))\n"
    "model = build_model(spec, tok)\n"
    "ends = [int(i) for i in Path('tiny/end_ids').read_text().split()]\n"
    "model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=ends, pad_token_id=tok.pad_token_id)\n"
    "model.save_pretrained('tiny')\n"
)
# PyTorch's prompt ids and greedy tokens against llama.cpp's: the merged model's GGUF, and the base's with the LoRA
# file; answers end at the end token, and 20 tokens run on past it ("free", benchmark.py's way)
PARITY = (
    "import contextlib, itertools, json, sys, llama_cpp; from finetune.config import load_config\n"
    "from finetune.gguf_backend import GgufBackend; from finetune.inference import PytorchBackend\n"
    "from benchmark import gguf_steps, pytorch_steps\n"
    "merged, base, lora = sys.argv[1:4]; q = [{'role': 'user', 'content': sys.argv[4]}]\n"
    "system = [{'role': 'system', 'content': load_config('configs/train.yaml')['data']['system_prompt']}]\n"
    "from finetune.encoding import build_datasets; from finetune.scoring import perplexity\n"
    "torch_backend = PytorchBackend('outputs/merged'); ids = torch_backend.prompt_ids(q)\n"
    "gguf = GgufBackend(merged)\n"
    "config = load_config('configs/train.yaml'); rows = build_datasets(config, torch_backend.tokenizer, 0)[1][:4]\n"
    "def greedy(**files):\n"
    "    with contextlib.closing(llama_cpp.Llama(verbose=False, **files)) as model:\n"
    "        return [t for t, _ in zip(model.generate(ids, temp=0.0, top_k=1), range(20))]\n"
    "free = lambda steps: list(itertools.islice(steps(ids), 20))\n"
    "reference = free(pytorch_steps(torch_backend))\n"
    "def forced(**files):  # llama.cpp's greedy choice after each of PyTorch's tokens\n"
    "    with contextlib.closing(llama_cpp.Llama(verbose=False, logits_all=True, **files)) as model:\n"
    "        model.eval(ids + reference[:-1])\n"
    "        return [int(row.argmax()) for row in model.scores[len(ids) - 1 : len(ids) - 1 + len(reference)]]\n"
    "print(json.dumps({'ids': gguf.prompt_ids(q) == ids, 'torch': torch_backend.generate_ids(ids, 20),"
    " 'gguf': gguf.generate_ids(ids, 20), 'text': ''.join(gguf.stream(q, 20)),"
    " 'torch_free': reference, 'gguf_free': free(gguf_steps(gguf)), 'gguf_forced': forced(model_path=merged),"
    " 'perplexity': [perplexity(torch_backend, rows), perplexity(gguf, rows)],"
    " 'chat': ''.join(gguf.stream(system + q, 20)), 'lora': forced(model_path=base, lora_path=lora),"
    " 'base': greedy(model_path=base)}))"
)
QUESTION = "How often should I water a snake plant?"


@pytest.fixture(scope="module")
def vocabularies(tmp_path_factory) -> Path:
    """llama.cpp's Llama 3 vocabulary file (vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf) from the archive."""
    folder = tmp_path_factory.mktemp("vocab")
    extract(llama_cpp_source(), ["ggml-vocab-llama-bpe.gguf"], folder)
    return folder


def train_merge_export(workspace: Path) -> Path:
    """The tiny model in tiny/ trained 40 LoRA steps on the sample data, merged and exported to GGUF; outputs/gguf."""
    made = run(workspace, "-c", TINY)
    assert made.returncode == 0, made.stderr[-3000:]
    trained = run(
        workspace,
        "train.py",
        "model.name_or_path=tiny",
        "model.torch_dtype=float32",
        "training.max_steps=40",
        "training.learning_rate=0.01",
        "training.per_device_train_batch_size=4",
        "training.gradient_accumulation_steps=1",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.report_to=none",
        "data.max_length=256",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert run(workspace, "merge.py").returncode == 0
    exported = run(workspace, "export_gguf.py", "--llama-cpp-source", str(llama_cpp_source()))
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    return workspace / "outputs" / "gguf"


def assert_llama_cpp_answers_as_pytorch(result: dict) -> None:
    """Prompt ids equal; Q8_0's perplexity on held-out rows within 3 % of PyTorch's; at each of PyTorch's 20 greedy
    tokens (run on past the end token), Q8_0's next-token choice given the same tokens before it is PyTorch's at least
    18 times, and so is the base's with the LoRA file (given the same tokens, so that a near tie Q8_0's rounding flips
    costs one token, not every one after it: the tiny models' logits are nearly uniform); the answers end where
    PyTorch's does. (A tiny model of a 151k vocabulary may repeat one token, so the perplexity is the sharper check.)"""
    reference = result["torch_free"]
    assert result["ids"] and result["perplexity"][1] == pytest.approx(result["perplexity"][0], rel=0.03), result
    for found in (result["gguf_forced"], result["lora"]):
        assert sum(a == b for a, b in zip(found, reference, strict=True)) >= 18, json.dumps(result)
    assert result["gguf"][-1:] == result["torch"][-1:], result  # both stop at the same end token (or neither does)


def test_gguf_export_runs_in_llama_cpp_with_pytorch_greedy_tokens(new_workspace, vocabularies):
    workspace = new_workspace(model="llama-3.2-1b-instruct", technique="lora", targets="pytorch,gguf")
    assert not (workspace / "olive").exists() and not (workspace / "optimize.py").exists()
    assert (workspace / "export_gguf.py").exists()
    made = run(workspace, "-c", LLAMA3, str(vocabularies), LLAMA3_TEMPLATE)
    assert made.returncode == 0, made.stderr[-3000:]
    offline = run(workspace, "export_gguf.py", "--llama-cpp-source", str(workspace / "missing.tar.gz"))
    assert offline.returncode == 2 and "merge.py" in offline.stderr and "Traceback" not in offline.stderr
    out = train_merge_export(workspace)
    shutil.rmtree(workspace / "outputs" / "llama.cpp")
    offline = run(workspace, "export_gguf.py", "--llama-cpp-source", str(workspace / "missing.tar.gz"))
    assert (
        offline.returncode == 2 and "missing.tar.gz not found" in offline.stderr and "Traceback" not in offline.stderr
    )
    assert sorted(p.name for p in out.glob("*.gguf")) == [
        "Llama-3.2-1B-Instruct-tuned-Q4_K_M.gguf",
        "Llama-3.2-1B-Instruct-tuned-Q8_0.gguf",
    ]  # no F16 left over
    assert (out / "Llama-3.2-1B-Instruct-tuned-Q4_K_M.gguf").stat().st_size < (
        out / "Llama-3.2-1B-Instruct-tuned-Q8_0.gguf"
    ).stat().st_size
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./Llama-3.2-1B-Instruct-tuned-Q8_0.gguf" in modelfile
    assert (
        'TEMPLATE """{{- range .Messages }}' in modelfile
        and '{{ "<|start_header_id|>user<|end_header_id|>\\n\\n" }}' in modelfile
    )
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile and 'SYSTEM """You are a concise assistant' in modelfile

    # the LoRA run's adapter as a GGUF LoRA file, beside its base in GGUF, for Ollama's ADAPTER
    adapter = out / "adapter"
    assert sorted(p.name for p in adapter.glob("*.gguf")) == [
        "Llama-3.2-1B-Instruct-Q8_0.gguf",
        "Llama-3.2-1B-Instruct-tuned-LoRA-F16.gguf",
    ]
    assert (
        "FROM ./Llama-3.2-1B-Instruct-Q8_0.gguf\nADAPTER ./Llama-3.2-1B-Instruct-tuned-LoRA-F16.gguf\n"
        in (adapter / "Modelfile").read_text()
    )
    assert (adapter / "Modelfile").read_text().split("\n", 3)[3] == modelfile.split("\n", 2)[2]  # the rest is the same

    result = run_json(
        workspace,
        PARITY,
        str(out / "Llama-3.2-1B-Instruct-tuned-Q8_0.gguf"),
        str(adapter / "Llama-3.2-1B-Instruct-Q8_0.gguf"),
        str(adapter / "Llama-3.2-1B-Instruct-tuned-LoRA-F16.gguf"),
        QUESTION,
    )
    assert_llama_cpp_answers_as_pytorch(result)
    assert result["gguf"] == result["torch"] and len(set(result["torch_free"])) > 2  # every token, and varied ones
    assert result["base"] != result["torch_free"]  # the LoRA file is what makes llama.cpp's base answer so

    chat = run(workspace, "chat.py", "--backend", "gguf", "--prompt", QUESTION, "--max-new-tokens", "20", "--greedy")
    assert chat.returncode == 0 and f"model> {result['chat']}\n" in chat.stdout, (
        chat.stdout[-2000:] + chat.stderr[-2000:]
    )
    assert "Traceback" not in chat.stderr
    with serving(workspace, "--backend", "gguf") as base:
        status, _, body = call(
            base, "/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 20}
        )
        reply = json.loads(body)
        assert status == 200 and reply["choices"][0]["message"]["content"] == result["text"], body
        assert reply["choices"][0]["finish_reason"] == "stop" and reply["usage"]["completion_tokens"] == len(
            result["torch"]
        )

    # eval.py scores the GGUF model beside base and tuned, its perplexity from llama.cpp's own logits
    scored = run(workspace, "eval.py", "--limit", "2", "--out", "outputs/eval")
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-2000:]
    report = json.loads((workspace / "outputs" / "eval" / "report.json").read_text())
    assert set(report["models"]) == {"base", "tuned", "gguf"} and not report["broken"], report["broken"]
    assert report["models"]["gguf"]["perplexity"] == pytest.approx(report["models"]["tuned"]["perplexity"], rel=0.05)
    assert report["models"]["gguf"]["perplexity"] != report["models"]["base"]["perplexity"]

    # benchmark.py measures each GGUF file beside PyTorch, and Q8_0 keeps PyTorch's greedy tokens
    bench = run(
        workspace, "benchmark.py", "--new-tokens", "8", "--prompts", "2", "--parity-steps", "20", "--eval-examples", "4"
    )
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    measured = json.loads((workspace / "outputs" / "benchmark.json").read_text())
    assert (
        set(measured["models"]) == {"pytorch_fp32", "gguf_q8_0", "gguf_q4_k_m"}
        and "fp32_greedy_tokens_match" not in measured
    )
    # Q8_0 keeps PyTorch's greedy tokens on this trained tiny model; the gate speaks when it falls under 90 %
    agreement = {name: m.get("greedy_agreement") for name, m in measured["models"].items()}
    assert agreement["gguf_q8_0"] >= 0.8 and 0 <= agreement["gguf_q4_k_m"] <= 1 and agreement["pytorch_fp32"] is None
    gated = [line for line in bench.stdout.splitlines() if line.startswith("below the gate: gguf_q8_0")]
    assert len(gated) == (agreement["gguf_q8_0"] < 0.9) == len(measured["below_gate"]), bench.stdout[-2000:]
    assert measured["models"]["gguf_q8_0"]["perplexity_ratio"] == pytest.approx(1.0, rel=0.05)
    assert (
        measured["models"]["gguf_q4_k_m"]["size_mb"]
        < measured["models"]["gguf_q8_0"]["size_mb"]
        < measured["models"]["pytorch_fp32"]["size_mb"]
    )
    assert all(m["decode_tokens_per_s"] > 0 and m["first_token_ms"] > 0 for m in measured["models"].values())


@pytest.mark.parametrize(
    "tokenizer, model, stop",
    [("qwen2", "qwen2.5-0.5b-instruct", "<|im_end|>"), ("phi-3", "phi-3.5-mini-instruct", "<|end|>")],
)
def test_gguf_export_of_qwen2_and_phi3_with_their_real_tokenizers(new_workspace, tokenizer, model, stop):
    """Qwen2's BPE vocabulary (151k ids) and Phi-3's SentencePiece model (32,064 ids, padded), with the real
    chat templates: llama.cpp's converters take both models, the merged one and the base with the LoRA file."""
    workspace = new_workspace(model=model, technique="lora", targets="pytorch,gguf", gpu_memory_gb=64)
    made = run(
        workspace, str(ROOT / "tests" / "helpers" / "real_tokenizer.py"), str(llama_cpp_source()), tokenizer, "tiny"
    )
    assert made.returncode == 0, made.stderr[-3000:]
    out = train_merge_export(workspace)
    merged = next(out.glob("*-tuned-Q8_0.gguf"))
    name = merged.name.removesuffix("-tuned-Q8_0.gguf")
    types = yaml.safe_load((workspace / "configs" / "train.yaml").read_text())["gguf"]["quantizations"]
    assert types == (["Q8_0"] if model == "qwen2.5-0.5b-instruct" else ["Q8_0", "Q4_K_M"])  # 4-bit: 1B and up
    assert sorted(p.name for p in out.glob("*.gguf")) == sorted(f"{name}-tuned-{t}.gguf" for t in types)
    assert sorted(p.name for p in (out / "adapter").glob("*.gguf")) == [
        f"{name}-Q8_0.gguf",
        f"{name}-tuned-LoRA-F16.gguf",
    ]
    modelfile = (out / "Modelfile").read_text()
    assert 'TEMPLATE """{{- range .Messages }}' in modelfile and f"PARAMETER stop {json.dumps(stop)}" in modelfile
    result = run_json(
        workspace,
        PARITY,
        str(merged),
        str(out / "adapter" / f"{name}-Q8_0.gguf"),
        str(out / "adapter" / f"{name}-tuned-LoRA-F16.gguf"),
        QUESTION,
    )
    assert_llama_cpp_answers_as_pytorch(result)
