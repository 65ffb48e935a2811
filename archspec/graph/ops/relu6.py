"""relu6: the rectifier clipped at 6 (MobileNetV2); 0 parameters, shape-preserving."""

from __future__ import annotations

from .activation import Activation, from_output
from .base import Saves, register


@register
class Relu6(Activation):
    kind = "relu6"
    saves = Saves(output=False)
    aliases = ("clippedrelu", "boundedrelu")
    function = "torch.nn.functional.relu6"
    # the gradient passes where 0 < x < 6, exactly where 0 < y < 6: the output alone decides
    backward = from_output("hardtanh_backward", 0.0, 6.0)
