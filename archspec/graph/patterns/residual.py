"""`residual`: each layer's output merged with its input (ResNet). Where the layer changes what the
merge needs to match (the whole shape for `sum`/`crossdepthwise`, the spatial size for `concat`),
the shortcut is a 1×1 projection with the layer's stride.

`residual(embedded=true)` adds the shortcut inside the layer instead, at its `shortcut` marks (SeqConv's
residual blocks, where the stream joins each group of the second layer before that group's batch norm).
The stream is the raw tensor of the block input — the tensor its producing layer tapped at its last
`shortcut` mark — or the input itself when it has none. The marks take the stream's channels in order,
each as many as its own input has, and must take all of them."""

from ...language.errors import SpecError
from ..ops import OpArgs, fmt_shape
from .pattern import Pattern, register


class ResidualArgs(OpArgs):
    embedded: bool = False  # add the shortcut at the layer's `shortcut` marks, not after the layer


@register
class Residual(Pattern):
    word = "residual"
    aliases = ("resnet", "res", "skip")
    Args = ResidualArgs
    default_merge = "sum"

    @classmethod
    def build(cls, ctx, x, layers, args):
        if args.embedded and ctx.merge.word != "sum":
            raise SpecError(f"residual(embedded=true) adds its stream inside the layer, so its merge is sum, "
                            f"not '{ctx.merge.word}'", ctx.loc)
        for i, layer in enumerate(layers):
            scope = ctx.layer_scope(i)
            if args.embedded:
                x = cls.embedded(ctx, x, layer, scope)
                continue
            y = ctx.run(layer, x, scope)
            shortcut = x
            sx, sy = ctx.shape(x), ctx.shape(y)
            want = sy if ctx.merge.equal_shapes else (sx[0],) + sy[1:]
            if sx != want:
                stride = -(-sx[1] // sy[1]) if len(sx) == 3 and len(sy) == 3 else 1
                shortcut = ctx.add("conv", {"out": want[0], "kernel": 1, "stride": stride}, [x], scope, "shortcut",
                                   role="shortcut", numbered=False)
                if ctx.shape(shortcut) != want:
                    raise SpecError(f"a residual shortcut cannot turn {fmt_shape(sx)} into {fmt_shape(want)}",
                                    ctx.loc)
            x = ctx.merge_of([shortcut, y], scope)
        return x

    @classmethod
    def embedded(cls, ctx, x, layer, scope) -> str:
        with ctx.embedded_stream(x) as stream:
            y = ctx.run(layer, x, scope)
        if stream.taken == 0:
            raise SpecError("residual(embedded=true): the layer has no `shortcut` mark, so its stream is never "
                            "added", ctx.loc, "write `shortcut` in the layer where the stream joins, as in "
                            "`conv(c, 3, padding=1) shortcut bn relu`")
        if stream.taken != stream.channels:
            raise SpecError(f"residual(embedded=true): the layer's `shortcut` marks add {stream.taken} of the "
                            f"stream's {stream.channels} channels", ctx.loc,
                            "the marks together must add every channel of the stream once")
        return y
