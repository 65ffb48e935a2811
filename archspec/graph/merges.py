"""Merge words: how a connection pattern combines several inflows into one tensor. Orthogonal to the
pattern (which decides *which* tensors flow in)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .ops import OPS, NoArgs, OpArgs
from .words import Word

if TYPE_CHECKING:
    from .patterns import BlockContext, Where


class Merge(Word):
    """A merge word: the op (`OPS[op]`) it adds when several tensors flow in, whose arguments it takes,
    and its colour in a drawing."""

    word: ClassVar[str]
    op: ClassVar[str]
    colour: ClassVar[str] = "#7f7f7f"
    Args: ClassVar[type[OpArgs]] = NoArgs
    equal_shapes: ClassVar[bool] = True  # inputs must agree in shape, so a pattern may need a projection

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("op") in OPS:  # a plugin's merge may bring its op's rules instead (`register_merge`)
            cls.Args = OPS[cls.op].Args

    @classmethod
    def combine(cls, ctx: "BlockContext", inputs: list[str], where: "Where", args: OpArgs) -> str:
        """One tensor from `inputs`; a single inflow passes through untouched."""
        if len(inputs) == 1:
            return inputs[0]
        return ctx.add(cls.op, args.model_dump(), inputs, where, "merge", role="merge", numbered=False)


class ConcatMerge(Merge):
    """Concatenate along channels (DenseNet)."""

    word = "concat"
    aliases = ("cat", "concatenate", "stack")
    op = "concat"
    colour = "#1f77b4"
    equal_shapes = False


class SumMerge(Merge):
    """Element-wise sum (ResNet)."""

    word = "sum"
    aliases = ("add", "plus", "addition")
    op = "add"
    colour = "#2ca02c"


class CrossDepthwiseMerge(Merge):
    """Per-channel learned weighted sum of batch-normalised inflows (DelugeNet)."""

    word = "crossdepthwise"
    aliases = ("cldc", "crosslayer", "crosslayerdepthwise", "depthwise")
    op = "crossdepthwise"
    colour = "#d62728"


class MulMerge(Merge):
    """Element-wise product, broadcast (a squeeze-and-excitation gate). Patterns that align inflows treat
    it as `sum` (whole shapes); `parallel` relies on the broadcast: a C×1×1 branch scales a C×H×W one."""

    word = "mul"
    aliases = ("multiply", "product", "prod", "gate", "excite", "times")
    op = "mul"
    colour = "#9467bd"


class MeanMerge(Merge):
    """Element-wise mean (FractalNet's joins); `mean(drop=p)` drops inflows per sample in training."""

    word = "mean"
    aliases = ("average", "avg", "join")
    op = "mean"
    colour = "#17becf"


MERGES: dict[str, type[Merge]] = {m.word: m for m in (ConcatMerge, SumMerge, CrossDepthwiseMerge, MulMerge,
                                                      MeanMerge)}

BY_OP: dict[str, type[Merge]] = {m.op: m for m in MERGES.values()}
"""The merge word behind a merge node's op (`add` → sum), for reading a built graph."""
