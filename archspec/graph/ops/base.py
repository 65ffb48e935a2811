"""What every op declares, in one class: its arguments and the pure rules for its output shape,
parameter count and multiply-accumulates (used before any tensor exists), and the torch-side hooks the
compiler calls (lowering, standalone constructor text, initialisation, the memory trait) plus how a
drawing shows it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from ..words import Word

if TYPE_CHECKING:
    from torch import nn

Shape = tuple[int, ...]

# What a lowering gives: a module to call, a (function, extra args, kwargs) triple, or None (identity).
Lowered = Any


class ShapeError(ValueError):
    """Inputs whose shapes an op cannot accept; the elaborator adds the spec location."""


class OpArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NoArgs(OpArgs):
    pass


class Op(Word):
    """One kind of graph node. A subclass sets `kind` and `Args` and overrides the rules and hooks it
    needs. Torch-side hooks (`lower`, `source`, `initialise`, `activation`) import torch when called, so
    that parsing and elaboration never load it."""

    kind: ClassVar[str]
    Args: ClassVar[type[OpArgs]] = NoArgs
    arity: ClassVar[tuple[int, int | None]] = (1, 1)  # (min, max) inputs; None = unbounded
    user: ClassVar[bool] = True  # callable from a spec by name
    weighted: ClassVar[bool] = False  # counts towards depth
    # How a function lowering takes several inputs: as arguments, as one list (torch.cat), or folded
    # pairwise through a binary function (a sum of many inputs).
    gather: ClassVar[Literal["args", "list", "pairwise"]] = "args"
    flattens: ClassVar[bool] = False  # an image input is flattened before the module sees it
    # An element-wise activation whose input a memory pass may drop and recompute: `activation()` gives it.
    recomputable: ClassVar[bool] = False
    colour: ClassVar[str] = "#999999"  # its dots in a drawing
    short: ClassVar[str]  # its label in a drawing; the kind unless set

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "kind" in cls.__dict__ and "short" not in cls.__dict__:
            cls.short = cls.kind

    @classmethod
    def shape(cls, ins: list[Shape], a: OpArgs) -> Shape:
        return ins[0]

    @classmethod
    def params(cls, ins: list[Shape], a: OpArgs) -> int:
        return 0

    @classmethod
    def macs(cls, ins: list[Shape], out: Shape, a: OpArgs) -> int:
        return 0

    @classmethod
    def lower(cls, args: OpArgs, ins: list[Shape]) -> Lowered:
        """The torch form of a node with `args` and these input shapes: an `nn.Module`, a `(function, extra_args,
        kwargs)` triple, or None for identity."""
        raise NotImplementedError(f"op '{cls.kind}' has no lowering")

    @classmethod
    def source(cls, module: "nn.Module") -> str:
        """Python text that constructs `module` in a file that imports only torch."""
        raise NotImplementedError(f"op '{cls.kind}' has no constructor text")

    @classmethod
    def initialise(cls, module: "nn.Module", a: OpArgs) -> None:
        """Set `module`'s weights as the papers' code does; called under `torch.no_grad()`. Ops without
        weights keep the default, which does nothing."""

    @classmethod
    def activation(cls) -> tuple[Callable, Callable]:
        """(forward, backward) of a recomputable activation; backward(grad_out, x_in, y_out) → grad_in."""
        raise NotImplementedError(f"op '{cls.kind}' is not a recomputable activation")


OPS: dict[str, type[Op]] = {}

O = TypeVar("O", bound=type[Op])


def register(op: O) -> O:
    """Make `op` a word of the language under its `kind`."""
    if op.kind in OPS:
        raise ValueError(f"op '{op.kind}' is registered twice")
    OPS[op.kind] = op
    return op


def fmt_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def image(shape: Shape, what: str) -> tuple[int, int, int]:
    """`shape` as C×H×W, or a ShapeError naming `what`."""
    if len(shape) != 3:
        raise ShapeError(f"{what} needs a C×H×W input, got {fmt_shape(shape)}")
    return shape  # type: ignore[return-value]


def window(size: int, k: int, s: int, p: int, what: str) -> int:
    """The output size of a sliding window of kernel `k`, stride `s`, padding `p`."""
    out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise ShapeError(f"{what}: kernel {k} with padding {p} does not fit an input of size {size}")
    return out


def same_spatial(ins: list[Shape], what: str) -> None:
    """Every input an image of one spatial size, or a ShapeError."""
    for s in ins:
        image(s, what)
    if len({s[1:] for s in ins}) > 1:
        raise ShapeError(f"{what} needs inputs of one spatial size, got " + ", ".join(fmt_shape(s) for s in ins))
