"""A base for per-sample normalisations over channels (layer norm, group norm)."""

from __future__ import annotations

from .base import Op, ShapeError, fmt_shape


class ChannelNorm(Op):
    """A normalisation of each sample on its own (no batch statistics), so of a C×H×W input or a flat
    vector alike, with an affine weight and bias of C each that torch's own reset starts at 1 and 0."""

    keeps_channels = True
    colour = "#dd8452"  # as every normalisation

    @classmethod
    def shape(cls, ins, a):
        if len(ins[0]) not in (1, 3):
            raise ShapeError(f"{cls.kind} needs a C×H×W input or a flat vector, got {fmt_shape(ins[0])}")
        return ins[0]

    @classmethod
    def params(cls, ins, a):
        return 2 * ins[0][0]

    @classmethod
    def initialise(cls, m, a):
        m.reset_parameters()
