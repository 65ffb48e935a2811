"""The op catalogue: for each graph op, its validated arguments and the pure rules for its output
shape, parameter count and multiply-accumulates. No torch here: these rules run before any tensor
exists, and the compiler checks them against the built module."""

from __future__ import annotations

from math import prod
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from .words import Word

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """Inputs whose shapes an op cannot accept; the elaborator adds the spec location."""


class OpArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NoArgs(OpArgs):
    pass


class InputArgs(OpArgs):
    shape: tuple[PositiveInt, ...]


class ConvArgs(OpArgs):
    out: PositiveInt
    kernel: PositiveInt = 1
    stride: PositiveInt = 1
    padding: NonNegativeInt = 0
    groups: PositiveInt = 1
    bias: bool = False
    # he_normal: N(0, 2/fan_out) (ResNet, DenseNet, DelugeNet, GUNN); he_uniform: the same variance from a
    # uniform draw (SeqConv); zeros: a layer that starts as nothing (SeqConv's second residual layer)
    init: Literal["he_normal", "he_uniform", "zeros"] = "he_normal"


class BatchNormArgs(OpArgs):
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)


class PoolArgs(OpArgs):
    kernel: PositiveInt
    stride: PositiveInt | None = None
    padding: NonNegativeInt = 0


class LinearArgs(OpArgs):
    out: PositiveInt
    bias: bool = True
    # default: U(±1/√fan_in); uniform_out: U(±√(3/out)), the SeqConv classifier. The bias starts at 0.
    init: Literal["default", "uniform_out"] = "default"


class DropoutArgs(OpArgs):
    p: float = Field(0.5, ge=0, le=1)


class SliceArgs(OpArgs):
    start: NonNegativeInt
    stop: PositiveInt


class Op(Word):
    """One kind of graph node. Subclasses set `kind`, `Args` and override the rules they need."""

    kind: ClassVar[str]
    Args: ClassVar[type[OpArgs]] = NoArgs
    arity: ClassVar[tuple[int, int | None]] = (1, 1)  # (min, max) inputs; None = unbounded
    user: ClassVar[bool] = True  # callable from a spec by name
    weighted: ClassVar[bool] = False  # counts towards depth

    @classmethod
    def shape(cls, ins: list[Shape], a: OpArgs) -> Shape:
        return ins[0]

    @classmethod
    def params(cls, ins: list[Shape], a: OpArgs) -> int:
        return 0

    @classmethod
    def macs(cls, ins: list[Shape], out: Shape, a: OpArgs) -> int:
        return 0


