"""`chain`: layers in plain sequence."""

from .pattern import Pattern, register


@register
class Chain(Pattern):
    word = "chain"
    aliases = ("plain", "series")

    @classmethod
    def build(cls, ctx, x, layers, args):
        for i, layer in enumerate(layers):
            x = ctx.run(layer, x, ctx.layer_scope(i))
        return x
