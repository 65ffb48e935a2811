"""hardswish: x·relu6(x+3)/6, the piecewise-linear swish of MobileNetV3; 0 parameters, shape-preserving."""

from __future__ import annotations

from .activation import Activation, Gradient
from .base import Saves, register


@register
class Hardswish(Activation):
    kind = "hardswish"
    saves = Saves(output=False)
    aliases = ("hswish",)
    function = "torch.nn.functional.hardswish"

    backward = Gradient("hardswish_backward", "input")
