"""Syntax-error diagnostics: what a parse error means in the spec's terms. A lark error is matched
against examples of common mistakes (by parser state), then reported at its place with the tokens that
could have come there and, where a word was misspelt, the word meant."""

from __future__ import annotations

import re
from functools import lru_cache

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import Loc, SpecError, closest
from .grammar import KEYWORDS, TYPES, parser

MAX_NESTING = 64  # brackets, parentheses and braces open at once

TYPE_ALIASES = {"integer": "int", "number": "float", "double": "float", "real": "float", "boolean": "bool",
                "string": "str", "text": "str", "tuple": "list", "array": "list", "sequence": "list",
                "dims": "shape", "size": "shape"}

# Each label is shown when a syntax error lands in the same parser state as one of its examples.
# Earlier labels win when two share a state, so the more specific ones come first.
MISTAKES: dict[str, list[str]] = {
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
    "MUL_OP": "an operator", "COMP_OP": "a comparison", "IF_EXPR": "'if … else'",
}

_VALUE_START = {"INT", "FLOAT", "STRING", "NAME", "LSQB", "LPAR", "MINUS"}  # what may begin a value
_OPERATORS = {"ADD_OP", "MUL_OP", "COMP_OP", "AND", "OR"}  # what may follow a value

# Words of other languages, read as a call of that name: what the spec language writes instead.
_FOREIGN_WORDS = {
    "elif": "`elif` is written `else if`",
    "while": "`while` loops are not part of the language: use `repeat n { ... }` or `for i in range(n) { ... }`",
    "lambda": "`lambda` is not part of the language: name a value with `let`, or a layer with `layer`",
    "is": "`is` is not part of the language: compare with `==`",
    "def": "functions are not part of the language: define a reusable layer with `layer NAME(params) { ... }`",
    "return": "`return` is not part of the language: a layer's output is its last tensor",
}


def nesting_error(text: str, file: str) -> SpecError | None:
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


def _describe_expected(expected: set[str]) -> str:
    shown = sorted({_TOKEN_NAMES.get(e, repr(e.lower()) if e.isupper() else e) for e in expected
                    if not e.startswith("__")})
    if len(shown) > 8:
        shown = shown[:8] + ["…"]
    return "expected " + ", ".join(shown)


def _keywords_in(expected: set[str]) -> list[str]:
    return [e.lower() for e in expected if e.lower() in KEYWORDS]


def _state(err: UnexpectedInput):
    """The LALR state an error happened in. (lark's own `match_examples` also compares the depth of the
    parser's stack, so on its own an example matches only at the same nesting: a mistake in the first
    statement of a body, but not the same mistake in the second.)"""
    st = getattr(err, "state", None)
    return getattr(st, "position", st)


@lru_cache(maxsize=None)
def _example_errors() -> tuple[tuple[str, object, frozenset, str], ...]:
    """(label, state, accepted tokens, offending token type) for every example in `MISTAKES`."""
    found = []
    for label, examples in MISTAKES.items():
        for example in examples:
            try:
                parser().parse(example)
            except UnexpectedToken as e:
                found.append((label, _state(e), frozenset(e.accepts or e.expected or ()), e.token.type))
            except UnexpectedInput as e:
                found.append((label, _state(e), frozenset(getattr(e, "expected", None) or ()), ""))
    return tuple(found)


