"""`residual`: each layer's output merged with its input (ResNet). Where the layer changes what the
merge needs to match (the whole shape for `sum`/`crossdepthwise`, the spatial size for `concat`),
the shortcut is a 1×1 projection with the layer's stride."""

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
