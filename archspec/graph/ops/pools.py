"""Pooling: windowed average and max (with torch's ceil mode and, for the average, whether padding
counts), adaptive average and max to a fixed output size, and the global average before a classifier."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import NonNegativeInt, PositiveInt, field_validator
from pydantic_core import PydanticCustomError

from .base import Op, OpArgs, Saves, ShapeError, image, register, window


class PoolArgs(OpArgs):
    kernel: PositiveInt
    stride: PositiveInt | None = None
    padding: NonNegativeInt = 0
    ceil_mode: bool = False


class AvgPoolArgs(PoolArgs):
    count_include_pad: bool = True


def ceil_window(size: int, k: int, s: int, p: int, what: str) -> int:
    """The output size of a sliding window in torch's ceil mode: a partial last window is kept when it
    starts inside the input or its left padding."""
    out = (size + 2 * p - k + s - 1) // s + 1
    if (out - 1) * s >= size + p:
        out -= 1
    if out < 1:
        raise ShapeError(f"{what}: kernel {k} with padding {p} does not fit an input of size {size}")
    return out


class _Pool(Op):
    keeps_channels = True
    Args = PoolArgs
    module: ClassVar[str]  # the torch.nn class name

    @classmethod
    def shape(cls, ins, a):
        c, h, w = image(ins[0], cls.kind)
        s = a.stride or a.kernel
        if 2 * a.padding > a.kernel:
            raise ShapeError(f"{cls.kind}: padding {a.padding} must be at most half the kernel {a.kernel}")
        out = ceil_window if a.ceil_mode else window
        return (c, out(h, a.kernel, s, a.padding, cls.kind), out(w, a.kernel, s, a.padding, cls.kind))

    @classmethod
    def lower(cls, args, ins):
        from torch import nn

        a = args
        return getattr(nn, cls.module)(a.kernel, a.stride or a.kernel, a.padding, ceil_mode=a.ceil_mode,
                                       **cls.extra(a))

    @classmethod
    def extra(cls, a: PoolArgs) -> dict[str, Any]:
        """The keyword arguments of this pool's torch module beyond the window's."""
        return {}

    @classmethod
    def source(cls, m):
        return f"torch.nn.{cls.module}({m.kernel_size}, {m.stride}, {m.padding}, ceil_mode={m.ceil_mode})"


@register
class AvgPool(_Pool):
    kind = "avgpool"
    saves = Saves(output=False)
    aliases = ("avgpool2d", "averagepool", "avgpooling", "averagepooling2d")
    Args = AvgPoolArgs
    module = "AvgPool2d"

    @classmethod
    def extra(cls, a):
        return {"count_include_pad": a.count_include_pad}

    @classmethod
    def source(cls, m):
        return (f"torch.nn.AvgPool2d({m.kernel_size}, {m.stride}, {m.padding}, ceil_mode={m.ceil_mode}, "
                f"count_include_pad={m.count_include_pad})")


@register
class MaxPool(_Pool):
    kind = "maxpool"
    saves = Saves(output=False, extra=8)
    aliases = ("maxpool2d", "maxpooling", "maxpooling2d")
    module = "MaxPool2d"


class AdaptivePoolArgs(OpArgs):
    size: tuple[PositiveInt, PositiveInt]  # an int n is n×n

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            return (v, v)
        if isinstance(v, tuple) and len(v) == 2:
            return v
        raise PydanticCustomError("size", "must be an int or a list of two ints")


class _AdaptivePool(Op):
    """Pools each channel to a fixed `size`, whatever the input's: window i along a side of n inputs
    spans [⌊i·n/size⌋, ⌈(i+1)·n/size⌉)."""
    keeps_channels = True

    Args = AdaptivePoolArgs
    module: ClassVar[str]  # the torch.nn class name

    @classmethod
    def shape(cls, ins, a):
        return (image(ins[0], cls.kind)[0], *a.size)

    @classmethod
    def lower(cls, args, ins):
        from torch import nn

        return getattr(nn, cls.module)(args.size)

    @classmethod
    def source(cls, m):
        return f"torch.nn.{cls.module}({tuple(m.output_size)})"


@register
class AdaptiveAvgPool(_AdaptivePool):
    kind = "adaptive_avgpool"
    aliases = ("adaptiveavgpool2d", "adaptiveaveragepool", "adaptiveaveragepooling2d")
    module = "AdaptiveAvgPool2d"
    short = "aavgpool"


@register
class AdaptiveMaxPool(_AdaptivePool):
    kind = "adaptive_maxpool"
    aliases = ("adaptivemaxpool2d", "adaptivemaxpooling2d")
    module = "AdaptiveMaxPool2d"
    short = "amaxpool"


@register
class GlobalAvgPool(Op):
    kind = "gap"
    keeps_channels = True
    saves = Saves(inputs=False, output=False)
    aliases = ("globalavgpool", "globalaveragepool", "globalaveragepooling2d", "gavgpool")

    @classmethod
    def shape(cls, ins, a):
        return (image(ins[0], "gap")[0],)

    @classmethod
    def lower(cls, args, ins):
        import torch

        return torch.mean, (), {"dim": (2, 3)}
