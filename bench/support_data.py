"""Support messages labelled by intent, of tuneforge's own making (CC0): what a user brings to the classification
scenario, for the real-model tests and benchmarks. Each message is a phrasing of its intent filled with
products, days and amounts; the same seed gives the same files.

    python bench/support_data.py OUT_DIR [--train 150] [--test 50]

writes OUT_DIR/train.jsonl and OUT_DIR/test.jsonl, one {"text": ..., "label": ...} per line, no message in both.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

PHRASES = {
    "billing": [
        "I was charged twice for my {product} order.",
        "Why does my invoice show {amount} when the {product} cost less?",
        "Can you send me an invoice for the {product} with my company's VAT number?",
        "My card was billed {amount} on {day} but I never ordered anything.",
        "The discount code was not applied to my {product}, please fix the bill.",
        "I see a charge of {amount} I don't recognise from {day}.",
        "Please explain the extra fee on my last statement for the {product}.",
        "I paid for the {product} but the payment still shows as pending since {day}.",
    ],
    "delivery": [
        "My {product} has not arrived and it was due on {day}.",
        "The tracking for my {product} has not moved since {day}.",
        "The courier left my {product} at the wrong address.",
        "Can I change the delivery address for the {product} I ordered on {day}?",
        "My {product} arrived damaged in a crushed box.",
        "Only half of my order came, the {product} is missing.",
        "When will the {product} be shipped? I ordered it {day}.",
        "The parcel with my {product} was returned to the sender by mistake.",
    ],
    "technical": [
        "The {product} will not turn on after the update on {day}.",
        "My {product} keeps disconnecting from the wifi.",
        "The app crashes every time I pair it with the {product}.",
        "How do I reset the {product} to factory settings?",
        "The {product} shows error E{code} and stops working.",
        "Since {day} the battery of my {product} drains in an hour.",
        "The screen of the {product} flickers when I open the settings.",
        "The {product} firmware update fails at {percent} percent.",
    ],
    "account": [
        "I forgot my password and the reset email has not come since {day}.",
        "How do I change the email address on my account? I registered the {product} with the old one.",
        "My account was locked after I tried to log in on {day}.",
        "Please delete my account and all the data you hold about me, including my {product} history.",
        "I want to add a second user to my account for the {product}.",
        "Someone logged into my account from another country on {day}.",
        "I can't turn on two-factor login for the {product} app, the code is always rejected.",
        "How can I download a copy of my account data? I asked {day} and got nothing.",
    ],
    "cancellation": [
        "I want to cancel my order for the {product} before it ships.",
        "Please cancel my subscription from {day} on.",
        "How do I return the {product} and get my {amount} back?",
        "I changed my mind about the {product}, can I still cancel?",
        "Cancel the renewal of my plan, I no longer need it.",
        "I'd like a refund for the {product}, it is not what I expected.",
        "Stop my monthly delivery of the {product} starting {day}.",
        "The {product} is unopened, I want to send it back for a refund.",
    ],
}
FILL = {
    "product": ["blender", "headphones", "smart watch", "router", "desk lamp", "coffee machine", "e-reader", "kettle"],
    "amount": ["$19.99", "$45", "$120", "EUR 60", "GBP 35", "$8.50"],
    "day": ["Monday", "last Friday", "yesterday", "two weeks ago", "March 3rd", "the weekend"],
    "code": ["12", "31", "404", "7"],
    "percent": ["40", "75", "99"],
}


def messages(count: int, rng: random.Random, taken: set[str]) -> list[dict]:
    """count labelled messages, the labels in turn, none of them in taken (which they join)."""
    rows, labels = [], list(PHRASES)
    for _ in range(count * 1000 + 1):
        if len(rows) == count:
            return rows
        label = labels[len(rows) % len(labels)]
        text = rng.choice(PHRASES[label]).format(**{key: rng.choice(values) for key, values in FILL.items()})
        if text not in taken:
            taken.add(text)
            rows.append({"text": text, "label": label})
    raise ValueError(f"only {len(rows)} different messages, not {count}: add phrasings or fillers")


def write(folder: Path, train: int = 150, test: int = 50, seed: int = 0) -> tuple[Path, Path]:
    rng, taken = random.Random(seed), set()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, count in (("train", train), ("test", test)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in messages(count, rng, taken)), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=150)
    parser.add_argument("--test", type=int, default=50)
    args = parser.parse_args(argv)
    for path in write(args.out, args.train, args.test):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
