"""linear: the fully connected classifier; an image input is flattened first."""

from __future__ import annotations

from math import prod

from pydantic import PositiveInt

from .base import Build, Op, Saves, register
from .weight_init import InitArgs


class LinearArgs(InitArgs):
    out: PositiveInt
    bias: bool = True


@register
class Linear(Op):
    """Fully connected; an image input is flattened first."""

    kind = "linear"
    saves = Saves(output=False)
    aliases = ("fc", "dense", "fullyconnected")
    Args = LinearArgs
    weighted = True
    flattens = True
    default_init = "torch"  # torch's own weights; the bias starts at 0 unless told
    colour = "#4c72b0"

    @classmethod
    def shape(cls, ins, a):
        return (a.out,)

    @classmethod
    def params(cls, ins, a):
        return prod(ins[0]) * a.out + (a.out if a.bias else 0)

    @classmethod
    def macs(cls, ins, out, a):
        return prod(ins[0]) * a.out

    @classmethod
    def lower(cls, args, ins):
        return Build("torch.nn.Linear", (prod(ins[0]), args.out), {"bias": args.bias})

    @classmethod
    def source(cls, m):
        return f"torch.nn.Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})"
