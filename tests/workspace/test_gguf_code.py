"""The gguf target's own code, without llama.cpp: the Modelfile's template read from the chat template (and
refused where it cannot be), and the converter unpacked from a source archive or folder, or a clear error."""

from __future__ import annotations

import io
import sys
import tarfile

import pytest

from conftest import ROOT
from helpers.workspace import template_module

sys.path.insert(0, str(ROOT / "templates" / "workspace"))
FINETUNE = ROOT / "templates" / "workspace" / "finetune"
unpack = template_module(FINETUNE / "{% if include.gguf %}gguf.py{% endif %}", "gguf").unpack
_modelfile = template_module(FINETUNE / "{% if include.gguf %}modelfile.py{% endif %}", "modelfile")
modelfile, read_turns = _modelfile.modelfile, _modelfile.read_turns

FIXTURES = ROOT / "tests" / "fixtures"
CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "Water?"}, {"role": "assistant", "content": "Weekly."}, {"role": "user", "content": "Light?"}],
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
        assert turns.render(messages) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    if kwargs:  # thinking off: the generation prompt closes an empty reasoning block, as the template's switch does
        assert turns.prompt == "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_the_modelfile_says_each_fact_in_ollama_syntax(tokenizer):
    turns = read_turns(tokenizer, [tokenizer.eos_token_id])
    text = modelfile("m-Q8_0.gguf", turns, "Be brief.", {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64,
                                                         "repetition_penalty": 1.1}, 4096)
    assert text.splitlines()[1:] == [
        "FROM ./m-Q8_0.gguf",
        'TEMPLATE """{{- range .Messages }}{{- if eq .Role "system" }}{{ "<|im_start|>system\\n" }}'
        '{{- else if eq .Role "user" }}{{ "<|im_start|>user\\n" }}{{- else if eq .Role "assistant" }}'
        '{{ "<|im_start|>assistant\\n" }}{{- end }}{{ .Content }}{{ "<|im_end|>\\n" }}{{- end }}{{ "<|im_start|>assistant\\n" }}"""',
        'PARAMETER stop "<|im_end|>"', 'SYSTEM """Be brief."""', "PARAMETER temperature 0.7", "PARAMETER top_p 0.9",
        "PARAMETER repeat_penalty 1.1", "PARAMETER num_ctx 4096", "PARAMETER num_predict 64"]


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
    _archive(tmp_path / "src.tar.gz", [vendor + "convert_hf_to_gguf.py", vendor + "conversion/__init__.py",
                                       vendor + "gguf-py/gguf/__init__.py", vendor + "models/ggml-vocab-qwen2.gguf",
                                       vendor + "src/llama.cpp", "llama_cpp_python-0.3.36/../../escape.py"])
    unpack(tmp_path / "src.tar.gz", tmp_path / "converter")
    found = sorted(str(p.relative_to(tmp_path / "converter")) for p in (tmp_path / "converter").rglob("*") if p.is_file())
    assert found == ["conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert not (tmp_path.parent / "escape.py").exists()
    _archive(tmp_path / "other.tar.gz", ["something/setup.py"])
    with pytest.raises(FileNotFoundError, match="is it llama-cpp-python's source archive"):
        unpack(tmp_path / "other.tar.gz", tmp_path / "again")
    assert not (tmp_path / "again").exists()
    with pytest.raises(FileNotFoundError, match="not found"):
        unpack(tmp_path / "missing.tar.gz", tmp_path / "again")
