"""A call's arguments checked against a word's argument model (a pydantic model per op, pattern and
merge), with pydantic's complaints put in the words of the spec language and pointed at the argument
that caused them."""

from __future__ import annotations

from typing import Mapping, Sequence

from pydantic import ValidationError

from ..language import tree as T
from ..errors import Loc, SpecError, did_you_mean, loc_of
from ..language.evaluate import Value, describe
from .ops import OpArgs


def plural(n: int, word: str) -> str:
    """`1 argument`, `2 arguments`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _explain(e: dict) -> str:
    """A pydantic validation error in the words of the spec language."""
    kind, ctx = e["type"], e.get("ctx") or {}
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be an int"
    if kind in ("float_type", "float_parsing"):
        return "must be a number"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind in ("tuple_type", "list_type"):
        return "must be a list"
    if kind == "string_type":
        return "must be a \"string\""
    if kind == "greater_than":
        return "must be positive" if ctx.get("gt") == 0 else f"must be greater than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return "must not be negative" if ctx.get("ge") == 0 else f"must be at least {ctx.get('ge')}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "literal_error":
        return "must be one of " + ctx.get("expected", "").replace(" or ", ", ")
    msg = str(e.get("msg", "is not valid"))
    return msg[:1].lower() + msg[1:]


def _arg_error(kind: str, err: ValidationError, Args: type[OpArgs], loc: Loc,
               arg_locs: Mapping[str, Loc]) -> SpecError:
    e = err.errors()[0]
    path = e["loc"] or ()
    field = str(path[0]) if path else ""
    where = arg_locs.get(field, loc)
    fields = Args.names()
    if e["type"] == "extra_forbidden":
        return SpecError(f"{kind} has no argument '{field}'", where,
                         did_you_mean(field, fields) or (f"its arguments: {', '.join(fields)}" if fields
                                                         else f"{kind} takes no arguments"))
    if e["type"] == "missing":
        return SpecError(f"{kind} needs argument '{field}'", loc,
                         f"its arguments, in order: {', '.join(fields)}")
    got = e.get("input")
    if isinstance(got, tuple):
        got = list(got)
    what = f"argument '{field}'"
    if len(path) > 1 and isinstance(path[1], int):  # an item of a list argument
        what = f"item {path[1]} of argument '{field}'"
    shown = describe(got) if isinstance(got, (int, float, str, bool, list)) else repr(got)
    return SpecError(f"{kind}: {what} {_explain(e)}, got {shown}", where)


def make_args(kind: str, Args: type[OpArgs], pos: Sequence[Value], kw: Mapping[str, Value], loc: Loc,
              pos_locs: Sequence[Loc] = (), kw_locs: Mapping[str, Loc] | None = None) -> OpArgs:
    """Validate a call's arguments against an op's (or pattern's) argument model. `pos_locs` and
    `kw_locs` say where each argument was written, so that a bad one is pointed at."""
    fields = Args.names()
    kw_locs = dict(kw_locs or {})
    if len(pos) > len(fields):
        where = pos_locs[len(fields)] if len(pos_locs) > len(fields) else loc
        if not fields:
            raise SpecError(f"{kind} takes no arguments, got {len(pos)}", where)
        raise SpecError(f"{kind} takes at most {plural(len(fields), 'argument')} ({', '.join(fields)}), "
                        f"got {len(pos)}", where)
    data = dict(zip(fields, pos))
    arg_locs = dict(zip(fields, pos_locs))
    for k, v in kw.items():
        k = str(k)
        if k in data:
            raise SpecError(f"{kind}: argument '{k}' is given twice (by position and by name)",
                            kw_locs.get(k, loc))
        data[k] = v
        if k in kw_locs:
            arg_locs[k] = kw_locs[k]
    try:
        return Args.model_validate({k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except ValidationError as err:
        raise _arg_error(kind, err, Args, loc, arg_locs) from None


def arg_locs(args: Sequence[T.Expr], kwargs: Sequence[tuple[str, T.Expr]]) -> tuple[list[Loc], dict[str, Loc]]:
    """Where each argument was written: a named one from its name to the end of its value."""
    named = {}
    for k, v in kwargs:
        k_loc = loc_of(k, None)
        named[str(k)] = k_loc.to(v.loc) if k_loc else v.loc
    return [a.loc for a in args], named
