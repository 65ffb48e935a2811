"""hardsigmoid: relu6(x+3)/6, the piecewise-linear gate of MobileNetV3's squeeze-and-excitation;
0 parameters, shape-preserving."""

from __future__ import annotations

from .activation import Activation, Gradient
from .base import Saves, register


@register
class Hardsigmoid(Activation):
    kind = "hardsigmoid"
    saves = Saves(output=False)
    aliases = ("hsigmoid",)
    function = "torch.nn.functional.hardsigmoid"

    backward = Gradient("hardsigmoid_backward", "input")
