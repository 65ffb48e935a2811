"""dropout (element-wise) and dropout2d (whole channels)."""

from __future__ import annotations

from pydantic import Field

from .base import Op, OpArgs, image, register


class DropoutArgs(OpArgs):
    p: float = Field(0.5, ge=0, le=1)


@register
class Dropout(Op):
    """Element-wise dropout."""

    kind = "dropout"
    aliases = ('drop',)
    Args = DropoutArgs

    @classmethod
    def lower(cls, args, ins):
        from torch import nn

        return nn.Dropout(args.p)

    @classmethod
    def source(cls, m):
        return f"torch.nn.Dropout({m.p})"


@register
class Dropout2d(Op):
    """Channel-wise dropout."""

    kind = "dropout2d"
    aliases = ('spatialdropout',)
    Args = DropoutArgs
    short = "drop2d"

    @classmethod
    def shape(cls, ins, a):
        return image(ins[0], "dropout2d")

    @classmethod
    def lower(cls, args, ins):
        from torch import nn

        return nn.Dropout2d(args.p)

    @classmethod
    def source(cls, m):
        return f"torch.nn.Dropout2d({m.p})"
