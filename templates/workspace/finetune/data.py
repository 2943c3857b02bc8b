"""Read training data and turn each example into chat turns (finetune/encoding.py makes them token ids).

Formats: messages, prompt-completion, alpaca and text, plus one per task (classification, ner, translation,
qa, summarization) whose fields the config's task.instruction turns into a prompt, two of preferences
(preference: a chosen and a rejected answer; kto: one answer marked desirable or not), and tools
(conversations that call functions), and images (conversations about pictures, finetune/images.py). Every
error names the file and line it comes from.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

ROLES = {"system", "user", "assistant"}

# task formats: the fields the instruction reads, and the field holding the answer
TASK_FORMATS = {
    "classification": (("text",), "label"),
    "translation": (("source",), "target"),
    "qa": (("question",), "answer"),  # and an optional context passage
    "summarization": (("document",), "summary"),
    "ner": (("tokens",), "tags"),
}
FORMATS = ["messages", "prompt-completion", "alpaca", "text", *TASK_FORMATS, "preference", "kto", "tools", "images"]
TAG = re.compile(r"^(O|[BI]-[A-Za-z_]+)$")


class DataError(ValueError):
    pass


@dataclass
class Example:
    source: str  # "file:line", for error messages
    messages: list[dict] | None = None
    text: str | None = None
    tokens: list[str] | None = None  # ner: the words and their BIO tags
    tags: list[str] | None = None
    rejected: str | None = None  # preference: the answer not to give (messages end with the chosen one)
    desirable: bool | None = None  # kto: whether the answer that ends messages is one to give
    tools: list[dict] | None = None  # tools: the functions the conversation may call (OpenAI's tools list)
    images: list[str] | None = None  # images: the pictures its user turns show, in order (paths or data: URLs)

    @property
    def prompt(self) -> list[dict]:
        """The turns before the last answer: what a model is asked."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return self.messages[:last]

    @property
    def reference(self) -> str:
        """The last answer: what the model should say."""
        return [m for m in self.messages if m["role"] == "assistant"][-1]["content"]

    def turns(self) -> list[tuple[list[dict], dict]]:
        """(the turns before it, the assistant turn) for each assistant turn: a tool-calling conversation's calls
        and answers, each scored on its own."""
        return [(self.messages[:i], m) for i, m in enumerate(self.messages) if m["role"] == "assistant"]


def read_examples(
    path: str, fmt: str, split: str = "train", task: dict | None = None, problems: list[str] | None = None
) -> list[Example]:
    """Read a local JSON/JSONL file, or a Hugging Face dataset id, into Examples. Every row is read: with a
    problems list, each bad row's problem (file:line) is added to it and the row left out; without one, they are
    raised together, one per line."""
    return to_examples(read_rows(path, split), path, fmt, task, problems)


def read_rows(path: str, split: str = "train") -> list[tuple[str, object]]:
    """(where, row) for each row of a local JSON/JSONL file or a Hugging Face dataset; a line that is not JSON is
    its DataError."""
    file = Path(path)
    if file.is_file():
        return list(_read_rows(file))
    if file.suffix in (".json", ".jsonl") or "/" not in path:
        raise DataError(f"dataset {path} not found (looked for a local file at {file.resolve()})")
    return list(_read_hub(path, split))


def to_examples(
    rows: list[tuple[str, object]], path: str, fmt: str, task: dict | None, problems: list[str] | None
) -> list[Example]:
    """The rows as Examples; each bad row's problem goes to problems, or all are raised together without it."""
    examples, found = [], []
    for where, row in rows:
        try:
            if isinstance(row, DataError):  # a line that is not JSON
                raise row
            examples.append(to_example(row, fmt, where, task, Path(path).parent))
        except DataError as error:
            found.append(str(error))
    if found and problems is None:
        raise DataError("\n".join(found))
    if problems is not None:
        problems += found
    if not examples and not found:
        raise DataError(f"{path}: the dataset is empty")
    return examples


def _read_rows(file: Path):
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - raw.rfind(b"\n", 0, error.start)
        raise DataError(
            f"{file}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column {column}); save the file as UTF-8"
        ) from None
    if file.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{file}:{error.lineno}: not valid JSON ({error.msg})") from None
        except RecursionError:
            raise DataError(f"{file}: nested too deeply to be a list of examples") from None
        if not isinstance(data, list):
            raise DataError(f"{file}: expected a JSON list of examples")
        for i, row in enumerate(data):
            yield f"{file}:item {i + 1}", row
        return
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            row = DataError(f"{file}:{number}: nested too deeply to be an example")
        except json.JSONDecodeError as error:
            row = DataError(f"{file}:{number}: not valid JSON ({error.msg} at column {error.colno})")
        yield f"{file}:{number}", row


