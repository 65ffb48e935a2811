"""conv: 2-d convolution, square or [height, width] (Inception's 1×7), initialised with He's scheme on
fan-out as the papers' code does (other schemes: `weight_init.py`)."""

from __future__ import annotations

from pydantic import PositiveInt

from .base import Build, Margin, Op, Saves, ShapeError, Side, image, pair, register, window
from .weight_init import InitArgs


class ConvArgs(InitArgs):
    out: PositiveInt
    kernel: Side = 1
    stride: Side = 1
    padding: Margin = 0
    groups: PositiveInt = 1
    bias: bool = False


@register
class Conv(Op):
    kind = "conv"
    saves = Saves(output=False)
    aliases = ("conv2d", "convolution")
    Args = ConvArgs
    weighted = True
    default_init = "he_normal"
    colour = "#4c72b0"

    @classmethod
    def shape(cls, ins, a):
        c, h, w = image(ins[0], "conv")
        if c % a.groups or a.out % a.groups:
            raise ShapeError(f"conv groups={a.groups} must divide both the input channels ({c}) "
                             f"and the output channels ({a.out})")
        (kh, kw), (sh, sw), (ph, pw) = pair(a.kernel), pair(a.stride), pair(a.padding)
        return a.out, window(h, kh, sh, ph, "conv"), window(w, kw, sw, pw, "conv")

    @classmethod
    def params(cls, ins, a):
        kh, kw = pair(a.kernel)
        return a.out * (ins[0][0] // a.groups) * kh * kw + (a.out if a.bias else 0)

    @classmethod
    def macs(cls, ins, out, a):
        kh, kw = pair(a.kernel)
        return out[0] * out[1] * out[2] * (ins[0][0] // a.groups) * kh * kw

    @classmethod
    def lower(cls, args, ins):
        a = args
        return Build("torch.nn.Conv2d", (ins[0][0], a.out, a.kernel, a.stride, a.padding),
                     {"groups": a.groups, "bias": a.bias})

    @classmethod
    def source(cls, m):
        return (f"torch.nn.Conv2d({m.in_channels}, {m.out_channels}, {m.kernel_size}, stride={m.stride}, "
                f"padding={m.padding}, groups={m.groups}, bias={m.bias is not None})")
