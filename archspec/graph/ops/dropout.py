"""dropout (element-wise) and dropout2d (whole channels)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .base import Op, OpArgs, Saves, image, register


class DropoutArgs(OpArgs):
    p: float = Field(0.5, ge=0, le=1)


class _Dropout(Op):
    keeps_channels = True
    Args = DropoutArgs
    module: ClassVar[str]  # the torch.nn class name

    @classmethod
    def lower(cls, args, ins):
        from torch import nn

        return getattr(nn, cls.module)(args.p)

    @classmethod
    def source(cls, m):
        return f"torch.nn.{cls.module}({m.p})"


@register
class Dropout(_Dropout):
    """Element-wise dropout."""

    kind = "dropout"
    saves = Saves(inputs=False, output=False, mask="activation")
    aliases = ("drop",)
    module = "Dropout"


@register
class Dropout2d(_Dropout):
    """Channel-wise dropout."""

    kind = "dropout2d"
    saves = Saves(inputs=False, output=False, mask="channel")
    aliases = ("spatialdropout",)
    module = "Dropout2d"
    short = "drop2d"

    @classmethod
    def shape(cls, ins, a):
        return image(ins[0], "dropout2d")
