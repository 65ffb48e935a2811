"""`sparse`: SparseNet's aggregation at exponential offsets (Zhu et al., "Sparsely Aggregated
Convolutional Networks", ECCV 2018). Number the block's tensors x_0 (the block input) and x_1 … x_n (the
outputs of its n layers). Layer i reads the merge of the tensors at offsets 1, 2, 4, 8, … back:

    x_i = H_i(merge([x_{i-2^k} for k = K … 0]))   over every k with i - 2^k ≥ lo

oldest first, where lo = 0 with `include_input=true` (the block input counts as output 0) and lo = 1 with
`include_input=false` (it is never aggregated). The block's output is the same merge for a virtual layer
n + 1: merge([x_{n+1-2^k} …]). A reader with nothing in reach (layer 1 with `include_input=false`, or the
output of an empty block) reads the block input itself. So each layer reads at most ⌊log2 i⌋ + 1 tensors
instead of dense's i: with `concat` the widths grow logarithmically with depth, not linearly."""

from __future__ import annotations

from ..ops import OpArgs
from .pattern import Pattern, register


class SparseArgs(OpArgs):
    include_input: bool = True  # false: the block input feeds the first layer only and is never aggregated


def offsets_back(i: int, lo: int) -> list[int]:
    """The indices layer `i` reads: i - 1, i - 2, i - 4, … down to `lo`, oldest first."""
    reads, step = [], 1
    while i - step >= lo:
        reads.append(i - step)
        step *= 2
    return reads[::-1]


@register
class Sparse(Pattern):
    word = "sparse"
    aliases = ("sparsenet", "sparsely")
    Args = SparseArgs
    default_merge = "concat"
    fan_in = True

    @classmethod
    def build(cls, ctx, x, layers, args):
        lo = 0 if args.include_input else 1
        outs = [x]  # outs[i] is x_i

        def read(i: int, where) -> str:
            reads = offsets_back(i, lo)
            return ctx.merge_of([outs[j] for j in reads], where) if reads else x

        for i, layer in enumerate(layers, start=1):
            scope = ctx.layer_scope(i - 1)
            outs.append(ctx.run(layer, read(i, scope), scope))
        return read(len(layers) + 1, ctx.scope)
