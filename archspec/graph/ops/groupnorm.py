"""groupnorm: group normalisation, each sample's channels normalised in `groups` groups of C/groups
(over their positions too, on a C×H×W tensor), with an affine weight and bias of C each, starting as
1 and 0. It needs no batch statistics, so it behaves alike at any batch size."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from .base import Op, OpArgs, ShapeError, fmt_shape, register


class GroupNormArgs(OpArgs):
    groups: PositiveInt
    eps: float = Field(1e-5, gt=0)


@register
class GroupNorm(Op):
    kind = "groupnorm"
    keeps_channels = True
    aliases = ("gn", "groupnormalization")
    Args = GroupNormArgs
    colour = "#dd8452"  # as every normalisation
    short = "gn"

    @classmethod
    def shape(cls, ins, a):
        if len(ins[0]) not in (1, 3):
            raise ShapeError(f"groupnorm needs a C×H×W input or a flat vector, got {fmt_shape(ins[0])}")
        if ins[0][0] % a.groups:
            raise ShapeError(f"groupnorm groups={a.groups} must divide the input channels ({ins[0][0]})")
        return ins[0]

    @classmethod
    def params(cls, ins, a):
        return 2 * ins[0][0]

    @classmethod
    def lower(cls, args, ins):
        from torch import nn

        return nn.GroupNorm(args.groups, ins[0][0], eps=args.eps)

    @classmethod
    def source(cls, m):
        return f"torch.nn.GroupNorm({m.num_groups}, {m.num_channels}, eps={m.eps})"

    @classmethod
    def initialise(cls, m, a):
        m.reset_parameters()
