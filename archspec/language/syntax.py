"""Text → syntax tree: the lark grammar, a Transformer that lowers parse trees to `tree` records,
and friendly messages for the common syntax mistakes."""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import tree as T
from .errors import Ident, Loc, SpecError, closest

MAX_NESTING = 64  # brackets, parentheses and braces open at once
MAX_EXPR_DEPTH = 100  # operators and calls nested inside one expression
MAX_INT = 2**63 - 1  # the largest integer a spec may write or compute

TYPES = ("int", "float", "bool", "str", "list", "shape")
TYPE_ALIASES = {"integer": "int", "number": "float", "double": "float", "real": "float", "boolean": "bool",
                "string": "str", "text": "str", "tuple": "list", "array": "list", "sequence": "list",
                "dims": "shape", "size": "shape"}
KEYWORDS = ("use", "layer", "network", "block", "repeat", "for", "in", "if", "else", "let", "assert", "and", "or",
            "not", "true", "false", "stem", "transition", "head")


@lru_cache(maxsize=None)
def _parser() -> Lark:
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


# Each label is shown when a syntax error lands in the same parser state as one of its examples.
# Earlier labels win when two share a state, so the more specific ones come first.
_MISTAKES: dict[str, list[str]] = {
    "a '}' is missing: the body is not closed": [
        "network n() { conv(1, 1)",
        "network n() { relu conv(1, 1)",
        "network n() { relu\n relu",
        "network n() { relu",
        "network n() { block dense concat { conv(1, 1) }",
        "layer l() { bn",
        "layer l() { bn relu",
        "network n() {",
        "network n() { let a = 1",
        "network n() { if true { relu }",
    ],
    "a ',' is missing between arguments": [
        "network n() { conv(1 1) }",
        "network n() { conv(1, padding=1 stride=2) }",
        "network n() { conv(a b) }",
        "network n() { conv(1, f(x) 2) }",
    ],
    "a ',' is missing between list items": [
        "network n(a: list = [1 2]) { }",
        "network n() { let a = [1 2] }",
        "network n() { let a = [x y] }",
    ],
    "a ',' is missing between parameters": [
        "network n(a: int = 1 b: int = 2) { }",
        "network n(a: int b: int) { }",
    ],
    "a ')' is missing: the argument list is not closed": [
        "network n() { conv(1, 1 }",
        "network n() { conv(1, 1\n}",
        "network n() { conv(1, 1",
        "network n() { conv(1, 1] }",
        "network n() { conv(1, padding=1 }",
        "network n() { conv(1, padding=1",
        "network n() { conv(",
    ],
    "a ']' is missing: the list is not closed": [
        "network n() { let a = [1, 2 }",
        "network n() { let a = [1, 2) }",
        "network n() { let a = [1, 2",
        "network n() { let a = [",
        "network n() { let a = b[1 }",
    ],
    "a parameter needs a type, as in `name: int = 1`": [
        "network n(a = 1) { }",
        "network n(a) { }",
        "layer l(a, b) { }",
    ],
    "a parameter type must be one of int, float, bool, str, list, shape": [
        "network n(a: integer = 1) { }",
        "layer l(a: number) { }",
        "layer l(a: 1) { }",
    ],
    "a body must be enclosed in '{ }'": [
        "network n() conv(1) ",
        "layer l() bn relu",
        "network n() { repeat 3 conv(1, 1) }",
        "network n() { for i in range(3) relu }",
        "network n() { if true relu }",
        "network n() { if true { relu } else relu }",
        "network n() { stem conv(1, 1) }",
        "network n() { block dense concat conv(1, 1) }",
        "network n() { block dense conv(1, 1) }",
    ],
    "a value is missing here": [
        "network n() { let a = }",
        "network n() { let a = 1 + }",
        "network n() { let a = 1 * }",
        "network n() { let a = not }",
        "network n() { conv(1, padding=) }",
        "network n() { conv(, 1) }",
        "network n() { if { } }",
        "network n() { repeat { } }",
        "network n(a: int = ) { }",
        "network n() { let a = 1 +",
    ],
    "use '==' to compare; '=' only names an argument or a default": [
        "network n() { if a = 1 { } }",
    ],
    "a `for` loop reads `for NAME in LIST { ... }`": [
        "network n() { for i range(3) { } }",
        "network n() { for in range(3) { } }",
        "network n() { for i, j in range(3) { } }",
    ],
    "`let` names a value, as in `let x = 1`": [
        "network n() { let = 1 }",
        "network n() { let x 1 }",
        "network n() { let x == 1 }",
    ],
    "a block needs a connection pattern, as in `block dense concat { ... }`": [
        "network n() { block { conv(1, 1) } }",
    ],
    "a definition reads `layer NAME(params) { ... }` or `network NAME(params) { ... }`": [
        "network { }",
        "layer { }",
        "network n { }",
        "layer l { }",
        "network n() = a() { }",
    ],
    "a `use` line names a file in quotes, as in `use \"lib/x.arch\"`": [
        "use lib",
        "use lib/x.arch",
    ],
    "a top-level item must be `use`, `layer` or `network`": [
        "conv(1, 1)",
        "net n() { }",
        "network n() { } }",
        "network n() { }\nconv(1, 1)",
        "layer l() { } relu",
    ],
}

