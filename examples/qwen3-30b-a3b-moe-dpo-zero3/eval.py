"""Did fine-tuning help? Score the base model and the tuned model (and the ONNX and GGUF models, when they
exist) on the held-out split with this workspace's metric (configs/train.yaml: task, eval).

    python eval.py [--limit N] [--show N] [--split eval|train] [--base PATH] [--tuned PATH] [--onnx PATH] [--gguf FILE] [--out eval]
                   [section.key=value ...]   # the same overrides as train.py, e.g. data.eval_fraction=0.2

Prints a side-by-side table (--show N: also the first N prompts with each model's answer), writes
<out>/report.json and <out>/report.png, and names each export more than 5 points below the tuned model. Exits 1
when a model is broken (cannot load, or gives NaN), 2 on bad input; never because of a low score.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from finetune.config import ConfigError, load_config
from finetune.data import DataError, check_labels, load_splits
from finetune.hub import base_model_of
from finetune.inference import PytorchBackend, backend_module, backend_names, default_pytorch_model, find_model
from finetune.plot import plot_scores
from finetune.quiet import quiet_libraries

# how far an export may fall below the tuned model it was made from, on the main metric, before eval.py says it lost
# what training taught: 5 points (0.05 of a metric from 0 to 1, 5 of BLEU's 0 to 100), or 5 % more perplexity
EXPORT_TOLERANCE = 0.05
HIGHER_PRECISION = {
    "onnx": "an ONNX export at a higher precision keeps more (python optimize.py --precision fp32; fp16 on a GPU)",
    "gguf": "put Q8_0 (or F16) first in gguf.quantizations of configs/train.yaml and export again",
}


def candidates(args: argparse.Namespace, config: dict) -> dict[str, tuple[str, str]]:
    """name -> (backend, model path) of each model to score; the tuned model must exist."""
    tuned = args.tuned or default_pytorch_model(config)
    if not Path(tuned).exists():
        raise FileNotFoundError(f"no tuned model at {tuned}: run python train.py first (or pass --tuned)")
    base = args.base or base_model_of(config["merge"]["adapter_dir"]) or config["model"]["name_or_path"]
    models = {"base": ("pytorch", base), "tuned": ("pytorch", tuned)}
    for name in backend_names()[1:]:  # onnx and gguf, where this workspace has them
        path = getattr(args, name) or find_model(name, config)
        if path and not getattr(args, f"no_{name}"):
            models[name] = (name, path)
    return models


def shared_tokenizer(paths: list[str], data: dict):
    """The first tokenizer that loads (the tuned model's, else the base's): it encodes text for perplexity."""
    from finetune.modeling import load_tokenizer

    for path in paths:
        try:
            return load_tokenizer(path, data)
        except Exception:  # noqa: BLE001, S112  a broken folder: the model is reported broken when it is scored
            continue
    return None


def load(backend: str, path: str, data: dict):
    """The backend for one model; data: the config's data section (its chat template settings)."""
    template_kwargs = data.get("chat_template_kwargs")
    if backend == "pytorch":
        return PytorchBackend(path, template_kwargs=template_kwargs, data=data)
    return backend_module(backend).BACKEND(path, template_kwargs=template_kwargs)


def below_gate(report: dict) -> dict[str, str]:
    """export name -> why it falls below the tuned model by more than EXPORT_TOLERANCE on the main metric."""
    metric = report["metric"]
    tuned = report["models"].get("tuned", {}).get(metric)
    found = {}
    for name, scores in report["models"].items():
        if name in ("base", "tuned") or tuned is None or metric not in scores:
            continue
        value = scores[metric]
        if metric == "perplexity":
            lost = value > tuned * (1 + EXPORT_TOLERANCE)
            how = f"{value / tuned - 1:.0%} higher"
        else:
            scale = 100 if metric in ("bleu", "chrf") else 1
            lost = value < tuned - EXPORT_TOLERANCE * scale
            how = f"{(tuned - value) * 100 / scale:.0f} points lower"
        if lost:
            found[name] = (
                f"{metric} {value:.4g} against the tuned model's {tuned:.4g}, {how}: the export lost part of what "
                f"training taught; {HIGHER_PRECISION.get(name, 'export it at a higher precision')}"
            )
    return found


