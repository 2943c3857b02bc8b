"""The gguf target for real: a tiny Llama with the real Llama 3 tokenizer (from llama.cpp's vocabulary files)
is trained, merged, converted by llama.cpp's own converter, quantized, and answered by llama.cpp with
PyTorch's greedy tokens; chat.py and serve.py take the gguf backend; the Modelfile carries the template."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest

from helpers.workspace import call, run, serving

pytestmark = pytest.mark.slow

# Meta-Llama-3-8B-Instruct's chat template (its tokenizer_config.json); llama.cpp's vocabulary files carry none
LLAMA3_TEMPLATE = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
                   "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
                   "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
TINY = ("import sys, yaml, torch; from transformers import AutoTokenizer, GenerationConfig; from finetune.tiny import build_model\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1], gguf_file='ggml-vocab-llama-bpe.gguf')\n"
        "tok.chat_template, tok.eos_token, tok.pad_token = sys.argv[2], '<|eot_id|>', '<|end_of_text|>'\n"
        "torch.manual_seed(0)\n"
        "model = build_model(dict(yaml.safe_load(open('configs/smoke.yaml'))['tiny_model']), tok)\n"
        "model.generation_config = GenerationConfig(bos_token_id=128000, eos_token_id=[128001, 128009], pad_token_id=tok.pad_token_id)\n"
        "model.save_pretrained('tiny'); tok.save_pretrained('tiny')\n")


def llama_cpp_source() -> Path:
    """llama-cpp-python's source archive, as `make` keeps it in .venv/sdist."""
    found = sorted((Path(sys.prefix) / "sdist").glob("llama_cpp_python-*.tar.gz"))
    assert found, f"no llama-cpp-python source archive in {Path(sys.prefix) / 'sdist'}: run make"
    return found[-1]


@pytest.fixture(scope="module")
def vocabularies(tmp_path_factory) -> Path:
    """llama.cpp's tokenizer vocabulary files (vendor/llama.cpp/models/ggml-vocab-*.gguf) from the archive."""
    folder = tmp_path_factory.mktemp("vocab")
    with tarfile.open(llama_cpp_source()) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/models/ggml-vocab-llama-bpe.gguf"))
        member.name = Path(member.name).name
        archive.extractall(folder, members=[member], filter="data")
    return folder


