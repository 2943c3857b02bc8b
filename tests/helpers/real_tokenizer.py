"""Real tokenizers offline, out of llama.cpp's vocabulary files (models/ggml-vocab-*.gguf in llama-cpp-python's
source archive) and the real chat templates beside them (models/templates/), for tiny models that llama.cpp's
converter takes as it takes the real ones.

    python real_tokenizer.py ARCHIVE NAME OUT     # NAME: one of TOKENIZERS

A BPE vocabulary (Llama 3's, Qwen2's) is read by transformers' GGUF loader. Phi-3's is a SentencePiece model, and
llama.cpp's converter reads Phi-3's tokenizer.model, which no GGUF loader writes: it is put back together from the
vocabulary file's pieces, scores and types (the first 32,000 ids), and Phi-3's added tokens follow it, as in the
real checkpoint.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

# name -> (vocabulary file, chat template file, eos, pad, generation's end tokens)
TOKENIZERS = {
    "qwen2": (
        "ggml-vocab-qwen2.gguf",
        "Qwen-Qwen2.5-7B-Instruct.jinja",
        "<|im_end|>",
        "<|endoftext|>",
        ["<|im_end|>", "<|endoftext|>"],
    ),
    "phi-3": (
        "ggml-vocab-phi-3.gguf",
        "microsoft-Phi-3.5-mini-instruct.jinja",
        "<|end|>",
        "<|endoftext|>",
        ["<|endoftext|>", "<|end|>"],
    ),
}
SENTENCEPIECE_SIZE = {"phi-3": 32000}


def llama_cpp_source() -> Path:
    """llama-cpp-python's source archive, as `make` keeps it in .venv/sdist."""
    found = sorted((Path(sys.prefix) / "sdist").glob("llama_cpp_python-*.tar.gz"))
    assert found, f"no llama-cpp-python source archive in {Path(sys.prefix) / 'sdist'}: run make"
    return found[-1]


def extract(archive: Path, names: list[str], into: Path) -> None:
    """The files named (by their base name) from vendor/llama.cpp/models/ of the archive, into one folder."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as source:
        members = [
            m for m in source.getmembers() if "/vendor/llama.cpp/models/" in m.name and Path(m.name).name in names
        ]
        for member in members:
            member.name = Path(member.name).name
        source.extractall(into, members=members, filter="data")


def sentencepiece(vocabulary: Path, size: int, out: Path):
    """A Llama-style SentencePiece tokenizer whose tokenizer.model holds the first size pieces of the vocabulary file."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as model_pb2
    from transformers import AutoTokenizer

    fields = gguf.GGUFReader(vocabulary).fields
    tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode() for i in fields["tokenizer.ggml.tokens"].data]
    scores = [float(fields["tokenizer.ggml.scores"].parts[i][0]) for i in fields["tokenizer.ggml.scores"].data]
    types = [int(fields["tokenizer.ggml.token_type"].parts[i][0]) for i in fields["tokenizer.ggml.token_type"].data]
    model = model_pb2.ModelProto()
    model.trainer_spec.model_type = model_pb2.TrainerSpec.BPE
    model.trainer_spec.vocab_size = size
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id, model.trainer_spec.pad_id = (
        0,
        1,
        2,
        -1,
    )
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    for i in range(size):  # GGUF's token types are SentencePiece's; <unk> is unknown, <s> and </s> control
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = tokens[i], scores[i], {0: 2, 1: 3, 2: 3}.get(i, types[i])
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(model.SerializeToString())
    (out / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "LlamaTokenizer", "legacy": false, "bos_token": "<s>", '
        '"eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true}'
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    added = [t for i, t in enumerate(tokens[size:], start=size) if types[i] == 3]  # control: <|end|>, <|user|>, ...
    tokenizer.add_special_tokens({"additional_special_tokens": added})
    return tokenizer, len(tokens)


def build(archive: Path, name: str, out: Path) -> None:
    """The tokenizer NAME with its real chat template and end tokens, saved in out (and the model's vocabulary size,
    in out/vocab_size, for build_model)."""
    from transformers import AutoTokenizer

    vocabulary, template, eos, pad, ends = TOKENIZERS[name]
    files = out / "llama.cpp"
    extract(archive, [vocabulary, template], files)
    if name in SENTENCEPIECE_SIZE:
        tokenizer, vocab_size = sentencepiece(files / vocabulary, SENTENCEPIECE_SIZE[name], out)
    else:
        tokenizer = AutoTokenizer.from_pretrained(files, gguf_file=vocabulary)
        vocab_size = len(tokenizer)
    tokenizer.chat_template = (files / template).read_text(encoding="utf-8")
    tokenizer.eos_token, tokenizer.pad_token = eos, pad
    tokenizer.save_pretrained(out)
    (out / "vocab_size").write_text(str(vocab_size))
    (out / "end_ids").write_text(" ".join(str(i) for i in tokenizer.convert_tokens_to_ids(ends)))


if __name__ == "__main__":
    build(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
