"""Weight initialisation as the authors' code does it. Convolutions and classifiers follow the scheme
their node names (`init`): He on fan-out, normal or uniform, or zeros; batch norm γ=1 β=0; linear bias 0;
cross-layer depthwise weights 1/L and bias 0."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from .modules import CrossDepthwise


def _conv(m: nn.Conv2d, scheme: str) -> None:
    std = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
    if scheme == "zeros":
        m.weight.zero_()
    elif scheme == "he_uniform":
        m.weight.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)
    else:
        m.weight.normal_(0.0, std)
    if m.bias is not None:
        m.bias.zero_()


def _linear(m: nn.Linear, scheme: str) -> None:
    bound = math.sqrt(3.0 / m.out_features) if scheme == "uniform_out" else 1.0 / math.sqrt(m.in_features)
    m.weight.uniform_(-bound, bound)
    if m.bias is not None:
        m.bias.zero_()


@torch.no_grad()
def initialise(model: nn.Module, schemes: Mapping[str, str] | None = None) -> None:
    """Initialise every weight of `model`; `schemes` maps a submodule's name to its node's `init`."""
    schemes = schemes or {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            _conv(m, schemes.get(name, "he_normal"))
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            _linear(m, schemes.get(name, "default"))
        elif isinstance(m, CrossDepthwise):
            m.weight.fill_(1.0 / len(m.widths))
            m.bias.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            m.num_batches_tracked.zero_()
