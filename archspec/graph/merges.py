"""Merge words: how a connection pattern combines several inflows into one tensor. Orthogonal to the
pattern (which decides *which* tensors flow in)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .ops import BatchNormArgs, NoArgs, OpArgs
from .words import Word

if TYPE_CHECKING:
    from .patterns import BlockContext, Where


class Merge(Word):
    word: ClassVar[str]
    op: ClassVar[str]
    Args: ClassVar[type[OpArgs]] = NoArgs
    equal_shapes: ClassVar[bool] = True  # inputs must agree in shape, so a pattern may need a projection

    @classmethod
    def combine(cls, ctx: "BlockContext", inputs: list[str], where: "Where", args: OpArgs) -> str:
        """One tensor from `inputs`; a single inflow passes through untouched."""
        if len(inputs) == 1:
            return inputs[0]
        return ctx.add(cls.op, args.model_dump(), inputs, where, "merge", role="merge", numbered=False)


class ConcatMerge(Merge):
    """Concatenate along channels (DenseNet)."""

    word = "concat"
    aliases = ('cat', 'concatenate', 'stack')
    op = "concat"
    equal_shapes = False


class SumMerge(Merge):
    """Element-wise sum (ResNet)."""

    word = "sum"
    aliases = ('add', 'plus', 'addition')
    op = "add"


class CrossDepthwiseMerge(Merge):
    """Per-channel learned weighted sum of batch-normalised inflows (DelugeNet)."""

    word = "crossdepthwise"
    aliases = ('cldc', 'crosslayer', 'crosslayerdepthwise', 'depthwise')
    op = "crossdepthwise"
    Args = BatchNormArgs


MERGES: dict[str, type[Merge]] = {m.word: m for m in (ConcatMerge, SumMerge, CrossDepthwiseMerge)}
