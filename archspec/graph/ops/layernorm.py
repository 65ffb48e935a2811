"""layernorm: layer normalisation over channels. On a C×H×W tensor each position's C values are
normalised on their own (ConvNeXt's LayerNorm2d), on a flat vector its C features (a plain LayerNorm);
an affine weight and bias of C each, starting as 1 and 0."""

from __future__ import annotations

from pydantic import Field

from .channelnorm import ChannelNorm
from .base import Build, OpArgs, register


class LayerNormArgs(OpArgs):
    eps: float = Field(1e-6, gt=0)  # ConvNeXt's


@register
class LayerNorm(ChannelNorm):
    kind = "layernorm"
    aliases = ("ln", "layernorm2d", "layernormalization")
    Args = LayerNormArgs
    short = "ln"

    @classmethod
    def lower(cls, args, ins):
        path = "archspec.compiler.modules.LayerNorm2d" if len(ins[0]) == 3 else "torch.nn.LayerNorm"
        return Build(path, (ins[0][0],), {"eps": args.eps})

    @classmethod
    def source(cls, m):
        ctor = "LayerNorm2d" if type(m).__name__ == "LayerNorm2d" else "torch.nn.LayerNorm"
        return f"{ctor}({m.normalized_shape[0]}, eps={m.eps})"
