"""The generator's layers, as the README's layout table draws them: each module imports only from its own layer
or the layers below it (the terminal and the web are side by side and never import each other), and no chain of
imports, at module level or inside a function, comes back to where it started."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.project import ROOT

PACKAGE = ROOT / "generator" / "tuneforge"
# lowest first; a layer may import its own modules and any lower layer's
RANKS = {"tuneforge": 0, "catalog": 1, "planning": 2, "rendering": 3, "terminal": 4, "web": 4, "cli": 5, "__main__": 6}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tuneforge"


def imports(path: Path, modules: set[str]) -> set[str]:
    """The tuneforge modules one file imports, wherever in the file the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "tuneforge"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tuneforge":
            for alias in node.names:  # `from tuneforge.planning import hardware` imports a module
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
    return found


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(path, package): path for path in package.rglob("*.py")}
    return {name: imports(path, set(files)) - {name} for name, path in files.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            mine, theirs = layer(module), layer(target)
            if mine != theirs and RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{module} imports {target} ({theirs} is not below {mine})")
    return wrong


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as the chain of its modules, or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target, path + [target])):
                return found
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_every_module_belongs_to_a_layer():
    assert {layer(module) for module in graph()} <= set(RANKS)


def test_the_generator_imports_only_downward_and_has_no_cycle():
    edges = graph()
    assert upward(edges) == []
    assert cycle(edges) is None, " -> ".join(cycle(edges))


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """The two checks above, shown failing: a web module importing the CLI (as ui.py once imported cli.py for
    open_in_vscode), and two planning modules importing each other."""
    package = tmp_path / "tuneforge"
    for name, text in {
        "__init__.py": "",
        "cli.py": "from tuneforge.web import server\n",
        "web/__init__.py": "",
        "web/server.py": "def open_it():\n    from tuneforge.cli import main\n",
        "planning/__init__.py": "",
        "planning/plan.py": "from tuneforge.planning import fit\n",
        "planning/fit.py": "import tuneforge.planning.plan\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    edges = graph(package)
    assert upward(edges) == ["tuneforge.web.server imports tuneforge.cli (cli is not below web)"]
    assert cycle(edges) in (
        ["tuneforge.cli", "tuneforge.web.server", "tuneforge.cli"],
        ["tuneforge.planning.fit", "tuneforge.planning.plan", "tuneforge.planning.fit"],
    )
