"""silu (swish): x·σ(x), a smooth activation; 0 parameters, shape-preserving."""

from __future__ import annotations

from .base import Op, register


@register
class Silu(Op):
    kind = "silu"
    aliases = ("swish",)
    colour = "#55a868"  # as every activation
    recomputable = True

    @classmethod
    def lower(cls, args, ins):
        import torch.nn.functional as F

        return F.silu, (), {}

    @classmethod
    def activation(cls):
        import torch
        import torch.nn.functional as F

        return F.silu, lambda g, x, y: torch.ops.aten.silu_backward(g, x)
