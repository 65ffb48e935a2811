"""DelugeNet written by hand as nested nn.Modules, the way a researcher would without archspec: the
baseline that benchmarks compare the compiled module against."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CrossLayerDepthwise(nn.Module):
    """L inputs of C channels: per-input batch norm (no affine), per-(channel, input) weight and bias."""

    def __init__(self, channels: int, inputs: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels, affine=False) for _ in range(inputs))
        self.weight = nn.Parameter(torch.full((channels, inputs), 1.0 / inputs))
        self.bias = nn.Parameter(torch.zeros(channels, inputs))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = 0
        for i, (x, bn) in enumerate(zip(xs, self.norms)):
            out = out + bn(x) * self.weight[:, i, None, None] + self.bias[:, i, None, None]
        return out


class Composite(nn.Module):
    def __init__(self, cin: int, n: int, inputs: int):
        super().__init__()
        self.cldc = CrossLayerDepthwise(cin, inputs) if inputs > 1 else None
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, n, 1, bias=False),
            nn.BatchNorm2d(n), nn.ReLU(), nn.Conv2d(n, n, 3, padding=1, bias=False),
            nn.BatchNorm2d(n), nn.ReLU(), nn.Conv2d(n, 2 * n, 1, bias=False))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.body(self.cldc(xs) if self.cldc is not None else xs[-1])


class DelugeNetCifar(nn.Module):
    def __init__(self, n: int = 8, w: float = 1.0, classes: int = 10):
        super().__init__()
        widths = [round(32 * w), round(64 * w), round(128 * w)]
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.first = Composite(widths[0], widths[0], 1)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        tensors = 1
        for i, (wd, layers) in enumerate(zip(widths, [n - 1, 2 * n, 3 * n])):
            if i > 0:
                self.transitions.append(nn.ModuleDict({
                    "cldc": CrossLayerDepthwise(2 * widths[i - 1], tensors),
                    "body": nn.Sequential(nn.BatchNorm2d(2 * widths[i - 1]),
                                          nn.Conv2d(2 * widths[i - 1], 2 * wd, 3, stride=2, padding=1, bias=False))}))
                tensors = 1
            self.blocks.append(nn.ModuleList(Composite(2 * wd, wd, tensors + j) for j in range(layers)))
            tensors += layers
        self.head_cldc = CrossLayerDepthwise(2 * widths[-1], tensors)
        self.head = nn.Sequential(nn.BatchNorm2d(2 * widths[-1]), nn.ReLU())
        self.fc = nn.Linear(2 * widths[-1], classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (k * m.out_channels)))
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.first([self.stem(x)])]
        for i, block in enumerate(self.blocks):
            if i > 0:
                t = self.transitions[i - 1]
                feats = [t["body"](t["cldc"](feats))]
            for layer in block:
                feats.append(layer(feats))
        x = self.head(self.head_cldc(feats))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
