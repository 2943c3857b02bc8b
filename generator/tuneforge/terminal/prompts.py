"""The interactive flow: asks each answer with questionary, showing the plan's verdict beside each
choice (disabled with the reason when it cannot work) and re-asking on bad input."""

from __future__ import annotations

from typing import Any

from tuneforge import catalog
from tuneforge.planning import hardware
from tuneforge.planning.answers import BY_KEY, PRIORITIES, AnswerError, Given, coerce, layer
from tuneforge.planning.models import resolve_model
from tuneforge.planning.plan import Plan, resolve
from tuneforge.planning.questions import HYPER, ORDER, relevant

OTHER_MODEL = "other: a Hugging Face id or a local folder"
OTHER_NUMBER = "other: type a number"
# answers whose every choice is shown with the memory it needs, so the fit is seen before choosing
SIZED = ("model", "technique", "distributed", "per_device_train_batch_size", "max_length")
BATCH_SIZES = [1, 2, 4, 8, 16, 32]
LENGTHS = [256, 512, 1024, 2048, 4096, 8192]


class Quit(Exception):
    """The user chose to quit at the summary: nothing is written."""


class _Flow:
    def __init__(self, given: Given, previous: dict[str, Any], io: dict, detected: dict | None = None):
        import questionary

        self.q = questionary
        self.io = io
        self.fixed = layer(given)  # answered on the command line: not asked
        self.asked = Given()
        self.previous = previous
        self.detected = detected or hardware.detect()  # once: each verdict resolves a whole plan

    def current(self, extra: dict[str, Any] | None = None) -> Plan:
        merged = layer((self.previous, "previous answers"), self.fixed, self.asked, (extra or {}, "asked"))
        return resolve(merged, detected=self.detected)

    def judge(self, key: str, value: Any) -> tuple[str | None, str]:
        """One plan with this choice: why it cannot work (or None), and its memory verdict for the title."""
        try:
            plan = self.current({key: value})
        except AnswerError as error:
            return str(error), ""
        mine = [p for p in plan.problems if p.key == key] or plan.problems
        return (mine[0].reason if mine else None), f"  ({plan.verdict})"

    def fit_note(self, key: str, value: Any) -> str:
        return self.judge(key, value)[1]

    def verdict(self, key: str, value: Any) -> str | None:
        """Why this choice cannot work now, or None."""
        return self.judge(key, value)[0]

    def ask(self, key: str, again: bool = False) -> None:
        plan = self.current()
        if not again and (key in self.fixed.values or not relevant(key, plan)):
            return
        self.fixed.values.pop(key, None)
        spec = BY_KEY[key]
        default = plan.values[key]
        message = spec.help
        if spec.kind == "choice":
            value = self.select(key, message, spec.choices(), default, plan)
        elif spec.kind == "list":
            value = self.checkbox(key, message, spec.choices(), default)
        elif key == "model":
            value = self.model(message, default)
        elif key in ("per_device_train_batch_size", "max_length"):
            value = self.sized_number(key, message, default)
        else:
            value = self.text(key, message, default)
        self.asked.add({key: value}, "asked")

    def select(self, key: str, message: str, options: list[str], default: Any, plan: Plan) -> str:
        section = {
            "technique": "techniques",
            "hardware": "hardware",
            "compute": "compute",
            "objective": "objectives",
        }.get(key)
        choices = []
        for option in options:
            title = option
            if section:
                title += f"  {catalog.load(section)[option].get('title', '')}"
            elif key == "priority":
                title += f"  {PRIORITIES[option]}"
            reason, note = self.judge(key, option) if option != default or key in SIZED else (None, "")
            reason = reason if option != default else None  # the default is always offered
            if key in SIZED and not reason:
                title += note
            choices.append(self.q.Choice(title=title, value=option, disabled=reason))
        enabled = [c.value for c in choices if not c.disabled]
        pick = default if default in enabled else (enabled[0] if enabled else None)
        return self.q.select(message, choices=choices, default=pick, **self.io).unsafe_ask()

    def checkbox(self, key: str, message: str, options: list[str], default: list[str]) -> list[str]:
        choices = [
            self.q.Choice(
                title=f"{o}  {catalog.load('targets')[o]['title']}",
                value=o,
                checked=o in default,
                disabled=self.verdict(key, [o]) if o not in default else None,
            )
            for o in options
        ]

        def valid(picked: list[str]) -> bool | str:
            return True if picked else "choose at least one"

        return self.q.checkbox(message, choices=choices, validate=valid, **self.io).unsafe_ask()

    def model(self, message: str, default: str) -> str:
        models = catalog.load("models")
        choices = [
            self.q.Choice(
                title=f"{m}  ({f['params_b']:g}B{', gated' if f.get('gated') else ''}){self.fit_note('model', m)}",
                value=m,
            )
            for m, f in models.items()
        ]
        choices.append(self.q.Choice(title=OTHER_MODEL, value=OTHER_MODEL))
        pick = default if default in models else OTHER_MODEL
        value = self.q.select(message, choices=choices, default=pick, **self.io).unsafe_ask()
        if value != OTHER_MODEL:
            return value

        def valid(text: str) -> bool | str:
            try:
                resolve_model(text.strip())
                return True
            except AnswerError as error:
                return str(error)

        start = default if default not in models else ""
        return (
            self.q.text("Hugging Face id or local folder:", default=start, validate=valid, **self.io)
            .unsafe_ask()
            .strip()
        )

    def sized_number(self, key: str, message: str, default: int) -> int:
        """A number from common values, each with the plan's verdict, or one typed in."""
        low = BY_KEY[key].minimum
        options = sorted(
            {v for v in (BATCH_SIZES if key == "per_device_train_batch_size" else LENGTHS) if v >= low} | {default}
        )
        choices = [self.q.Choice(title=f"{v}{self.fit_note(key, v)}", value=v) for v in options]
        choices.append(self.q.Choice(title=OTHER_NUMBER, value=OTHER_NUMBER))
        value = self.q.select(message, choices=choices, default=default, **self.io).unsafe_ask()
        return self.text(key, message, default) if value == OTHER_NUMBER else value

    def text(self, key: str, message: str, default: Any) -> Any:
        shown = str(default).lower() if isinstance(default, bool) else str(default)

        def valid(text: str) -> bool | str:
            try:
                coerce(key, text)
                return True
            except AnswerError as error:
                return str(error)

        return coerce(key, self.q.text(f"{message}:", default=shown, validate=valid, **self.io).unsafe_ask())


