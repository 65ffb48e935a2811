"""Text → syntax tree: the lark grammar, a Transformer that lowers parse trees to `tree` records,
and friendly messages for the common syntax mistakes."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import tree as T
from .errors import Loc, SpecError


@lru_cache(maxsize=None)
def _parser() -> Lark:
    grammar = resources.files("archspec").joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


# Each label is shown when a syntax error lands in the same parser state as one of its examples.
_MISTAKES: dict[str, list[str]] = {
    "a '}' is missing: the body is not closed": [
        "network n() { conv(1, 1)",
        "network n() { block dense concat { conv(1, 1) }",
        "layer l() { bn",
    ],
    "a ',' is missing between arguments": [
        "network n() { conv(1 1) }",
        "network n() { conv(1, padding=1 stride=2) }",
        "network n(a: list = [1 2]) { }",
    ],
    "a ')' is missing: the argument list is not closed": [
        "network n() { conv(1, 1 }",
        "network n() { conv(1, 1\n}",
    ],
    "a parameter needs a type, as in `name: int = 1`": [
        "network n(a = 1) { }",
        "network n(a) { }",
        "layer l(a, b) { }",
    ],
    "a parameter type must be one of int, float, bool, str, list, shape": [
        "network n(a: integer = 1) { }",
        "layer l(a: number) { }",
    ],
    "a body must be enclosed in '{ }'": [
        "network n() conv(1) ",
        "layer l() bn relu",
        "network n() { repeat 3 conv(1, 1) }",
    ],
    "use '==' to compare; '=' only names an argument or a default": [
        "network n() { if a = 1 { } }",
    ],
    "a block needs a connection pattern, as in `block dense concat { ... }`": [
        "network n() { block { conv(1, 1) } }",
    ],
    "a top-level item must be `use`, `layer` or `network`": [
        "conv(1, 1)",
        "net n() { }",
        "network n() { } }",
    ],
}


def _loc_of(meta, file: str) -> Loc:
    end = meta.end_column if getattr(meta, "end_line", None) == meta.line else None
    return Loc(file, meta.line, meta.column, end)


def _split_args(args) -> tuple[tuple, tuple]:
    pos, kw = [], []
    for a in args or ():
        if isinstance(a, tuple) and len(a) == 3 and a[0] == "kw":
            kw.append((a[1], a[2]))
        else:
            if kw:
                raise SpecError("a positional argument cannot follow a named one", getattr(a, "loc", None))
            pos.append(a)
    return tuple(pos), tuple(kw)


@v_args(meta=True)
class _ToTree(Transformer):
    """Lowers lark's parse tree to `tree` records; every record keeps its location."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _loc(self, meta) -> Loc:
        return _loc_of(meta, self.file)

    def _tok_loc(self, tok: Token) -> Loc:
        return Loc(self.file, tok.line, tok.column, tok.end_column)

    # -- expressions
    def int_(self, meta, c):
        return T.Const(int(c[0]), self._loc(meta))

    def float_(self, meta, c):
        return T.Const(float(c[0]), self._loc(meta))

    def string(self, meta, c):
        return T.Const(str(c[0])[1:-1], self._loc(meta))

    def true(self, meta, c):
        return T.Const(True, self._loc(meta))

    def false(self, meta, c):
        return T.Const(False, self._loc(meta))

    def name(self, meta, c):
        return T.Name(str(c[0]), self._loc(meta))

    def list_(self, meta, c):
        return T.ListExpr(tuple(x for x in c if x is not None), self._loc(meta))

    def index(self, meta, c):
        return T.Index(c[0], c[1], self._loc(meta))

    def func(self, meta, c):
        pos, kw = _split_args(c[1])
        return T.Func(str(c[0]), pos, kw, self._loc(meta))

    def _fold(self, meta, c):
        acc = c[0]
        for op, right in zip(c[1::2], c[2::2]):
            acc = T.BinOp(str(op), acc, right, self._loc(meta))
        return acc

    sum = product = comparison = _fold

    def neg(self, meta, c):
        return T.Unary("-", c[0], self._loc(meta))

    def not_(self, meta, c):
        return T.Unary("not", c[0], self._loc(meta))

    def or_expr(self, meta, c):
        return T.BoolOp("or", tuple(c), self._loc(meta))

    def and_expr(self, meta, c):
        return T.BoolOp("and", tuple(c), self._loc(meta))

    def args(self, meta, c):
        return list(c)

    def kwarg(self, meta, c):
        return ("kw", str(c[0]), c[1])

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
        return T.For(str(c[0]), c[1], c[2], self._loc(meta))

    def if_stmt(self, meta, c):
        orelse = c[2]
        if orelse is None:
            orelse = ()
        elif isinstance(orelse, T.If):
            orelse = (orelse,)
        return T.If(c[0], c[1], orelse, self._loc(meta))

    def let(self, meta, c):
        return T.Let(str(c[0]), c[1], self._loc(meta))

    # -- definitions
    def param(self, meta, c):
        return T.Param(str(c[0]), str(c[1]), c[2], self._loc(meta))

    def params(self, meta, c):
        return tuple(c)

    def use(self, meta, c):
        return T.Use(str(c[0])[1:-1], self._loc(meta))

    def layer_def(self, meta, c):
        return T.LayerDef(str(c[0]), c[1] or (), c[2], self._loc(meta))

    def network_def(self, meta, c):
        return T.NetworkDef(str(c[0]), c[1] or (), c[2], self._loc(meta))

    def network_alias(self, meta, c):
        pos, kw = _split_args(c[2])
        return T.NetworkAlias(str(c[0]), str(c[1]), pos, kw, self._loc(meta))

    def start(self, meta, c):
        return list(c)