_TOKEN_NAMES = {
    "RBRACE": "'}'", "LBRACE": "'{'", "RPAR": "')'", "LPAR": "'('", "COMMA": "','", "COLON": "':'",
    "EQUAL": "'='", "RSQB": "']'", "LSQB": "'['", "MINUS": "'-'", "NAME": "a name", "INT": "a number",
    "FLOAT": "a number", "STRING": "a \"string\"", "TYPE": "a type (int, float, bool, str, list, shape)",
    "SCOPE": "stem/transition/head", "$END": "end of file", "ADD_OP": "an operator",
    "MUL_OP": "an operator", "COMP_OP": "a comparison",
}


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

    def neg(self, meta, c):
        return self._expr(T.Unary("-", c[0], self._loc(meta)), c[0])

    def not_(self, meta, c):
        return self._expr(T.Unary("not", c[0], self._loc(meta)), c[0])

    def or_expr(self, meta, c):
        return self._expr(T.BoolOp("or", tuple(c), self._loc(meta)), *c)

    def and_expr(self, meta, c):
        return self._expr(T.BoolOp("and", tuple(c), self._loc(meta)), *c)

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

    def network_def(self, meta, c):
        return T.NetworkDef(self._ident(c[0]), c[1] or (), c[2], self._loc(meta))

    def network_alias(self, meta, c):
        pos, kw = _split_args(c[2])
        return T.NetworkAlias(self._ident(c[0]), self._ident(c[1]), pos, kw, self._loc(meta))

    def start(self, meta, c):
        return list(c)


def _describe_expected(expected: set[str]) -> str:
    shown = sorted({_TOKEN_NAMES.get(e, repr(e.lower()) if e.isupper() else e) for e in expected
                    if not e.startswith("__")})
    if len(shown) > 8:
        shown = shown[:8] + ["…"]
    return "expected " + ", ".join(shown)


def _keywords_in(expected: set[str]) -> list[str]:
    return [e.lower() for e in expected if e.lower() in KEYWORDS]


def _nesting_error(text: str, file: str) -> SpecError | None:
    """Brackets nested deeper than MAX_NESTING (checked before parsing, which recurses on them)."""
    depth, line, col, i, n = 0, 1, 1, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":  # a comment runs to the end of the line
            while i < n and text[i] != "\n":
                i += 1
            continue
        if ch == '"':  # a string runs to its closing quote on the same line
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 1
            col += j - i + (1 if j < n and text[j] == '"' else 0)
            i = j + 1 if j < n and text[j] == '"' else j
            continue
        if ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                return SpecError(f"brackets nest more than {MAX_NESTING} levels deep", Loc(file, line, col),
                                 "split the expression into steps with `let`, or the body into layer templates")
        elif ch in ")]}":
            depth = max(0, depth - 1)
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
        i += 1
    return None


def _state(err: UnexpectedInput):
    """The LALR state an error happened in. (lark's own `match_examples` also compares the depth of the
    parser's stack, so on its own an example matches only at the same nesting: a mistake in the first
    statement of a body, but not the same mistake in the second.)"""
    st = getattr(err, "state", None)
    return getattr(st, "position", st)


@lru_cache(maxsize=None)
def _example_errors() -> tuple[tuple[str, object, frozenset, str], ...]:
    """(label, state, accepted tokens, offending token type) for every example in `_MISTAKES`."""
    found = []
    for label, examples in _MISTAKES.items():
        for example in examples:
            try:
                _parser().parse(example)
            except UnexpectedToken as e:
                found.append((label, _state(e), frozenset(e.accepts or e.expected or ()), e.token.type))
            except UnexpectedInput as e:
                found.append((label, _state(e), frozenset(getattr(e, "expected", None) or ()), ""))
    return tuple(found)


