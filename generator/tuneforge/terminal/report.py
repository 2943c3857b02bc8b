"""Plain-text views of a plan and of the catalog."""

from __future__ import annotations

import json

from tuneforge import catalog
from tuneforge.planning.answers import KEYS, format_value
from tuneforge.planning.memory import sequences

GATED = {
    True: " - gated: accept its licence on the hub and set HF_TOKEN",
    False: "",
    None: " - gated or not: the hub did not say (set HF_TOKEN if the download is refused)",
}


def format_plan(plan, files: list[str]) -> str:
    lines = ["Answers (value, and where it came from):"]
    width = max(map(len, KEYS))
    for key in KEYS:
        lines.append(f"  {key:<{width}}  {format_value(plan.values[key]):<28} {plan.origins[key]}")
    f = plan.facts
    lines += [
        "",
        (
            f"Model: {f['hf_id']} ({f['architecture']}, {f['params_b']:g}B parameters"
            f"{', {:g}B active per token'.format(f['active_params_b']) if f.get('active_params_b') else ''}, "
            f"{f['context_length']} tokens){GATED[f.get('gated')]}"
        ),
        f"Precision: {plan.precision}",
        *format_turns(plan),
        "",
    ]
    lines += format_memory(plan)
    if plan.problems:
        lines += ["", "Cannot work:"] + [f"  - {p}" for p in plan.problems]
    if files:
        lines += ["", f"Files ({len(files)}):"] + [f"  {name}" for name in files]
    return "\n".join(lines)


def format_turns(plan) -> list[str]:
    """The chat turns the workspace trains with where they are not the model's own, and the tool-call format."""
    lines = []
    fallback = plan.facts.get("fallback_chat_template")
    if fallback:
        lines.append(
            f"Chat turns: {fallback['format']} from tuneforge's catalog, as configs/chat_template.jinja ({fallback['why']})"
        )
    if plan.values["scenario"] == "tools" and plan.facts.get("tool_calls"):
        lines.append(f"Tool calls: {plan.facts['tool_calls']['format']} (catalog/tool_calls.yaml)")
    if plan.values["scenario"] == "images" and (plan.facts.get("image_text") or {}).get("images"):
        lines.append(f"Pictures: {picture_budget(plan)}")
    return lines


TEXT_ROOM = 128  # the tokens of a short question and its answer beside the pictures


def picture_budget(plan) -> str:
    """What each picture costs of max_length, and how many fit in it beside a short question and answer."""
    images = plan.facts["image_text"]["images"]
    cost, length = images["tokens_per_image"], plan.values["max_length"]
    settings = f" at data.images {json.dumps(images['processor'])}" if images.get("processor") else ""
    fit = max(0, (length - TEXT_ROOM) // cost)
    text = (
        f"each costs {cost} image tokens{settings}; max_length={length} holds {fit} with about {TEXT_ROOM} tokens of "
        f"text (check_data.py counts your data's); the memory estimate counts them with the text"
    )
    tower = plan.facts["image_text"].get("tower_shape")
    if plan.values["train_vision"] == "all" and tower:
        text += (
            f"; train_vision=all keeps each picture's {tower['patches']} patches through the tower's "
            f"{tower['num_hidden_layers']} layers for the backward pass, counted for one picture an example"
        )
    return text


def format_memory(plan) -> list[str]:
    m = plan.memory
    devices = plan.values["gpu_count"] * plan.values["num_nodes"]
    weights, optimizer, *rest = [f"{name} {gb:g} GB" for name, gb in m.parts()]
    lines = [
        f"Peak training memory per device (estimate, {devices} device{'s' if devices > 1 else ''},"
        + f" rows that fill max_length={plan.values['max_length']}):",
        f"  {weights} + {optimizer} ({m.trainable_params:,} trainable parameters)",
        "  + " + " + ".join(rest),
        f"  = about {m.total_gb:g} GB of {plan.available_gb:g} GB: {'fits' if plan.fits else 'DOES NOT FIT'}",
    ]
    objective = catalog.load("objectives")[plan.values["objective"]]
    if objective.get("generates"):
        lines.append(
            f"  {plan.values['objective']} samples {sequences(objective)} answers per prompt each step (activations and "
            f"logits counted {sequences(objective)} times); their KV cache while sampling, {m.generation_gb:g} GB, is "
            "freed before the training pass and fits in the same memory; no reference model is held"
        )
    elif objective["sequences"] > 1:
        lines.append(
            f"  {plan.values['objective']} runs {objective['sequences']} sequences per example (activations and logits"
            " counted twice)"
            + (
                "; the reference log-probabilities are computed once before the first step, so no second model is held"
                if objective["reference"]
                else "; it needs no reference model"
            )
        )
    if plan.suggestions:
        lines.append("  What would fit:")
        lines += [f"    {s}" for s in plan.suggestions]
    return lines


def format_summary(plan) -> str:
    """What the form shows before writing: the main answers, the memory verdict, what cannot work."""
    v = plan.values
    lines = [
        "",
        (
            f"{v['project_name']}: {plan.facts['hf_id']} ({plan.facts['params_b']:g}B), {v['technique']} on "
            f"{v['gpu_count'] * v['num_nodes']} x {v['hardware']} ({v['distributed']}), batch "
            f"{v['per_device_train_batch_size']} x {v['max_length']} tokens, targets {format_value(v['targets'])}"
        ),
    ]
    lines += format_memory(plan)
    if plan.problems:
        lines += ["Cannot work:"] + [f"  - {p}" for p in plan.problems]
    return "\n".join(lines)


def format_catalog(section: str, data: dict) -> str:
    """A table per catalog section, with a header line."""
    if section == "models":
        rows = [("id", "Hugging Face id", "params", "architecture", "context", "notes")]
        for key, facts in data.items():
            notes = ["gated"] if facts.get("gated") else []
            if facts.get("active_params_b"):
                notes.append(f"mixture of experts, {facts['active_params_b']:g}B active")
            if catalog.load("architectures")[facts["architecture"]].get("thinking"):
                notes.append("thinking switch")
            if facts.get("kaito"):
                notes.append("KAITO" + (" tuning" if facts["kaito"].get("tuning") else " inference"))
            if facts.get("foundry"):
                notes.append("Foundry serverless")
            rows.append(
                (
                    key,
                    facts["hf_id"],
                    f"{facts['params_b']:g}B",
                    facts["architecture"],
                    str(facts["context_length"]),
                    ", ".join(notes),
                )
            )
    elif section == "scenarios":
        rows = [("id", "what it tunes for", "formats (first is the default)", "metric")]
        rows += [(key, f["title"], ", ".join(f["formats"]), f["metric"]) for key, f in data.items()]
    elif section == "formats":
        rows = [("format", "scenarios that read it")]
        rows += [(key, ", ".join(scenarios)) for key, scenarios in data.items()]
    else:
        rows = [("id", "what it is")]
        rows += [
            (key, facts.get("title", "") + (f" - {facts['summary']}" if facts.get("summary") else ""))
            for key, facts in data.items()
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows
    ).rstrip()
