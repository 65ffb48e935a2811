"""Modules the generated code calls besides torch.nn's own. They import only torch, so that a
generated standalone file can carry their source."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _sum_inflows(y: torch.Tensor, k: int) -> torch.Tensor:
    """Σ over the k equal slices of y's channels, in y's memory format: one reduction kernel."""
    n, kc, h, w = y.shape
    if k == 1:
        return y
    if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        return y.permute(0, 2, 3, 1).view(n, h, w, k, kc // k).sum(3).permute(0, 3, 1, 2)
    return y.reshape(n, k, kc // k, h, w).sum(1)


def _expand_inflows(g: torch.Tensor, k: int) -> torch.Tensor:
    """g repeated k times along channels, in g's memory format (the gradient of `_sum_inflows`)."""
    if k == 1:
        return g
    return torch.cat([g] * k, 1)


class _CrossDepthwiseRun(torch.autograd.Function):
    """k inputs of one width through one batch norm and one sum: concatenate, normalise (every channel
    has its own statistics and affine, so this is exactly k separate batch norms), sum the k slices.
    Saves only the inputs (held by the graph anyway) and per-channel statistics; backward concatenates
    again instead of keeping the concatenation, so memory stays linear in the number of inflows while
    the kernel count stays constant."""

    @staticmethod
    def forward(ctx, weight, bias, running_mean, running_var, momentum: float, eps: float, *xs):
        k = len(xs)
        x = torch.cat(xs, 1) if k > 1 else xs[0]
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(weight, mean, invstd, *xs)
        ctx.eps = eps
        return _sum_inflows(y, k)

    @staticmethod
    def backward(ctx, g):
        weight, mean, invstd, *xs = ctx.saved_tensors
        k = len(xs)
        need_w, need_b = ctx.needs_input_grad[0:2]
        need_x = any(ctx.needs_input_grad[6:])
        x = torch.cat(xs, 1) if k > 1 else xs[0]
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            _expand_inflows(g.to(x.dtype), k), x, weight, None, None, mean, invstd, True, ctx.eps,
            [need_x, need_w, need_b])
        gxs = gx.split(xs[0].shape[1], 1) if need_x else (None,) * k
        return (gw, gb, None, None, None, None, *gxs)


class CrossDepthwise(nn.Module):
    """Cross-layer depthwise convolution (DelugeNet, Eq. 1): every input is batch-normalised with its
    own statistics, scaled and shifted per channel by its own learned (weight, bias), and the results
    are summed. Inputs may differ in width: they are aligned at channel 0. `weight` and `bias` hold one
    entry per input channel, input after input (C×L values when every input has C channels)."""

    # Inflows of at most this many elements are normalised together: a small merge is bound by kernel
    # launches, and the concatenation's constant kernel count wins. Above it the merge is bound by memory
    # traffic, and one batch norm per inflow moves fewer bytes than concatenating twice (H200, bf16:
    # DelugeNet-146 with every merge concatenated trained at 1.56× a per-inflow hand-written module's
    # images/s at batch 128, and at 0.76× at batch 1,024).
    concat_below: int = 2**24

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
        momentum = self.momentum
        if momentum is None and self.training:  # cumulative average, as BatchNorm
            momentum = 1.0 / float(self.num_batches_tracked)
        out = None
        start = 0
        width = max(self.widths)
        for first, last in self._runs():
            c = self.widths[first]
            end = start + c * (last - first)
            args = (self.weight[start:end], self.bias[start:end], self.running_mean[start:end],
                    self.running_var[start:end])
            if self.training and xs[first].numel() > self.concat_below:
                y = None
                for i in range(first, last):  # one batch norm per inflow on its own slice of the state
                    s = slice(start + c * (i - first), start + c * (i - first + 1))
                    t = F.batch_norm(xs[i], self.running_mean[s], self.running_var[s], self.weight[s], self.bias[s],
                                     True, momentum, self.eps)
                    y = t if y is None else y + t
            elif self.training:
                y = _CrossDepthwiseRun.apply(*args, momentum, self.eps, *xs[first:last])
            else:
                x = torch.cat(xs[first:last], 1) if last - first > 1 else xs[first]
                y = _sum_inflows(F.batch_norm(x, args[2], args[3], args[0], args[1], False, 0.0, self.eps),
                                 last - first)
            if c < width:
                y = F.pad(y, (0, 0, 0, 0, 0, width - c))
            out = y if out is None else out + y
            start = end
        return out

    def _runs(self) -> list[tuple[int, int]]:
        """(first, last) index ranges of consecutive inputs of one width: each takes one batch norm."""
        runs, first = [], 0
        for i in range(1, len(self.widths) + 1):
            if i == len(self.widths) or self.widths[i] != self.widths[first]:
                runs.append((first, i))
                first = i
        return runs

    def extra_repr(self) -> str:
        return f"widths={self.widths}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm2d(nn.LayerNorm):
    """Layer normalisation over the channels of each position of an N×C×H×W tensor (ConvNeXt's):
    torch's LayerNorm of C features applied to the channels-last view, so its parameters are
    torchvision's `LayerNorm2d`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Scale(nn.Module):
    """A learned per-channel multiply (layer scale). `weight` is C×1×1, the shape of torchvision
    ConvNeXt's `layer_scale`, so that its values load as they are."""

    def __init__(self, channels: int, init: float = 1.0):
        super().__init__()
        self.channels, self.init = channels, init
        self.weight = nn.Parameter(torch.full((channels, 1, 1), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return f"{self.channels}, init={self.init}"


class DropPath(nn.Module):
    """Stochastic depth per sample (torchvision's `stochastic_depth`, mode "row"): in training each
    sample is zeroed with probability p and the rest scaled by 1/(1−p); identity in eval. The mask is
    drawn on the input's device, in its dtype."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        if keep > 0.0:
            noise.div_(keep)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"
