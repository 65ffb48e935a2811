"""Modules the generated code calls besides torch.nn's own. They import only torch, so that a
generated standalone file can carry their source."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def width_runs(widths: list[int]) -> list[tuple[int, int]]:
    """(first, last) index ranges of consecutive inflows of one width."""
    runs, first = [], 0
    for i in range(1, len(widths) + 1):
        if i == len(widths) or widths[i] != widths[first]:
            runs.append((first, i))
            first = i
    return runs


def sum_slices(y: torch.Tensor, k: int) -> torch.Tensor:
    """Σ over the k equal slices of y's channels, in y's memory format: one reduction kernel."""
    n, kc, h, w = y.shape
    if k == 1:
        return y
    if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        return y.permute(0, 2, 3, 1).view(n, h, w, k, kc // k).sum(3).permute(0, 3, 1, 2)
    return y.reshape(n, k, kc // k, h, w).sum(1)


class CrossDepthwise(nn.Module):
    """Cross-layer depthwise convolution (DelugeNet, Eq. 1): every input is batch-normalised with its
    own statistics, scaled and shifted per channel by its own learned (weight, bias), and the results
    are summed. Inputs may differ in width: they are aligned at channel 0. `weight` and `bias` hold one
    entry per input channel, input after input (C×L values when every input has C channels).

    `reference` is the formula, the definition; the other implementations and the choice among them are
    in the compiler's `merges/crossdepthwise.py`, whose `run` a pass sets as `dispatch`. Without one the
    module runs the reference."""

    dispatch = None  # the forward a pass chose: called as dispatch(self, *xs, moments=moments)

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

    def forward(self, *xs: torch.Tensor, moments=None) -> torch.Tensor:
        """The merge; `moments`, the inflows' batch (var, mean) where a pass computed them once per
        producer, serve the dispatched implementation (the reference computes its own)."""
        if self.dispatch is not None:
            return self.dispatch(self, *xs, moments=moments)
        return self.reference(*xs)

    def reference(self, *xs: torch.Tensor) -> torch.Tensor:
        """Σ_l batch_norm_l(x_l)·w_l + b_l: one batch norm per inflow on its own slice of the state."""
        if self.training:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if momentum is None and self.training:  # cumulative average, as BatchNorm
            momentum = 1.0 / float(self.num_batches_tracked)
        out, start, width = None, 0, max(self.widths)
        for x, c in zip(xs, self.widths):
            s = slice(start, start + c)
            y = F.batch_norm(x, self.running_mean[s], self.running_var[s], self.weight[s], self.bias[s],
                             self.training, momentum if self.training else 0.0, self.eps)
            if c < width:
                y = F.pad(y, (0, 0, 0, 0, 0, width - c))
            out = y if out is None else out + y
            start += c
        return out

    def extra_repr(self) -> str:
        return f"widths={self.widths}, eps={self.eps}, momentum={self.momentum}"


class ScaleSum(nn.Module):
    """Σ_i w_i·x_i + b, per channel: the eval form of a cross-layer depthwise merge with every inflow's
    batch norm folded in (w_i = weight_i·γ_i/σ_i, b = Σ_i of what each inflow shifts) and any batch norm
    after it. Inflows of different widths are aligned at channel 0, as in `CrossDepthwise`. Consecutive
    inflows of one width are one run: concatenated, scaled and summed in three ops whatever their
    number, so that a deep dense block stays a small graph to run, trace and export. Weights are
    buffers shaped as they are used (k×C×1×1 per run), so running it needs no slicing."""

    def __init__(self, scales: list[torch.Tensor], shift: torch.Tensor):
        super().__init__()
        self.widths = [int(s.numel()) for s in scales]
        if shift.numel() != max(self.widths):
            raise ValueError(f"a shift of {shift.numel()} channels for inflows of widths {self.widths}")
        self.runs = width_runs(self.widths)
        for r, (first, last) in enumerate(self.runs):
            run = torch.stack([s.detach().reshape(-1) for s in scales[first:last]])
            self.register_buffer(f"scale{r}", run.reshape(last - first, -1, 1, 1).clone())
        self.register_buffer("shift", shift.detach().reshape(-1, 1, 1).clone())

    def scales(self) -> list[torch.Tensor]:
        """Each run's scales, k×C×1×1."""
        return [getattr(self, f"scale{r}") for r in range(len(self.runs))]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        width = max(self.widths)
        out = self.shift
        for (first, last), s in zip(self.runs, self.scales()):
            c = self.widths[first]
            if last - first == 1 and c == width:
                out = torch.addcmul(out, xs[first], s[0])
                continue
            if last - first == 1:
                y = xs[first] * s[0]
            else:
                y = (torch.cat(xs[first:last], 1).unflatten(1, (last - first, c)) * s).sum(1)
            if c < width:  # its channels first, zeros after
                y = F.pad(y, (0, 0, 0, 0, 0, width - c))
            out = y + out
        return out

    def then(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Fold a per-channel affine that reads this module's output into it."""
        for (first, _), s in zip(self.runs, self.scales()):
            s.mul_(scale[:self.widths[first]].reshape(1, -1, 1, 1))
        self.shift.mul_(scale.reshape(-1, 1, 1)).add_(shift.reshape(-1, 1, 1))

    def extra_repr(self) -> str:
        return f"widths={self.widths}"


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


class Mean(nn.Module):
    """The element-wise mean of its inputs. With `drop` > 0, in training each input of each sample is
    dropped with probability `drop` (FractalNet's local drop-path), one input chosen at random is kept
    for a sample that would lose them all, and the kept ones are averaged. The mask is drawn on the
    inputs' device, in their dtype."""

    def __init__(self, drop: float = 0.0):
        super().__init__()
        self.drop = drop

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = torch.stack(xs)
        if not self.training or self.drop == 0.0:
            return out.mean(0)
        n, b = len(xs), xs[0].shape[0]
        keep = torch.empty(n, b, dtype=out.dtype, device=out.device).bernoulli_(1.0 - self.drop)
        dead = keep.sum(0) == 0
        chosen = torch.randint(n, (b,), device=out.device)
        keep[chosen, torch.arange(b, device=out.device)] += dead.to(out.dtype)
        keep = keep.view(n, b, *([1] * (out.dim() - 2)))
        return (out * keep).sum(0) / keep.sum(0)

    def extra_repr(self) -> str:
        return f"drop={self.drop}"


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
