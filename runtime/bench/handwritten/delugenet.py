"""DelugeNet for CIFAR written by hand as nested nn.Modules, the way a researcher would without
archspec: a baseline for the benchmarks. Modules are registered in the order the forward pass uses
them, so their parameters line up one for one with the compiled module's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CrossLayerDepthwise(nn.Module):
    """L inputs of C channels, each batch-normalised with its own statistics and scaled and shifted
    per (input, channel); the results are summed. `weight` and `bias` hold L×C values, input after input."""

    def __init__(self, channels: int, inputs: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.channels, self.inputs, self.eps, self.momentum = channels, inputs, eps, momentum
        self.weight = nn.Parameter(torch.full((inputs, channels), 1.0 / inputs))
        self.bias = nn.Parameter(torch.zeros(inputs, channels))
        self.register_buffer("running_mean", torch.zeros(inputs, channels))
        self.register_buffer("running_var", torch.ones(inputs, channels))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = None
        for i, x in enumerate(xs):
            y = F.batch_norm(x, self.running_mean[i], self.running_var[i], self.weight[i], self.bias[i],
                             self.training, self.momentum, self.eps)
            out = y if out is None else out + y
        return out


class Composite(nn.Module):
    """[CLDC over the block's tensors so far] → BN-ReLU-1×1 → BN-ReLU-3×3 → BN-ReLU-1×1 to 2n."""

    def __init__(self, cin: int, n: int, inputs: int):
        super().__init__()
        self.cldc = CrossLayerDepthwise(cin, inputs) if inputs > 1 else None
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, n, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(n)
        self.conv2 = nn.Conv2d(n, n, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(n)
        self.conv3 = nn.Conv2d(n, 2 * n, 1, bias=False)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x = self.cldc(xs) if self.cldc is not None else xs[-1]
        x = self.conv1(F.relu(self.bn1(x)))
        x = self.conv2(F.relu(self.bn2(x)))
        return self.conv3(F.relu(self.bn3(x)))


class Transition(nn.Module):
    """CLDC over the previous block's tensors (where there are several) → BN → 3×3 stride-2 conv (no
    ReLU between)."""

    def __init__(self, cin: int, cout: int, inputs: int):
        super().__init__()
        self.cldc = CrossLayerDepthwise(cin, inputs) if inputs > 1 else None
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(self.bn(self.cldc(xs) if self.cldc is not None else xs[-1]))


class DelugeNetCifar(nn.Module):
    """Bottleneck widths 32w/64w/128w, n/2n/3n composite layers; block 1 starts from its first
    composite layer's output (the stem's is not kept), blocks 2 and 3 from their transition's."""

    def __init__(self, n: int = 8, w: float = 1.0, classes: int = 10):
        super().__init__()
        widths = [round(32 * w), round(64 * w), round(128 * w)]
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.stages = nn.ModuleList()
        tensors = 0
        for i, (wd, layers) in enumerate(zip(widths, [n, 2 * n, 3 * n])):
            stage = nn.ModuleDict()
            if i > 0:
                stage["transition"] = Transition(2 * widths[i - 1], 2 * wd, tensors)
            cin = widths[0] if i == 0 else 2 * wd
            first = 0 if i == 0 else 1  # block 1's first layer reads the stem alone
            stage["layers"] = nn.ModuleList(
                Composite(cin if (i == 0 and j == 0) else 2 * wd, wd, max(first + j, 1)) for j in range(layers))
            tensors = first + layers
            self.stages.append(stage)
        self.head_cldc = CrossLayerDepthwise(2 * widths[-1], tensors) if tensors > 1 else None
        self.head_bn = nn.BatchNorm2d(2 * widths[-1])
        self.fc = nn.Linear(2 * widths[-1], classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (k * m.out_channels)))
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for i, stage in enumerate(self.stages):
            if i > 0:
                feats = [stage["transition"](feats)]
            for j, layer in enumerate(stage["layers"]):
                if i == 0 and j == 0:
                    feats = [layer(feats)]
                else:
                    feats.append(layer(feats))
        x = F.relu(self.head_bn(self.head_cldc(feats) if self.head_cldc is not None else feats[-1]))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
