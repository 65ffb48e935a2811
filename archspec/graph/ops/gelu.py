"""gelu: x·Φ(x), the Gaussian error linear unit (ConvNeXt, ViT), exact or with the tanh
approximation; 0 parameters, shape-preserving."""

from __future__ import annotations

from typing import Literal

from .activation import Activation, Gradient
from .base import Call, OpArgs, Saves, register


class GeluArgs(OpArgs):
    approximate: Literal["none", "tanh"] = "none"


@register
class Gelu(Activation):
    """Recomputable in its exact form: the memory passes recompute only an activation called on its one
    input with no other argument, so the tanh form, which carries `approximate`, is left to autograd
    and `activation()` is the exact one."""

    kind = "gelu"
    saves = Saves(output=False)
    aliases = ("gaussianerrorlinearunit",)
    Args = GeluArgs
    function = "torch.nn.functional.gelu"

    @classmethod
    def lower(cls, args, ins):
        a = args or cls.Args()
        return Call(cls.function, (), {} if a.approximate == "none" else {"approximate": a.approximate})

    backward = Gradient("gelu_backward", "input", kwargs={"approximate": "none"})
