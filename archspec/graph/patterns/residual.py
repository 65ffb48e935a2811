"""`residual`: each layer's output merged with its input (ResNet). Where the layer changes what the
merge needs to match (the whole shape for `sum`/`crossdepthwise`/`mul`, the spatial size for `concat`),
the shortcut is a projection with the layer's stride, as `projection` says:

    "conv"      a bare 1×1 convolution (the default)
    "conv_bn"   a 1×1 convolution then a batch norm (torchvision's ResNet downsample)
    "none"      no projection: a layer that changes the shape is an error
    NAME        the spec's layer template NAME, called as NAME(channels, stride, *projection_args)

A projection the spec leaves to the default is reported as a note by `archspec check` and `compile`.
`drop_path` first in a layer is refused: there it would drop the layer's input, not its branch.

Each call in the body is a layer with its own shortcut, so a lone op without weights that keeps the
shape (`bn`, `relu`) is refused: `{ conv(...) bn relu conv(...) bn }` in braces is one layer.

`residual(embedded=true)` adds the shortcut inside the layer instead, at its `shortcut` marks (SeqConv's
residual blocks, where the stream joins each group of the second layer before that group's batch norm).
The stream is the raw tensor of the block input — the tensor its producing layer tapped at its last
`shortcut` mark — or the input itself when it has none. The marks take the stream's channels in order,
each as many as its own input has, and must take all of them."""

from ...errors import SpecError
from ..ops import OpArgs, fmt_shape
from .pattern import Pattern, register


class ResidualArgs(OpArgs):
    embedded: bool = False  # add the shortcut at the layer's `shortcut` marks, not after the layer
    projection: str = "conv"  # "conv", "conv_bn", "none" or a layer template's name
    # more positional arguments for a projection template, after (channels, stride): a kernel size
    projection_args: tuple[int | float | bool | str, ...] = ()


PROJECTIONS = ("conv", "conv_bn", "none")


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
            ctx.refuse_lone_op(layer, x, y, f"a residual layer merged with its own input by {ctx.merge.word}")
            if any(ctx.op_of(r) == "drop_path" for r in ctx.readers(x, scope)):
                raise SpecError("drop_path first in a residual layer drops the layer's input for some samples, "
                                "not its branch", layer.loc or ctx.loc,
                                "put drop_path last in the layer, where it drops the branch before the sum")
            shortcut = x
            sx, sy = ctx.shape(x), ctx.shape(y)
            want = sy if ctx.merge.equal_shapes else (sx[0],) + sy[1:]
            if sx != want:
                shortcut = cls.project(ctx, x, want, args.projection, scope, args.projection_args)
                if "projection" not in args.model_fields_set:
                    ctx.note(f"residual: layer {i + 1} turns {fmt_shape(sx)} into {fmt_shape(want)}, so its "
                             f"shortcut is a bare 1×1 convolution (projection=\"conv\", the default); say "
                             f"projection=\"conv_bn\" for one followed by a batch norm, or name a template")
            x = ctx.merge_of([shortcut, y], scope)
        return x

    @classmethod
    def project(cls, ctx, x: str, want: tuple[int, ...], how: str, scope, extra: tuple = ()) -> str:
        """The shortcut that turns the layer's input `x` into the shape `want`, with the layer's stride."""
        sx = ctx.shape(x)
        if how == "none":
            raise SpecError(f"residual(projection=\"none\"): a layer turns {fmt_shape(sx)} into "
                            f"{fmt_shape(want)}, and the shortcut has no projection to follow it", ctx.loc,
                            "keep the shape in every layer, or use projection=\"conv\" or \"conv_bn\"")
        stride = -(-sx[1] // want[1]) if len(sx) == 3 and len(want) == 3 else 1
        if how in ("conv", "conv_bn"):
            out = ctx.add("conv", {"out": want[0], "kernel": 1, "stride": stride}, [x], scope, "shortcut",
                          role="shortcut", numbered=False)
            if how == "conv_bn":
                out = ctx.add("bn", {}, [out], scope, "shortcut_bn", role="shortcut", numbered=False)
        else:
            out = ctx.template(how, [want[0], stride, *extra], x, scope.child("shortcut"), PROJECTIONS)
        if ctx.shape(out) != want:
            via = f"projection '{how}'" if how not in ("conv", "conv_bn") else "a 1×1 projection"
            raise SpecError(f"a residual shortcut cannot turn {fmt_shape(sx)} into {fmt_shape(want)}: {via} "
                            f"gives {fmt_shape(ctx.shape(out))}", ctx.loc)
        return out

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
