"""Fused training modules for the lean pass (`lean.apply`). Each stands for a chain of plain ops that
starts at a concatenation and ends in convolutions, and holds for backward only the concatenation's
inputs (tensors the graph holds anyway) and per-channel statistics or masks, never the concatenation
or anything computed from it: backward rebuilds those by elementwise passes and never recomputes a
convolution. In eval mode, or with grad disabled, each runs its plain ops. The modules own no weights:
the graph passes them the modules they stand for, so state_dict keys do not change.

This file imports only torch, so that a standalone file can carry its source."""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn



class _Conv(NamedTuple):
    """What backward needs of the convolution besides its weights, and the dtype it ran in."""

    eps: float
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    dtype: torch.dtype


def _dtype(xs: tuple[torch.Tensor, ...]) -> torch.dtype:
    return functools.reduce(torch.promote_types, (t.dtype for t in xs))


class _ConcatNormActConvFn(torch.autograd.Function):
    """conv(y) for y = relu(bn(cat(xs, 1))), given y and the batch statistics `mean`, `invstd`, all
    computed outside autograd. Saves the inputs `xs` (references to tensors the graph holds anyway) and
    the statistics, never the concatenation or y."""

    @staticmethod
    def forward(ctx, y, mean, invstd, bn_w, bn_b, conv_w, conv_b, c: _Conv, *xs):
        with torch.autocast(y.device.type, enabled=False):
            z = F.conv2d(y.to(c.dtype), conv_w.to(c.dtype), None if conv_b is None else conv_b.to(c.dtype),
                         c.stride, c.padding, c.dilation, c.groups)
        ctx.save_for_backward(mean, invstd, bn_w, bn_b, conv_w, *xs)
        ctx.conv = c
        ctx.bias_sizes = None if conv_b is None else list(conv_b.shape)
        return z

    @staticmethod
    def backward(ctx, gz):
        mean, invstd, bn_w, bn_b, conv_w, *xs = ctx.saved_tensors
        c: _Conv = ctx.conv
        need_bw, need_bb, need_cw, need_cb = ctx.needs_input_grad[3:7]
        need_xs = ctx.needs_input_grad[8:]
        need_bw, need_bb = need_bw and bn_w is not None, need_bb and bn_b is not None
        need_y = any(need_xs) or need_bw or need_bb
        gxs, gbw, gbb = [None] * len(xs), None, None
        with torch.autocast(gz.device.type, enabled=False):
            x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
            var = invstd.pow(-2) - c.eps  # gives back the forward pass's 1/sqrt(var + eps), to rounding
            y = torch.relu_(torch.batch_norm(x, bn_w, bn_b, mean, var, False, 0.0, c.eps,
                                             torch.backends.cudnn.enabled))
            gy, gcw, gcb = torch.ops.aten.convolution_backward(
                gz, y.to(c.dtype), conv_w.to(c.dtype), ctx.bias_sizes, c.stride, c.padding, c.dilation, False,
                [0] * len(c.padding), c.groups, [need_y, need_cw, need_cb])
            if need_y:
                gy = gy.to(y.dtype)
                gy = torch.ops.aten.threshold_backward.grad_input(gy, y, 0, grad_input=gy)
                del y
                gx, gbw, gbb = torch.ops.aten.native_batch_norm_backward(
                    gy, x, bn_w, None, None, mean, invstd, True, c.eps, [any(need_xs), need_bw, need_bb])
                if gx is not None:
                    gxs = [g if need else None for g, need in zip(gx.split([t.shape[1] for t in xs], 1), need_xs)]
        gcw = None if gcw is None else gcw.to(conv_w.dtype)
        gcb = None if gcb is None else gcb.to(conv_w.dtype)
        return (None, None, None, gbw if need_bw else None, gbb if need_bb else None, gcw, gcb, None, *gxs)


class ConcatNormActConv(nn.Module):
    """`conv(relu(bn(cat(xs, 1))))` for a given BatchNorm2d and Conv2d, holding no weights of its own: the
    graph passes both modules in, so they stay at their own paths (state_dict keys do not change) and
    anything that swaps them (SyncBatchNorm conversion, folding) is seen on the next call. Training runs
    the batch norm through `F.batch_norm`'s own kernel, running averages included, outside autograd.
    `names` are the graph names of the cat, bn, relu and conv it stands for."""

    def __init__(self, names: tuple[str, str, str, str]):
        super().__init__()
        self.names = tuple(names)

    def forward(self, bn: nn.BatchNorm2d, conv: nn.Conv2d, *xs: torch.Tensor) -> torch.Tensor:
        if not (bn.training and torch.is_grad_enabled()) or xs[0].numel() <= xs[0].shape[1]:
            return conv(F.relu(bn(torch.cat(xs, 1))))  # the last case raises F.batch_norm's own error
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                momentum = 1.0 / float(bn.num_batches_tracked)
        dev = xs[0].device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else _dtype(xs)
        with torch.no_grad(), torch.autocast(dev, enabled=False):
            y, mean, invstd = torch.native_batch_norm(torch.cat(xs, 1), bn.weight, bn.bias, bn.running_mean,
                                                      bn.running_var, True, momentum, bn.eps)
            y = torch.relu_(y)
        c = _Conv(bn.eps, conv.stride, conv.padding, conv.dilation, conv.groups, dtype)
        return _ConcatNormActConvFn.apply(y, mean, invstd, bn.weight, bn.bias, conv.weight, conv.bias, c, *xs)

    def extra_repr(self) -> str:
        return "names=" + repr(self.names)



