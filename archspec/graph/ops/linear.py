"""linear: the fully connected classifier; an image input is flattened first."""

from __future__ import annotations

import math
from math import prod
from typing import Literal

from pydantic import PositiveInt

from .base import Op, OpArgs, Saves, register


class LinearArgs(OpArgs):
    out: PositiveInt
    bias: bool = True
    # default: U(±1/√fan_in); uniform_out: U(±√(3/out)), the SeqConv and MnasNet classifier; normal:
    # N(0, 0.01²), MobileNet's; uniform_inv_out: U(±1/√out), EfficientNet's. The bias starts at 0.
    init: Literal["default", "uniform_out", "normal", "uniform_inv_out"] = "default"


@register
class Linear(Op):
    """Fully connected; an image input is flattened first."""

    kind = "linear"
    saves = Saves(output=False)
    aliases = ("fc", "dense", "fullyconnected")
    Args = LinearArgs
    weighted = True
    flattens = True
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
        from torch import nn

        return nn.Linear(prod(ins[0]), args.out, bias=args.bias)

    @classmethod
    def source(cls, m):
        return f"torch.nn.Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})"

    @classmethod
    def initialise(cls, m, a):
        if a.init == "normal":
            m.weight.normal_(0.0, 0.01)
        else:
            bound = {"uniform_out": math.sqrt(3.0 / m.out_features),
                     "uniform_inv_out": 1.0 / math.sqrt(m.out_features)}.get(a.init, 1.0 / math.sqrt(m.in_features))
            m.weight.uniform_(-bound, bound)
        if m.bias is not None:
            m.bias.zero_()
