"""Evaluation of spec expressions. A spec is data: this small interpreter is the only thing that gives
its expressions values, and it knows numbers, booleans, strings, lists and a fixed set of functions."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple

from . import tree as T
from ..errors import Loc, SpecError, did_you_mean

Value = Any  # int | float | bool | str | Tensor | list[Value]


@dataclass(frozen=True)
class Tensor:
    """A tensor of the network being built, as a value: named with `-> a`, read with `from a`, passed to
    templates, kept in lists and merged. `node` is the graph node that makes it; `shape` its shape."""

    node: str
    shape: tuple[int, ...]

MAX_INT = 2**63 - 1  # the largest integer a spec may compute
MAX_LIST = 1_000_000  # the longest list a spec may build
MAX_VALUES = 5_000_000  # list items and copied names a spec may make in all (each list is also capped)
MAX_SECONDS = 30.0  # the CPU time one elaboration may take (of its own thread: a loaded machine does not count)
MAX_COMPARE = 1_000_000  # list items one `==` may compare


class Budget:
    """What one elaboration may spend in all: values made (list items, names copied into scopes) and
    CPU time of the thread that elaborates (`time.thread_time`), so that other processes and threads
    competing for the machine never make a spec too slow. Per-list caps alone let many lists, or one
    loop, take gigabytes or minutes."""

    def __init__(self, values: int | None = None, seconds: float | None = None):
        self.left = MAX_VALUES if values is None else values
        self.limit = self.left
        self.seconds = MAX_SECONDS if seconds is None else seconds
        self.deadline = time.thread_time() + self.seconds

    def charge(self, n: int, loc: Loc | None) -> None:
        """Take `n` values from the budget before they are made; an error at `loc` when it is spent."""
        self.left -= n
        if self.left < 0:
            raise SpecError(f"the spec makes more than {self.limit:,} values in all (list items and names)",
                            loc, "is a range or a loop far too large?")

    def clock(self, loc: Loc | None) -> None:
        """An error at `loc` once this thread has spent the budget's CPU seconds since it was made."""
        if time.thread_time() > self.deadline:
            raise SpecError(f"the spec takes more than {self.seconds:g} seconds to elaborate (CPU time)", loc,
                            "is a loop or a repeat count far too large?")


_BUDGET: ContextVar[Budget | None] = ContextVar("archspec_budget", default=None)


@contextmanager
def budget(b: Budget) -> Iterator[Budget]:
    """Charge every value evaluated inside the `with` to `b`."""
    token = _BUDGET.set(b)
    try:
        yield b
    finally:
        _BUDGET.reset(token)


def charge(n: int, loc: Loc | None) -> None:
    """Charge `n` values to the current budget (none outside an elaboration: each list is still capped)."""
    b = _BUDGET.get()
    if b is not None:
        b.charge(n, loc)


def type_name(v: Value) -> str:
    if isinstance(v, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", list: "list", tuple: "list", Tensor: "tensor"}.get(
        type(v), type(v).__name__)