class _Convs(NamedTuple):
    """What backward needs of the convolutions besides their weights: how many inputs, each
    convolution's (stride, padding, dilation, groups) and bias size, and the dtype they ran in."""

    parts: int
    geometry: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int], ...]
    bias_sizes: tuple[list[int] | None, ...]
    dtype: torch.dtype


def _conv_input(xs: tuple[torch.Tensor, ...], noise: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
    return (x if noise is None else x * noise).to(dtype)


class _ConcatConvFn(torch.autograd.Function):
    """Every conv_k(cat(xs) · noise), noise a per-(image, channel) dropout mask or None. Saves the inputs
    `xs`, the mask and the weights; backward rebuilds the masked concatenation once for all the weight
    gradients."""

    @staticmethod
    def forward(ctx, c: _Convs, noise, *tensors):
        k = len(c.geometry)
        xs, ws, bs = tensors[:c.parts], tensors[c.parts:c.parts + k], tensors[c.parts + k:]
        with torch.autocast(xs[0].device.type, enabled=False):
            x = _conv_input(xs, noise, c.dtype)
            zs = tuple(F.conv2d(x, w.to(c.dtype), None if b is None else b.to(c.dtype), *g)
                       for w, b, g in zip(ws, bs, c.geometry))
        ctx.save_for_backward(noise, *ws, *xs)
        ctx.convs = c
        return zs if k > 1 else zs[0]

    @staticmethod
    def backward(ctx, *gzs):
        c: _Convs = ctx.convs
        k = len(c.geometry)
        noise, *rest = ctx.saved_tensors
        ws, xs = rest[:k], rest[k:]
        need = ctx.needs_input_grad[2:]
        need_xs, need_ws, need_bs = need[:c.parts], need[c.parts:c.parts + k], need[c.parts + k:]
        gx, gws, gbs = None, [], []
        with torch.autocast(xs[0].device.type, enabled=False):
            x = _conv_input(tuple(xs), noise, c.dtype)
            for gz, w, g, bias_size, nw, nb in zip(gzs, ws, c.geometry, c.bias_sizes, need_ws, need_bs):
                stride, padding, dilation, groups = g
                gi, gw, gb = torch.ops.aten.convolution_backward(
                    gz, x, w.to(c.dtype), bias_size, stride, padding, dilation, False, [0] * len(padding), groups,
                    [any(need_xs), nw, nb and bias_size is not None])
                gx = gi if gx is None else gx.add_(gi)
                gws.append(None if gw is None else gw.to(w.dtype))
                gbs.append(None if gb is None else gb.to(w.dtype))
            del x
            gxs = [None] * c.parts
            if gx is not None:
                if noise is not None:
                    gx = gx.mul_(noise.to(gx.dtype))
                gxs = [g.to(t.dtype) if need else None
                       for g, t, need in zip(gx.split([t.shape[1] for t in xs], 1), xs, need_xs)]
        return (None, None, *gxs, *gws, *gbs)


class ConcatConv(nn.Module):
    """`conv_k(drop(cat(xs, 1)))` for one or more Conv2d reading the same concatenation (a GUNN unit and
    its projection shortcut), `drop` a Dropout2d or None. Returns one tensor per convolution. Dropout
    draws its mask exactly as `F.dropout2d` does, so a seeded run gives the plain graph's numbers.
    `names` are the graph names of the cat (None for one input), the dropout (or None) and the
    convolutions."""

    def __init__(self, names: tuple[str | None, ...]):
        super().__init__()
        self.names = tuple(names)

    def forward(self, drop: nn.Dropout2d | None, convs: tuple[nn.Conv2d, ...], *xs: torch.Tensor):
        if not (torch.is_grad_enabled() and convs[0].training):
            x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
            x = x if drop is None else drop(x)
            return tuple(conv(x) for conv in convs) if len(convs) > 1 else convs[0](x)
        dtype = _dtype(xs)
        noise = None
        if drop is not None and drop.training and drop.p > 0:
            shape = (xs[0].shape[0], sum(t.shape[1] for t in xs)) + (1,) * (xs[0].dim() - 2)
            noise = xs[0].new_empty(shape, dtype=dtype)
            if drop.p == 1:
                noise.zero_()
            else:
                noise.bernoulli_(1 - drop.p).div_(1 - drop.p)
        dev = xs[0].device.type
        run = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else dtype
        c = _Convs(len(xs), tuple((m.stride, m.padding, m.dilation, m.groups) for m in convs),
                   tuple(None if m.bias is None else list(m.bias.shape) for m in convs), run)
        return _ConcatConvFn.apply(c, noise, *xs, *(m.weight for m in convs), *(m.bias for m in convs))

    def extra_repr(self) -> str:
        return "names=" + repr(self.names)
