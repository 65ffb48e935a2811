"""split: one of `parts` equal channel groups of a tensor, [index·C/parts, (index+1)·C/parts) (a view,
no copy), as ShuffleNetV2 splits its input in two."""

from __future__ import annotations

from pydantic import NonNegativeInt, PositiveInt

from .base import Call, Op, OpArgs, ShapeError, fmt_shape, register


class SplitArgs(OpArgs):
    parts: PositiveInt
    index: NonNegativeInt


@register
class Split(Op):
    kind = "split"
    aliases = ("chunk", "channelsplit", "narrow")
    Args = SplitArgs
    colour = "#8172b3"  # as the channel slice

    @classmethod
    def shape(cls, ins, a):
        if len(ins[0]) not in (1, 3):
            raise ShapeError(f"split needs a C×H×W input or a flat vector, got {fmt_shape(ins[0])}")
        c = ins[0][0]
        if c % a.parts:
            raise ShapeError(f"split: {a.parts} parts must divide the input channels ({c})")
        if a.index >= a.parts:
            raise ShapeError(f"split: index {a.index} is not one of the {a.parts} parts (0..{a.parts - 1})")
        return (c // a.parts,) + ins[0][1:]

    @classmethod
    def lower(cls, args, ins):
        width = ins[0][0] // args.parts
        return Call("operator.getitem", ((slice(None), slice(args.index * width, (args.index + 1) * width)),))
