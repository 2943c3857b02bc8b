"""The scenario parts of the workspace's Python, imported straight from the template: each metric against
values worked out by hand on fixed predictions, and each kind of bad task example named by file and line."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from finetune import metrics
from finetune.data import DataError, Example, check_labels, entities, entities_text, read_examples
from helpers.project import ROOT

SCENARIOS = yaml.safe_load((ROOT / "generator" / "tuneforge" / "catalog" / "scenarios.yaml").read_text())
SAMPLES = ROOT / "templates" / "includes" / "samples"


def jsonl(tmp_path, rows: list) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_classification_accuracy_and_macro_f1_by_hand():
    labels = ["billing", "delivery", "account"]
    references = ["billing", "billing", "delivery", "account"]
    predictions = ["Billing.", "delivery", "delivery\nbecause...", "refund"]
    scores = metrics.classification(predictions, references, labels)
    # right: 1st (case and full stop ignored), 3rd (first line); wrong: 2nd, 4th ("refund" is no label)
    assert scores["accuracy"] == pytest.approx(0.5)
    # billing: P 1/1 R 1/2 -> F1 2/3; delivery: P 1/2 R 1/1 -> 2/3; account: 0 -> macro (2/3 + 2/3 + 0) / 3
    assert scores["macro_f1"] == pytest.approx(4 / 9)


def test_ner_entity_f1_by_hand():
    examples = [
        Example("a:1", tokens=["Marie", "Curie", "moved", "to", "Paris"], tags=["B-PER", "I-PER", "O", "O", "B-LOC"]),
        Example("a:2", tokens=["Kew", "Gardens", "is", "in", "London"], tags=["B-ORG", "I-ORG", "O", "O", "B-LOC"]),
    ]
    # 1: both right; 2: the ORG span is cut short (wrong), LOC right, plus a spurious PER that spells no words
    predictions = ["PER: Marie Curie; LOC: Paris", "ORG: Kew; LOC: London; PER: Nobody"]
    scores = metrics.ner(predictions, examples)
    # gold 4 entities, predicted 4 placed on words (Nobody matches none: not placed), 3 correct
    assert metrics.tags_for(examples[1].tokens, metrics.parse_entities(predictions[1])) == [
        "B-ORG",
        "O",
        "O",
        "O",
        "B-LOC",
    ]
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["entity_f1"] == pytest.approx(3 / 4)
    assert metrics.ner(["none", "none"], examples)["entity_f1"] == 0.0


def test_ner_answer_text_round_trips_through_the_parser():
    tokens = ["Wangari", "Maathai", "founded", "the", "Green", "Belt", "Movement", "in", "Kenya"]
    tags = ["B-PER", "I-PER", "O", "O", "B-ORG", "I-ORG", "I-ORG", "O", "B-LOC"]
    text = entities_text(entities(tokens, tags))
    assert text == "PER: Wangari Maathai; ORG: Green Belt Movement; LOC: Kenya"
    assert metrics.tags_for(tokens, metrics.parse_entities(text)) == tags


def test_translation_bleu_and_chrf():
    import sacrebleu

    assert metrics.translation(["le chat est sur le tapis"], ["le chat est sur le tapis"]) == {
        "bleu": pytest.approx(100.0),
        "chrf": pytest.approx(100.0),
    }
    # 4 of 5 unigrams, 2 of 4 bigrams, 1 of 3 trigrams, 0 of 2 4-grams match: BLEU's smoothed geometric mean
    scores = metrics.translation(["le chien est sur le"], ["le chat est sur le tapis"])
    assert scores["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(["le chien est sur le"], [["le chat est sur le tapis"]]).score
    )
    assert 0 < scores["bleu"] < 40 and 0 < scores["chrf"] < 100


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" and "the cat lay on the mat" is 5 words: P = R = 5/6
    scores = metrics.summarization(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert scores["rougeL"] == pytest.approx(5 / 6)


def test_qa_exact_match_and_token_f1_by_hand():
    predictions = ["The bark.", "every three weeks", "in spring"]
    references = ["bark", "every two to three weeks", "in summer"]
    scores = metrics.qa(predictions, references)
    # 1: exact after dropping the article and the full stop; 2: P 3/3, R 3/5 -> F1 0.75; 3: P 1/2 R 1/2 -> 0.5
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1 + 0.75 + 0.5) / 3)


def test_text_statistics_by_hand():
    stats = metrics.text_statistics(["a b a b a b", "one two three"])
    # words: 6 and 3; pairs: (a b)(b a)(a b)(b a)(a b) + (one two)(two three) -> 4 distinct of 7
    # triples: (a b a)(b a b)(a b a)(b a b) -> 2 repeated; (one two three) -> 0; 2 of 5
    assert stats == {"mean_words": 4.5, "distinct_2": pytest.approx(4 / 7), "repetition": pytest.approx(2 / 5)}


@pytest.mark.parametrize(
    "fmt, row, message",
    [
        ("classification", {"text": "refund me", "label": "refunds"}, "label 'refunds' is not one of task.labels"),
        ("classification", {"text": "refund me"}, "missing or empty 'label'"),
        (
            "translation",
            {"source": "Water the fern.", "target": "  "},
            "the translation pair has an empty side: 'target'",
        ),
        ("translation", {"source": "", "target": "x"}, "the translation pair has an empty side: 'source'"),
        (
            "ner",
            {"tokens": ["Marie", "Curie", "left"], "tags": ["B-PER", "I-PER"]},
            "the tags do not line up with the tokens: 3 tokens but 2 tags",
        ),
        ("ner", {"tokens": ["Marie", "Curie"], "tags": ["O", "I-PER"]}, "tag 2 'I-PER' \\(on 'Curie'\\) follows 'O'"),
        (
            "ner",
            {"tokens": ["Marie"], "tags": ["PERSON"]},
            "tag 1 'PERSON' \\(on 'Marie'\\) is not O, B-TYPE or I-TYPE",
        ),
        ("qa", {"question": "Why?", "answer": ""}, "missing or empty 'answer'"),
        ("summarization", {"document": "long text"}, "missing or empty 'summary'"),
    ],
)
def test_a_bad_task_example_is_named_by_file_and_line(tmp_path, fmt, row, message):
    good = {
        "classification": {"text": "charged twice", "label": "billing"},
        "translation": {"source": "a", "target": "b"},
        "ner": {"tokens": ["Paris"], "tags": ["B-LOC"]},
        "qa": {"question": "q", "answer": "a"},
        "summarization": {"document": "d", "summary": "s"},
    }[fmt]
    path = jsonl(tmp_path, [good, good, row])
    task = {**SCENARIOS[fmt], "labels": ["billing", "delivery"]} if fmt == "classification" else SCENARIOS[fmt]
    with pytest.raises(DataError, match=f"{path}:3: {message}"):
        read_examples(path, fmt, task=task)


def test_a_held_out_label_never_seen_in_training_is_an_error(tmp_path):
    rows = [{"text": f"t{i}", "label": "billing"} for i in range(5)] + [{"text": "late parcel", "label": "delivery"}]
    examples = read_examples(jsonl(tmp_path, rows), "classification", task=SCENARIOS["classification"])
    with pytest.raises(
        DataError, match=r"data.jsonl:6: label 'delivery' is not in the label set found in training \(billing\)"
    ):
        check_labels(examples[:5], examples[5:], None)
    assert check_labels(examples, examples[5:], None) == ["billing", "delivery"]


def test_without_task_labels_every_prompt_lists_the_training_splits_labels(tmp_path):
    """A user's own classification data with task.labels null: the prompts of both splits list the labels the
    training split holds, sorted (never "one of: ."), the same on every load."""
    from finetune.data import load_splits

    labels = ["refund", "shipping", "login"] * 3
    rows = [{"text": f"message {i}", "label": label} for i, label in enumerate(labels)]
    config = {
        "data": {"path": jsonl(tmp_path, rows), "format": "classification", "eval_fraction": 0.25},
        "task": {**SCENARIOS["classification"], "scenario": "classification", "labels": None},
    }
    train, held_out = load_splits(config, 7)
    found = sorted({e.reference for e in train})
    assert found == ["login", "refund", "shipping"]
    for example in train + held_out:
        assert f"one of: {', '.join(found)}.\n" in example.prompt[0]["content"], example.prompt
    assert load_splits(config, 7) == (train, held_out)


def test_a_test_file_of_the_users_own_is_held_out_whole(tmp_path):
    """data.eval_path: every row of path trains, every row of the test file is held out (eval.py scores it), the
    label set comes from training; a test label training never saw is named by the test file's line."""
    from finetune.data import load_splits

    train_rows = [{"text": f"message {i}", "label": label} for i, label in enumerate(["refund", "login"] * 4)]
    test_rows = [{"text": "where is my refund", "label": "refund"}, {"text": "cannot sign in", "label": "login"}]
    (tmp_path / "test").mkdir()
    config = {
        "data": {
            "path": jsonl(tmp_path, train_rows),
            "format": "classification",
            "eval_fraction": 0.25,
            "eval_path": jsonl(tmp_path / "test", test_rows),
        },
        "task": {**SCENARIOS["classification"], "scenario": "classification", "labels": None},
    }
    train, held_out = load_splits(config, 7)
    assert [e.reference for e in train] == [r["label"] for r in train_rows]
    assert [e.prompt[-1]["content"].endswith(r["text"]) for e, r in zip(held_out, test_rows)] == [True, True]
    assert all("one of: login, refund.\n" in e.prompt[0]["content"] for e in train + held_out)
    (tmp_path / "test" / "data.jsonl").write_text(json.dumps({"text": "parcel lost", "label": "shipping"}) + "\n")
    with pytest.raises(DataError, match=r"data.jsonl:1: label 'shipping' is not in the label set"):
        load_splits(config, 7)


