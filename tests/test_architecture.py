"""Imports go one way (issue 13): every ``midistruct`` import, module-level or inside a function,
points from a top-level package or module to one on a lower floor of :data:`FLOORS`.

The walk reads the source with :mod:`ast` and imports nothing, so it is fast and sees the lazy
imports the CLI keeps inside its handlers. The same order is written in the README's Layout section.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "midistruct"

# Bottom floor first. A name may import from the names before it, never from those after it.
# ``midistruct`` is the package's own __init__ (``from midistruct import __version__``).
FLOORS = [
    "midistruct", "errors", "fsutil", "config", "tags",
    "corpus", "tokens", "shards", "prepare",
    "metrics", "model", "generation", "training", "evaluation",
    "render", "form", "library", "quickstart", "cli", "__main__",
]


def top_level_of(path: Path, root: Path) -> str:
    """The top-level package or module a file belongs to (``midistruct`` for the package's __init__)."""
    parts = path.relative_to(root).with_suffix("").parts
    return "midistruct" if parts == ("__init__",) else parts[0]


def imported_modules(node: ast.AST, path: Path, root: Path) -> list[str]:
    """Dotted names (``midistruct.x.y``) an ``import`` / ``from ... import`` node brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against the file's own package
        package = ["midistruct", *path.relative_to(root).parent.parts]
        base = package[: len(package) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module == "midistruct":  # from midistruct import tokens / __version__
        return [f"midistruct.{alias.name}" for alias in node.names]
    return [module]


def import_edges(root: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) top-level names -> where (``file:line``), for imports across top levels."""
    names = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        source = top_level_of(path, root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            for module in imported_modules(node, path, root):
                parts = module.split(".")
                if parts[0] != "midistruct":
                    continue
                target = parts[1] if len(parts) > 1 and parts[1] in names else "midistruct"
                if target != source:
                    where = f"{path.relative_to(root)}:{node.lineno}"
                    edges.setdefault((source, target), []).append(where)
    return edges


def find_cycle(edges) -> list[str] | None:
    """One cycle of the graph as a list of names (first == last), or None."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, stack)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_every_top_level_name_has_a_floor():
    names = {top_level_of(p, PACKAGE) for p in PACKAGE.rglob("*.py")}
    assert names - set(FLOORS) == set(), "add the new package or module to FLOORS (and the README's Layout)"


def test_no_import_cycle_between_top_level_packages():
    cycle = find_cycle(import_edges())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_only_go_down():
    floor = {name: i for i, name in enumerate(FLOORS)}
    upward = [f"{a} -> {b} ({', '.join(where)})" for (a, b), where in sorted(import_edges().items())
              if floor[b] > floor[a]]
    assert upward == [], "imports from a higher floor:\n" + "\n".join(upward)


def test_no_private_names_imported_across_top_levels():
    """A name with a leading underscore is no contract: another floor must not import it."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("midistruct."):
                target = node.module.split(".")[1]
                if target != top_level_of(path, PACKAGE):
                    found += [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.module}.{a.name}"
                              for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


@pytest.mark.parametrize("module, expected", [
    ("from midistruct.training.loop import Trainer", "training"),
    ("from midistruct import __version__", "midistruct"),
    ("from midistruct import tokens", "tokens"),
    ("import midistruct.model.checkpoint", "model"),
])
def test_walker_sees_each_import_form(tmp_path, module, expected):
    """The walker is what the floors rest on: each import form, also inside a function, is an edge."""
    root = tmp_path / "midistruct"
    for name in ("tokens", "training", "model"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "cli.py").write_text(f"def main():\n    {module}\n")
    assert list(import_edges(root)) == [("cli", expected)]