def ask(
    given: Given, previous: dict[str, Any] | None = None, io: dict | None = None, detected: dict | None = None
) -> Plan:
    """Ask every relevant answer not already given, then show the plan and let the user write it,
    take what would fit, change an answer, or quit (Quit). Returns the resolved plan.

    previous: answers of an existing workspace, offered as defaults. io: questionary's input/output
    (tests pass a prompt_toolkit pipe input). detected: the machine to plan for (default: this one).
    """
    # the main questions offer the workspace's previous answers as defaults
    flow = _Flow(given, {k: v for k, v in (previous or {}).items() if k in ORDER}, io or {}, detected)
    for key in ORDER:
        flow.ask(key)
    customise = flow.q.confirm("Customise hyperparameters?", default=False, **flow.io).unsafe_ask()
    if customise:
        for key in HYPER:
            flow.ask(key)
    while True:
        plan = flow.current()
        choice = summary(flow, plan)
        if choice == "write":
            return plan
        if choice == "quit":
            raise Quit
        if choice == "change":
            key = flow.q.select("Which answer?", choices=ORDER + HYPER, **flow.io).unsafe_ask()
            flow.ask(key, again=True)
        else:
            flow.asked.add(choice, "asked")  # one of the plan's suggestions: the changes that make it fit


def summary(flow: _Flow, plan: Plan) -> Any:
    """Print the plan's verdict and ask what to do: "write", "change", "quit", or a suggestion's changes."""
    from tuneforge.terminal.report import format_summary

    print(format_summary(plan), flush=True)
    choices = []
    if not plan.problems:
        label = "write the workspace" if plan.fits else "write it anyway (it will not fit this memory)"
        choices.append(flow.q.Choice(title=label, value="write"))
    choices += [flow.q.Choice(title=f"take what fits: {s}", value=s.changes) for s in plan.suggestions]
    choices += [
        flow.q.Choice(title="change an answer", value="change"),
        flow.q.Choice(title="quit, writing nothing", value="quit"),
    ]
    default = choices[1].value if not plan.fits and plan.suggestions else choices[0].value
    return flow.q.select("What now?", choices=choices, default=default, **flow.io).unsafe_ask()