def _describe_expected(expected: set[str]) -> str:
    names = {
        "RBRACE": "'}'", "LBRACE": "'{'", "RPAR": "')'", "LPAR": "'('", "COMMA": "','", "COLON": "':'",
        "EQUAL": "'='", "RSQB": "']'", "LSQB": "'['", "NAME": "a name", "INT": "an integer",
        "FLOAT": "a number", "STRING": "a string", "TYPE": "a type (int, float, bool, str, list, shape)",
        "SCOPE": "stem/transition/head", "$END": "end of file", "ADD_OP": "an operator",
        "MUL_OP": "an operator", "COMP_OP": "a comparison",
    }
    shown = sorted({names.get(e, repr(e.lower()) if e.isupper() else e) for e in expected})
    if len(shown) > 8:
        shown = shown[:8] + ["…"]
    return "expected " + ", ".join(shown)


def _syntax_error(err: UnexpectedInput, text: str, file: str) -> SpecError:
    label = None
    try:
        if not isinstance(err, UnexpectedCharacters):
            label = err.match_examples(_parser().parse, _MISTAKES, use_accepts=True)
    except Exception:  # a mismatched example must never hide the real error
        label = None
    if isinstance(err, UnexpectedCharacters):
        what = f"unexpected character {text[err.pos_in_stream]!r}" if err.pos_in_stream < len(text) else "unexpected input"
        expected = set(err.allowed or ())
    elif isinstance(err, UnexpectedEOF):
        what = "unexpected end of file"
        expected = set(err.expected or ())
    elif isinstance(err, UnexpectedToken):
        tok = err.token
        what = "unexpected end of file" if tok.type == "$END" else f"unexpected {str(tok)!r}"
        expected = set(err.accepts or err.expected or ())
    else:
        what, expected = "syntax error", set()
    line = getattr(err, "line", None)
    col = getattr(err, "column", None)
    if line is None or line < 1:  # end of file: point past the last character
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    message = what + (f": {label}" if label else "")
    return SpecError(message, Loc(file, line, col), _describe_expected(expected) if expected else None)


def parse_text(text: str, file: str = "<spec>") -> T.File:
    """Parse one spec file's text (no `use` resolution)."""
    try:
        items = _ToTree(file).transform(_parser().parse(text))
    except UnexpectedInput as err:
        raise _syntax_error(err, text, file) from None
    except Exception as err:  # errors raised inside the transformer come wrapped
        inner = getattr(err, "orig_exc", None)
        if isinstance(inner, SpecError):
            raise inner from None
        raise
    uses = tuple(i for i in items if isinstance(i, T.Use))
    layers = tuple(i for i in items if isinstance(i, T.LayerDef))
    nets = tuple(i for i in items if isinstance(i, (T.NetworkDef, T.NetworkAlias)))
    return T.File(file, uses, layers, nets, text)


def parse_expr(text: str, file: str = "<value>") -> T.Expr:
    """Parse a single expression, e.g. a `--set` value."""
    # A tiny wrapper keeps one grammar: the value is parsed as a `let` in an anonymous layer.
    wrapped = "layer _v() { let _v = " + text + "\n}"
    try:
        tree = _ToTree(file).transform(_parser().parse(wrapped))
    except UnexpectedInput as err:
        col = max(1, (getattr(err, "column", 1) or 1) - len("layer _v() { let _v = "))
        raise SpecError(f"cannot read value {text!r}", Loc(file, 1, col),
                        "expected a number, true/false, a \"string\" or a [list]") from None
    return tree[0].body[0].value
