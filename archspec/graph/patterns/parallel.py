"""`parallel`: every layer of the block is a branch that reads the block input; the block's output is the
merge of the branches' outputs, in the order written. With `concat` this is an Inception module or a
Fire module's expand stage; with `sum`, a multi-branch residual-free sum; with `mul`, a gate
(squeeze-and-excitation: an `identity` branch times a gap → conv → relu → conv → sigmoid branch, the
C×1×1 gate broadcast over C×H×W).

A branch of several ops is one braced group or one layer template call:

    block parallel concat {
      { conv(64, 1) bn relu }
      { conv(96, 1) bn relu conv(128, 3, padding=1) bn relu }
      { maxpool(3, stride=1, padding=1) conv(32, 1) bn relu }
    }

so a lone op without weights that keeps its input's shape (`bn`, `relu`) is refused as a branch: it is
almost always a chain written without its braces. `identity` is a branch: the block input itself."""

from ...errors import SpecError
from .pattern import Pattern, register


@register
class Parallel(Pattern):
    word = "parallel"
    aliases = ("branch", "branches", "inception", "multibranch", "fork")
    default_merge = "concat"
    fan_in = True

    @classmethod
    def build(cls, ctx, x, layers, args):
        if not layers:
            raise SpecError("a parallel block needs at least one branch", ctx.loc,
                            "each call or braced group in its body is one branch, as in "
                            "`block parallel concat { { conv(64, 1) bn relu } { conv(64, 3, padding=1) bn relu } }`")
        outs = []
        for i, layer in enumerate(layers):
            y = ctx.run(layer, x, ctx.layer_scope(i))
            ctx.refuse_lone_op(layer, x, y, "a whole branch of the block input", allowed=("identity",))
            outs.append(y)
        return ctx.merge_of(outs, ctx.scope)
