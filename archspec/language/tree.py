"""The abstract syntax of a spec: plain frozen records, each carrying its source location."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..errors import Loc

# ---- expressions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    value: object
    loc: Loc


@dataclass(frozen=True)
class Name:
    id: str
    loc: Loc


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    loc: Loc


@dataclass(frozen=True)
class Index:
    obj: "Expr"
    index: "Expr"
    loc: Loc


@dataclass(frozen=True)
class Func:
    name: str
    args: tuple["Expr", ...]
    kwargs: tuple[tuple[str, "Expr"], ...]
    loc: Loc


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Expr"
    right: "Expr"
    loc: Loc


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "not"
    operand: "Expr"
    loc: Loc


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" or "or"
    items: tuple["Expr", ...]
    loc: Loc


@dataclass(frozen=True)
class Cond:
    """`then if cond else orelse`: only the branch the condition picks is evaluated, so a branch may hold
    what would fail on the other path (`xs[0] if len(xs) > 0 else 1`)."""

    cond: "Expr"
    then: "Expr"
    orelse: "Expr"
    loc: Loc


Expr = Union[Const, Name, ListExpr, Index, Func, BinOp, Unary, BoolOp, Cond]

# ---- statements --------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A primitive op or a layer template applied to the current tensor."""

    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]
    loc: Loc


@dataclass(frozen=True)
class Word:
    """A pattern or merge word with its arguments, e.g. `window(2)`."""

    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]
    loc: Loc


@dataclass(frozen=True)
class Block:
    pattern: Word
    merge: Word | None
    body: tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class Scope:
    kind: str  # stem, transition, head; "group" for bare braces (one layer of a block)
    body: tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class Repeat:
    count: Expr
    body: tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class For:
    var: str
    iterable: Expr
    body: tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class If:
    cond: Expr
    then: tuple["Stmt", ...]
    orelse: tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class Let:
    name: str
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class Assert:
    cond: Expr
    message: Expr | None
    loc: Loc


@dataclass(frozen=True)
class Bind:
    """`-> name`: the current tensor, named for later statements to read."""

    name: str
    loc: Loc


@dataclass(frozen=True)
class Read:
    """`from expr`: the tensor `expr` names becomes the current tensor."""

    value: Expr
    loc: Loc


@dataclass(frozen=True)
class Return:
    """`return expr`: ends a layer template with `expr` as its result (a tensor, or a list of tensors that
    `let ys = template(...)` takes)."""

    value: Expr
    loc: Loc


Stmt = Union[Call, Block, Scope, Repeat, For, If, Let, Assert, Bind, Read, Return]

# ---- definitions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Expr | None
    loc: Loc


@dataclass(frozen=True)
class Use:
    path: str
    loc: Loc


@dataclass(frozen=True)
class LayerDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    loc: Loc


@dataclass(frozen=True)
class PatternDef:
    """`pattern name(params) [merge] { body }`: a connection pattern written in the spec. Its body runs
    once per block, on the block's input, and wires the block's layers with `apply`; `merge` is the
    merge word a block takes when it names none."""

    name: str
    params: tuple[Param, ...]
    merge: str | None
    body: tuple[Stmt, ...]
    loc: Loc


@dataclass(frozen=True)
class NetworkDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    loc: Loc
    recipe: str | None = None  # `recipe "name"`: the training recipe a run takes when it names none


@dataclass(frozen=True)
class NetworkAlias:
    """`network b = a(x=1)`: network `a` with new defaults."""

    name: str
    base: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]
    loc: Loc
    recipe: str | None = None  # its own recipe; None: the recipe of the network it names


@dataclass(frozen=True)
class File:
    path: str
    uses: tuple[Use, ...]
    layers: tuple[LayerDef, ...]
    patterns: tuple[PatternDef, ...]
    networks: tuple[NetworkDef | NetworkAlias, ...]
    text: str = field(repr=False, default="")
