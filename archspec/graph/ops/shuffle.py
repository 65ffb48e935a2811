"""shuffle: ShuffleNet's channel shuffle, channels seen as a groups×(C/groups) grid and read column
by column, so that the next grouped convolution mixes every group; 0 parameters."""

from __future__ import annotations

from pydantic import PositiveInt

from .base import Call, Op, OpArgs, ShapeError, image, register


class ShuffleArgs(OpArgs):
    groups: PositiveInt


@register
class Shuffle(Op):
    kind = "shuffle"
    aliases = ("channelshuffle",)
    Args = ShuffleArgs
    colour = "#8172b3"  # as the channel slice

    @classmethod
    def shape(cls, ins, a):
        c = image(ins[0], "shuffle")[0]
        if c % a.groups:
            raise ShapeError(f"shuffle groups={a.groups} must divide the input channels ({c})")
        return ins[0]

    @classmethod
    def lower(cls, args, ins):
        return Call("torch.channel_shuffle", (args.groups,))
