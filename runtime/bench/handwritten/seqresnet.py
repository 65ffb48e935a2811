"""SeqResNet for CIFAR written by hand. A SeqConv layer is a list of k-channel groups run in order,
each reading the layer input's last channels and the groups before it (windowed) or everything so far
(dense). The residual stream is carried raw, before batch norm, as a list of k-channel chunks: group i
of a block's second layer adds chunk i after its convolution. A baseline for the benchmarks; modules
are registered in forward order, so parameters line up one for one with the compiled module's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Chunks = list[torch.Tensor]


class CBR(nn.Module):
    """[Dropout2d] → conv → (+ shortcut) → BN → ReLU; returns the raw tensor (before the BN) and the
    activated one."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, drop: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout2d(drop) if drop > 0 else None
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.conv(self.drop(x) if self.drop is not None else x)
        if shortcut is not None:
            raw = raw + shortcut
        return raw, F.relu(self.bn(raw))


class Group(nn.Module):
    """k channels: a 3×3 CBR, or (bottleneck) a 1×1 CBR to k then a 3×3 CBR. Dropout acts on its input."""

    def __init__(self, cin: int, k: int, bottleneck: bool, drop: float):
        super().__init__()
        self.reduce = CBR(cin, k, 1, drop=drop) if bottleneck else None
        self.cbr = CBR(k if bottleneck else cin, k, 3, drop=0.0 if bottleneck else drop)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reduce is not None:
            x = self.reduce(x)[1]
        return self.cbr(x, shortcut)


class SeqConv(nn.Module):
    """cin → cout channels in cout/k groups of k; returns the groups' raw chunks and the concatenation
    of their activated outputs."""

    def __init__(self, cin: int, cout: int, k: int, bottleneck: bool, windowed: bool, drop: float):
        super().__init__()
        if cout % k or (windowed and cin % k):
            raise ValueError(f"SeqConv widths {cin} → {cout} must be whole numbers of groups of {k}")
        self.cin, self.k, self.windowed = cin, k, windowed
        self.groups = nn.ModuleList(Group(cin if windowed else cin + i * k, k, bottleneck, drop)
                                    for i in range(cout // k))

    def forward(self, x: torch.Tensor, stream: Chunks | None = None) -> tuple[Chunks, torch.Tensor]:
        k, outs, raws = self.k, [], []
        for i, group in enumerate(self.groups):
            if not outs:
                inp = x
            elif not self.windowed:
                inp = torch.cat([x] + outs, 1)
            elif i * k < self.cin:
                inp = torch.cat([x[:, i * k:]] + outs, 1)
            else:
                inp = torch.cat(outs[-(self.cin // k):], 1)
            raw, out = group(inp, stream[i] if stream is not None else None)
            raws.append(raw)
            outs.append(out)
        return raws, torch.cat(outs, 1)


class ResidualBlock(nn.Module):
    """Two SeqConv layers of C channels; the second adds the block input's raw stream, group by group."""

    def __init__(self, c: int, k: int, bottleneck: bool, windowed: bool, drop: float):
        super().__init__()
        self.a = SeqConv(c, c, k, bottleneck, windowed, drop)
        self.b = SeqConv(c, c, k, bottleneck, windowed, drop)

    def forward(self, x: torch.Tensor, stream: Chunks) -> tuple[Chunks, torch.Tensor]:
        return self.b(self.a(x)[1], stream)


class Downsample(nn.Module):
    """An extension SeqConv widens the input to `cout` ([input, extension]); a grouped stride-2 3×3
    CBR halves the resolution, and its raw output starts the next residual stream."""

    def __init__(self, cin: int, cout: int, k: int, bottleneck: bool, windowed: bool, drop: float):
        super().__init__()
        self.k = k
        self.extension = SeqConv(cin, cout - cin, k, bottleneck, windowed, drop)
        self.cbr = CBR(cout, cout, 3, stride=2, groups=cout // k)

    def forward(self, x: torch.Tensor) -> tuple[Chunks, torch.Tensor]:
        raw, out = self.cbr(torch.cat([x, self.extension(x)[1]], 1))
        return list(raw.split(self.k, 1)), out


class SeqResNetCifar(nn.Module):
    """Stage widths 16r/32r/48r with `blocks[i]` residual blocks each; a dense SeqConv 16 → 16r after
    the stem; Dropout2d(drop) on group inputs (not the first layer's) and before the final 1×1."""

    def __init__(self, r: int = 4, k: int = 8, blocks: list[int] = (1, 1, 1), bottleneck: bool = False,
                 windowed: bool = True, drop: float = 0.1, classes: int = 10):
        super().__init__()
        widths = [16 * r, 32 * r, 48 * r]
        self.stem = CBR(3, 16, 3)
        self.stem_seq = SeqConv(16, widths[0], k, bottleneck, windowed=False, drop=0.0)
        self.stages = nn.ModuleList()
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = nn.ModuleList()
            if i > 0:
                stage.append(Downsample(widths[i - 1], w, k, bottleneck, windowed, drop))
            stage.extend(ResidualBlock(w, k, bottleneck, windowed, drop) for _ in range(n))
            self.stages.append(stage)
        self.head = CBR(widths[2], widths[2], 1, drop=drop)
        self.fc = nn.Linear(widths[2], classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, ResidualBlock):  # each block starts as the identity on its stream
                for group in m.b.groups:
                    nn.init.zeros_(group.cbr.conv.weight)
        bound = math.sqrt(3.0 / classes)
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)[1]
        stream, x = self.stem_seq(x)
        for stage in self.stages:
            for block in stage:
                stream, x = block(x) if isinstance(block, Downsample) else block(x, stream)
        x = self.head(x)[1]
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