def _read_hub(dataset_id: str, split: str):
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{dataset_id} looks like a Hugging Face dataset id; `pip install datasets` to read it"
        ) from None
    try:
        rows = datasets.load_dataset(dataset_id, split=split)
    except Exception as error:  # noqa: BLE001  the hub raises many kinds; the message says which
        raise DataError(f"could not load Hugging Face dataset {dataset_id} (split {split}): {error}") from None
    return [(f"{dataset_id}[{split}]:row {i + 1}", row) for i, row in enumerate(rows)]


def to_example(row: object, fmt: str, where: str, task: dict | None = None, root: Path = Path()) -> Example:
    """One row as an Example; root: the folder the data file's relative image paths start from."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fmt == "messages":
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: missing 'messages' (a list of turns, each with a role and a content)")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise DataError(f"{where}: message {i + 1} needs a role of {sorted(ROLES)}")
            if not isinstance(message.get("content"), str):
                raise DataError(f"{where}: message {i + 1} has no text 'content'")
        assistants = [m for m in messages if m["role"] == "assistant"]
        if not assistants:
            raise DataError(f"{where}: no assistant turn to learn from")
        if any(not m["content"].strip() for m in assistants):
            raise DataError(f"{where}: empty assistant turn")
        return Example(where, messages=[{"role": m["role"], "content": m["content"]} for m in messages])
    if fmt == "prompt-completion":
        prompt, completion = _need(row, where, "prompt", "completion")
        return Example(
            where, messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        )
    if fmt == "alpaca":
        instruction, output = _need(row, where, "instruction", "output")
        extra = row.get("input") or ""
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return Example(where, messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": output}])
    if fmt == "text":
        (text,) = _need(row, where, "text")
        return Example(where, text=text)
    if fmt == "ner":
        return _ner_example(row, where, task or {})
    if fmt in ("preference", "kto"):
        return _preference_example(row, fmt, where)
    if fmt == "tools":
        return _tools_example(row, where)
    if fmt == "images":  # finetune/images.py: in workspaces generated with scenario images
        from finetune.images import images_example

        return images_example(row, where, root)
    if fmt in TASK_FORMATS:
        return _task_example(row, fmt, where, task or {})
    raise DataError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")


def _task_example(row: dict, fmt: str, where: str, task: dict) -> Example:
    fields, answer_key = TASK_FORMATS[fmt]
    if fmt == "translation":
        empty = [k for k in ("source", "target") if not (isinstance(row.get(k), str) and row[k].strip())]
        if empty:
            raise DataError(f"{where}: the translation pair has an empty side: {' and '.join(repr(k) for k in empty)}")
    values = dict(zip(fields, _need(row, where, *fields)))
    (answer,) = _need(row, where, answer_key)
    labels = task.get("labels") or []
    if fmt == "classification" and labels and answer not in labels:
        raise DataError(f"{where}: label {answer!r} is not one of task.labels ({', '.join(labels)})")
    context = row.get("context")
    if fmt == "qa" and not (isinstance(context, str) and context.strip()):
        prompt = values["question"]  # no passage: the question alone
    else:
        prompt = fill(task.get("instruction") or "{" + fields[0] + "}", {**row, "labels": ", ".join(labels)}, where)
    return Example(where, messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])


def _ner_example(row: dict, where: str, task: dict) -> Example:
    tokens, tags = row.get("tokens"), row.get("tags")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise DataError(f"{where}: 'tokens' must be a non-empty list of words")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DataError(f"{where}: 'tags' must be a list of BIO tags (B-PER, I-PER, O, ...)")
    if len(tags) != len(tokens):
        raise DataError(f"{where}: the tags do not line up with the tokens: {len(tokens)} tokens but {len(tags)} tags")
    previous = "O"
    for i, tag in enumerate(tags):
        if not TAG.match(tag):
            raise DataError(f"{where}: tag {i + 1} {tag!r} (on {tokens[i]!r}) is not O, B-TYPE or I-TYPE")
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            raise DataError(
                f"{where}: tag {i + 1} {tag!r} (on {tokens[i]!r}) follows {previous!r}; an entity starts with B-{tag[2:]}"
            )
        previous = tag
    sentence = " ".join(tokens)
    prompt = fill(task.get("instruction") or "{sentence}", {"sentence": sentence}, where)
    answer = entities_text(entities(tokens, tags))
    return Example(
        where,
        messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        tokens=list(tokens),
        tags=list(tags),
    )


def _preference_example(row: dict, fmt: str, where: str) -> Example:
    """preference: prompt, chosen, rejected; kto: prompt, completion, label. The prompt is text or a list of turns
    ending with the user's; each answer is text or a list holding the assistant's turn. Without a prompt, chosen
    and rejected may be whole conversations that differ only in their last turn (TRL's implicit prompt)."""
    answers = ("chosen", "rejected") if fmt == "preference" else ("completion",)
    if "prompt" not in row and all(isinstance(row.get(k), list) and row[k] for k in answers):
        prefix = _turns(row[answers[0]][:-1], where, answers[0])
        if any(_turns(row[k][:-1], where, k) != prefix for k in answers[1:]):
            raise DataError(
                f"{where}: without a 'prompt', 'chosen' and 'rejected' must be the same conversation up to their last turn"
            )
        prompt, texts = prefix, [_answer(row[k][-1:], where, k) for k in answers]
    else:
        value = row.get("prompt")
        if isinstance(value, str) and value.strip():
            prompt = [{"role": "user", "content": value}]
        elif isinstance(value, list) and value:
            prompt = _turns(value, where, "prompt")
        else:
            raise DataError(
                f"{where}: missing or empty 'prompt' (text, or a list of turns, each with a role and a content)"
            )
        texts = [_answer(row.get(k), where, k) for k in answers]
    if prompt[-1]["role"] != "user":
        raise DataError(
            f"{where}: the prompt's last turn is the {prompt[-1]['role']}'s; it must be the user's, which the answers reply to"
        )
    messages = [*prompt, {"role": "assistant", "content": texts[0]}]
    if fmt == "kto":
        label = row.get("label")
        if not isinstance(label, bool):
            raise DataError(
                f"{where}: 'label' must be true (a desirable answer) or false (an undesirable one), got {label!r}"
            )
        return Example(where, messages=messages, desirable=label)
    if texts[0].strip() == texts[1].strip():
        raise DataError(f"{where}: 'chosen' and 'rejected' are the same answer, so there is nothing to prefer")
    return Example(where, messages=messages, rejected=texts[1])


def _tools_example(row: dict, where: str) -> Example:
    """tools: OpenAI's functions, and messages whose assistant turns hold text or tool_calls (each checked against
    its function's schema) and whose tool turns hold the results, each after the call it answers."""
    from finetune.tool_calls import ToolError, from_openai, normalized_tools, problem, schemas

    try:
        functions = schemas(row.get("tools"))
    except ToolError as error:
        raise DataError(f"{where}: {error}") from None
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: missing 'messages' (a list of turns: user, assistant with text or tool_calls, tool)")
    turns, pending = [], []  # pending: the calls not yet answered by a tool turn, as (id, name)
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES | {"tool"}:
            raise DataError(f"{where}: message {i + 1} needs a role of {sorted(ROLES | {'tool'})}")
        content = message.get("content")
        if role == "tool":
            if not pending:
                raise DataError(f"{where}: message {i + 1} is a tool result with no assistant tool call before it")
            if not isinstance(content, str):
                content = json.dumps(content, ensure_ascii=False)
            ids = [call_id for call_id, _ in pending]
            at = ids.index(message["tool_call_id"]) if message.get("tool_call_id") in ids else 0
            call_id, name = pending.pop(at)
            turns.append({"role": "tool", "content": content, "tool_call_id": call_id, "name": name})
            continue
        if role == "assistant" and message.get("tool_calls"):
            if not isinstance(message["tool_calls"], list):
                raise DataError(f"{where}: message {i + 1}'s tool_calls must be a list")
            calls = []
            for j, raw in enumerate(message["tool_calls"]):
                try:
                    call = from_openai(raw)
                except ToolError as error:
                    raise DataError(f"{where}: message {i + 1}, call {j + 1}: {error}") from None
                if why := problem(call, functions):
                    raise DataError(f"{where}: message {i + 1} {why}")
                call_id = (raw.get("id") if isinstance(raw, dict) else None) or f"call_{i}_{j}"
                pending.append((call_id, call["name"]))
                calls.append({"id": call_id, "type": "function", "function": call})
            if content is not None and not isinstance(content, str):
                raise DataError(f"{where}: message {i + 1} has a 'content' that is not text")
            turns.append({"role": "assistant", "content": content or "", "tool_calls": calls})
            continue
        if not isinstance(content, str) or (role == "assistant" and not content.strip()):
            raise DataError(f"{where}: message {i + 1} has no text 'content' (nor tool_calls)")
        turns.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in turns):
        raise DataError(f"{where}: no assistant turn to learn from")
    return Example(where, messages=turns, tools=normalized_tools(row["tools"]))


