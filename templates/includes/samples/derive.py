"""Write each scenario's sample in the other formats that can express it, from the sample in its own
format, with the workspace's own reader. Run after editing a sample; tests/workspace/test_scenario_code.py checks the
files are current.

    python templates/includes/samples/derive.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "templates" / "workspace"))

from finetune.data import read_examples


def convert(messages: list[dict], fmt: str, system: str | None) -> dict:
    turns = [m for m in messages if m["role"] != "system"]
    prompt, answer = turns[0]["content"], turns[-1]["content"]
    if fmt == "messages":
        return {"messages": ([{"role": "system", "content": system}] if system else []) + turns}
    if fmt == "prompt-completion":
        return {"prompt": prompt, "completion": answer}
    if fmt == "alpaca":
        return {"instruction": prompt, "input": "", "output": answer}
    if fmt == "text":
        return {"text": f"{prompt}\n\n{answer}"}
    raise ValueError(fmt)


def derived() -> dict[Path, str]:
    """Every derived sample file and the text it should hold."""
    scenarios = yaml.safe_load(
        (ROOT / "generator" / "tuneforge" / "catalog" / "scenarios.yaml").read_text(encoding="utf-8")
    )
    files = {}
    for name, facts in scenarios.items():
        own = HERE / name / f"{facts['formats'][0]}.jsonl"
        examples = read_examples(str(own), facts["formats"][0], task=facts)
        for fmt in facts["formats"][1:]:
            path = HERE / name / f"{fmt}.jsonl"
            if name == "chat":
                continue  # chat's samples are written by hand in every format
            if fmt == "kto":  # each pair: its chosen answer desirable, its rejected one not
                rows = [
                    {"prompt": e.messages[-2]["content"], "completion": answer, "label": good}
                    for e in examples
                    for answer, good in ((e.reference, True), (e.rejected, False))
                ]
            else:
                rows = [convert(e.messages, fmt, facts.get("system")) for e in examples]
            files[path] = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return files


if __name__ == "__main__":
    for path, text in derived().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
