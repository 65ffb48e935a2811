"""How connection patterns plug in: each module of `archspec.graph.patterns` registers its words itself,
a pattern sees a block only through `BlockContext`, and the language and graph layers import one way."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

import archspec
import archspec.graph.patterns as patterns
from archspec import SpecError
from archspec.graph.patterns import PATTERNS, Pattern, register

PACKAGE = Path(archspec.__file__).parent


def test_every_pattern_module_registers_its_words_and_only_those():
    modules = {m.name for m in pkgutil.iter_modules(patterns.__path__)} - {"pattern"}
    by_module: dict[str, set[str]] = {}
    for word, cls in PATTERNS.items():
        assert cls.word == word and issubclass(cls, Pattern)
        by_module.setdefault(cls.__module__.rsplit(".", 1)[1], set()).add(word)
    assert set(by_module) == modules  # each module defines a pattern, and nothing registers from elsewhere
    assert by_module["sequential"] == {"seq", "window"} and by_module["sparse"] == {"sparse"}


def test_a_word_defined_twice_is_refused():
    with pytest.raises(TypeError, match="pattern 'chain' is defined twice"):
        register(type("Chain", (Pattern,), {"word": "chain", "__module__": "elsewhere"}))
    assert PATTERNS["chain"].__module__ == "archspec.graph.patterns.chain"


def test_a_pattern_written_against_the_block_context_alone_works():
    """A pattern from outside the package: the reverse of chain's order, with its own join."""

    class Backwards(Pattern):
        word = "backwards"

        @classmethod
        def build(cls, ctx, x, layers, args):
            outs = []
            for i, layer in reversed(list(enumerate(layers))):
                outs.append(ctx.run(layer, x, ctx.layer_scope(i)))
            return ctx.add("concat", {}, outs, ctx.scope, "join", role="join") if len(outs) > 1 else outs[0]

    register(Backwards)
    try:
        net = archspec.network("network n() {\n  input(3, 8, 8)\n  block backwards { conv(2, 1) conv(5, 1) }\n}\n")
    finally:
        del PATTERNS["backwards"]
    convs = [n for n in net.nodes() if n.op == "conv"]
    assert [(n.layer, n.shape[0]) for n in convs] == [("block1.layer2", 5), ("block1.layer1", 2)]
    out = net.node(net.output)
    assert out.op == "concat" and out.shape == (7, 8, 8) and out.pattern == "backwards" and out.block == "block1"
    with pytest.raises(SpecError, match="unknown connection pattern 'backwards'"):
        archspec.network("network n() {\n  input(3, 8, 8)\n  block backwards { conv(2, 1) }\n}\n")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports at module level, those under `if TYPE_CHECKING:` included."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    todo = list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}
    return found & modules


def import_graph() -> nx.DiGraph:
    files = sorted((PACKAGE / "language").rglob("*.py")) + sorted((PACKAGE / "graph").rglob("*.py"))
    modules = {_module_name(f) for f in files}
    g = nx.DiGraph()
    for f in files:
        g.add_node(_module_name(f))
        for m in _imports(f, modules):
            g.add_edge(_module_name(f), m)
    return g


def test_the_language_and_graph_layers_import_one_way_without_cycles():
    g = import_graph()
    assert list(nx.simple_cycles(g)) == []
    assert [(a, b) for a, b in g.edges if a.startswith("archspec.language") and b.startswith("archspec.graph")] == []


def test_patterns_see_the_block_through_its_context_alone():
    g = import_graph()
    inner = ("archspec.graph.elaborate", "archspec.graph.builder", "archspec.graph.streams")
    for m in g:
        if m.startswith("archspec.graph.patterns.") and m != "archspec.graph.patterns.pattern":
            assert not [t for t in g.successors(m) if t.startswith(inner)], m
    for m in ("archspec.graph.builder", "archspec.graph.streams", "archspec.graph.args"):
        assert not [t for t in g.successors(m) if t.startswith(("archspec.graph.patterns", "archspec.graph.elaborate"))]


def test_elaboration_loads_no_torch():
    code = "import sys, archspec.graph.elaborate, archspec.language.loader; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
