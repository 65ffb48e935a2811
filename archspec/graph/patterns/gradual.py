"""`gradual`: a GUNN layer (Qiao et al., "Gradually Updated Neural Networks", Eq. 3–5). The block's
one layer is an update unit U; the block input x of C channels is cut into `segments` segments of
o = C / segments channels, and segment i is replaced by

    new_i = merge([old_i, U_i(x_i)])     (identity=true, Eq. 5; `sum` by default)
    new_i = U_i(x_i)                     (identity=false: GUNN-NoRes)

where U_i is the i-th copy of U (its own weights, scope `layer{i}`) and its input reads all C channels:

    x_i = [new_1 … new_{i-1}, old_i … old_P]   (order="gradual": updated segments already count)
    x_i = x                                    (order="simultaneous": SUNN, the network before
                                                the conversion; same parameters)

The block's output is [new_1 … new_P]. With `projection=true` every unit also gets the CIFAR
models' projection shortcut, a 1×1 convolution C→o with a batch norm, from its input x_i: it is one
more inflow of the segment's merge (new_i = old_i + BN(conv(x_i)) + U_i(x_i) with `sum`). A unit
written as a nested `block residual(projection="conv_bn")` computes the same sum as two additions;
`projection=true` keeps it one merge of three inflows, as the CIFAR models' code does."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from ...errors import SpecError
from ..ops import OpArgs, fmt_shape
from .pattern import Pattern, register


class GradualArgs(OpArgs):
    segments: PositiveInt  # P: the block input is cut into P equal channel segments
    order: Literal["gradual", "simultaneous"] = "gradual"  # GUNN or SUNN
    identity: bool = True  # false: a segment is replaced by its update alone (GUNN-NoRes)
    projection: bool = False  # a 1×1 conv + BN shortcut from each unit's input (GUNN's CIFAR units)


@register
class Gradual(Pattern):
    word = "gradual"
    aliases = ("gunn", "sunn")
    Args = GradualArgs
    default_merge = "sum"
    fan_in = True

    @classmethod
    def build(cls, ctx, x, layers, args):
        P = args.segments
        if len(layers) != 1:
            raise SpecError(f"a gradual block holds exactly one layer, its update unit (applied {P} times, "
                            f"once per segment); this one holds {len(layers)}", ctx.loc)
        shape = ctx.shape(x)
        if len(shape) != 3:
            raise SpecError(f"a gradual block needs a C×H×W input, got {fmt_shape(shape)}", ctx.loc)
        C = shape[0]
        if C % P:
            raise SpecError(f"gradual: {P} segments do not divide the block input's {C} channels", ctx.loc,
                            "the segments must be of one width: C / segments channels each")
        if (args.identity or args.projection) and not ctx.merge.equal_shapes:
            raise SpecError(f"gradual needs a merge that keeps the segment's shape, not '{ctx.merge.word}'",
                            ctx.loc, "use sum (the default) or crossdepthwise")
        o = C // P
        seg_shape = (o,) + shape[1:]
        slices: dict[tuple[int, int], str] = {}

        def piece(start: int, stop: int, where, base: str) -> str:
            """x's channels [start, stop): x itself when that is all of it, one slice node otherwise (the
            old segments i … P that a gradual update reads are one slice, not a concat of slices)."""
            if (start, stop) == (0, C):
                return x
            if (start, stop) not in slices:
                slices[(start, stop)] = ctx.add("slice", {"start": start, "stop": stop}, [x], where, base,
                                                role="segment", numbered=False)
            return slices[(start, stop)]

        def join(parts: list[str], where) -> str:
            if len(parts) == 1:
                return parts[0]
            return ctx.add("concat", {}, parts, where, "join", role="join", numbered=False)

        (unit,) = layers
        new: list[str] = []
        for i in range(P):
            scope = ctx.layer_scope(i)
            old = piece(i * o, (i + 1) * o, scope, "segment") if args.identity else None
            if args.order == "gradual":
                inp = join(new + [piece(i * o, C, scope, "rest")], scope)
            else:
                inp = x
            u = ctx.run(unit, inp, scope)
            if ctx.shape(u) != seg_shape:
                raise SpecError(f"gradual: the update unit of segment {i + 1} gives {fmt_shape(ctx.shape(u))}, "
                                f"but its segment is {fmt_shape(seg_shape)} ({C} channels / {P} segments)",
                                ctx.loc, f"an update unit must turn its {fmt_shape(shape)} input into "
                                f"{fmt_shape(seg_shape)}")
            inflows = [old] if args.identity else []
            if args.projection:
                proj = ctx.add("conv", {"out": o, "kernel": 1}, [inp], scope, "shortcut", role="shortcut",
                               numbered=False)
                inflows.append(ctx.add("bn", {}, [proj], scope, "shortcut_bn", role="shortcut", numbered=False))
            new.append(ctx.merge_of(inflows + [u], scope) if inflows else u)
        return join(new, ctx.scope)
