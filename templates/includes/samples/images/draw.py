"""Draw the images scenario's sample pictures (a shape of one colour on a plain ground, 64x64 PNG, CC0) into the
workspace template's data/images/ folder, and write the sample conversations about them (images.jsonl beside this
file): what the picture shows, its shape alone, its colour alone, and, for pairs of pictures in the `images`
column, whether the two shapes are the same colour. Run after changing the set;
tests/workspace/test_images.py checks that the files are current.

    python templates/includes/samples/images/draw.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

HERE = Path(__file__).parent
FOLDER = HERE.parents[2] / "workspace" / "data" / "{% if include.images %}images{% endif %}"
COLOURS = {"red": (200, 40, 40), "green": (40, 150, 60), "blue": (40, 80, 200), "yellow": (230, 200, 40)}
SHAPES = ("circle", "square", "triangle")
GROUNDS = ((245, 245, 240), (225, 230, 235), (240, 232, 220))
SIZE = 64


def draw(shape: str, colour: str, ground: tuple[int, int, int]) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), ground)
    pen = ImageDraw.Draw(image)
    box = (12, 12, SIZE - 12, SIZE - 12)
    if shape == "circle":
        pen.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        pen.rectangle(box, fill=COLOURS[colour])
    else:
        pen.polygon([(SIZE // 2, 10), (SIZE - 10, SIZE - 12), (10, SIZE - 12)], fill=COLOURS[colour])
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def pictures() -> dict[str, bytes]:
    """file name -> PNG bytes of every sample picture."""
    found = {}
    for i, shape in enumerate(SHAPES):
        for j, colour in enumerate(COLOURS):
            found[f"{colour}_{shape}.png"] = draw(shape, colour, GROUNDS[(i + j) % len(GROUNDS)])
    return found


def conversations() -> list[dict]:
    rows = []
    for shape in SHAPES:
        for colour in COLOURS:
            image = {"type": "image", "image": f"images/{colour}_{shape}.png"}
            for question, answer in (
                ("What is in this picture?", f"A {colour} {shape}."),
                ("What shape is this?", f"A {shape}."),
                ("What colour is the shape?", f"{colour.capitalize()}."),
            ):
                rows.append(
                    {
                        "messages": [
                            {"role": "user", "content": [image, {"type": "text", "text": question}]},
                            {"role": "assistant", "content": answer},
                        ]
                    }
                )
    colours = list(COLOURS)
    for k, shape in enumerate(SHAPES):  # LLaMA-Factory's shape: an images column, an <image> marker for each
        first, second, third = colours[k], colours[k + 1], colours[k]
        for other, same in ((second, "No"), (third, "Yes")):
            other_shape = SHAPES[(k + 1) % len(SHAPES)]
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": "<image><image>Are these two shapes the same colour?"},
                        {"role": "assistant", "content": f"{same}."},
                    ],
                    "images": [f"images/{first}_{shape}.png", f"images/{other}_{other_shape}.png"],
                }
            )
    return rows


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name, png in pictures().items():
        (FOLDER / name).write_bytes(png)
    lines = [json.dumps(row, ensure_ascii=False) for row in conversations()]
    (HERE / "images.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
