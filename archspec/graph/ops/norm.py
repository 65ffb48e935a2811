"""bn: batch normalisation over channels, starting as γ=1, β=0."""

from __future__ import annotations

from pydantic import Field

from .base import Op, OpArgs, image, register


class BatchNormArgs(OpArgs):
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)


@register
class BatchNorm(Op):
    kind = "bn"
    aliases = ("batchnorm", "batchnorm2d", "bn2d", "batchnormalization", "norm")
    Args = BatchNormArgs
    colour = "#dd8452"

    @classmethod
    def shape(cls, ins, a):
        return image(ins[0], "bn")

    @classmethod
    def params(cls, ins, a):
        return 2 * ins[0][0]

    @classmethod
    def lower(cls, args, ins):
        from torch import nn

        return nn.BatchNorm2d(ins[0][0], args.eps, args.momentum)

    @classmethod
    def source(cls, m):
        return f"torch.nn.BatchNorm2d({m.num_features}, eps={m.eps}, momentum={m.momentum})"

    @classmethod
    def initialise(cls, m, a):
        m.reset_parameters()
