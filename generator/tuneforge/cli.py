"""tuneforge's command line: argument parsing and exit codes, nothing else.

Exit status: 0 done, 2 bad input (nothing written), 1 anything else that failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from tuneforge import catalog

BAD_INPUT = 2


def _answer_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an answer (repeatable); lists are comma-separated: --set targets=onnx-cpu,pytorch",
    )
    parser.add_argument("--answers", metavar="FILE", help="a YAML file of answers")
    if defaults:
        parser.add_argument("--defaults", action="store_true", help="take defaults for anything not given; ask nothing")
    parser.add_argument(
        "--no-detect",
        action="store_true",
        help="plan for a typical machine (a CPU with 16 GB) instead of this one; --set hardware=... describes another",
    )


def build_parser() -> argparse.ArgumentParser:
    from tuneforge import __version__

    parser = argparse.ArgumentParser(
        prog="tuneforge", description="Generate a fine-tuning workspace that runs for real."
    )
    parser.add_argument("--version", action="version", version=f"tuneforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    new = sub.add_parser("new", help="generate a new workspace", description="Generate a new workspace at DEST.")
    new.add_argument("dest", metavar="DEST")
    _answer_options(new)
    new.add_argument("--force", action="store_true", help="render into a non-empty DEST")
    new.add_argument("--open", action="store_true", help="open the workspace in VS Code afterwards")

    update = sub.add_parser(
        "update",
        help="regenerate a workspace after changing answers, keeping your edits",
        description="Regenerate DEST with changed answers by a 3-way merge.",
    )
    update.add_argument("dest", metavar="DEST", nargs="?", default=".")
    _answer_options(update)
    update.add_argument("--force", action="store_true", help="commit uncommitted changes first instead of refusing")

    plan = sub.add_parser("plan", help="show the resolved plan and memory estimate; write nothing")
    _answer_options(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")

    ui = sub.add_parser(
        "ui",
        help="a web form with the plan live: create a workspace, or update DEST",
        description="Serve the form on this machine's loopback and open it in the browser. Given a "
        "workspace, the form loads its answers and updates it.",
    )
    ui.add_argument("dest", metavar="DEST", nargs="?", help="the folder to create, or a workspace to update")
    _answer_options(ui, defaults=False)
    ui.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: this machine only); another address lets other machines write workspaces here",
    )
    ui.add_argument("--no-browser", action="store_true", help="print the address instead of opening a browser")

    cat = sub.add_parser(
        "catalog", help="list models, techniques, objectives, hardware, targets, compute, scenarios or formats"
    )
    cat.add_argument(
        "section",
        nargs="?",
        default="models",
        choices=[s for s in catalog.SECTIONS if s != "architectures"] + ["formats"],
    )
    cat.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tuneforge.planning.answers import AnswerError
    from tuneforge.rendering.render import RenderError
    from tuneforge.terminal.prompts import Quit

    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below rather than at exit
        return status
    except (AnswerError, RenderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    except Quit:
        print("quit; nothing was written", file=sys.stderr)
        return 0
    except BrokenPipeError:
        # the reader went away (`tuneforge catalog | head`); say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        # render and update put everything back as it was before they re-raise
        print("\ninterrupted; nothing was changed", file=sys.stderr)
        return 130


def _interactive(args) -> bool:
    return not args.defaults and sys.stdin.isatty() and sys.stdout.isatty()


def _given(args, previous: dict | None = None):
    from tuneforge.planning.answers import explicit_answers, layer, parse_sets, read_answers_file

    return layer(
        (explicit_answers(previous) if previous else {}, "previous answers"),
        (read_answers_file(args.answers) if args.answers else {}, f"answers file {args.answers}"),
        (parse_sets(args.sets), "--set"),
    )


def _machine(args) -> dict:
    """The machine to plan for: this one, or with --no-detect a typical one."""
    from tuneforge.planning import hardware

    return dict(hardware.TYPICAL) if args.no_detect else hardware.detect()


def _resolve(args, given, previous: dict | None = None):
    from tuneforge.planning.plan import resolve

    machine = _machine(args)
    if _interactive(args):
        from tuneforge.planning.answers import user_answers
        from tuneforge.terminal.prompts import ask

        return ask(given, previous=user_answers(previous) if previous else {}, detected=machine)
    return resolve(given, detected=machine)


def _refuse(plan) -> int:
    print("error: this combination cannot work:", file=sys.stderr)
    for problem in plan.problems:
        print(f"  - {problem}", file=sys.stderr)
    return BAD_INPUT


def cmd_new(args) -> int:
    from tuneforge.rendering.render import render_workspace

    dest = Path(args.dest)
    from tuneforge.planning.answers import layer, slug_name

    given = layer(({"project_name": slug_name(dest.resolve().name)}, "DEST folder name"), _given(args))
    plan = _resolve(args, given)
    if plan.problems:
        return _refuse(plan)
    _warn_fit(plan)
    render_workspace(dest, plan.copier_data(), force=args.force)
    print(f"created {dest}/ ({plan.values['model']}, {plan.values['technique']}, {plan.values['hardware']})")
    print(f"next: cd {shlex.quote(str(dest))} && bash setup.sh && .venv/bin/python smoke.py")
    if args.open:
        from tuneforge.rendering.vscode import open_in_vscode

        print(open_in_vscode(dest))
    return 0


def cmd_update(args) -> int:
    from tuneforge.rendering.render import read_workspace_answers, update_workspace

    dest = Path(args.dest)
    previous = read_workspace_answers(dest)
    given = _given(args, previous)
    plan = _resolve(args, given, previous)
    if plan.problems:
        return _refuse(plan)
    _warn_fit(plan)
    result = update_workspace(dest, plan.copier_data(), force=args.force)
    for path in result.kept:
        print(f"warning: kept {path}: its feature is no longer chosen, but you had edited it", file=sys.stderr)
    if result.conflicts:
        print("conflicts (marked inline with <<<<<<< before updating ... >>>>>>> after updating):", file=sys.stderr)
        for path in result.conflicts:
            print(f"  {path}", file=sys.stderr)
    changed = len(result.changed) + len(result.removed)
    print(
        f"updated {dest}/: {changed} file{'s' if changed != 1 else ''} changed"
        f"{', ' + str(len(result.conflicts)) + ' with conflicts' if result.conflicts else ''}. "
        "Review with `git diff`, then commit."
    )
    return 1 if result.conflicts else 0


def _warn_fit(plan) -> None:
    from tuneforge.planning.answers import format_value

    print(f"plan: peak training memory per device {plan.verdict}")
    if plan.fits:
        return
    print(
        f"warning: training needs about {plan.memory.total_gb:g} GB per device, more than the "
        f"{plan.available_gb:g} GB given. What would fit:",
        file=sys.stderr,
    )
    for suggestion in plan.suggestions:
        print(
            f"  --set {' --set '.join(f'{k}={format_value(v)}' for k, v in suggestion.changes.items())}"
            f"  (about {suggestion.estimate.total_gb:g} GB)",
            file=sys.stderr,
        )


def cmd_plan(args) -> int:
    import json

    from tuneforge.rendering.render import render_files

    plan = _resolve(args, _given(args))
    files = render_files(plan.copier_data()) if not plan.problems else []
    if args.json:
        print(json.dumps({**plan.as_dict(), "files": files}, indent=2))
        return BAD_INPUT if plan.problems else 0
    from tuneforge.terminal.report import format_plan

    print(format_plan(plan, files))
    return BAD_INPUT if plan.problems else 0


def cmd_catalog(args) -> int:
    import json

    from tuneforge import catalog
    from tuneforge.terminal.report import format_catalog

    data = catalog.formats() if args.section == "formats" else catalog.load(args.section)
    print(json.dumps(data, indent=2) if args.json else format_catalog(args.section, data))
    return 0


def cmd_ui(args) -> int:
    from tuneforge.rendering.render import ANSWERS_FILE
    from tuneforge.web.form import Form
    from tuneforge.web.server import serve

    machine = _machine(args)
    given = _given(args)
    dest = Path(args.dest) if args.dest else None
    if dest is not None and (dest / ANSWERS_FILE).is_file():
        form = Form.for_workspace(dest.resolve(), machine, given)
    else:
        from tuneforge.rendering.render import RenderError, is_empty

        if dest is not None and not is_empty(dest):
            raise RenderError(f"{dest} is not empty and not a tuneforge workspace; choose an empty or new folder")
        form = Form(machine, dest, given)
    return serve(form, args.host, args.port, browser=not args.no_browser)


COMMANDS = {"new": cmd_new, "update": cmd_update, "plan": cmd_plan, "ui": cmd_ui, "catalog": cmd_catalog}
