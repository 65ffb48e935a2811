"""Text → syntax tree: lark's parse tree lowered to `tree` records by a Transformer. The grammar is
data (`grammar.lark`, compiled in `grammar`); what a syntax error means is `diagnostics`' job."""

from __future__ import annotations

import dataclasses
import math

from lark import Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, UnexpectedToken

from . import tree as T
from .diagnostics import nesting_error, syntax_error
from ..errors import Ident, Loc, SpecError
from .grammar import parser

MAX_EXPR_DEPTH = 100  # operators and calls nested inside one expression
MAX_INT = 2**63 - 1  # the largest integer a spec may write or compute


def _loc_of(meta, file: str) -> Loc:
    end = meta.end_column if getattr(meta, "end_line", None) == meta.line else None
    return Loc(file, meta.line, meta.column, end)


def _split_args(args) -> tuple[tuple, tuple]:
    pos, kw = [], []
    seen: dict[str, Ident] = {}
    for a in args or ():
        if isinstance(a, tuple) and len(a) == 3 and a[0] == "kw":
            name = a[1]
            if name in seen:
                raise SpecError(f"argument '{name}' is given twice", name.loc,
                                f"first given at {seen[name].loc}" if seen[name].loc else None)
            seen[name] = name
            kw.append((name, a[2]))
        else:
            if kw:
                raise SpecError("a positional argument cannot follow a named one", getattr(a, "loc", None),
                                "put the positional arguments first, as in conv(16, 3, padding=1)")
            pos.append(a)
    return tuple(pos), tuple(kw)


