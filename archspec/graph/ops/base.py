"""What every op declares, in one class: its arguments and the pure rules for its output shape,
parameter count and multiply-accumulates (used before any tensor exists), and the torch-side hooks the
compiler calls (lowering, standalone constructor text, initialisation, the memory trait) plus how a
drawing shows it. A lowering names torch code by dotted path (`Build`, `Call`), which the compiler
looks up when it builds the module, so that this layer never imports torch or the compiler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Literal, Mapping, TypeVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from ..words import Word

if TYPE_CHECKING:
    from torch import nn

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Build:
    """A lowering to a module: the class at the dotted `path` (`"torch.nn.Conv2d"`,
    `"archspec.compiler.modules.Scale"`) called with `args` and `kwargs`, when the compiler builds it."""

    path: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """A lowering to a function: the function at the dotted `path` (`"torch.cat"`, `"operator.add"`) applied
    to the node's inputs (gathered as the op's `gather` says), then `extra`, with `kwargs`."""

    path: str
    extra: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, i: int) -> Any:
        return tuple(self)[i]


# What a lowering gives: a `Build` or a `Call`, None (identity), or, from an op of a plugin that imports
# torch itself, an `nn.Module` or a (function, extra args, kwargs) triple.
Lowered = Any


class ShapeError(ValueError):
    """Inputs whose shapes an op cannot accept; the elaborator adds the spec location."""


class OpArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    trailing: ClassVar[tuple[str, ...]] = ()  # fields a shared base adds: after the op's own, by position

    @classmethod
    def names(cls) -> list[str]:
        """The arguments in the order a call gives them by position: the op's own, then `trailing`."""
        fields = list(cls.model_fields)
        return [f for f in fields if f not in cls.trailing] + [f for f in fields if f in cls.trailing]


class NoArgs(OpArgs):
    pass


@dataclass(frozen=True)
class Saves:
    """What autograd keeps of one op's tensors for backward, for the memory estimate made before any
    tensor exists (the reading of PyTorch's derivative formula for the op's lowering). The default, its
    inputs and its output, over-estimates any op."""

    inputs: bool = True
    output: bool = True
    stats: bool = False  # a float32 mean and inverse deviation per input channel (batch norms)
    extra: int = 0  # bytes per output element besides its tensors (max pooling's int64 indices)
    mask: Literal["", "activation", "channel"] = ""  # dropout's mask: output-sized, or one per channel
    view: bool = False  # the output shares its input's memory
    temporary: bool = False  # the lowering makes an output-sized partial result


class Op(Word):
    """One kind of graph node. A subclass sets `kind` and `Args` and overrides the rules and hooks it
    needs. The torch-side hooks never import torch: `lower` names torch code by dotted path for the
    compiler to import, `source` and `initialise` are given a module the compiler built, and `activation`
    looks its functions up when called, so that parsing and elaboration never load torch."""

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
    saves: ClassVar[Saves] = Saves()  # what backward keeps: the memory estimate reads it
    keeps_channels: ClassVar[bool] = False  # channel i stays channel i (reading connection strengths)
    # The weight scheme `init="default"` stands for, where Args are `weight_init.InitArgs`: the compiler then
    # draws the weight and bias by the arguments' `init` and `bias_init`, and `initialise` is not called.
    default_init: ClassVar[str | None] = None
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
        """The torch form of a node with `args` and these input shapes: a `Build` (a module), a `Call` (a
        function), or None for identity; a plugin may also return an `nn.Module` or a `(function,
        extra_args, kwargs)` triple."""
        raise NotImplementedError(f"op '{cls.kind}' has no lowering")

    @classmethod
    def source(cls, module: "nn.Module") -> str:
        """Python text that constructs `module` in a file that imports only torch."""
        raise NotImplementedError(f"op '{cls.kind}' has no constructor text")

    @classmethod
    def initialise(cls, module: "nn.Module", a: OpArgs) -> None:
        """Set `module`'s weights as the papers' code does; called under `torch.no_grad()`. Ops without
        weights keep the default, which does nothing."""


OPS: dict[str, type[Op]] = {}

O = TypeVar("O", bound=type[Op])


def register(op: O) -> O:
    """Make `op` a word of the language under its `kind`."""
    if not (isinstance(op, type) and issubclass(op, Op)):
        raise TypeError(f"only a subclass of Op can be registered as an op, not {op!r}")
    kind = getattr(op, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"op class {_origin(op)} has no `kind` (the word a spec calls it by)")
    if kind in OPS:
        raise ValueError(f"op '{kind}' is registered twice: by {_origin(OPS[kind])} and by {_origin(op)}")
    OPS[kind] = op
    return op


def unregister(kind: str) -> type[Op]:
    """Remove the op registered under `kind` (a plugin's, when it is unloaded); returns its class."""
    if kind not in OPS:
        raise KeyError(f"no op '{kind}' is registered")
    return OPS.pop(kind)


def _origin(op: type) -> str:
    return f"{op.__module__}.{op.__qualname__}"


def fmt_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def image(shape: Shape, what: str) -> tuple[int, int, int]:
    """`shape` as C×H×W, or a ShapeError naming `what`."""
    if len(shape) != 3:
        raise ShapeError(f"{what} needs a C×H×W input, got {fmt_shape(shape)}")
    return shape  # type: ignore[return-value]


def _int_or_pair(least: int) -> Callable[[object], object]:
    def check(v: object) -> object:
        items = v if isinstance(v, tuple) and len(v) == 2 else (v,)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            raise PydanticCustomError("size", "must be an int or a list of two ints [height, width]")
        if any(i < least for i in items):
            raise PydanticCustomError("size", "must be positive" if least else "must not be negative")
        return v
    return check


# A window's side, or [height, width] for a rectangle (a 1×7 convolution): `pair` reads either.
Side = Annotated[Union[int, tuple[int, int]], BeforeValidator(_int_or_pair(1))]
Margin = Annotated[Union[int, tuple[int, int]], BeforeValidator(_int_or_pair(0))]


def pair(v: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a `Side` or `Margin`."""
    return (v, v) if isinstance(v, int) else v


def show(v: int | tuple[int, int]) -> str:
    """A `Side` or `Margin` as a spec writes it."""
    return str(v) if isinstance(v, int) else f"[{v[0]}, {v[1]}]"


def window(size: int, k: int, s: int, p: int, what: str) -> int:
    """The output size of a sliding window of kernel `k`, stride `s`, padding `p`."""
    out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise ShapeError(f"{what}: kernel {k} with padding {p} does not fit an input of size {size}")
    return out


def one_shape(ins: list[Shape], what: str) -> Shape:
    """The shape every input has (an element-wise merge's), or a ShapeError naming them."""
    if len(set(ins)) > 1:
        raise ShapeError(f"{what} needs inputs of one shape, got " + ", ".join(fmt_shape(s) for s in ins))
    return ins[0]


def same_spatial(ins: list[Shape], what: str) -> None:
    """Every input an image of one spatial size, or a ShapeError."""
    for s in ins:
        image(s, what)
    if len({s[1:] for s in ins}) > 1:
        raise ShapeError(f"{what} needs inputs of one spatial size, got " + ", ".join(fmt_shape(s) for s in ins))