def _image(shape: Shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(f"{what} needs a C×H×W input, got {fmt_shape(shape)}")
    return shape  # type: ignore[return-value]


def _window(size: int, k: int, s: int, p: int, what: str) -> int:
    out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise ShapeError(f"{what}: kernel {k} with padding {p} does not fit an input of size {size}")
    return out


def fmt_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


class Input(Op):
    kind = "input"
    Args = InputArgs
    arity = (0, 0)

    @classmethod
    def shape(cls, ins, a):
        return tuple(a.shape)


class Conv(Op):
    kind = "conv"
    aliases = ('conv2d', 'convolution')
    Args = ConvArgs
    weighted = True

    @classmethod
    def shape(cls, ins, a):
        c, h, w = _image(ins[0], "conv")
        if c % a.groups or a.out % a.groups:
            raise ShapeError(f"conv groups={a.groups} must divide both the input channels ({c}) "
                             f"and the output channels ({a.out})")
        return (a.out, _window(h, a.kernel, a.stride, a.padding, "conv"),
                _window(w, a.kernel, a.stride, a.padding, "conv"))

    @classmethod
    def params(cls, ins, a):
        return a.out * (ins[0][0] // a.groups) * a.kernel**2 + (a.out if a.bias else 0)

    @classmethod
    def macs(cls, ins, out, a):
        return out[0] * out[1] * out[2] * (ins[0][0] // a.groups) * a.kernel**2


class BatchNorm(Op):
    kind = "bn"
    aliases = ('batchnorm', 'batchnorm2d', 'bn2d', 'batchnormalization', 'norm')
    Args = BatchNormArgs

    @classmethod
    def shape(cls, ins, a):
        return _image(ins[0], "bn")

    @classmethod
    def params(cls, ins, a):
        return 2 * ins[0][0]


class Relu(Op):
    kind = "relu"
    aliases = ('rectifier',)


class Identity(Op):
    kind = "identity"
    aliases = ('id', 'noop')


class Dropout(Op):
    """Element-wise dropout."""

    kind = "dropout"
    aliases = ('drop',)
    Args = DropoutArgs


class Dropout2d(Op):
    """Channel-wise dropout."""

    kind = "dropout2d"
    aliases = ('spatialdropout',)
    Args = DropoutArgs

    @classmethod
    def shape(cls, ins, a):
        return _image(ins[0], "dropout2d")


class _Pool(Op):
    Args = PoolArgs

    @classmethod
    def shape(cls, ins, a):
        c, h, w = _image(ins[0], cls.kind)
        s = a.stride or a.kernel
        if 2 * a.padding > a.kernel:
            raise ShapeError(f"{cls.kind}: padding {a.padding} must be at most half the kernel {a.kernel}")
        return (c, _window(h, a.kernel, s, a.padding, cls.kind), _window(w, a.kernel, s, a.padding, cls.kind))


class AvgPool(_Pool):
    kind = "avgpool"
    aliases = ('avgpool2d', 'averagepool', 'avgpooling', 'averagepooling2d')


class MaxPool(_Pool):
    kind = "maxpool"
    aliases = ('maxpool2d', 'maxpooling', 'maxpooling2d')


class GlobalAvgPool(Op):
    kind = "gap"
    aliases = ('globalavgpool', 'globalaveragepool', 'adaptiveavgpool', 'adaptiveavgpool2d', 'globalaveragepooling2d', 'gavgpool')

    @classmethod
    def shape(cls, ins, a):
        return (_image(ins[0], "gap")[0],)


class Linear(Op):
    """Fully connected; an image input is flattened first."""

    kind = "linear"
    aliases = ('fc', 'dense', 'fullyconnected')
    Args = LinearArgs
    weighted = True

    @classmethod
    def shape(cls, ins, a):
        return (a.out,)

    @classmethod
    def params(cls, ins, a):
        return prod(ins[0]) * a.out + (a.out if a.bias else 0)

    @classmethod
    def macs(cls, ins, out, a):
        return prod(ins[0]) * a.out


def _same_spatial(ins: list[Shape], what: str) -> None:
    for s in ins:
        _image(s, what)
    if len({s[1:] for s in ins}) > 1:
        raise ShapeError(f"{what} needs inputs of one spatial size, got "
                         + ", ".join(fmt_shape(s) for s in ins))


class Concat(Op):
    """Channel concatenation (DenseNet)."""

    kind = "concat"
    arity = (1, None)
    user = False

    @classmethod
    def shape(cls, ins, a):
        _same_spatial(ins, "concat")
        return (sum(s[0] for s in ins),) + ins[0][1:]


class Add(Op):
    """Element-wise sum (ResNet)."""

    kind = "add"
    arity = (1, None)
    user = False

    @classmethod
    def shape(cls, ins, a):
        if len(set(ins)) > 1:
            raise ShapeError("a sum needs inputs of one shape, got " + ", ".join(fmt_shape(s) for s in ins))
        return ins[0]


class Slice(Op):
    """A channel range [start, stop) of one tensor."""

    kind = "slice"
    Args = SliceArgs
    user = False

    @classmethod
    def shape(cls, ins, a):
        c = _image(ins[0], "slice")[0]
        if not a.start < a.stop <= c:
            raise ShapeError(f"channel slice [{a.start}, {a.stop}) is outside 0..{c}")
        return (a.stop - a.start,) + ins[0][1:]


class CrossDepthwise(Op):
    """DelugeNet's cross-layer depthwise convolution: each input batch-normalised on its own (no affine
    of its own), scaled and shifted per channel by a learned (weight, bias) per input, and summed.
    Inputs of different widths are aligned at channel 0 (a narrower input adds to its own channels
    only), so each input costs 2·C_l parameters: 2·C·L when all are equal."""

    kind = "crossdepthwise"
    Args = BatchNormArgs
    arity = (2, None)
    user = False

    @classmethod
    def shape(cls, ins, a):
        _same_spatial(ins, "crossdepthwise")
        return (max(s[0] for s in ins),) + ins[0][1:]

    @classmethod
    def params(cls, ins, a):
        return 2 * sum(s[0] for s in ins)


OPS: dict[str, type[Op]] = {op.kind: op for op in (
    Input, Conv, BatchNorm, Relu, Identity, Dropout, Dropout2d, AvgPool, MaxPool, GlobalAvgPool, Linear,
    Concat, Add, Slice, CrossDepthwise)}

PRIMITIVES: dict[str, type[Op]] = {k: v for k, v in OPS.items() if v.user and k != "input"}
