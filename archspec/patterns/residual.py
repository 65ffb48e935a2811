"""`residual`: each layer's output merged with its input (ResNet). Where the merge needs equal shapes
and the layer changes them, the shortcut is a 1×1 projection with the layer's stride."""

from ..errors import SpecError
from ..ops import fmt_shape
from . import Pattern


class Residual(Pattern):
    word = "residual"
    default_merge = "sum"

    @classmethod
    def build(cls, ctx, x, layers, args):
        for i, layer in enumerate(layers):
            scope = ctx.layer_scope(i)
            y = ctx.run(layer, x, scope)
            shortcut = x
            (cx, *sx), (cy, *sy) = ctx.shape(x), ctx.shape(y)
            if ctx.merge.equal_shapes and ctx.shape(x) != ctx.shape(y):
                stride = -(-sx[0] // sy[0]) if sx and sy else 1
                shortcut = ctx.add("conv", {"out": cy, "kernel": 1, "stride": stride}, [x], scope, "shortcut",
                                   role="shortcut", numbered=False)
                if ctx.shape(shortcut) != ctx.shape(y):
                    raise SpecError(f"a residual shortcut cannot turn {fmt_shape(ctx.shape(x))} into "
                                    f"{fmt_shape(ctx.shape(y))}", ctx.loc)
            x = ctx.merge_of([shortcut, y], scope)
        return x
