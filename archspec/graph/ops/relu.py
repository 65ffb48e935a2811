"""relu: the rectifier, the activation of every network in the papers."""

from __future__ import annotations

from .activation import Activation, from_output
from .base import Saves, register


@register
class Relu(Activation):
    kind = "relu"
    saves = Saves(inputs=False)
    aliases = ("rectifier",)
    function = "torch.nn.functional.relu"

    # the output alone decides where the gradient flows, so the input need not be kept
    backward = from_output("threshold_backward", 0)