def match_mistake(err: UnexpectedInput) -> str | None:
    """The `MISTAKES` label of the example that fails like `err`: in the same parser state with the
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


def _position(err: UnexpectedInput) -> int | None:
    if isinstance(err, UnexpectedCharacters):
        return err.pos_in_stream
    tok = getattr(err, "token", None)
    return getattr(tok, "start_pos", None) if tok is not None and tok.type != "$END" else None


def unsupported(err: UnexpectedInput, text: str) -> str | None:
    """What a syntax error stumbles on when it is a construct the language lacks (a comprehension, a
    slice, a conditional without `else`, another language's words): named, with what to write."""
    pos = _position(err)
    if pos is None:
        return None
    ch = text[pos:pos + 1]
    before = text[:pos].rstrip(" \t")
    last = before[-1:]
    tok = getattr(err, "token", None)
    kind = getattr(tok, "type", "")
    expected = set(getattr(err, "accepts", None) or getattr(err, "expected", None) or getattr(err, "allowed", None)
                   or ())
    open_bracket = _innermost_bracket(text, pos)
    if kind == "IF" and ("IF_EXPR" in expected or open_bracket is not None):
        return "a conditional expression needs its `else`, as in `a if c else b`"
    if kind in ("RBRACE", "NAME", "IF", "FOR", "LET", "ASSERT", "REPEAT", "BLOCK") and "LBRACE" in expected \
            and _after_value_if(text, pos):
        return "a conditional expression needs its `else`, as in `let x = a if c else b`"
    if kind in ("ADD_OP", "MUL_OP", "MINUS") and text[tok.end_pos:tok.end_pos + 1] == "=" \
            and "COMP_OP" not in expected:
        return f"`{tok}=` is not part of the language: write `let x = x {tok} ...`"
    word = _foreign_word(text, pos)
    if word is not None:
        return _FOREIGN_WORDS[word]
    if ch == "?":
        return "`c ? a : b` is written `a if c else b`"
    if ch == "&" and text[pos:pos + 2] == "&&":
        return "`&&` is written `and`"
    if ch == "|" and text[pos:pos + 2] == "||":
        return "`||` is written `or`"
    if ch == "!":
        return "`!` is written `not` (and `!=` compares)"
    if ch == "." and text[pos + 1:pos + 2].isdigit() and not last.isalnum():
        return "a number needs a digit before its point, as in 0.5"
    if ch == ".":
        return "attributes (`x.y`) are not part of the language: a value is a number, bool, string or list"
    if kind == "FOR" and open_bracket == "[":
        return "list comprehensions are not part of the language: write the list out, or loop with `for` " \
               "over statements"
    if kind == "COLON" and open_bracket == "[":
        return "slices (`xs[a:b]`) are not part of the language: index one item at a time, as in `xs[0]`"
    if kind == "COLON" and "LBRACE" in expected:
        return "a body goes in braces, `{ ... }`, not after ':'"
    if kind == "COMMA" and open_bracket == "(" and expected <= {"RPAR"} | _OPERATORS | {"LSQB", "IF_EXPR"}:
        return "tuples are not part of the language: use a [list]"
    if kind == "IN" and expected & _OPERATORS:
        return "membership tests (`x in xs`) are not part of the language"
    if kind == "NOT" and expected & _OPERATORS:
        return "`not in` is not part of the language"
    if kind == "COMP_OP" and "COMP_OP" not in expected and expected & _OPERATORS:
        return "comparisons do not chain: write `a < b and b < c`"
    if kind == "LBRACE" and expected & _VALUE_START and last in ("=", "(", "[", ","):
        return "dicts and sets are not part of the language: use a [list]"
    if kind == "ADD_OP" and str(tok) == "+" and expected & _VALUE_START:
        return "a value cannot start with '+': drop it"
    return None


def _foreign_word(text: str, pos: int) -> str | None:
    """The last word of `_FOREIGN_WORDS` on the line before `pos`, outside strings and comments."""
    line = text[text.rfind("\n", 0, pos) + 1:pos]
    line = re.sub(r'"[^"]*"', '""', line).split("#")[0]
    words = [w for w in re.findall(r"[A-Za-z_]\w*", line) if w in _FOREIGN_WORDS]
    return words[-1] if words else None


def _innermost_bracket(text: str, pos: int) -> str | None:
    """The bracket, '(' or '[', still open at `pos` inside the current statement (strings and comments
    skipped); None outside any, or when a brace is nearer."""
    stack: list[str] = []
    i = 0
    while i < pos:
        ch = text[i]
        if ch == "#":
            i = text.find("\n", i)
            i = pos if i < 0 else i
            continue
        if ch == '"':
            j = text.find('"', i + 1)
            i = pos if j < 0 else j + 1
            continue
        if ch in "([{":
            stack.append(ch)
        elif ch in ")]}" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack and stack[-1] != "{" else None


def _after_value_if(text: str, pos: int) -> bool:
    """Whether the statement `if` the parser is in follows a `let` or `assert`'s value on its own line:
    `let x = a if c` missing its `else`, read as an `if` statement after `let x = a`."""
    found = list(re.finditer(r"\bif\b", text[:pos]))
    if not found:
        return False
    at = found[-1].start()
    line = text[text.rfind("\n", 0, at) + 1:at]
    return re.match(r"\s*(let\s+[A-Za-z_]\w*\s*=|assert\b)\s*\S", line) is not None


def syntax_error(err: UnexpectedInput, text: str, file: str) -> SpecError:
    try:  # a construct the language lacks, named, before any guess at a missing bracket
        named = unsupported(err, text)
    except Exception:  # a misread construct must never hide the real error
        named = None
    label = named
    if label is None and not isinstance(err, UnexpectedCharacters):
        try:  # lark's matcher first (it needs the example at the same parser stack depth) ...
            label = err.match_examples(parser().parse, MISTAKES, use_accepts=True)
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
        if named:
            pass
        elif value in KEYWORDS and "NAME" in expected:
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
