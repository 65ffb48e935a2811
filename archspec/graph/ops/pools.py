"""Pooling: windowed average and max (with torch's ceil mode and, for the average, whether padding
counts), adaptive average and max to a fixed output size, and the global average before a classifier."""

from __future__ import annotations

from typing import Optional

from .base import Call, Margin, Op, OpArgs, Saves, ShapeError, Side, image, pair, register, show, window
from .torchlayer import TorchLayer


class PoolArgs(OpArgs):
    kernel: Side  # each of these an int or [height, width]
    stride: Optional[Side] = None
    padding: Margin = 0
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


class _Pool(TorchLayer):
    keeps_channels = True
    Args = PoolArgs
    init = ("kernel_size", "stride", "padding", "ceil_mode")
    positional = 3

    @classmethod
    def shape(cls, ins, a):
        c, h, w = image(ins[0], cls.kind)
        k, s, p = pair(a.kernel), pair(a.stride or a.kernel), pair(a.padding)
        if any(2 * pi > ki for pi, ki in zip(p, k)):
            raise ShapeError(f"{cls.kind}: padding {show(a.padding)} must be at most half the kernel {show(a.kernel)}")
        out = ceil_window if a.ceil_mode else window
        return (c, out(h, k[0], s[0], p[0], cls.kind), out(w, k[1], s[1], p[1], cls.kind))

    @classmethod
    def torch_args(cls, a):
        return a.kernel, a.stride or a.kernel, a.padding, a.ceil_mode


@register
class AvgPool(_Pool):
    kind = "avgpool"
    saves = Saves(output=False)
    aliases = ("avgpool2d", "averagepool", "avgpooling", "averagepooling2d")
    Args = AvgPoolArgs
    module = "AvgPool2d"
    init = (*_Pool.init, "count_include_pad")

    @classmethod
    def torch_args(cls, a):
        return *super().torch_args(a), a.count_include_pad


@register
class MaxPool(_Pool):
    kind = "maxpool"
    saves = Saves(output=False, extra=8)
    aliases = ("maxpool2d", "maxpooling", "maxpooling2d")
    module = "MaxPool2d"


class AdaptivePoolArgs(OpArgs):
    size: Side  # an int n is n×n


class _AdaptivePool(TorchLayer):
    """Pools each channel to a fixed `size`, whatever the input's: window i along a side of n inputs
    spans [⌊i·n/size⌋, ⌈(i+1)·n/size⌉)."""
    keeps_channels = True

    Args = AdaptivePoolArgs
    init = ("output_size",)

    @classmethod
    def shape(cls, ins, a):
        return (image(ins[0], cls.kind)[0], *pair(a.size))

    @classmethod
    def torch_args(cls, a):
        return (pair(a.size),)


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
        return Call("torch.mean", (), {"dim": (2, 3)})
