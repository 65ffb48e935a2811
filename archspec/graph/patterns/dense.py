"""`dense`: each layer reads the merge of every earlier output of its block (and the block input);
the block's output is the merge of all of them (DenseNet with `concat`, DelugeNet with
`crossdepthwise`)."""

from ..ops import OpArgs
from .pattern import Pattern, register


class DenseArgs(OpArgs):
    include_input: bool = True  # false: the block input feeds the first layer only


@register
class Dense(Pattern):
    word = "dense"
    aliases = ("densenet", "densely", "deluge", "delugenet")
    Args = DenseArgs
    default_merge = "concat"
    fan_in = True

    @classmethod
    def build(cls, ctx, x, layers, args):
        feats = [x] if args.include_input else []
        for i, layer in enumerate(layers):
            scope = ctx.layer_scope(i)
            inp = ctx.merge_of(feats, scope) if feats else x
            feats.append(ctx.run(layer, inp, scope))
        return ctx.merge_of(feats, ctx.scope)
