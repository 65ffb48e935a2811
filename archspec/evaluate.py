"""Evaluation of spec expressions. A spec is data: this small interpreter is the only thing that gives
its expressions values, and it knows numbers, booleans, strings, lists and a fixed set of functions."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from . import tree as T
from .errors import Loc, SpecError, did_you_mean

Value = Any  # int | float | bool | str | list[Value]


def type_name(v: Value) -> str:
    if isinstance(v, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", list: "list"}.get(type(v), type(v).__name__)


def _num(v: Value, loc: Loc, what: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(f"{what} needs a number, got {type_name(v)} {render(v)}", loc)
    return v


def _int(v: Value, loc: Loc, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{what} needs an int, got {type_name(v)} {render(v)}", loc)
    return v


def render(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(render(x) for x in v) + "]"
    return repr(v)


def _range(loc: Loc, *a: Value) -> list[int]:
    if not 1 <= len(a) <= 3:
        raise SpecError("range takes 1 to 3 ints", loc)
    return list(range(*[_int(x, loc, "range") for x in a]))


def _round(loc: Loc, x: Value, nd: Value = None) -> int | float:
    x = _num(x, loc, "round")
    return round(x) if nd is None else round(x, _int(nd, loc, "round"))


def _len(loc: Loc, x: Value) -> int:
    if not isinstance(x, (list, str)):
        raise SpecError(f"len needs a list, got {type_name(x)}", loc)
    return len(x)


def _minmax(fn: Callable) -> Callable:
    def f(loc: Loc, *a: Value):
        items = a[0] if len(a) == 1 and isinstance(a[0], list) else list(a)
        if not items:
            raise SpecError(f"{fn.__name__} of nothing", loc)
        return fn(_num(x, loc, fn.__name__) for x in items)
    return f


def _sum(loc: Loc, xs: Value) -> int | float:
    if not isinstance(xs, list):
        raise SpecError(f"sum needs a list, got {type_name(xs)}", loc)
    return sum(_num(x, loc, "sum") for x in xs)


FUNCTIONS: dict[str, Callable[..., Value]] = {
    "range": _range,
    "round": _round,
    "floor": lambda loc, x: math.floor(_num(x, loc, "floor")),
    "ceil": lambda loc, x: math.ceil(_num(x, loc, "ceil")),
    "int": lambda loc, x: int(_num(x, loc, "int")),
    "float": lambda loc, x: float(_num(x, loc, "float")),
    "abs": lambda loc, x: abs(_num(x, loc, "abs")),
    "min": _minmax(min),
    "max": _minmax(max),
    "sum": _sum,
    "len": _len,
}


def _binop(op: str, a: Value, b: Value, loc: Loc) -> Value:
    if op == "+" and isinstance(a, list) and isinstance(b, list):
        return a + b
    if op == "*" and isinstance(a, list) and isinstance(b, int) and not isinstance(b, bool):
        return a * b
    if op in ("==", "!="):
        return (a == b and type_name(a) == type_name(b)) == (op == "==")
    x, y = _num(a, loc, f"'{op}'"), _num(b, loc, f"'{op}'")
    if op in ("/", "//", "%") and y == 0:
        raise SpecError("division by zero", loc)
    return {
        "+": lambda: x + y, "-": lambda: x - y, "*": lambda: x * y, "/": lambda: x / y,
        "//": lambda: x // y, "%": lambda: x % y, "<": lambda: x < y, "<=": lambda: x <= y,
        ">": lambda: x > y, ">=": lambda: x >= y,
    }[op]()


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
        raise SpecError(f"unknown name '{e.id}'", e.loc,
                        did_you_mean(e.id, list(env) + list(dynamic or ())))
    if isinstance(e, T.ListExpr):
        return [ev(x) for x in e.items]
    if isinstance(e, T.Index):
        obj, idx = ev(e.obj), ev(e.index)
        if not isinstance(obj, list):
            raise SpecError(f"only a list can be indexed, not {type_name(obj)}", e.loc)
        i = _int(idx, e.index.loc, "an index")
        if not -len(obj) <= i < len(obj):
            raise SpecError(f"index {i} is out of range for a list of length {len(obj)}", e.index.loc)
        return obj[i]
    if isinstance(e, T.Func):
        fn = FUNCTIONS.get(e.name)
        if fn is None:
            raise SpecError(f"unknown function '{e.name}'", e.loc, did_you_mean(e.name, FUNCTIONS))
        if e.kwargs:
            raise SpecError(f"{e.name} takes no named arguments", e.loc)
        try:
            return fn(e.loc, *[ev(a) for a in e.args])
        except TypeError:
            raise SpecError(f"wrong number of arguments to {e.name}", e.loc) from None
    if isinstance(e, T.BinOp):
        return _binop(e.op, ev(e.left), ev(e.right), e.loc)
    if isinstance(e, T.Unary):
        v = ev(e.operand)
        if e.op == "not":
            return not truth(v, e.operand.loc)
        return -_num(v, e.loc, "'-'")
    if isinstance(e, T.BoolOp):
        for item in e.items:
            v = truth(ev(item), item.loc)
            if v == (e.op == "or"):
                return v
        return e.op == "and"
    raise SpecError(f"cannot evaluate {type(e).__name__}", getattr(e, "loc", None))


def truth(v: Value, loc: Loc) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"a condition must be true or false, got {type_name(v)} {render(v)}", loc)
    return v


def coerce(v: Value, type_: str, loc: Loc, what: str) -> Value:
    """Check `v` against a declared parameter type (int → float is the only conversion)."""
    if type_ == "float" and type_name(v) == "int":
        return float(v)
    if type_ == "shape":
        if not (isinstance(v, list) and v and all(type_name(x) == "int" and x > 0 for x in v)):
            raise SpecError(f"{what} must be a shape (a list of positive ints), got {render(v)}", loc)
        return v
    if type_name(v) != type_:
        raise SpecError(f"{what} must be {type_}, got {type_name(v)} {render(v)}", loc)
    return v
