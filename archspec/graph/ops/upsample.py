"""upsample: an image enlarged by a whole factor (HRNet's fusion of a lower resolution into a higher one),
by nearest neighbour or bilinear interpolation; torch's `nn.Upsample`."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from .base import OpArgs, Saves, image, register
from .torchlayer import TorchLayer


class UpsampleArgs(OpArgs):
    scale: PositiveInt  # every side is multiplied by it
    mode: Literal["nearest", "bilinear"] = "nearest"


@register
class Upsample(TorchLayer):
    kind = "upsample"
    aliases = ("upsampling", "interpolate", "resize", "upscale")
    Args = UpsampleArgs
    keeps_channels = True
    saves = Saves(inputs=False, output=False)
    module = "Upsample"
    init = ("scale_factor", "mode")
    positional = 0

    @classmethod
    def torch_args(cls, a):
        return (float(a.scale), a.mode)

    @classmethod
    def shape(cls, ins, a):
        c, h, w = image(ins[0], "upsample")
        return (c, h * a.scale, w * a.scale)

    @classmethod
    def source(cls, m):
        return f"torch.nn.Upsample(scale_factor={m.scale_factor}, mode={m.mode!r})"
