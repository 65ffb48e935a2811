"""Words of your own — ops, connection patterns, merges — without editing archspec.

An op is one class: its arguments (a pydantic
model), its output shape, parameter count and MACs (pure rules, no tensors), and its lowering to torch,
which names the module class by dotted path, so that importing the op never imports torch:

    from pydantic import Field
    from archspec.plugins import Build, Op, OpArgs, register_op

    class SwishBetaArgs(OpArgs):
        beta: float = Field(1.0, gt=0)

    @register_op
    class SwishBeta(Op):
        kind = "swish_beta"              # the word a spec writes: `conv(16, 3) swish_beta(beta=2.0)`
        Args = SwishBetaArgs

        @classmethod
        def params(cls, ins, a):
            return ins[0][0]             # one learned β per channel

        @classmethod
        def lower(cls, args, ins):       # the compiler imports my_ops.modules and builds the module
            return Build("my_ops.modules.SwishBeta", (ins[0][0], args.beta))

        @classmethod
        def source(cls, m):              # for `archspec compile -o`: the class by its own name
            return f"SwishBeta({m.beta.numel()}, {float(m.beta[0])})"

A function lowers to `Call("torch.mul", (2.0,))` (the inputs first, then the extra arguments). A
`lower` may also import torch itself and return a built `nn.Module` or a `(function, extra args,
kwargs)` triple. A standalone file (`compile -o`) imports a plugin's module class from its package.

A connection pattern is a `Pattern` subclass: its `word`, its `Args`, the merge its blocks take by
default, and `build`, which wires the block's layers through the `BlockContext` it is given (run a
layer, merge inflows by the block's merge, add an op, read a shape):

    @register_pattern
    class Ladder(Pattern):
        word = "ladder"                  # `block ladder { ... }`
        default_merge = "sum"

        @classmethod
        def build(cls, ctx, x, layers, args):
            prev = cur = x
            for i, layer in enumerate(layers):
                scope = ctx.layer_scope(i)
                inp = ctx.merge_of([prev, cur], scope) if prev != cur else cur
                prev, cur = cur, ctx.run(layer, inp, scope)
            return cur

A merge is a `Merge` subclass: its `word` and either `op`, a registered op that does the merging, or
that op's own rules (`shape`, `params`, `macs`, `lower`, `source`, and `gather`: how the inputs reach a
function lowering), from which `register_merge` makes the op:

    @register_merge
    class MaxOut(Merge):
        word = "maxout"                  # `maxout(a, b)`, `block dense maxout { ... }`
        gather = "pairwise"

        @classmethod
        def lower(cls, args, ins):
            return Call("torch.maximum")

In one process, `register_op`, `register_pattern` and `register_merge` are enough. To make the words
part of the language for every program (the command line included), install a package that declares
entry points in the group `archspec.words` (`archspec.ops` is read too), each naming a module (importing
it registers its words) or one class:

    [project.entry-points."archspec.words"]
    my_words = "my_words.words"

Entry points are loaded the first time a spec is elaborated. A spec only names words; it never chooses
what is imported. This module does not import torch."""

from __future__ import annotations

from .graph.merges import Merge
from .graph.ops import Build, Call, NoArgs, Op, OpArgs, Shape, ShapeError, fmt_shape
from .graph.patterns import BlockContext, Layer, Pattern
from .graph.vocabulary import (GROUP, PluginError, check_op, load_plugins, loaded_plugins, register_merge, register_op,
                               register_pattern, unregister_merge, unregister_op, unregister_pattern)

__all__ = ["BlockContext", "Build", "Call", "GROUP", "Layer", "Merge", "NoArgs", "Op", "OpArgs", "Pattern",
           "PluginError", "Shape", "ShapeError", "check_op", "fmt_shape", "load_plugins", "loaded_plugins",
           "register_merge", "register_op", "register_pattern", "unregister_merge", "unregister_op",
           "unregister_pattern"]
