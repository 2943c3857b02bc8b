import pytest

from tuneforge.planning.answers import BY_KEY, DERIVED_KEYS, KEYS, AnswerError, coerce, parse_sets, read_answers_file


def test_set_parses_types_and_lists():
    parsed = parse_sets(["gpu_count=2", "learning_rate=1e-4", "packing=yes", "targets=onnx-cpu, pytorch"])
    assert parsed == {"gpu_count": 2, "learning_rate": 1e-4, "packing": True, "targets": ["onnx-cpu", "pytorch"]}


@pytest.mark.parametrize(
    "pair, words",
    [
        ("techniqe=lora", ["unknown answer", "Did you mean 'technique'"]),
        ("technique=lorra", ["'lorra' is not one of", "lora, qlora", "Did you mean 'lora'"]),
        ("targets=onnx-cpu,onnx-tpu", ["'onnx-tpu' is not one of", "onnx-cuda"]),
        ("gpu_count=0", ["gpu_count: must be at least 1", "got 0"]),
        ("gpu_count=two", ["gpu_count: expected a whole number, got 'two'"]),
        ("packing=perhaps", ["true or false"]),
        ("technique", ["expected KEY=VALUE"]),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(pair, words):
    with pytest.raises(AnswerError) as error:
        parse_sets([pair])
    for word in words:
        assert word in str(error.value)


def test_answers_file_skips_copier_bookkeeping_and_derived_values(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text("_commit: 1+tabc\n_src_path: x\nmodel: phi-4\nmodel_facts: {a: 1}\nprecision: bf16\n")
    assert read_answers_file(path) == {"model": "phi-4"}


def test_answers_file_errors(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(AnswerError, match="not valid YAML"):
        read_answers_file(bad)
    with pytest.raises(AnswerError, match="cannot read"):
        read_answers_file(tmp_path / "missing.yml")


def test_copier_questions_are_the_answer_keys_and_the_derived_ones(tmp_path, monkeypatch):
    """The versioned template's copier.yml declares every answer and derived key, typed as the answers are, and
    nothing else: the template's own copier.yml lists none of them (each said once, in planning/answers.py)."""
    import yaml

    from helpers.project import ROOT
    from tuneforge.rendering.render import versioned_template

    own = yaml.safe_load((ROOT / "templates" / "copier.yml").read_text())
    assert [k for k in own if not k.startswith("_")] == []
    monkeypatch.setenv("TUNEFORGE_CACHE_DIR", str(tmp_path))
    copier = yaml.safe_load((versioned_template().repo / "copier.yml").read_text())
    questions = {k for k, q in copier.items() if not k.startswith("_") and q.get("when") is not False}
    assert questions == set(KEYS) | set(DERIVED_KEYS)
    types = {"int": "int", "float": "float", "bool": "bool", "list": "yaml"}  # the rest are text
    assert {k: copier[k]["type"] for k in KEYS} == {k: types.get(BY_KEY[k].kind, "str") for k in KEYS}
    assert all(copier[k]["help"].endswith("(derived)") for k in DERIVED_KEYS)


def test_coerce_rejects_fractional_ints():
    with pytest.raises(AnswerError):
        coerce("gpu_count", 1.5)
