"""Imports flow one way: language ← graph ← compiler ← runtime ← api/cli. Read from the source with
`ast` (nothing is imported), counting imports inside functions as well as module-level ones; imports
under `if TYPE_CHECKING:` never run and are left out."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder → the package it installs as (pyproject.toml's package-dir)
PACKAGES = {"archspec": "archspec", "compiler": "archspec.compiler", "runtime": "archspec.runtime"}

# What each layer may not import. A layer's own name is a prefix: `archspec.graph` covers its subpackages.
FORBIDDEN = {
    "archspec.language": ("archspec.graph", "archspec.compiler", "archspec.runtime", "archspec.api",
                          "archspec.cli", "archspec.plugins", "archspec.library", "torch"),
    "archspec.graph": ("archspec.compiler", "archspec.runtime", "archspec.api", "archspec.cli", "archspec.library",
                       "torch"),
    "archspec.compiler": ("archspec.runtime", "archspec.api", "archspec.cli"),
    "archspec.runtime": ("archspec.api", "archspec.cli"),
}
MAX_LOCAL = 3  # function-local imports of the project's own modules outside the CLI, each with a reason


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module imported (a project module, or a third-party top-level name)
    line: int
    local: bool  # inside a function: runs when the function is first called


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _files() -> dict[str, Path]:
    return {_module_name(p): p for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    files = _files()
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = _resolve(module, is_package, node)
    # `from pkg import sub` imports the submodule `pkg.sub` where there is one, else a name of `pkg`
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]


def _walk(tree: ast.AST, local: bool = False):
    """(import node, is it inside a function) for every import that can run."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _is_type_checking(child):
            yield from (found for stmt in child.orelse for found in _walk_one(stmt, local))
            continue
        yield from _walk_one(child, local)


def _walk_one(node: ast.AST, local: bool):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, local
        return
    inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    yield from _walk(node, inner)


@cache
def imports() -> tuple[Import, ...]:
    found = []
    for module, path in _files().items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node, local in _walk(tree):
            for target in _targets(module, is_package, node):
                if target.startswith("archspec.") and target not in _files():
                    # `from archspec.x import name`: the name lives in the nearest module above
                    while target not in _files() and "." in target:
                        target = target.rsplit(".", 1)[0]
                found.append(Import(module, target, node.lineno, local))
    return tuple(dict.fromkeys(found))


def _project(name: str) -> bool:
    return name == "archspec" or name.startswith("archspec.")


def _where(i: Import) -> str:
    return f"{_files()[i.source].relative_to(ROOT)}:{i.line} imports {i.target}"


def test_the_source_is_found():
    files = _files()
    for module in ("archspec.api", "archspec.graph.ops.base", "archspec.compiler.codegen", "archspec.runtime.export"):
        assert module in files
    assert any(i.local for i in imports()), "function-local imports are read"


def test_relative_imports_resolve_as_python_does():
    def first(text: str) -> ast.ImportFrom:
        return ast.parse(text).body[0]

    assert _resolve("archspec.graph.ops.conv", False, first("from ..words import Word")) == "archspec.graph.words"
    assert _resolve("archspec.graph.ops", True, first("from .base import OPS")) == "archspec.graph.ops.base"
    assert _resolve("archspec.cli.common", False, first("from .. import api")) == "archspec"
    assert _targets("archspec.cli.common", False, first("from .. import api")) == ["archspec.api"]
    code = "import os\nif TYPE_CHECKING:\n    import torch\ndef f():\n    import json\n"
    assert [(n.names[0].name, local) for n, local in _walk(ast.parse(code))] == [("os", False), ("json", True)]


def test_no_import_cycle():
    """No cycle among the project's modules, function-local imports included."""
    g = nx.DiGraph()
    for i in imports():
        if _project(i.target) and i.target != i.source:
            g.add_edge(i.source, i.target, line=_where(i))
    cycles = [c for c in nx.simple_cycles(g) if len(c) > 1]
    described = ["  " + " → ".join(c + [c[0]]) for c in sorted(cycles, key=len)[:10]]
    assert not cycles, f"{len(cycles)} import cycles, shortest first:\n" + "\n".join(described)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer: str):
    bad = [_where(i) for i in imports()
           if (i.source == layer or i.source.startswith(layer + "."))
           and any(i.target == f or i.target.startswith(f + ".") for f in FORBIDDEN[layer])]
    assert not bad, f"{layer} imports above its layer:\n  " + "\n  ".join(bad)


def test_the_file_writer_is_a_leaf():
    """`archspec.files` serves every layer, so it imports nothing of the project but the errors."""
    used = {i.target for i in imports() if i.source == "archspec.files" and _project(i.target)}
    assert used <= {"archspec.errors"}, used


def test_few_function_local_imports_outside_the_cli():
    local = [i for i in imports() if i.local and _project(i.target)
             and not (i.source == "archspec.cli" or i.source.startswith("archspec.cli."))]
    assert len(local) <= MAX_LOCAL, f"{len(local)} function-local imports of the project's modules:\n  " + \
        "\n  ".join(_where(i) for i in local)


def test_each_function_local_import_says_why():
    """A function-local import of the project's own modules has a one-line reason: a comment on its line
    or the line above."""
    unexplained = []
    for i in imports():
        if not (i.local and _project(i.target)) or i.source.startswith("archspec.cli"):
            continue
        lines = _files()[i.source].read_text().splitlines()
        near = lines[i.line - 1] + (lines[i.line - 2] if i.line >= 2 else "")
        if "#" not in near:
            unexplained.append(_where(i))
    assert not unexplained, "function-local imports without a reason:\n  " + "\n  ".join(unexplained)


def test_every_package_is_installed():
    """pyproject.toml lists every package folder, so a non-editable install has them all."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {_module_name(p) for folder in PACKAGES for p in (ROOT / folder).rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
