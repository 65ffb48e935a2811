"""groupnorm: group normalisation, each sample's channels normalised in `groups` groups of C/groups
(over their positions too, on a C×H×W tensor), with an affine weight and bias of C each, starting as
1 and 0. It needs no batch statistics, so it behaves alike at any batch size."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from .channelnorm import ChannelNorm
from .base import Build, OpArgs, ShapeError, register


class GroupNormArgs(OpArgs):
    groups: PositiveInt
    eps: float = Field(1e-5, gt=0)


@register
class GroupNorm(ChannelNorm):
    kind = "groupnorm"
    aliases = ("gn", "groupnormalization")
    Args = GroupNormArgs
    short = "gn"

    @classmethod
    def shape(cls, ins, a):
        c = super().shape(ins, a)[0]
        if c % a.groups:
            raise ShapeError(f"groupnorm groups={a.groups} must divide the input channels ({c})")
        return ins[0]

    @classmethod
    def lower(cls, args, ins):
        return Build("torch.nn.GroupNorm", (args.groups, ins[0][0]), {"eps": args.eps})

    @classmethod
    def source(cls, m):
        return f"torch.nn.GroupNorm({m.num_groups}, {m.num_channels}, eps={m.eps})"
