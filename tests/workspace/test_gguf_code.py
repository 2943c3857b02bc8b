"""The gguf target's own code, without llama.cpp: the Modelfile's template read from the chat template (and
refused where it cannot be), and the converter unpacked from a source archive or folder, or a clear error."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from helpers.project import ROOT
from helpers.workspace import template_module

FINETUNE = ROOT / "templates" / "workspace" / "finetune"
gguf = template_module(FINETUNE / "{% if include.gguf %}gguf.py{% endif %}", "gguf")
unpack = gguf.unpack
_modelfile = template_module(FINETUNE / "{% if include.gguf %}modelfile.py{% endif %}", "modelfile")
modelfile, read_turns = _modelfile.modelfile, _modelfile.read_turns

FIXTURES = ROOT / "tests" / "fixtures"
CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Water?"},
        {"role": "assistant", "content": "Weekly."},
        {"role": "user", "content": "Light?"},
    ],
]


@pytest.fixture(scope="module")
def tokenizer():
    from finetune.tiny import build_tokenizer

    return build_tokenizer(["Be brief. Hi Hello. Water? Weekly. Light? system user assistant"] * 20, 300, thinking=True)


def with_template(tokenizer, name: str):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (FIXTURES / f"{name}_chat_template.jinja").read_text()
    return tok


@pytest.mark.parametrize("template, kwargs", [("tiny", {}), ("qwen3", {}), ("qwen3", {"enable_thinking": False})])
def test_the_ollama_template_renders_what_the_chat_template_renders(tokenizer, template, kwargs):
    tok = tokenizer if template == "tiny" else with_template(tokenizer, template)
    turns = read_turns(tok, [tok.eos_token_id], kwargs)
    assert turns is not None and turns.stops == ("<|im_end|>",) and turns.end == "<|im_end|>\n"
    for messages in CONVERSATIONS:
        assert turns.render(messages) == tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **kwargs
        )
    if kwargs:  # thinking off: the generation prompt closes an empty reasoning block, as the template's switch does
        assert turns.prompt == "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_the_modelfile_says_each_fact_in_ollama_syntax(tokenizer):
    turns = read_turns(tokenizer, [tokenizer.eos_token_id])
    text = modelfile(
        "m-Q8_0.gguf",
        turns,
        "Be brief.",
        {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "repetition_penalty": 1.1},
        4096,
    )
    assert text.splitlines()[1:] == [
        "FROM ./m-Q8_0.gguf",
        (
            'TEMPLATE """{{- range .Messages }}{{- if eq .Role "system" }}{{ "<|im_start|>system\\n" }}'
            '{{- else if eq .Role "user" }}{{ "<|im_start|>user\\n" }}{{- else if eq .Role "assistant" }}'
            '{{ "<|im_start|>assistant\\n" }}{{- end }}{{ .Content }}{{ "<|im_end|>\\n" }}{{- end }}{{ "<|im_start|>assistant\\n" }}"""'
        ),
        'PARAMETER stop "<|im_end|>"',
        'SYSTEM """Be brief."""',
        "PARAMETER temperature 0.7",
        "PARAMETER top_p 0.9",
        "PARAMETER repeat_penalty 1.1",
        "PARAMETER num_ctx 4096",
        "PARAMETER num_predict 64",
    ]


def test_the_adapter_modelfile_loads_the_base_and_the_lora_file(tokenizer):
    turns = read_turns(tokenizer, [tokenizer.eos_token_id])
    merged = modelfile("m-tuned-Q8_0.gguf", turns, "Be brief.", {}, 4096).splitlines()
    adapter = modelfile("m-Q8_0.gguf", turns, "Be brief.", {}, 4096, "m-tuned-LoRA-F16.gguf").splitlines()
    assert adapter[1:3] == ["FROM ./m-Q8_0.gguf", "ADAPTER ./m-tuned-LoRA-F16.gguf"] and adapter[3:] == merged[2:]


