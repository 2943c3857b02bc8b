"""Conversations about pictures without a model: both shapes of image data read into image parts (each bad row
named with file:line), the sample pictures are what draw.py makes, encoding expands each picture into the model's
image tokens with the loss on the answer alone, the collator makes each batch's pixels again from the rows, and
the data doctor opens every picture. The tiny Gemma 3 processor here is the one smoke.py builds; a whole images
workspace trains, merges, chats about a picture and scores in tests/e2e/test_pipelines_e2e.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from finetune.data import DataError, to_examples
from finetune.encoding import IGNORE_INDEX, encode
from finetune.images import ImageCollator, check_pictures, image_token_id
from finetune.modeling import add_adapter
from finetune.tiny import build_model, build_tokenizer, with_processor
from helpers.project import ROOT
from tuneforge import catalog

SAMPLES = ROOT / "templates" / "includes" / "samples" / "images"
PICTURES = ROOT / "templates" / "workspace" / "data" / "{% if include.images %}images{% endif %}"
TINY = catalog.load("architectures")["gemma3"]["tiny"]["processor"]


def draw_module():
    spec = importlib.util.spec_from_file_location("draw", SAMPLES / "draw.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sample_pictures_and_conversations_are_what_draw_py_makes():
    draw = draw_module()
    assert {p.name: p.read_bytes() for p in PICTURES.glob("*.png")} == draw.pictures()
    rows = [json.loads(line) for line in (SAMPLES / "images.jsonl").read_text().splitlines()]
    assert rows == draw.conversations()


def read(tmp_path: Path, *rows: dict, problems: list | None = None):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return to_examples([(f"{data}:{i + 1}", row) for i, row in enumerate(rows)], str(data), "images", None, problems)


def test_content_parts_and_the_images_column_read_alike(tmp_path):
    parts = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is it?"},
                    {"type": "image_url", "image_url": {"url": "pics/a.png"}},
                ],
            },
            {"role": "assistant", "content": "A circle."},
        ]
    }
    marked = {
        "messages": [
            {"role": "user", "content": "Compare <image> and <image>."},
            {"role": "assistant", "content": "Same."},
        ],
        "images": ["a.png", "b.png"],
    }
    leading = {
        "messages": [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "A."}],
        "images": ["a.png"],
    }
    first, second, third = read(tmp_path, parts, marked, leading)
    assert first.images == [str(tmp_path / "pics" / "a.png")]
    assert first.messages[1]["content"] == [
        {"type": "text", "text": "What is it?"},
        {"type": "image", "image": str(tmp_path / "pics" / "a.png")},
    ]
    assert first.messages[0] == {"role": "system", "content": "Be brief."}
    assert second.images == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert [p["type"] for p in second.messages[0]["content"]] == ["text", "image", "text", "image", "text"]
    assert third.messages[0]["content"] == [
        {"type": "image", "image": str(tmp_path / "a.png")},
        {"type": "text", "text": "What?"},
    ]
    assert second.reference == "Same."


@pytest.mark.parametrize(
    "row, says",
    [
        (
            {
                "messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}],
                "images": ["a.png", "b.png"],
            },
            "2 image(s) in 'images' but 1 <image> marker(s)",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "is a web address; training and evaluation run offline",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "message 1, part 1 is not a text part",
        ),
        (
            {"messages": [{"role": "user", "content": "no picture"}, {"role": "assistant", "content": "y"}]},
            "no image in the conversation",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "<image>x"},
                    {"role": "assistant", "content": [{"type": "image", "image": "a.png"}]},
                ],
                "images": ["a.png"],
            },
            "message 2 has no text 'content' (only user turns may hold images)",
        ),
        (
            {"messages": [{"role": "user", "content": "<image>x"}], "images": ["a.png"]},
            "no assistant turn to learn from",
        ),
    ],
)
def test_a_bad_row_is_named_with_its_line_and_the_rest_still_read(tmp_path, row, says):
    good = {
        "messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}],
        "images": ["a.png"],
    }
    problems: list[str] = []
    examples = read(tmp_path, good, row, problems=problems)
    assert len(examples) == 1 and len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'data.jsonl'}:2: ") and says in problems[0], problems[0]


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny Gemma 3 tokenizer with its processor, as smoke.py builds them (no model: encoding needs none)."""
    texts = [json.dumps(row) for row in draw_module().conversations()] + ["system", "user", "assistant"]
    tok = build_tokenizer(texts, 400, named=TINY["tokens"])
    tok.processor = with_processor(tok, TINY)
    return tok


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample's conversations, read from a data folder laid out as a workspace's (the pictures in images/)."""
    folder = tmp_path_factory.mktemp("data")
    shutil.copytree(PICTURES, folder / "images")
    rows = [json.loads(line) for line in (SAMPLES / "images.jsonl").read_text().splitlines()]
    path = folder / "sample.jsonl"
    return to_examples([(f"sample.jsonl:{i + 1}", row) for i, row in enumerate(rows)], str(path), "images", None, None)


def test_each_picture_becomes_the_models_image_tokens_and_the_loss_is_on_the_answer_alone(tokenizer, sample):
    examples = sample
    one, two = examples[0], next(e for e in examples if len(e.images) == 2)
    per_picture = TINY["image_seq_length"]
    for example in (one, two):
        row = encode(example, tokenizer, 256)
        assert row["input_ids"].count(image_token_id(tokenizer.processor)) == per_picture * len(example.images)
        trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
        assert tokenizer.decode(trained).strip() == example.reference + "<|im_end|>"
        assert all(label in (IGNORE_INDEX, t) for t, label in zip(row["input_ids"], row["labels"]))
    whole = encode(one, tokenizer, 256)
    answer_at = next(i for i, label in enumerate(whole["labels"]) if label != IGNORE_INDEX)
    cut = encode(one, tokenizer, answer_at + 2)  # cut inside the answer: what is left of it trains
    assert cut["input_ids"] == whole["input_ids"][: answer_at + 2]
    # a second turn about another picture: a cut through it leaves the first answer, yet no row, since the processor
    # cannot give a picture fewer tokens than it has
    again = type(one)(one.source, messages=[*one.messages, *two.messages], images=one.images + two.images)
    whole = encode(again, tokenizer, 256)
    last_image_token = max(i for i, t in enumerate(whole["input_ids"]) if t == image_token_id(tokenizer.processor))
    assert encode(again, tokenizer, last_image_token) is None
    assert encode(again, tokenizer, last_image_token + 1)["input_ids"] == whole["input_ids"][: last_image_token + 1]


def test_the_collator_makes_each_batchs_pixels_from_its_rows(tokenizer, sample):
    examples = sample
    rows = [encode(e, tokenizer, 256) for e in (examples[0], examples[-1], examples[1])]
    batch = ImageCollator(tokenizer.processor)(rows)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["token_type_ids"].shape == (3, width)
    for i, row in enumerate(rows):
        assert batch["input_ids"][i, : len(row["input_ids"])].tolist() == row["input_ids"]
        assert batch["labels"][i].tolist() == row["labels"] + [IGNORE_INDEX] * (width - len(row["labels"]))
        assert batch["attention_mask"][i].sum() == len(row["input_ids"])
    pictures = sum(len(e.images) for e in (examples[0], examples[-1], examples[1]))
    assert tuple(batch["pixel_values"].shape) == (pictures, 3, 28, 28)
    assert batch["token_type_ids"].sum() == pictures * TINY["image_seq_length"]  # the image tokens, marked
    rows[1]["input_ids"] = rows[1]["input_ids"][:-1] + [0]
    with pytest.raises(DataError, match="tokenized a conversation otherwise"):
        ImageCollator(tokenizer.processor)(rows)


GEMMA3 = catalog.load("architectures")["gemma3"]


@pytest.fixture(scope="module")
def tiny_gemma3(tokenizer):
    """The smoke test's tiny Gemma 3: two language layers, a one-layer SigLIP tower and the projector."""
    shape = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    return build_model({"architecture": "gemma3", **shape, "intermediate_size": 128, **GEMMA3["tiny"]}, tokenizer)


