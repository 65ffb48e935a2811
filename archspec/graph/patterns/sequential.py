"""`seq` and `window`: sequential aggregation inside one wide layer (SeqConv; Huang et al.,
"Sequentially Aggregated Convolutional Networks", Eq. 1–5). The block's layers are the groups of that
wide layer. Group i reads the merge of its history — the block input x, then the outputs y_1 … y_{i-1}
of the groups before it — and the block's output is the merge of y_1 … y_n alone: unlike `dense`, the
input is not part of it, so the block is a drop-in for one convolution.

    seq:            y_i = F_i([x, y_1, …, y_{i-1}])                                 (Eq. 1)
    window(width):  y_i = F_i(the last `width` channels of [x, y_1, …, y_{i-1}])   (Eq. 2–5)

The window slides across channels, so with `concat` it may cut the block input: a group reads its tail.
`width` defaults to the block input's width, so every group reads as many channels as the block
receives (WSeqConv's constant input width, the authors' code). With `sum` or `crossdepthwise` the window
holds whole inflows; groups whose history is still shorter than the window read all of it.

When every group has a raw tensor (a `shortcut` mark), the block's raw tensor is their concatenation,
so a residual stream carried raw runs on through a windowed layer (see `residual(embedded=true)`)."""

from __future__ import annotations

from pydantic import PositiveInt

from ...errors import SpecError
from ..ops import OpArgs
from .pattern import Pattern, register


class WindowArgs(OpArgs):
    width: PositiveInt | None = None  # channels each group reads; None: the block input's width


@register
class Seq(Pattern):
    word = "seq"
    aliases = ("sequential", "seqconv")
    default_merge = "concat"
    fan_in = True

    @classmethod
    def width(cls, ctx, x, args) -> int | None:
        return None  # the whole history

    @classmethod
    def build(cls, ctx, x, layers, args):
        width = cls.width(ctx, x, args)
        history, outs = [x], []
        have = ctx.shape(x)[0]  # channels in the history, kept as it grows so each group costs its window
        for i, layer in enumerate(layers):
            scope = ctx.layer_scope(i)
            parts = history if width is None else cls.window(ctx, history, have, width, i, len(layers), scope)
            y = ctx.run(layer, ctx.merge_of(parts, scope), scope)
            history.append(y)
            outs.append(y)
            have += ctx.shape(y)[0]
        out = ctx.merge_of(outs, ctx.scope)
        if len(outs) > 1 and not ctx.merge.equal_shapes:
            ctx.join_raw(out, outs)
        return out

    @classmethod
    def window(cls, ctx, history: list[str], have: int, width: int, i: int, n: int, scope) -> list[str]:
        """The inflows of group i: the tail of its history (`have` channels in all) `width` channels wide.
        Only the inflows inside the window are looked at, so a group costs its window, not its depth."""
        if i == n - 1 and width > have:
            raise SpecError(f"window({width}) is wider than the whole history of the block's last group "
                            f"({have} channels), so it never slides", ctx.loc,
                            f"use `seq` for groups that read everything, or a window of at most {have}")
        parts, need = [], width
        for t in reversed(history):
            c = ctx.shape(t)[0]
            if c > need:
                if ctx.merge.equal_shapes:
                    raise SpecError(f"window({width}) would cut an inflow of {c} channels (group {i + 1} reads "
                                    f"{width - need} channels before it); with '{ctx.merge.word}' a window "
                                    "holds whole inflows", ctx.loc, f"use a multiple of {c} channels")
                parts.append(ctx.add("slice", {"start": c - need, "stop": c}, [t], scope, "window",
                                     role="window", numbered=False))
                need = 0
            else:
                parts.append(t)
                need -= c
            if need == 0:
                break
        return parts[::-1]


@register
class Window(Seq):
    word = "window"
    aliases = ("windowed", "wseqconv")
    Args = WindowArgs

    @classmethod
    def width(cls, ctx, x, args) -> int | None:
        return args.width or ctx.shape(x)[0]
