"""Weight initialisation as the authors' code does it: convolutions He-normal on fan-out, batch norm
γ=1 β=0, linear bias 0, cross-layer depthwise weights 1/L and bias 0."""

from __future__ import annotations

import math

import torch
from torch import nn

from .modules import CrossDepthwise


@torch.no_grad()
def initialise(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            m.weight.normal_(0.0, math.sqrt(2.0 / (k * m.out_channels)))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            m.weight.uniform_(-bound, bound)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, CrossDepthwise):
            m.weight.fill_(1.0 / len(m.widths))
            m.bias.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            m.num_batches_tracked.zero_()
