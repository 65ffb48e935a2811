"""mul: the element-wise product of its inputs, broadcast as numpy broadcasts (a C×1×1 gate scales every
position of a C×H×W tensor: squeeze-and-excitation). The `mul` merge adds it; 0 parameters."""

from __future__ import annotations

from .base import Call, Op, ShapeError, Shape, fmt_shape, register


def broadcast(ins: list[Shape]) -> Shape:
    """The shape `ins` broadcast to, aligned at their last dimension; a ShapeError where a dimension of
    two inputs differs and neither is 1."""
    rank = max(len(s) for s in ins)
    out = []
    for d in range(rank):
        sizes = {s[len(s) - rank + d] for s in ins if len(s) - rank + d >= 0} - {1}
        if len(sizes) > 1:
            raise ShapeError("a product needs shapes that broadcast (each dimension equal or 1), got "
                             + ", ".join(fmt_shape(s) for s in ins))
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


@register
class Mul(Op):
    """Element-wise product with broadcasting. Counts 0 MACs, as `add`, `bn` and `scale` do: MACs are
    those of convolutions and linear layers, the figure papers and FlopCounterMode report."""

    kind = "mul"
    arity = (1, None)
    user = False
    gather = "pairwise"

    @classmethod
    def shape(cls, ins, a):
        return broadcast(ins)

    @classmethod
    def lower(cls, args, ins):
        return Call("operator.mul")
