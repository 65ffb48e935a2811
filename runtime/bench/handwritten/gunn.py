"""GUNN for CIFAR written by hand: each GUNN layer replaces its segments one after another, each by
itself plus an update unit (with its projection shortcut) that reads all channels, the segments already
updated included. A baseline for the benchmarks; modules are registered in forward order, so
parameters line up one for one with the compiled module's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class UpdateUnit(nn.Module):
    """m bottlenecks (1×1 to k·o, 3×3, 1×1 to o, each conv with a BN, the first two with a ReLU) summed
    with a projection shortcut (1×1 C→o, BN) from the unit's input."""

    def __init__(self, cin: int, o: int, k: int, m: int):
        super().__init__()
        convs: list[nn.Module] = []
        c = cin
        for _ in range(m):
            for cout, kernel in ((k * o, 1), (k * o, 3), (o, 1)):
                convs += [nn.Conv2d(c, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)]
                c = cout
        self.body = nn.ModuleList(convs)
        self.shortcut = nn.Conv2d(cin, o, 1, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i in range(0, len(self.body), 2):
            y = self.body[i + 1](self.body[i](y))
            if i // 2 % 3 != 2:  # no ReLU after a bottleneck's last 1×1
                y = F.relu(y)
        return y + self.shortcut_bn(self.shortcut(x))


class GunnLayer(nn.Module):
    """C channels in `segments` segments of o = C/P; `gradual` updates read the segments already
    updated, `simultaneous` ones the layer's input; `identity` keeps each old segment in its update."""

    def __init__(self, channels: int, segments: int, k: int, m: int, order: str = "gradual",
                 identity: bool = True):
        super().__init__()
        if order not in ("gradual", "simultaneous"):
            raise ValueError(f"order must be gradual or simultaneous, got {order!r}")
        self.o, self.gradual, self.identity = channels // segments, order == "gradual", identity
        self.units = nn.ModuleList(UpdateUnit(channels, self.o, k, m) for _ in range(segments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, new = self.o, []
        for i, unit in enumerate(self.units):
            seen = torch.cat(new + [x[:, i * o:]], 1) if self.gradual and new else x
            update = unit(seen)
            new.append(x[:, i * o:(i + 1) * o] + update if self.identity else update)
        return torch.cat(new, 1)


class GunnCifar(nn.Module):
    """3×3 stem to 64; per stage a 1×1 to C (BN, ReLU; a 2×2 average pool after it in stages 2 and 3)
    and a GUNN layer; a final 1×1, BN, ReLU, global average pool and the classifier."""

    def __init__(self, widths: list[int] = (240, 300, 360), segments: list[int] = (20, 25, 30), k: int = 2,
                 m: int = 1, order: str = "gradual", identity: bool = True, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages, c = [], 64
        for i, (w, p) in enumerate(zip(widths, segments)):
            layers: list[nn.Module] = [nn.Conv2d(c, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i > 0:
                layers.append(nn.AvgPool2d(2))
            layers.append(GunnLayer(w, p, k, m, order, identity))
            stages.append(nn.Sequential(*layers))
            c = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Conv2d(c, widths[-1], 1, bias=False), nn.BatchNorm2d(widths[-1]), nn.ReLU())
        self.fc = nn.Linear(widths[-1], classes)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                n = mod.kernel_size[0] * mod.kernel_size[1] * mod.out_channels
                nn.init.normal_(mod.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(mod, nn.Linear):
                nn.init.zeros_(mod.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
