"""Conditional expressions (`a if c else b`, Python's precedence, only the chosen branch evaluated), the
`if` statement they share a word with, and syntax errors that name a construct the language lacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from archspec import SpecError
from archspec.graph.elaborate import elaborate
from archspec.language.evaluate import evaluate
from archspec.language.loader import load
from archspec.language.syntax import parse_expr, parse_text


def value(text: str, **env):
    return evaluate(parse_expr(text), env)


@pytest.mark.parametrize("text,want", [
    ("1 if true else 2", 1),
    ("1 if false else 2", 2),
    ("1 + 2 if false else 3", 3),  # the conditional binds loosest: (1 + 2) if false else 3
    ("1 if false else 2 if false else 3", 3),  # and nests to the right
    ("1 if false else 2 if true else 3", 2),
    ("[1, 2] if n > 1 else [3]", [1, 2]),
    ("(4 if n > 9 else 5) * 2", 10),
    ("x if x > 0 or n == 2 else -x", -3),
    ("\"{\" if n == 2 else \"}\"", "{"),  # braces inside strings do not end the expression
])
def test_a_conditional_has_pythons_precedence(text, want):
    assert value(text, n=2, x=-3) == want


def test_only_the_chosen_branch_is_evaluated():
    assert value("xs[0] if len(xs) > 0 else 7", xs=[]) == 7
    assert value("1 // 0 if false else 3") == 3
    with pytest.raises(SpecError, match="division by zero"):
        value("1 // 0 if true else 3")


def test_the_condition_must_be_a_bool_and_is_pointed_at():
    with pytest.raises(SpecError) as e:
        value("1 if n else 2", n=3)
    assert "a condition must be true or false, got int 3" in e.value.message
    assert e.value.loc.column == 6


def _net(body: str, params: str = "") -> str:
    return f"network n({params}) {{\n  input(3, 8, 8)\n  {body}\n}}\n"


def _build(text: str):
    return elaborate(load(text))


def test_conditionals_work_wherever_a_value_goes():
    text = _net("let c = 8 if wide else 4\n"
                "  conv(c if channels == 3 else 1, 3 if wide else 1, padding=1 if wide else 0)\n"
                "  repeat 2 if wide else 1 { relu }\n"
                "  if (1 if wide else 0) > 0 { bn }\n",
                "wide: bool = true, k: int = 3 if true else 1")
    net = _build(text)
    assert [n.op for n in net.nodes()] == ["input", "conv", "relu", "relu", "bn"]
    assert net.node("conv1").shape == (8, 8, 8) and net.params["k"] == 3
    narrow = _build(text.replace("wide: bool = true", "wide: bool = false"))
    assert [n.op for n in narrow.nodes()] == ["input", "conv", "relu"]
    assert narrow.node("conv1").shape == (4, 8, 8)


def test_an_if_statement_after_a_let_stays_a_statement():
    """Newlines mean nothing to the parser, so `let a = 1` then `if c { ... }` must not read as one
    conditional expression; an `if` whose condition is itself a conditional is a statement too."""
    f = parse_text(_net("let a = 1\n  if a > 0 { relu } else { bn }\n  let b = 2 if a > 0 else 3\n  if b > 0 { relu }\n"
                        "  if a if true else b { relu }"))
    kinds = [type(s).__name__ for s in f.networks[0].body]
    assert kinds == ["Call", "Let", "If", "Let", "If", "If"]


def test_a_conditional_may_span_lines_inside_brackets():
    f = parse_text(_net("conv(8 if true\n    else 4, 1)\n  let xs = [1 if false\n    else 2]"))
    conv, let = f.networks[0].body[1:]
    assert (conv.args[0].then.value, conv.args[0].orelse.value) == (8, 4)
    assert evaluate(let.value, {}) == [2]


def _syntax(text: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        parse_text(text)
    return e.value


@pytest.mark.parametrize("body,needle,words", [
    ("let a = 1 if true", "}", ["conditional expression needs its `else`"]),
    ("conv(4 if true, 1)", "if", ["conditional expression needs its `else`"]),
    ("conv(true ? 4 : 2, 1)", "?", ["`a if c else b`"]),
    ("let a = [i * 2 for i in range(3)]", "for", ["list comprehensions"]),
    ("let a = [1, 2, 3][0:2]", ":", ["slices"]),
    ("let a = x.y", ".", ["attributes"]),
    ("let a = 1 < 2 < 3", "< 3", ["comparisons do not chain"]),
    ("let a = 1 in [1]", "in", ["membership tests"]),
    ("let a = (1, 2)", ",", ["tuples", "[list]"]),
    ("let a = {}", "{}", ["dicts and sets"]),
    ("let a = true && false", "&&", ["`and`"]),
    ("let a = !true", "!", ["`not`"]),
    ("if true { relu } elif false { bn }", "false", ["`elif` is written `else if`"]),
    ("while true { relu }", "true", ["`while` loops"]),
    ("if true: relu", ":", ["braces"]),
    ("let a = 1\n  a += 1", "+", ["`+=`"]),
])
def test_a_construct_the_language_lacks_is_named_where_it_stands(body, needle, words):
    text = _net(body)
    e = _syntax(text)
    at = text.index(needle, text.index(body.splitlines()[-1].strip()[:4]) if "\n" in body else text.index(body))
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    assert (e.loc.line, e.loc.column) == (line, column), e.render()
    assert e.message.startswith("unexpected")
    for w in words:
        assert w in e.message, e.render()
    assert "a ',' is missing" not in e.message


@pytest.mark.slow  # a fresh interpreter loads the command line
def test_a_missing_else_exits_with_code_2_and_a_caret(tmp_path):
    spec = tmp_path / "bad.arch"
    spec.write_text(_net("conv(4 if true, 1)"))
    r = subprocess.run([sys.executable, "-m", "archspec", "check", str(spec)], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"{spec}:3:10" in r.stderr and "needs its `else`" in r.stderr and "^^" in r.stderr