@pytest.mark.parametrize(
    "train, technique",
    [
        ("none", "lora"),
        ("projector", "lora"),
        ("all", "lora"),
        ("none", "full"),
        ("projector", "full"),
        ("all", "full"),
    ],
)
def test_vision_train_says_which_of_the_tower_and_the_projector_learn(tiny_gemma3, train, technique):
    """vision.train none: the language model alone; projector: its weights too, in full (saved beside an adapter);
    all: the tower too, with LoRA on exactly the catalog's tower modules (or every weight with full fine-tuning),
    while the language model's adapters stay on its own layers."""
    import copy

    image_text = GEMMA3["image_text"]
    vision = {"train": train, **{k: image_text[k] for k in ("tower", "projector", "tower_lora_modules")}}
    config = {"model": {"name_or_path": "tiny"}, "vision": vision}
    if technique == "lora":
        modules = GEMMA3["lora_target_modules"]
        config["peft"] = {
            "method": "lora",
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.0,
            "target_modules": modules,
        }
    model = add_adapter(copy.deepcopy(tiny_gemma3), config, gradient_checkpointing=False)
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    tower = [n for n in trained if ".vision_tower." in n]
    projector = [n for n in trained if ".multi_modal_projector." in n]
    language = [n for n in trained if ".language_model." in n]
    assert language and sorted(tower + projector + language) == sorted(trained)
    assert bool(projector) == (train != "none") and bool(tower) == (train == "all")
    if technique == "full":
        everything = [n for n, _ in model.named_parameters() if ".vision_tower." in n]
        assert tower == (everything if train == "all" else [])
        return
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in trained if ".lora_A." in n}
    assert adapted == set(modules) | (set(image_text["tower_lora_modules"]) if train == "all" else set())
    assert all(".lora_" in n for n in tower + language)  # adapters, never the frozen weights under them
    assert {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in tower if ".lora_A." in n} == (
        set(image_text["tower_lora_modules"]) if train == "all" else set()
    )
    assert all("modules_to_save" in n for n in projector)  # trained in full, saved beside the adapter


