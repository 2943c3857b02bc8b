"""The workspace's side of a base model without a chat template: the config's template and end-of-turn token are
taken, or one sentence says what to set; and chat, serve and eval find the GGUF file the Modelfile loads, in the
folder the config names."""

from __future__ import annotations

import pytest

from finetune.data import DataError
from finetune.encoding import use_chat_template
from finetune.gguf_backend import find_model as find_gguf_model


def bare_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(WordLevel({"<unk>": 0, "<eos>": 1, "<end_of_turn>": 2, "hi": 3}, unk_token="<unk>"))
    words.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=words, unk_token="<unk>", eos_token="<eos>", additional_special_tokens=["<end_of_turn>"]
    )


def test_the_configs_template_and_end_token_are_taken(tmp_path):
    template = tmp_path / "chat_template.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}<end_of_turn>{% endfor %}")
    tokenizer = bare_tokenizer()
    use_chat_template(tokenizer, "base", {"chat_template": str(template), "end_of_turn": "<end_of_turn>"})
    assert tokenizer.chat_template == template.read_text() and tokenizer.eos_token_id == 2
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "hi<end_of_turn>"


@pytest.mark.parametrize(
    "data, words",
    [
        ({}, "base has no chat template: write one .* set data.chat_template"),
        ({"chat_template": "missing.jinja"}, "data.chat_template: missing.jinja not found"),
        ({"chat_template": "TEMPLATE", "end_of_turn": "<|im_end|>"}, "not one token of base's vocabulary"),
    ],
)
def test_without_a_usable_template_one_sentence_says_what_to_set(tmp_path, data, words):
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    data = {key: str(template) if value == "TEMPLATE" else value for key, value in data.items()}
    with pytest.raises(DataError, match=words):
        use_chat_template(bare_tokenizer(), "base", data)


def test_the_gguf_file_used_is_the_first_quantization_the_config_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "exports"
    folder.mkdir()
    for kind in ("F16", "Q4_K_M", "Q8_0"):
        (folder / f"model-tuned-{kind}.gguf").write_bytes(b"")
    config = {"gguf": {"output_dir": "exports", "quantizations": ["Q8_0", "Q4_K_M"]}}
    assert find_gguf_model(config) == "exports/model-tuned-Q8_0.gguf"  # not Q4_K_M, first by name
    assert find_gguf_model({"gguf": {"output_dir": "exports", "quantizations": ["Q4_K_M"]}}).endswith("Q4_K_M.gguf")
    assert find_gguf_model({}) is None  # outputs/gguf, where nothing was exported