@v_args(meta=True)
class _ToTree(Transformer):
    """Lowers lark's parse tree to `tree` records; every record keeps its location."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file
        self._depth: dict[int, int] = {}  # id(expression record) → how deep it nests

    def _loc(self, meta) -> Loc:
        return _loc_of(meta, self.file)

    def _tok_loc(self, tok: Token) -> Loc:
        end = tok.end_column if tok.end_line == tok.line else None
        return Loc(self.file, tok.line, tok.column, end)

    def _ident(self, tok: Token) -> Ident:
        return Ident(str(tok), self._tok_loc(tok))

    def _expr(self, rec, *children):
        """Record `rec`'s nesting depth (one more than its deepest child) and refuse runaway nesting."""
        depth = 1 + max((self._depth.get(id(c), 0) for c in children if c is not None), default=0)
        if depth > MAX_EXPR_DEPTH:
            raise SpecError(f"the expression nests more than {MAX_EXPR_DEPTH} levels deep", rec.loc,
                            "split it into steps with `let`")
        self._depth[id(rec)] = depth
        return rec

    # -- expressions
    def int_(self, meta, c):
        text = str(c[0])
        if len(text) > 19 or int(text) > MAX_INT:
            raise SpecError(f"the number {text[:24]}{'…' if len(text) > 24 else ''} is too large "
                            f"(the largest is {MAX_INT})", self._loc(meta))
        return T.Const(int(text), self._loc(meta))

    def float_(self, meta, c):
        v = float(str(c[0]))
        if not math.isfinite(v):
            raise SpecError(f"the number {str(c[0])[:24]} is too large", self._loc(meta))
        return T.Const(v, self._loc(meta))

    def string(self, meta, c):
        return T.Const(str(c[0])[1:-1], self._loc(meta))

    def true(self, meta, c):
        return T.Const(True, self._loc(meta))

    def false(self, meta, c):
        return T.Const(False, self._loc(meta))

    def name(self, meta, c):
        return T.Name(str(c[0]), self._loc(meta))

    def list_(self, meta, c):
        items = tuple(x for x in c if x is not None)
        return self._expr(T.ListExpr(items, self._loc(meta)), *items)

    def index(self, meta, c):
        return self._expr(T.Index(c[0], c[1], self._loc(meta)), c[0], c[1])

    def func(self, meta, c):
        pos, kw = _split_args(c[1])
        return self._expr(T.Func(str(c[0]), pos, kw, self._loc(meta)), *pos, *(v for _, v in kw))

    def _fold(self, meta, c):
        acc = c[0]
        for op, right in zip(c[1::2], c[2::2]):
            # each step spans from the left operand's start to its right operand's end
            acc = self._expr(T.BinOp(str(op), acc, right, acc.loc.to(right.loc)), acc, right)
        return acc

    sum = product = comparison = _fold

    def pow_(self, meta, c):
        return self._expr(T.BinOp("**", c[0], c[2], c[0].loc.to(c[2].loc)), c[0], c[2])

    def neg(self, meta, c):
        return self._expr(T.Unary("-", c[0], self._loc(meta)), c[0])

    def not_(self, meta, c):
        return self._expr(T.Unary("not", c[0], self._loc(meta)), c[0])

    def or_expr(self, meta, c):
        return self._expr(T.BoolOp("or", tuple(c), self._loc(meta)), *c)

    def and_expr(self, meta, c):
        return self._expr(T.BoolOp("and", tuple(c), self._loc(meta)), *c)

    def cond(self, meta, c):
        then, _, test, orelse = c  # c[1] is the `if`
        return self._expr(T.Cond(test, then, orelse, then.loc.to(orelse.loc)), then, test, orelse)

    def args(self, meta, c):
        return list(c)

    def kwarg(self, meta, c):
        return ("kw", self._ident(c[0]), c[1])

    # -- statements
    def body(self, meta, c):
        return tuple(c)

    def call(self, meta, c):
        pos, kw = _split_args(c[1])
        return T.Call(str(c[0]), pos, kw, self._loc(meta))

    def pattern(self, meta, c):
        pos, kw = _split_args(c[1])
        return T.Word(str(c[0]), pos, kw, self._loc(meta))

    def block(self, meta, c):
        return T.Block(c[0], c[1], c[2], self._loc(meta))

    def group(self, meta, c):
        return T.Scope("group", tuple(c), self._loc(meta))

    def scope(self, meta, c):
        return T.Scope(str(c[0]), c[1], self._loc(meta))

    def repeat(self, meta, c):
        return T.Repeat(c[0], c[1], self._loc(meta))

    def for_loop(self, meta, c):
        return T.For(self._ident(c[0]), c[1], c[2], self._loc(meta))

    def if_stmt(self, meta, c):
        orelse = c[2]
        if orelse is None:
            orelse = ()
        elif isinstance(orelse, T.If):
            orelse = (orelse,)
        return T.If(c[0], c[1], orelse, self._loc(meta))

    def let(self, meta, c):
        return T.Let(self._ident(c[0]), c[1], self._loc(meta))

    def check(self, meta, c):
        return T.Assert(c[0], c[1], self._loc(meta))

    def bind(self, meta, c):
        return T.Bind(self._ident(c[0]), self._loc(meta))

    def read(self, meta, c):
        return T.Read(c[0], self._loc(meta))

    def give(self, meta, c):
        return T.Return(c[0], self._loc(meta))

    # -- definitions
    def param(self, meta, c):
        return T.Param(self._ident(c[0]), str(c[1]), c[2], self._loc(meta))

    def params(self, meta, c):
        seen: dict[str, T.Param] = {}
        for p in c:
            if p.name in seen:
                raise SpecError(f"parameter '{p.name}' is declared twice", p.name.loc,
                                f"first declared at {seen[p.name].loc}")
            seen[p.name] = p
        return tuple(c)

    def use(self, meta, c):
        return T.Use(str(c[0])[1:-1], self._loc(meta))

    def layer_def(self, meta, c):
        return T.LayerDef(self._ident(c[0]), c[1] or (), c[2], self._loc(meta))

    def pattern_def(self, meta, c):
        merge = self._ident(c[2]) if c[2] is not None else None
        return T.PatternDef(self._ident(c[0]), c[1] or (), merge, c[3], self._loc(meta))

    def recipe(self, meta, c):
        return Ident(str(c[0])[1:-1], self._tok_loc(c[0]))

    def network_def(self, meta, c):
        return T.NetworkDef(self._ident(c[0]), c[1] or (), c[3], self._loc(meta), c[2])

    def network_alias(self, meta, c):
        pos, kw = _split_args(c[2])
        return T.NetworkAlias(self._ident(c[0]), self._ident(c[1]), pos, kw, self._loc(meta), c[3])

    def start(self, meta, c):
        return list(c)