def print_table(report: dict) -> None:
    names = list(report["models"])
    keys = list(dict.fromkeys(k for scores in report["models"].values() for k in scores))
    print(f"\n{report['scenario']}: {report['examples']} {report['split']} examples; main metric {report['metric']}")
    print(f"{'':<14}" + "".join(f"{name:>12}" for name in names))
    for key in keys:
        cells = "".join(
            f"{report['models'][n][key]:>12.4g}" if key in report["models"][n] else f"{'-':>12}" for n in names
        )
        print(f"{key:<14}{cells}")
    for name, error in report["broken"].items():
        print(f"{name}: BROKEN: {error}")
    for name, why in report["below_gate"].items():
        print(f"{name}: below the gate: {why}")


def print_answers(report: dict, examples: list, count: int) -> None:
    """The first prompts of the split with the reference answer and each model's, one under another."""
    for example, row in zip(examples[:count], report["answers"][:count]):
        asked = (
            next((m["content"] for m in reversed(example.prompt) if m["role"] == "user"), "")
            if example.messages
            else ""
        )
        if isinstance(asked, list):  # a question about pictures: its text, and the pictures by name
            asked = " ".join(p["text"] if p["type"] == "text" else f"[{Path(p['image']).name}]" for p in asked)
        print(f"\n{row['source']}: {asked}")
        for name in ["reference", *report["models"]]:
            if row.get(name) is not None:
                print(f"  {name + ':':<11}{' '.join(str(row[name]).split())}")


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument(
        "--split", choices=["eval", "train"], default="eval", help="held-out examples, or the training ones"
    )
    parser.add_argument("--limit", type=int, default=None, help="score at most N examples")
    parser.add_argument("--show", type=int, default=0, metavar="N", help="print the first N prompts and the answers")
    parser.add_argument(
        "--base", help="base model (default: the one the adapter was trained on, else model.name_or_path)"
    )
    parser.add_argument(
        "--tuned", help="tuned model: merged folder, or adapter folder (default: merged, else the adapter)"
    )
    if "onnx" in backend_names():
        parser.add_argument("--onnx", help="ONNX model folder (default: the first an olive/*.json wrote)")
        parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX model")
    if "gguf" in backend_names():
        parser.add_argument("--gguf", help="GGUF file (default: the first of gguf.quantizations in gguf.output_dir)")
        parser.add_argument("--no-gguf", action="store_true", help="skip the GGUF model")
    parser.add_argument("--out", default="eval")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        train, held_out = load_splits(config, config["training"]["seed"])
        examples = (held_out if args.split == "eval" else train)[: args.limit or config["eval"].get("limit")]
        if not examples:
            raise DataError(f"the {args.split} split is empty; raise data.eval_fraction or use --split train")
        labels = (
            check_labels(train, examples, config["task"].get("labels"))
            if config["task"]["scenario"] == "classification"
            else None
        )
        models = candidates(args, config)
    except (ConfigError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from finetune.scoring import score

    tokenizer = shared_tokenizer(
        [path for backend, path in models.values() if backend == "pytorch"][::-1], config["data"]
    )
    report = {
        "scenario": config["task"]["scenario"],
        "metric": config["eval"]["metric"],
        "split": args.split,
        "examples": len(examples),
        "models": {},
        "broken": {},
        "answers": [],
    }
    answers = {}
    for name, (backend, path) in models.items():
        print(f"scoring {name} ({backend}: {path}) on {len(examples)} examples...", flush=True)
        try:
            model = load(backend, path, config["data"])
            report["models"][name], answers[name] = score(model, examples, config, tokenizer, labels)
        except Exception as error:  # noqa: BLE001  a model that cannot load or run is reported, and the others still scored
            report["broken"][name] = f"{type(error).__name__}: {error}"
    report["answers"] = [
        {
            "source": e.source,
            "reference": e.reference if e.messages else None,
            **{name: a[i] for name, a in answers.items() if a},
        }
        for i, e in enumerate(examples[: max(10, args.show)])
    ]
    report["below_gate"] = below_gate(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    chart = plot_scores(report, out / "report.png")
    print_answers(report, examples, args.show)
    print_table(report)
    print(f"written to {out / 'report.json'}{' and ' + str(chart) if chart else ''}")
    return 1 if report["broken"] else 0


if __name__ == "__main__":
    sys.exit(main())
