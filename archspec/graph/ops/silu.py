"""silu (swish): x·σ(x), a smooth activation; 0 parameters, shape-preserving."""

from __future__ import annotations

from .activation import Activation, Gradient
from .base import Saves, register


@register
class Silu(Activation):
    kind = "silu"
    saves = Saves(output=False)
    aliases = ("swish",)
    function = "torch.nn.functional.silu"

    backward = Gradient("silu_backward", "input")
