"""relu: the rectifier, the activation of every network in the papers."""

from __future__ import annotations

from .base import Op, register


@register
class Relu(Op):
    kind = "relu"
    aliases = ("rectifier",)
    recomputable = True
    colour = "#55a868"

    @classmethod
    def lower(cls, args, ins):
        import torch.nn.functional as F

        return F.relu, (), {}

    @classmethod
    def activation(cls):
        import torch
        import torch.nn.functional as F

        # the output alone decides where the gradient flows, so the input need not be kept
        return F.relu, lambda g, x, y: torch.ops.aten.threshold_backward(g, y, 0)