def match_mistake(err: UnexpectedInput) -> str | None:
    """The `_MISTAKES` label of the example that fails like `err`: in the same parser state with the
    same tokens acceptable, preferring one that stumbles on the same kind of token."""
    if isinstance(err, UnexpectedCharacters) or _state(err) is None:
        return None
    state = _state(err)
    accepts = frozenset(getattr(err, "accepts", None) or getattr(err, "expected", None) or ())
    token = getattr(getattr(err, "token", None), "type", "")
    same = [(label, tok) for label, st, acc, tok in _example_errors() if st == state and acc == accepts]
    for label, tok in same:
        if tok == token:
            return label
    return same[0][0] if same else None


def _syntax_error(err: UnexpectedInput, text: str, file: str) -> SpecError:
    label = None
    if not isinstance(err, UnexpectedCharacters):
        try:  # lark's matcher first (it needs the example at the same parser stack depth) ...
            label = err.match_examples(_parser().parse, _MISTAKES, use_accepts=True)
        except Exception:  # lark 1.3 fails formatting a debug line when two examples share a state
            label = None
        try:  # ... then ours, which compares the parser state alone
            label = label or match_mistake(err)
        except Exception:  # a mismatched example must never hide the real error
            pass
    hint_extra: str | None = None
    line = getattr(err, "line", None)
    col = getattr(err, "column", None)
    end_col = None
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        expected = set(err.allowed or ())
        if ch == '"':
            what = "a string is not closed: a \"string\" must end on the line it starts"
            expected = set()
        elif ch == "'":
            what = "unexpected character \"'\": strings are written in double quotes"
            expected = set()
        elif ch.isprintable() and ch:
            what = f"unexpected character {ch!r}"
        else:
            what = f"unexpected character U+{ord(ch):04X}" if ch else "unexpected input"
    elif isinstance(err, UnexpectedToken) and err.token.type == "$END":
        what = "unexpected end of file"
        expected = set(err.accepts or err.expected or ())
        # lark places the end token on the last token: point just after it
        tok = err.token
        if tok.end_line is not None and tok.end_column is not None:
            line, col = tok.end_line, tok.end_column
    elif isinstance(err, UnexpectedEOF):
        what = "unexpected end of file"
        expected = set(err.expected or ())
    elif isinstance(err, UnexpectedToken):
        tok = err.token
        expected = set(err.accepts or err.expected or ())
        value = str(tok)
        what = f"unexpected {value!r}"
        if tok.end_line == tok.line and tok.end_column:
            end_col = tok.end_column
        if value in KEYWORDS and "NAME" in expected:
            hint_extra = f"'{value}' is a reserved word and cannot be a name"
        elif value.isidentifier() and "TYPE" in expected:
            close = closest(value, TYPES, TYPE_ALIASES)
            if close:
                hint_extra = f"did you mean '{close[0]}'?"
        elif value.isidentifier():
            close = closest(value, _keywords_in(expected))
            if close and value not in close:
                hint_extra = f"did you mean '{close[0]}'?"
    else:
        what, expected = "syntax error", set()
    if line is None or line < 1:  # end of file: point past the last character
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    message = what + (f": {label}" if label else "")
    hints = [h for h in (hint_extra, _describe_expected(expected) if expected else None) if h]
    return SpecError(message, Loc(file, line, col or 1, end_col), "\n".join(hints) or None, {file: text})


def parse_text(text: str, file: str = "<spec>") -> T.File:
    """Parse one spec file's text (no `use` resolution)."""
    if text.startswith("\ufeff"):  # a byte-order mark is not part of the spec
        text = " " + text[1:]
    nested = _nesting_error(text, file)
    if nested is not None:
        raise nested.with_sources({file: text})
    try:
        items = _ToTree(file).transform(_parser().parse(text))
    except UnexpectedInput as err:
        raise _syntax_error(err, text, file) from None
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
    nets = tuple(i for i in items if isinstance(i, (T.NetworkDef, T.NetworkAlias)))
    return T.File(file, uses, layers, nets, text)


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
        tree = _ToTree(file).transform(_parser().parse(wrapped))
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
    import dataclasses

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