def test_gguf_export_runs_in_llama_cpp_with_pytorch_greedy_tokens(new_workspace, vocabularies):
    workspace = new_workspace(model="llama-3.2-1b-instruct", technique="lora", targets="pytorch,gguf")
    assert not (workspace / "olive").exists() and (workspace / "optimize.py").exists()
    made = run(workspace, "-c", TINY, str(vocabularies), LLAMA3_TEMPLATE)
    assert made.returncode == 0, made.stderr[-3000:]
    trained = run(workspace, "train.py", "model.name_or_path=tiny", "model.torch_dtype=float32", "training.max_steps=40",
                  "training.learning_rate=0.01", "training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=1",
                  "training.eval_strategy=no", "training.save_strategy=no", "training.report_to=none", "data.max_length=256")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert run(workspace, "merge.py").returncode == 0

    offline = run(workspace, "optimize.py", "--target", "gguf", "--llama-cpp-source", str(workspace / "missing.tar.gz"))
    assert offline.returncode == 2 and "missing.tar.gz not found" in offline.stderr and "Traceback" not in offline.stderr
    exported = run(workspace, "optimize.py", "--target", "gguf", "--llama-cpp-source", str(llama_cpp_source()))
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    out = workspace / "outputs" / "gguf"
    assert sorted(p.name for p in out.glob("*.gguf")) == ["Llama-3.2-1B-Instruct-tuned-Q4_K_M.gguf",
                                                          "Llama-3.2-1B-Instruct-tuned-Q8_0.gguf"]  # no F16 left over
    assert (out / "Llama-3.2-1B-Instruct-tuned-Q4_K_M.gguf").stat().st_size < (out / "Llama-3.2-1B-Instruct-tuned-Q8_0.gguf").stat().st_size
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./Llama-3.2-1B-Instruct-tuned-Q8_0.gguf" in modelfile
    assert 'TEMPLATE """{{- range .Messages }}' in modelfile and '{{ "<|start_header_id|>user<|end_header_id|>\\n\\n" }}' in modelfile
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile and 'SYSTEM """You are a concise assistant' in modelfile

    # the LoRA run's adapter as a GGUF LoRA file, beside its base in GGUF, for Ollama's ADAPTER
    adapter = out / "adapter"
    assert sorted(p.name for p in adapter.glob("*.gguf")) == ["Llama-3.2-1B-Instruct-Q8_0.gguf",
                                                              "Llama-3.2-1B-Instruct-tuned-LoRA-F16.gguf"]
    assert ("FROM ./Llama-3.2-1B-Instruct-Q8_0.gguf\nADAPTER ./Llama-3.2-1B-Instruct-tuned-LoRA-F16.gguf\n"
            in (adapter / "Modelfile").read_text())
    assert (adapter / "Modelfile").read_text().split("\n", 3)[3] == modelfile.split("\n", 2)[2]  # the rest is the same

    question = [{"role": "user", "content": "How often should I water a snake plant?"}]
    parity = run(workspace, "-c", "import contextlib, json, llama_cpp; from finetune.config import load_config\n"
                                  "from finetune.inference import GgufBackend, PytorchBackend\n"
                                  f"q = {question!r}\n"
                                  "system = [{'role': 'system', 'content': load_config('configs/train.yaml')['data']['system_prompt']}]\n"
                                  "torch_backend = PytorchBackend('outputs/merged'); ids = torch_backend.prompt_ids(q)\n"
                                  "gguf = GgufBackend('outputs/gguf/Llama-3.2-1B-Instruct-tuned-Q8_0.gguf')\n"
                                  "base = 'outputs/gguf/adapter/Llama-3.2-1B-Instruct-Q8_0.gguf'\n"
                                  "lora = 'outputs/gguf/adapter/Llama-3.2-1B-Instruct-tuned-LoRA-F16.gguf'\n"
                                  "def greedy(**files):\n"
                                  "    with contextlib.closing(llama_cpp.Llama(verbose=False, **files)) as model:\n"
                                  "        return [t for t, _ in zip(model.generate(ids, temp=0.0, top_k=1), range(20))]\n"
                                  "print(json.dumps({'ids': gguf.prompt_ids(q) == ids, 'torch': torch_backend.generate_ids(ids, 20),"
                                  " 'gguf': gguf.generate_ids(ids, 20), 'text': ''.join(gguf.stream(q, 20)),"
                                  " 'chat': ''.join(gguf.stream(system + q, 20)), 'lora': greedy(model_path=base, lora_path=lora),"
                                  " 'base': greedy(model_path=base)}))")
    assert parity.returncode == 0, parity.stderr[-3000:]
    result = json.loads(parity.stdout.splitlines()[-1])
    assert result["ids"] and result["gguf"] == result["torch"] and len(set(result["torch"])) > 2, result
    # base + adapter in llama.cpp answers as the merged model does; the base alone does not
    same = sum(a == b for a, b in zip(result["lora"], result["torch"]))
    assert same >= 0.8 * len(result["torch"]) and result["base"][: len(result["torch"])] != result["torch"], result

    chat = run(workspace, "chat.py", "--backend", "gguf", "--prompt", question[0]["content"], "--max-new-tokens", "20", "--greedy")
    assert chat.returncode == 0 and f"model> {result['chat']}\n" in chat.stdout  # chat.py adds the system prompt, chat.stdout[-2000:] + chat.stderr[-2000:]
    assert "Traceback" not in chat.stderr
    with serving(workspace, "--backend", "gguf") as base:
        status, _, body = call(base, "/v1/chat/completions", {"messages": question, "max_tokens": 20})
        reply = json.loads(body)
        assert status == 200 and reply["choices"][0]["message"]["content"] == result["text"], body
        assert reply["choices"][0]["finish_reason"] == "stop" and reply["usage"]["completion_tokens"] == len(result["torch"])

    # eval.py scores the GGUF model beside base and tuned, its perplexity from llama.cpp's own logits
    scored = run(workspace, "eval.py", "--limit", "2", "--out", "outputs/eval")
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-2000:]
    report = json.loads((workspace / "outputs" / "eval" / "report.json").read_text())
    assert set(report["models"]) == {"base", "tuned", "gguf"} and not report["broken"], report["broken"]
    assert report["models"]["gguf"]["perplexity"] == pytest.approx(report["models"]["tuned"]["perplexity"], rel=0.05)
    assert report["models"]["gguf"]["perplexity"] != report["models"]["base"]["perplexity"]

    # benchmark.py measures each GGUF file beside PyTorch, and Q8_0 keeps PyTorch's greedy tokens
    bench = run(workspace, "benchmark.py", "--new-tokens", "8", "--prompts", "2", "--parity-steps", "20", "--eval-examples", "4")
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    measured = json.loads((workspace / "outputs" / "benchmark.json").read_text())
    assert set(measured["models"]) == {"pytorch_fp32", "gguf_q8_0", "gguf_q4_k_m"} and "fp32_greedy_tokens_match" not in measured
    same = measured["gguf_q8_0_greedy_tokens_same"]
    assert same["of"] > 2 and same["same"] >= 0.8 * same["of"]
    assert measured["models"]["gguf_q8_0"]["perplexity_ratio"] == pytest.approx(1.0, rel=0.05)
    assert measured["models"]["gguf_q4_k_m"]["size_mb"] < measured["models"]["gguf_q8_0"]["size_mb"] < measured["models"]["pytorch_fp32"]["size_mb"]
    assert all(m["decode_tokens_per_s"] > 0 and m["first_token_ms"] > 0 for m in measured["models"].values())