@pytest.mark.parametrize(
    "settings, why",
    [
        ({"peft_type": "LORA", "r": 8, "lora_alpha": 16}, None),
        ({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": True}, None),
        ({"peft_type": "IA3"}, "a IA3 adapter is not a LoRA"),
        ({"peft_type": "LORA", "use_dora": True}, "DoRA's magnitude vectors"),
        ({"peft_type": "LORA", "modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"peft_type": "LORA", "rank_pattern": {"q_proj": 4}}, "differs between modules"),
        ({"peft_type": "LORA", "target_parameters": ["mlp.experts.gate_up_proj"]}, "experts' fused weights"),
        ({"peft_type": "LORA", "exclude_modules": "(.*\\.)?(vision_tower)(\\..*)?"}, "image-text checkpoint"),
    ],
)
def test_llama_cpp_takes_plain_lora_adapters_only(settings, why):
    found = gguf.lora_refusal(settings)
    assert found == why if why is None else why in found


def test_an_rslora_adapter_reaches_the_converter_with_llama_cpp_scale(tmp_path):
    """llama.cpp scales a LoRA by alpha / r; rsLoRA by alpha / sqrt(r): the staged config carries the alpha that
    gives rsLoRA's scale, the weights are passed as they are, and nothing staged is left behind."""
    adapter = tmp_path / "run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 16, "lora_alpha": 32, "use_rslora": true}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    converter = tmp_path / "llama.cpp" / "convert_lora_to_gguf.py"  # a stand-in: writes what it was given
    converter.parent.mkdir()
    converter.write_text(
        "import json, sys; from pathlib import Path\n"
        "src, out, base = Path(sys.argv[1]), sys.argv[sys.argv.index('--outfile') + 1], sys.argv[sys.argv.index('--base') + 1]\n"
        "Path(out).write_text(json.dumps({'config': json.loads((src / 'adapter_config.json').read_text()), 'base': base,"
        " 'weights': (src / 'adapter_model.safetensors').read_text(), 'type': sys.argv[sys.argv.index('--outtype') + 1]}))\n"
    )
    out = gguf.convert_lora(
        adapter,
        tmp_path / "merged",
        tmp_path / "gguf" / "lora.gguf",
        converter.with_name("convert_hf_to_gguf.py"),
        tmp_path / "log",
    )
    given = json.loads(out.read_text())
    assert given["config"]["lora_alpha"] == pytest.approx(32 * 4) and "use_rslora" not in given["config"]
    assert given["base"] == str(tmp_path / "merged") and given["weights"] == "weights" and given["type"] == "f16"
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["lora.gguf"]
    (converter).write_text("import sys; print('no tensors for lm_head'); sys.exit(1)\n")
    with pytest.raises(RuntimeError, match="convert_lora_to_gguf.py failed on .*no tensors for lm_head"):
        gguf.convert_lora(adapter, tmp_path / "merged", tmp_path / "gguf" / "again.gguf", converter, tmp_path / "log")
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["lora.gguf"]


def test_a_template_that_rewrites_turns_gets_no_template_line(tokenizer):
    tok = with_template(tokenizer, "smollm3")  # it writes a metadata block into the system turn
    assert read_turns(tok, [tok.eos_token_id]) is None
    text = modelfile("m-Q8_0.gguf", None, None, {}, 2048)
    assert "TEMPLATE" not in text.replace("# no TEMPLATE", "") and "uses the one stored in the GGUF file" in text


def _archive(path, names: list[str]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name in names:
            data = b"# " + name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_the_converter_comes_out_of_the_source_archive_alone(tmp_path):
    vendor = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
    _archive(
        tmp_path / "src.tar.gz",
        [
            vendor + "convert_hf_to_gguf.py",
            vendor + "convert_lora_to_gguf.py",
            vendor + "conversion/__init__.py",
            vendor + "gguf-py/gguf/__init__.py",
            vendor + "models/ggml-vocab-qwen2.gguf",
            vendor + "src/llama.cpp",
            "llama_cpp_python-0.3.36/../../escape.py",
        ],
    )
    unpack(tmp_path / "src.tar.gz", tmp_path / "converter")
    found = sorted(
        str(p.relative_to(tmp_path / "converter")) for p in (tmp_path / "converter").rglob("*") if p.is_file()
    )
    assert found == [
        "conversion/__init__.py",
        "convert_hf_to_gguf.py",
        "convert_lora_to_gguf.py",
        "gguf-py/gguf/__init__.py",
    ]
    assert not (tmp_path.parent / "escape.py").exists()
    _archive(tmp_path / "other.tar.gz", ["something/setup.py"])
    with pytest.raises(FileNotFoundError, match="is it llama-cpp-python's source archive"):
        unpack(tmp_path / "other.tar.gz", tmp_path / "again")
    assert not (tmp_path / "again").exists()
    with pytest.raises(FileNotFoundError, match="not found"):
        unpack(tmp_path / "missing.tar.gz", tmp_path / "again")
