"""bn: batch normalisation over channels, starting as γ=1, β=0 (or with no affine at all)."""

from __future__ import annotations

from pydantic import Field

from .base import Build, Op, OpArgs, Saves, image, register


class BatchNormArgs(OpArgs):
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)


class BatchNormAffineArgs(BatchNormArgs):
    affine: bool = True


@register
class BatchNorm(Op):
    kind = "bn"
    keeps_channels = True
    saves = Saves(output=False, stats=True)
    aliases = ("batchnorm", "batchnorm2d", "bn2d", "batchnormalization", "norm")
    Args = BatchNormAffineArgs
    colour = "#dd8452"

    @classmethod
    def shape(cls, ins, a):
        return image(ins[0], "bn")

    @classmethod
    def params(cls, ins, a):
        return 2 * ins[0][0] if a.affine else 0

    @classmethod
    def lower(cls, args, ins):
        return Build("torch.nn.BatchNorm2d", (ins[0][0], args.eps, args.momentum), {"affine": args.affine})

    @classmethod
    def source(cls, m):
        return f"torch.nn.BatchNorm2d({m.num_features}, eps={m.eps}, momentum={m.momentum}, affine={m.affine})"

    @classmethod
    def initialise(cls, m, a):
        m.reset_parameters()
