"""Pooling: windowed average and max, and the global average before a classifier."""

from __future__ import annotations

from typing import ClassVar

from pydantic import NonNegativeInt, PositiveInt

from .base import Op, OpArgs, ShapeError, image, register, window


class PoolArgs(OpArgs):
    kernel: PositiveInt
    stride: PositiveInt | None = None
    padding: NonNegativeInt = 0


class _Pool(Op):
    Args = PoolArgs
    module: ClassVar[str]  # the torch.nn class name

    @classmethod
    def shape(cls, ins, a):
        c, h, w = image(ins[0], cls.kind)
        s = a.stride or a.kernel
        if 2 * a.padding > a.kernel:
            raise ShapeError(f"{cls.kind}: padding {a.padding} must be at most half the kernel {a.kernel}")
        return (c, window(h, a.kernel, s, a.padding, cls.kind), window(w, a.kernel, s, a.padding, cls.kind))

    @classmethod
    def lower(cls, args, ins):
        from torch import nn

        a = args
        return getattr(nn, cls.module)(a.kernel, a.stride or a.kernel, a.padding)

    @classmethod
    def source(cls, m):
        return f"torch.nn.{cls.module}({m.kernel_size}, {m.stride}, {m.padding})"


@register
class AvgPool(_Pool):
    kind = "avgpool"
    aliases = ("avgpool2d", "averagepool", "avgpooling", "averagepooling2d")
    module = "AvgPool2d"


@register
class MaxPool(_Pool):
    kind = "maxpool"
    aliases = ("maxpool2d", "maxpooling", "maxpooling2d")
    module = "MaxPool2d"


@register
class GlobalAvgPool(Op):
    kind = "gap"
    aliases = ("globalavgpool", "globalaveragepool", "adaptiveavgpool", "adaptiveavgpool2d", "globalaveragepooling2d", "gavgpool")

    @classmethod
    def shape(cls, ins, a):
        return (image(ins[0], "gap")[0],)

    @classmethod
    def lower(cls, args, ins):
        import torch

        return torch.mean, (), {"dim": (2, 3)}
