"""Modules the generated code calls besides torch.nn's own. They import only torch, so that a
generated standalone file can carry their source."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossDepthwise(nn.Module):
    """Cross-layer depthwise convolution (DelugeNet, Eq. 1): every input is batch-normalised with its
    own statistics, scaled and shifted per channel by its own learned (weight, bias), and the results
    are summed. Inputs may differ in width: they are aligned at channel 0. `weight` and `bias` hold one
    entry per input channel, input after input (C×L values when every input has C channels)."""

    def __init__(self, widths: list[int], eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.widths = list(widths)
        self.eps, self.momentum = eps, momentum
        n = sum(self.widths)
        self.weight = nn.Parameter(torch.full((n,), 1.0 / len(self.widths)))
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        out = None
        start = 0
        width = max(self.widths)
        for x, c in zip(xs, self.widths):
            y = F.batch_norm(x, self.running_mean[start:start + c], self.running_var[start:start + c],
                             self.weight[start:start + c], self.bias[start:start + c],
                             self.training, self.momentum, self.eps)
            if c < width:
                y = F.pad(y, (0, 0, 0, 0, 0, width - c))
            out = y if out is None else out + y
            start += c
        return out

    def extra_repr(self) -> str:
        return f"widths={self.widths}, eps={self.eps}, momentum={self.momentum}"
