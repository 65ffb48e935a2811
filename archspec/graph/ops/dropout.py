"""dropout (element-wise) and dropout2d (whole channels)."""

from __future__ import annotations

from pydantic import Field

from .torchlayer import TorchLayer
from .base import OpArgs, Saves, image, register


class DropoutArgs(OpArgs):
    p: float = Field(0.5, ge=0, le=1)


class _Dropout(TorchLayer):
    keeps_channels = True
    Args = DropoutArgs
    init = ("p",)


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