def _num(v: Value, loc: Loc, what: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(f"{what} needs a number, got {describe(v)}", loc)
    return v


def _int(v: Value, loc: Loc, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{what} needs an int, got {describe(v)}", loc)
    return v


def checked(v: Value, loc: Loc | None) -> Value:
    """`v`, when it is a number a spec can use: finite and not absurdly large."""
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError("the result is not a finite number" if math.isnan(v) else "the result is too large", loc)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
        raise SpecError(f"the result is too large (the largest int is {MAX_INT})", loc)
    return v


def _list(v: list, loc: Loc | None) -> list:
    if len(v) > MAX_LIST:
        raise SpecError(f"a list of {len(v):,} items is too long (at most {MAX_LIST:,})", loc)
    return v


def _equal(a: Value, b: Value, loc: Loc) -> bool:
    """`a == b` as Python compares them, but item by item with a bound: lists nested by `let` can share
    parts, and comparing two such lists built apart would take exponential time."""
    todo, seen = [(a, b)], 0
    while todo:
        x, y = todo.pop()
        if x is y:
            continue
        if isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            seen += len(x)
            if seen > MAX_COMPARE:
                raise SpecError(f"comparing these lists takes more than {MAX_COMPARE:,} steps", loc)
            todo.extend(zip(reversed(x), reversed(y)))
        elif isinstance(x, list) or isinstance(y, list) or x != y:
            return False
    return True


def render(v: Value, limit: int = 60) -> str:
    """`v` as spec text, cut short (with '…') beyond about `limit` characters."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"' if len(v) <= limit else f'"{v[:limit]}…"'
    if isinstance(v, Tensor):
        return "×".join(map(str, v.shape))
    if isinstance(v, (list, tuple)):
        parts, size = [], 1
        for x in v:
            if size > limit:
                parts.append("…")
                break
            r = render(x, max(8, limit - size))
            parts.append(r)
            size += len(r) + 2
        return "[" + ", ".join(parts) + "]"
    return repr(v)


def describe(v: Value) -> str:
    """`v` with its type, for messages: `float 2.5`, `list [1, 2]`."""
    return f"{type_name(v)} {render(v)}"


def _range(loc: Loc, *a: Value) -> list[int]:
    if not 1 <= len(a) <= 3:
        raise SpecError(f"range takes 1 to 3 ints (stop; start, stop; start, stop, step), got {len(a)}", loc)
    ints = [_int(x, loc, "range") for x in a]
    if len(ints) == 3 and ints[2] == 0:
        raise SpecError("range: the step must not be zero", loc)
    r = range(*ints)
    if len(r) > MAX_LIST:
        raise SpecError(f"range of {len(r):,} items is too long (at most {MAX_LIST:,})", loc)
    charge(len(r), loc)
    return list(r)


def _round(loc: Loc, x: Value, nd: Value = None) -> int | float:
    x = _num(x, loc, "round")
    if nd is None:
        return round(x)
    nd = _int(nd, loc, "round's second argument")
    return round(x, max(-400, min(400, nd)))


def _len(loc: Loc, x: Value) -> int:
    if not isinstance(x, (list, str)):
        raise SpecError(f"len needs a list, got {describe(x)}", loc)
    return len(x)


def _minmax(fn: Callable) -> Callable:
    def f(loc: Loc, *a: Value):
        items = a[0] if len(a) == 1 and isinstance(a[0], list) else list(a)
        if not items:
            raise SpecError(f"{fn.__name__} needs at least one number", loc)
        return fn(_num(x, loc, fn.__name__) for x in items)
    return f


def _sum(loc: Loc, xs: Value) -> int | float:
    if not isinstance(xs, list):
        raise SpecError(f"sum needs a list, got {describe(xs)}", loc)
    return sum(_num(x, loc, "sum") for x in xs)


def _pow(loc: Loc, x: Value, y: Value) -> int | float:
    """`x ** y`, refused before it is computed when an int result would pass `MAX_INT`."""
    x, y = _num(x, loc, "'**'"), _num(y, loc, "'**'")
    if x == 0 and y < 0:
        raise SpecError("0 cannot be raised to a negative power", loc)
    if isinstance(x, int) and isinstance(y, int) and y >= 0 and abs(x) > 1 and y * math.log2(abs(x)) > 64:
        raise SpecError(f"the result is too large (the largest int is {MAX_INT})", loc)
    if isinstance(x, int) and isinstance(y, int) and y < 0:
        return float(x) ** y
    try:
        result = x ** y
    except (OverflowError, ZeroDivisionError):
        raise SpecError("the result is too large", loc) from None
    if isinstance(result, complex):
        raise SpecError(f"{render(x)} ** {render(y)} is not a real number", loc)
    return result


def _log(loc: Loc, x: Value, base: Value = None) -> float:
    x = _num(x, loc, "log")
    if x <= 0:
        raise SpecError(f"log needs a positive number, got {render(x)}", loc)
    if base is None:
        return math.log(x)
    base = _num(base, loc, "log's base")
    if base <= 0 or base == 1:
        raise SpecError(f"log's base must be positive and not 1, got {render(base)}", loc)
    return math.log(x, base)


def _dim(i: int, name: str) -> Callable[[Loc, Value], int]:
    def dim(loc: Loc, t: Value) -> int:
        if not isinstance(t, Tensor):
            raise SpecError(f"{name} needs a tensor, as in {name}(a) after `-> a`, got {describe(t)}", loc,
                            f"the current tensor's {name} is the name `{name}`, without parentheses")
        if i >= len(t.shape):
            return 1
        return t.shape[i]
    return dim


class Function(NamedTuple):
    """A function of the language: how it computes (given the call's location first), and its arity."""

    compute: Callable[..., Value]
    fewest: int  # arguments
    most: int | None  # None: any number
    usage: str  # how it is called, for messages


FUNCTIONS: dict[str, Function] = {
    "range": Function(_range, 1, 3, "range(stop) or range(start, stop, step)"),
    "round": Function(_round, 1, 2, "round(x) or round(x, digits)"),
    "floor": Function(lambda loc, x: math.floor(_num(x, loc, "floor")), 1, 1, "floor(x)"),
    "ceil": Function(lambda loc, x: math.ceil(_num(x, loc, "ceil")), 1, 1, "ceil(x)"),
    "int": Function(lambda loc, x: int(_num(x, loc, "int")), 1, 1, "int(x)"),
    "float": Function(lambda loc, x: float(_num(x, loc, "float")), 1, 1, "float(x)"),
    "abs": Function(lambda loc, x: abs(_num(x, loc, "abs")), 1, 1, "abs(x)"),
    "min": Function(_minmax(min), 1, None, "min(a, b, ...) or min(list)"),
    "max": Function(_minmax(max), 1, None, "max(a, b, ...) or max(list)"),
    "sum": Function(_sum, 1, 1, "sum(list)"),
    "len": Function(_len, 1, 1, "len(list)"),
    "pow": Function(_pow, 2, 2, "pow(x, y)"),
    "log": Function(_log, 1, 2, "log(x) or log(x, base)"),
    "log2": Function(lambda loc, x: _log(loc, x, 2), 1, 1, "log2(x)"),
    "channels": Function(_dim(0, "channels"), 1, 1, "channels(a)"),
    "height": Function(_dim(1, "height"), 1, 1, "height(a)"),
    "width": Function(_dim(2, "width"), 1, 1, "width(a)"),
}

# Names from other languages that mean one of ours.
FUNCTION_ALIASES = {"length": "len", "size": "len", "count": "len", "trunc": "int", "ceiling": "ceil",
                    "absolute": "abs", "minimum": "min", "maximum": "max", "total": "sum", "integer": "int"}
NAME_ALIASES = {"inchannels": "channels", "inputchannels": "channels", "channel": "channels",
                "chans": "channels", "h": "height", "w": "width"}


class Env(dict):
    """A layer template's names. It remembers the names of the code that called it: a template sees only
    its own parameters and lets, so a name from outside gets a hint rather than a value."""

    def __init__(self, *args, outside: Mapping[str, Value] | None = None, where: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.outside = outside if outside is not None else {}
        self.where = where

    def copy(self) -> "Env":
        return Env(self, outside=self.outside, where=self.where)


def _binop(op: str, a: Value, b: Value, loc: Loc) -> Value:
    if op == "+" and isinstance(a, list) and isinstance(b, list):
        if len(a) + len(b) > MAX_LIST:
            raise SpecError(f"a list of {len(a) + len(b):,} items is too long (at most {MAX_LIST:,})", loc)
        charge(len(a) + len(b), loc)
        return a + b
    if op == "*" and isinstance(a, list) and isinstance(b, int) and not isinstance(b, bool):
        if len(a) * max(b, 0) > MAX_LIST:
            raise SpecError(f"a list of {len(a) * b:,} items is too long (at most {MAX_LIST:,})", loc)
        charge(len(a) * max(b, 0), loc)
        return a * b
    if op == "*" and isinstance(b, list) and isinstance(a, int) and not isinstance(a, bool):
        return _binop(op, b, a, loc)
    if op in ("==", "!="):
        return (type_name(a) == type_name(b) and _equal(a, b, loc)) == (op == "==")
    if op == "**":
        return checked(_pow(loc, a, b), loc)
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        raise SpecError("strings cannot be joined with '+'", loc)
    x, y = _num(a, loc, f"'{op}'"), _num(b, loc, f"'{op}'")
    if op in ("/", "//", "%") and y == 0:
        raise SpecError("division by zero", loc)
    try:
        result = {
            "+": lambda: x + y, "-": lambda: x - y, "*": lambda: x * y, "/": lambda: x / y,
            "//": lambda: x // y, "%": lambda: x % y, "<": lambda: x < y, "<=": lambda: x <= y,
            ">": lambda: x > y, ">=": lambda: x >= y,
        }[op]()
    except OverflowError:
        raise SpecError("the result is too large", loc) from None
    return checked(result, loc)


def _unknown_name(e: T.Name, env: Mapping[str, Value], dynamic: Mapping | None) -> SpecError:
    if e.id in FUNCTIONS:
        return SpecError(f"'{e.id}' is a function: call it, as in {FUNCTIONS[e.id].usage}", e.loc)
    if isinstance(env, Env) and e.id in env.outside:
        return SpecError(f"unknown name '{e.id}' in {env.where}", e.loc,
                         f"'{e.id}' is defined where the layer is used, but a layer template sees only its own "
                         "parameters and lets: pass the value as an argument")
    known = list(env) + list(dynamic or ())
    hint = did_you_mean(e.id, known, NAME_ALIASES)
    if hint is None:
        names = sorted(n for n in known if not n.startswith("_"))
        quoted = f'a word meant as text is written in quotes: "{e.id}"'
        hint = f"names here: {', '.join(names)}; {quoted}" if names and len(names) <= 12 else quoted
    return SpecError(f"unknown name '{e.id}'", e.loc, hint)


def evaluate(e: T.Expr, env: Mapping[str, Value], dynamic: Mapping[str, Callable[[], Value]] | None = None) -> Value:
    """The value of `e`. `env` holds parameters and lets; `dynamic` holds names whose value depends on
    where elaboration stands (e.g. `channels`, the width of the current tensor)."""
    ev = lambda x: evaluate(x, env, dynamic)  # noqa: E731
    if isinstance(e, T.Const):
        return e.value
    if isinstance(e, T.Name):
        if e.id in env:
            return env[e.id]
        if dynamic and e.id in dynamic:
            return dynamic[e.id]()
        raise _unknown_name(e, env, dynamic)
    if isinstance(e, T.ListExpr):
        charge(len(e.items), e.loc)
        return [ev(x) for x in e.items]
    if isinstance(e, T.Index):
        obj, idx = ev(e.obj), ev(e.index)
        if not isinstance(obj, list):
            raise SpecError(f"only a list can be indexed, not {describe(obj)}", e.obj.loc)
        i = _int(idx, e.index.loc, "an index")
        if not -len(obj) <= i < len(obj):
            raise SpecError(f"index {i} is out of range for a list of length {len(obj)}", e.index.loc,
                            f"valid indices: 0 to {len(obj) - 1}" if obj else "the list is empty")
        return obj[i]
    if isinstance(e, T.Func):
        fn = FUNCTIONS.get(e.name)
        name_loc = e.loc.span(len(e.name))
        if fn is None:
            raise SpecError(f"unknown function '{e.name}'", name_loc,
                            did_you_mean(e.name, FUNCTIONS, FUNCTION_ALIASES)
                            or f"functions: {', '.join(FUNCTIONS)}")
        if e.kwargs:
            k, v = e.kwargs[0]
            raise SpecError(f"{e.name} takes no named arguments", getattr(k, "loc", None) or v.loc,
                            f"call it as {fn.usage}")
        lo, hi, usage = fn.fewest, fn.most, fn.usage
        if len(e.args) < lo or (hi is not None and len(e.args) > hi):
            n = len(e.args)
            count = str(lo) if lo == hi else f"{lo} to {hi}" if hi else f"at least {lo}"
            raise SpecError(f"{e.name} takes {count} argument{'' if count.endswith(' 1') or count == '1' else 's'}"
                            f", got {n}",
                            e.args[hi].loc if hi is not None and n > hi else e.loc, f"call it as {usage}")
        args = [ev(a) for a in e.args]
        try:
            result = fn.compute(e.loc, *args)
        except (OverflowError, ValueError):
            raise SpecError(f"{e.name} of {', '.join(render(a) for a in args)} has no value a spec can use",
                            e.loc) from None
        return _list(result, e.loc) if isinstance(result, list) else checked(result, e.loc)
    if isinstance(e, T.BinOp):
        return _binop(e.op, ev(e.left), ev(e.right), e.loc)
    if isinstance(e, T.Unary):
        v = ev(e.operand)
        if e.op == "not":
            return not truth(v, e.operand.loc)
        return -_num(v, e.loc, "'-'")
    if isinstance(e, T.Cond):
        return ev(e.then) if truth(ev(e.cond), e.cond.loc) else ev(e.orelse)
    if isinstance(e, T.BoolOp):
        for item in e.items:
            v = truth(ev(item), item.loc)
            if v == (e.op == "or"):
                return v
        return e.op == "and"
    raise SpecError(f"cannot evaluate {type(e).__name__}", getattr(e, "loc", None))


def truth(v: Value, loc: Loc) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"a condition must be true or false, got {describe(v)}", loc,
                        "compare it, as in `x > 0` or `x == 1`" if isinstance(v, (int, float)) else None)
    return v


def coerce(v: Value, type_: str, loc: Loc, what: str) -> Value:
    """Check `v` against a declared parameter type (int → float is the only conversion)."""
    if type_ == "float" and type_name(v) == "int":
        return float(v)
    if type_ == "size":  # a kernel, stride or padding: one int for every dimension, or one per dimension
        if not (type_name(v) == "int" and v >= 0 or isinstance(v, list) and v
                and all(type_name(x) == "int" and x >= 0 for x in v)):
            raise SpecError(f"{what} must be a size (an int, or a list of ints such as [1, 7]), got {describe(v)}",
                            loc)
        return v
    if type_ == "shape":
        if not (isinstance(v, list) and v and all(type_name(x) == "int" and x > 0 for x in v)):
            raise SpecError(f"{what} must be a shape (a list of positive ints), got {describe(v)}", loc)
        return v
    if type_name(v) != type_:
        article = "an" if type_[0] in "aeiou" else "a"
        raise SpecError(f"{what} must be {article} {type_}, got {describe(v)}", loc)
    return v
