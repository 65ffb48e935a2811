"""hardswish: x·relu6(x+3)/6, the piecewise-linear swish of MobileNetV3; 0 parameters, shape-preserving."""

from __future__ import annotations

from .activation import Activation
from .base import Saves, register


@register
class Hardswish(Activation):
    kind = "hardswish"
    saves = Saves(output=False)
    aliases = ("hswish",)
    function = "torch.nn.functional.hardswish"

    @staticmethod
    def backward(g, x, y):
        import torch

        return torch.ops.aten.hardswish_backward(g, x)