def parse_text(text: str, file: str = "<spec>") -> T.File:
    """Parse one spec file's text (no `use` resolution)."""
    if text.startswith("\ufeff"):  # a byte-order mark is not part of the spec
        text = " " + text[1:]
    nested = nesting_error(text, file)
    if nested is not None:
        raise nested.with_sources({file: text})
    try:
        items = _ToTree(file).transform(parser().parse(text))
    except UnexpectedInput as err:
        raise syntax_error(err, text, file) from None
    except RecursionError:
        raise SpecError("the spec nests too deeply to read", Loc(file, 1, 1),
                        "split long expressions with `let`", {file: text}) from None
    except Exception as err:  # errors raised inside the transformer come wrapped
        inner = getattr(err, "orig_exc", None)
        if isinstance(inner, SpecError):
            raise inner.with_sources({file: text}) from None
        if isinstance(inner, RecursionError):
            raise SpecError("the spec nests too deeply to read", Loc(file, 1, 1),
                            "split long expressions with `let`", {file: text}) from None
        raise
    uses = tuple(i for i in items if isinstance(i, T.Use))
    layers = tuple(i for i in items if isinstance(i, T.LayerDef))
    patterns = tuple(i for i in items if isinstance(i, T.PatternDef))
    nets = tuple(i for i in items if isinstance(i, (T.NetworkDef, T.NetworkAlias)))
    return T.File(file, uses, layers, patterns, nets, text)


_VALUE_PREFIX = "layer _v() { let _v = "


def parse_expr(text: str, file: str = "<value>", line_text: str | None = None, column: int = 1) -> T.Expr:
    """Parse a single expression, e.g. a `--set` value.

    Locations are reported in `file` at line 1, the value starting at `column` of `line_text` (the
    whole text the value came from, e.g. `classes=100`; the value alone by default)."""
    line_text = text if line_text is None else line_text
    sources = {file: line_text}
    shift = column - 1 - len(_VALUE_PREFIX)

    def where(c: int | None, end: int | None = None) -> Loc:
        c = max(column, min((c or 1) + shift, column + len(text)))
        return Loc(file, 1, c, None if end is None else end + shift)

    hint = "expected a number, true/false, a \"string\" or a [list]"
    if "\n" in text or "\r" in text:
        raise SpecError(f"a value must be on one line, got {text!r}", Loc(file, 1, column), hint, sources)
    if not text.strip():
        raise SpecError("a value is missing", Loc(file, 1, column), hint, sources)
    wrapped = _VALUE_PREFIX + text + "\n}"
    try:
        tree = _ToTree(file).transform(parser().parse(wrapped))
    except UnexpectedInput as err:
        c = getattr(err, "column", None)
        if isinstance(err, UnexpectedToken) and err.token.type in ("RBRACE", "$END") and err.line != 1:
            c = len(_VALUE_PREFIX) + len(text) + 1  # ran off the end of the value
        raise SpecError(f"cannot read the value {text!r}", where(c), hint, sources) from None
    except Exception as err:
        inner = getattr(err, "orig_exc", None)
        if isinstance(inner, SpecError):
            loc = inner.loc
            inner.loc = where(loc.column, loc.end_column) if loc else None
            raise inner.with_sources(sources) from None
        raise SpecError(f"cannot read the value {text!r}", Loc(file, 1, column), hint, sources) from None
    if len(tree) != 1 or len(tree[0].body) != 1:  # e.g. `1 } layer x() {`: more than one value
        raise SpecError(f"cannot read the value {text!r}", Loc(file, 1, column), hint, sources)
    return _relocate(tree[0].body[0].value, where)


def _relocate(e: T.Expr, where) -> T.Expr:
    """`e` with its locations moved from the wrapped text to the value's own line."""
    changes = {}
    for f in dataclasses.fields(e):
        v = getattr(e, f.name)
        if isinstance(v, Loc):
            changes[f.name] = where(v.column, v.end_column)
        elif isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 for x in v) \
                and f.name == "kwargs":
            changes[f.name] = tuple((Ident(k, where(k.loc.column, k.loc.end_column)) if getattr(k, "loc", None)
                                     else k, _relocate(x, where)) for k, x in v)
        elif isinstance(v, tuple):
            changes[f.name] = tuple(_relocate(x, where) if dataclasses.is_dataclass(x) else x for x in v)
        elif dataclasses.is_dataclass(v):
            changes[f.name] = _relocate(v, where)
    return dataclasses.replace(e, **changes)
