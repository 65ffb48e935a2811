"""scale: a learned per-channel multiply (ConvNeXt's layer scale), C parameters held as C×1×1 like
torchvision's `layer_scale`, so that its weights load as they are; each starts at `init`."""

from __future__ import annotations

from .base import Build, Op, OpArgs, image, register


class ScaleArgs(OpArgs):
    init: float = 1.0


@register
class Scale(Op):
    kind = "scale"
    keeps_channels = True
    aliases = ("layerscale", "channelscale")
    Args = ScaleArgs
    colour = "#dd8452"  # a per-channel affine, as the normalisations'

    @classmethod
    def shape(cls, ins, a):
        return image(ins[0], "scale")

    @classmethod
    def params(cls, ins, a):
        return ins[0][0]

    @classmethod
    def lower(cls, args, ins):
        return Build("archspec.compiler.modules.Scale", (ins[0][0], args.init))

    @classmethod
    def source(cls, m):
        return f"Scale({m.channels}, init={m.init})"

    @classmethod
    def initialise(cls, m, a):
        m.weight.fill_(a.init)
