"""The package is layered: its modules import each other in no circle, deferred imports counted.

A function-level import that closes a loop hides a circle in the design, not removes it. The
graph is built from the source with ``ast`` as ``/work/shared/tools/import_cycles.py`` builds it
(imports under ``if TYPE_CHECKING:`` left out: they never run), so the test needs nothing but the
package. A deferred ``lapelens`` import stays only with a one-line reason on or above it (start-up
time, an optional dependency), and no module names another as a ``"module:attr"`` string.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tiny import ROOT

ROOT = ROOT / "lapelens"
PACKAGE = ROOT.name


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module a dotted name refers to: itself if a module, else its parent (an attribute of it)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The package's modules an import statement imports (``from a import b``: ``a.b`` if a module, else ``a``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        names = [f"{stem}.{a.name}" for a in node.names] if stem else []
        if not any(resolve(n, known) for n in names):
            names = [stem]
    found = []
    for n in names:
        if n == PACKAGE or n.startswith(PACKAGE + "."):
            r = resolve(n, known)
            if r and r != module:
                found.append(r)
    return found


def deferred_imports(tree: ast.AST) -> list[list[ast.stmt]]:
    """Blocks of consecutive import statements inside functions (a block shares one reason)."""
    blocks: list[list[ast.stmt]] = []

    def bodies(node: ast.AST):
        for name in ("body", "orelse", "finalbody"):
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                yield value
        for handler in getattr(node, "handlers", []):
            yield handler.body

    def visit(node: ast.AST, inside: bool) -> None:
        inside = inside or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for body in bodies(node):
            block: list[ast.stmt] = []
            for stmt in body:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    block.append(stmt)
                    continue
                if block and inside:
                    blocks.append(block)
                block = []
                visit(stmt, inside)
            if block and inside:
                blocks.append(block)

    visit(tree, False)
    return blocks


def graph(root: Path = ROOT) -> tuple[dict[str, dict[str, int]], list[str]]:
    """(module -> {imported module: line}, deferred imports without a reason as "file:line")."""
    known = modules(root)
    edges: dict[str, dict[str, int]] = {m: {} for m in known}
    unexplained = []
    for module, path in known.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        skip = type_checking_lines(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in skip:
                for target in targets(node, module, is_package, known):
                    edges[module].setdefault(target, node.lineno)
        for block in deferred_imports(tree):
            if not any(targets(s, module, is_package, known) for s in block if s.lineno not in skip):
                continue
            first, last = block[0].lineno, block[-1].end_lineno or block[-1].lineno
            above = lines[first - 2].strip() if first >= 2 else ""
            inline = any("#" in line for line in lines[first - 1 : last])
            if not (above.startswith("#") and len(above) > 2) and not inline:
                unexplained.append(f"{path.relative_to(root.parent)}:{first}")
    return edges, unexplained


def circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_in_a_circle_deferred_imports_counted():
    edges, _ = graph()
    assert sum(len(e) for e in edges.values()) > 100  # the walk saw the package's imports
    found = circles(edges)
    described = [
        " -> ".join(c) + ": " + "; ".join(f"{a}:{edges[a][b]} imports {b}" for a in c for b in edges[a] if b in c)
        for c in found
    ]
    assert not found, described


def test_every_deferred_lapelens_import_says_why():
    _, unexplained = graph()
    assert not unexplained, f"deferred imports without a reason comment on or above them: {unexplained}"


def test_no_module_names_another_as_a_string():
    pattern = re.compile(rf"^{PACKAGE}(\.\w+)+:\w+$")
    named = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.match(node.value):
                named.append(f"{module}: {node.value!r}")
    assert not named, named


# ---- the checks themselves catch what they are for, on a toy package -----------------------------
def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / PACKAGE


def test_a_circle_through_a_deferred_import_is_found(tmp_path):
    root = write(
        tmp_path,
        {
            f"{PACKAGE}/__init__.py": "",
            f"{PACKAGE}/low.py": f"def f():\n    from {PACKAGE}.high import g\n    return g\n",
            f"{PACKAGE}/high.py": f"from {PACKAGE} import low\n",
            f"{PACKAGE}/side.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            f"    from {PACKAGE}.high import g\n",
        },
    )
    edges, unexplained = graph(root)
    assert edges[f"{PACKAGE}.low"] == {f"{PACKAGE}.high": 2} and edges[f"{PACKAGE}.side"] == {}
    assert circles(edges) == [[f"{PACKAGE}.high", f"{PACKAGE}.low"]]
    assert unexplained == [f"{PACKAGE}/low.py:2"]


def test_a_reason_on_or_above_a_block_of_deferred_imports_counts(tmp_path):
    root = write(
        tmp_path,
        {
            f"{PACKAGE}/__init__.py": "",
            f"{PACKAGE}/a.py": "",
            f"{PACKAGE}/b.py": (
                "def f():\n"
                "    # deferred: start-up time\n"
                f"    from {PACKAGE}.a import x\n"
                "    import json\n"
                "\n"
                "def g():\n"
                f"    import {PACKAGE}.a  # deferred: an optional dependency\n"
                "\n"
                "def h():\n"
                "    y = 1\n"
                f"    from {PACKAGE} import a\n"
            ),
        },
    )
    _, unexplained = graph(root)
    assert unexplained == [f"{PACKAGE}/b.py:11"]


@pytest.mark.parametrize("text", ["lapelens.figures.run:load_run", "lapelens.x:Y"])
def test_a_module_attr_string_is_caught(text):
    assert re.compile(rf"^{PACKAGE}(\.\w+)+:\w+$").match(text)
