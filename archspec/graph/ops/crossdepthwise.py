"""crossdepthwise: DelugeNet's cross-layer depthwise convolution, the op behind its merge word."""

from __future__ import annotations

from .base import Build, Op, Saves, register, same_spatial
from .norm import BatchNormArgs


@register
class CrossDepthwise(Op):
    """Each input batch-normalised on its own (no affine of its own), scaled and shifted per channel by
    a learned (weight, bias) per input, and summed. Inputs of different widths are aligned at channel 0
    (a narrower input adds to its own channels only), so each input costs 2·C_l parameters: 2·C·L when
    all are equal. Weights start at 1/L, biases at 0."""

    kind = "crossdepthwise"
    saves = Saves(output=False, stats=True, temporary=True)
    Args = BatchNormArgs
    arity = (2, None)
    user = False
    short = "cdw"

    @classmethod
    def shape(cls, ins, a):
        same_spatial(ins, "crossdepthwise")
        return (max(s[0] for s in ins),) + ins[0][1:]

    @classmethod
    def params(cls, ins, a):
        return 2 * sum(s[0] for s in ins)

    @classmethod
    def lower(cls, args, ins):
        return Build("archspec.compiler.modules.CrossDepthwise", ([s[0] for s in ins], args.eps, args.momentum))

    @classmethod
    def source(cls, m):
        return f"CrossDepthwise({m.widths}, eps={m.eps}, momentum={m.momentum})"

    @classmethod
    def initialise(cls, m, a):
        m.weight.fill_(1.0 / len(m.widths))
        m.bias.zero_()
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
        m.num_batches_tracked.zero_()
