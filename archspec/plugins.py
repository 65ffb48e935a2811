"""Writing ops of your own, without editing archspec. An op is one class: its arguments (a pydantic
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

In one process, `register_op` is enough. To make the op a word for every program (the command line
included), install a package that declares it as an entry point in the group `archspec.ops`, naming
the module (importing it registers its ops) or the class:

    [project.entry-points."archspec.ops"]
    my_ops = "my_ops.ops"

Entry points are loaded the first time a spec is elaborated. A spec only names ops; it never chooses
what is imported. This module does not import torch."""

from __future__ import annotations

from .graph.ops import Build, Call, NoArgs, Op, OpArgs, Shape, ShapeError, fmt_shape
from .graph.vocabulary import GROUP, PluginError, check_op, load_plugins, loaded_plugins, register_op, unregister_op

__all__ = ["Build", "Call", "GROUP", "NoArgs", "Op", "OpArgs", "PluginError", "Shape", "ShapeError", "check_op",
           "fmt_shape", "load_plugins", "loaded_plugins", "register_op", "unregister_op"]