def _turns(value: list, where: str, key: str) -> list[dict]:
    turns = []
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise DataError(f"{where}: {key} turn {i + 1} needs a role of {sorted(ROLES)} and a text 'content'")
        turns.append({"role": message["role"], "content": message["content"]})
    return turns


def _answer(value: object, where: str, key: str) -> str:
    """An answer given as text, or as a list holding one assistant turn."""
    if isinstance(value, list) and len(value) == 1:
        (turn,) = _turns(value, where, key)
        if turn["role"] != "assistant":
            raise DataError(f"{where}: {key!r} holds a {turn['role']} turn; it must be the assistant's answer")
        value = turn["content"]
    elif isinstance(value, list):
        raise DataError(f"{where}: {key!r} must hold exactly one assistant turn, got {len(value)} turns")
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: missing or empty {key!r}")
    return value


def fill(instruction: str, fields: dict, where: str) -> str:
    """The instruction with {field} replaced by the example's values."""
    try:
        return instruction.format_map({k: v for k, v in fields.items() if isinstance(v, str)})
    except KeyError as error:
        field = "{" + str(error.args[0]) + "}"
        raise DataError(f"{where}: task.instruction uses {field}, which this example does not have") from None
    except (IndexError, ValueError) as error:
        raise DataError(
            f"task.instruction is not a valid template ({error}); write fields as " + "{name}, and a brace as two"
        ) from None


def entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(type, text) of each entity in BIO-tagged words."""
    found: list[tuple[str, list[str]]] = []
    for token, tag in zip(tokens, tags):
        if tag.startswith("B-") or (tag.startswith("I-") and (not found or found[-1][0] != tag[2:])):
            found.append((tag[2:], [token]))
        elif tag.startswith("I-"):
            found[-1][1].append(token)
    return [(kind, " ".join(words)) for kind, words in found]


def entities_text(found: list[tuple[str, str]]) -> str:
    """The answer a model learns for NER: 'PER: Marie Curie; LOC: Paris', or 'none'."""
    return "; ".join(f"{kind}: {text}" for kind, text in found) or "none"


def _need(row: dict, where: str, *keys: str) -> list[str]:
    values = []
    for key in keys:
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: missing or empty {key!r}")
        values.append(value)
    return values


def load_splits(config: dict, seed: int, problems: list[str] | None = None) -> tuple[list[Example], list[Example]]:
    """The data section's examples, split into training and held-out examples (the same split every time): the
    rows of data.eval_path when it is set, else data.eval_fraction of data.path. A classification task without
    task.labels lists the training split's labels in its prompts, sorted, so that training, eval.py and the data
    doctor show one prompt for the same data and seed. problems: as read_examples takes it (the rows that are
    read make the split)."""
    data = config["data"]
    task = dict(config.get("task") or {})
    sources = [(data["path"], read_rows(data["path"], data.get("split", "train")))]
    if data.get("eval_path"):
        sources.append((data["eval_path"], read_rows(data["eval_path"], data.get("eval_split", "test"))))

    def split(task: dict, problems: list[str] | None) -> tuple[list[Example], list[Example]]:
        made = [to_examples(rows, path, data["format"], task, problems) for path, rows in sources]
        if len(made) == 2:
            return made[0], made[1]
        examples = made[0]
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        fraction = data.get("eval_fraction", 0.0)
        n_eval = int(len(examples) * fraction)
        if n_eval == 0 and fraction > 0 and len(examples) >= 4:
            n_eval = 1
        return [examples[i] for i in sorted(order[n_eval:])], [examples[i] for i in sorted(order[:n_eval])]

    trained, held = split(task, problems)
    if task.get("scenario") == "classification" and trained + held:
        try:
            labels = check_labels(trained, held, task.get("labels"))
        except DataError as error:
            if problems is None:
                raise
            problems.append(str(error))
            labels = sorted({e.reference for e in trained})
        if not task.get("labels"):  # the same rows made again, with the labels in their prompts
            trained, held = split({**task, "labels": labels}, None if problems is None else [])
    return trained, held


def check_labels(train: list[Example], held_out: list[Example], labels: list[str] | None) -> list[str]:
    """The label set (task.labels, else the training split's); a held-out label outside it is an error."""
    known = list(labels) if labels else sorted({e.reference for e in train})
    for example in held_out:
        if example.reference not in known:
            raise DataError(
                f"{example.source}: label {example.reference!r} is not in the label set found in training "
                f"({', '.join(known)}); add training examples of it or list it in task.labels"
            )
    return known
