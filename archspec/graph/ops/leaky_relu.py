"""leaky_relu: the rectifier with a small slope for negative inputs; 0 parameters, shape-preserving."""

from __future__ import annotations

from pydantic import Field

from .activation import Activation, Gradient
from .base import Call, OpArgs, Saves, register

DEFAULT_SLOPE = 0.01  # torch's
MAX_SLOPE = 1e30  # within float32's range, which the kernels compute the slope in


class LeakyReluArgs(OpArgs):
    negative_slope: float = Field(DEFAULT_SLOPE, ge=0, le=MAX_SLOPE)


@register
class LeakyRelu(Activation):
    """Recomputable at the default slope: the memory passes recompute only an activation called on its
    one input with no other argument, so another slope, which the call carries, is left to autograd and
    `activation()` is the default one."""

    kind = "leaky_relu"
    saves = Saves(output=False)
    aliases = ("lrelu", "leaky")
    Args = LeakyReluArgs
    function = "torch.nn.functional.leaky_relu"

    @classmethod
    def lower(cls, args, ins):
        a = args or cls.Args()
        return Call(cls.function, (), {} if a.negative_slope == DEFAULT_SLOPE else {"negative_slope": a.negative_slope})

    backward = Gradient("leaky_relu_backward", "input", (DEFAULT_SLOPE, False))