def test_task_examples_become_prompts_through_the_instruction():
    task = SCENARIOS["classification"]
    example = read_examples(str(SAMPLES / "classification" / "classification.jsonl"), "classification", task=task)[0]
    assert example.prompt == [
        {
            "role": "user",
            "content": "Label this customer message as one of: billing, delivery, technical, "
            "account.\n\nMessage: I was charged twice for the same order this month.",
        }
    ]
    assert example.reference == "billing"
    qa = read_examples(str(SAMPLES / "qa" / "qa.jsonl"), "qa", task=SCENARIOS["qa"])[0]
    assert (
        qa.prompt[0]["content"].startswith("Passage: Snake plants store water")
        and qa.reference == "every two to three weeks"
    )


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_sample_reads_in_every_format_its_scenario_allows(scenario):
    facts = SCENARIOS[scenario]
    counts = set()
    for fmt in facts["formats"]:
        examples = read_examples(str(SAMPLES / scenario / f"{fmt}.jsonl"), fmt, task=facts)
        counts.add(len(examples) // 2 if fmt == "kto" else len(examples))  # kto: each pair's two answers, one line each
        assert len(examples) >= 16
    assert len(counts) == 1  # the same examples in each format
    if scenario == "classification":
        references = [e.reference for e in examples]
        assert sorted(set(references)) == sorted(facts["labels"])
        assert min(references.count(label) for label in facts["labels"]) >= 6


def test_derived_samples_are_current():
    sys.path.insert(0, str(SAMPLES))
    from derive import derived

    stale = [
        str(path.relative_to(SAMPLES)) for path, text in derived().items() if path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run python templates/includes/samples/derive.py: {stale}"


def test_generation_settings_turn_into_sampling_only_above_temperature_zero():
    from finetune.inference import sampling_options

    assert sampling_options({"max_new_tokens": 8}) == {}
    assert sampling_options({"temperature": 0}) == {}
    assert sampling_options(SCENARIOS["creative"]["generation"]) == {"temperature": 0.8, "top_p": 0.95}
    assert sampling_options({"temperature": 0.5}) == {"temperature": 0.5, "top_p": 1.0}


def test_eval_says_when_an_export_falls_below_the_tuned_model():
    """5 points on a metric from 0 to 1 or BLEU's 0 to 100, or 5 % more perplexity: below it the export is named."""
    from eval import below_gate

    def report(metric, tuned, **exports):
        return {"metric": metric, "models": {"base": {metric: 0.0}, "tuned": {metric: tuned}, **exports}}

    accuracy = below_gate(report("accuracy", 0.9, onnx={"accuracy": 0.84}, gguf={"accuracy": 0.86}))
    assert (
        list(accuracy) == ["onnx"] and "accuracy 0.84 against the tuned model's 0.9, 6 points lower" in accuracy["onnx"]
    )
    assert "--precision fp32" in accuracy["onnx"]
    assert list(below_gate(report("bleu", 30.0, onnx={"bleu": 26.0}, gguf={"bleu": 24.0}))) == ["gguf"]
    perplexity = below_gate(report("perplexity", 10.0, onnx={"perplexity": 10.4}, gguf={"perplexity": 10.6}))
    assert list(perplexity) == ["gguf"] and "6% higher" in perplexity["gguf"] and "Q8_0" in perplexity["gguf"]
    assert below_gate(report("accuracy", 0.9)) == {}