@pytest.mark.parametrize(
    "vision, says",
    [
        ({"train": "tower"}, "vision.train must be none, projector, all, got 'tower'"),
        (
            {"train": "all", "tower_lora_modules": []},
            "vision.train all with an adapter needs vision.tower_lora_modules",
        ),
    ],
)
def test_a_vision_setting_that_cannot_train_is_refused_by_name(tmp_path, vision, says):
    from finetune.config import ConfigError, load_config

    config = {"peft": {"method": "lora"}, "vision": {"tower": "vision_tower", "projector": "p", **vision}}
    (tmp_path / "train.yaml").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=says):
        load_config(tmp_path / "train.yaml")


def test_the_doctor_opens_every_picture_and_names_each_bad_one(tmp_path):
    (tmp_path / "broken.png").write_text("not a picture")
    examples = read(
        tmp_path,
        {
            "messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}],
            "images": [str(PICTURES / "red_circle.png")],
        },
        {
            "messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}],
            "images": ["missing.png"],
        },
        {
            "messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}],
            "images": ["broken.png"],
        },
        {
            "messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}],
            "images": ["data:image/png;base64,???"],
        },
    )
    problems, sizes, bad = check_pictures(examples)
    data = tmp_path / "data.jsonl"
    assert sizes == [(64, 64)] and bad == {f"{data}:2", f"{data}:3", f"{data}:4"}
    assert problems[0] == f"{data}:2: image {tmp_path / 'missing.png'} not found (paths are relative to the data file)"
    assert (
        problems[1]
        == f"{data}:3: image {tmp_path / 'broken.png'} is not a picture Pillow reads (PNG, JPEG, WebP, GIF, BMP, TIFF)"
    )
    assert problems[2] == f"{data}:4: an image's data: URL is not base64 (data:image/png;base64,...)"


def test_the_server_takes_pictures_as_openai_sends_them_only_where_the_model_reads_them():
    from finetune.openai_api import BadRequest, parse_chat

    picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = json.dumps(
        {"messages": [{"role": "user", "content": [picture, {"type": "text", "text": "What?"}]}]}
    ).encode()
    parsed = parse_chat(body, images=True)
    assert parsed["messages"][0]["content"] == [
        {"type": "image", "image": "data:image/png;base64,iVBORw0KGgo="},
        {"type": "text", "text": "What?"},
    ]
    with pytest.raises(BadRequest) as refused:
        parse_chat(body)  # a model of text: the part is refused by name, never dropped
    assert refused.value.param == "messages[0].content[0]" and "the models here read text" in str(refused.value)
    text_only = json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}).encode()
    assert parse_chat(text_only, images=True)["messages"][0]["content"] == "hi"
