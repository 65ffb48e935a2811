"""DenseNet-BC for CIFAR written by hand, torchvision-style: each bottleneck layer reads the
concatenation of every feature map of its block so far. A baseline for the benchmarks; modules are
registered in forward order, so parameters line up one for one with the compiled module's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    """BN-ReLU-1×1 to 4k, BN-ReLU-3×3 to k."""

    def __init__(self, cin: int, k: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * k, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * k)
        self.conv2 = nn.Conv2d(4 * k, k, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        x = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(x)))


class DenseBlock(nn.Module):
    def __init__(self, cin: int, k: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Bottleneck(cin + j * k, k) for j in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """BN-ReLU-1×1 (compressing the width) then a 2×2 average pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBCCifar(nn.Module):
    """2k-channel stem, three dense blocks of (depth − 4)/6 bottleneck layers, transitions that keep
    floor(width × compression) channels, BN-ReLU-pool-linear head."""

    def __init__(self, depth: int = 100, k: int = 12, compression: float = 0.5, classes: int = 10):
        super().__init__()
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(3, 2 * k, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        width = 2 * k
        for i in range(3):
            if i > 0:
                out = math.floor(width * compression)
                stages.append(Transition(width, out))
                width = out
            stages.append(DenseBlock(width, k, n))
            width += n * k
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stages(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
