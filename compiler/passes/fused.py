"""Fused training modules for the lean pass (`lean.apply`). Each stands for a chain of plain ops that
starts at a concatenation and ends in convolutions, and holds for backward only the concatenation's
inputs (tensors the graph holds anyway) and per-channel statistics or masks, never the concatenation
or anything computed from it: backward rebuilds those by elementwise passes and never recomputes a
convolution. In eval mode, or with grad disabled, each runs its plain ops. The modules own no weights:
the graph passes them the modules they stand for, so state_dict keys do not change.

The work is done by custom ops (each with its backward another), opaque to torch.compile, so that a
compiled module cannot merge backward's rebuilt concatenation with forward's and save it again."""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archspec.graph.ops import OPS

from ..resolve import activation

_LIB = __name__.replace(".", "_")  # the op library, named after this module


def _dtype(xs: tuple[torch.Tensor, ...]) -> torch.dtype:
    return functools.reduce(torch.promote_types, (t.dtype for t in xs))


def _run_dtype(xs: tuple[torch.Tensor, ...]) -> torch.dtype:
    """The dtype the convolutions run in: autocast's where it is on, the inputs' otherwise."""
    dev = xs[0].device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else _dtype(xs)


def _needs(need, n: int) -> list[bool]:
    """Per-element `needs_input_grad` of a list input, which autograd gives as one flag or a tuple."""
    return [bool(v) for v in need] if isinstance(need, (tuple, list)) else [bool(need)] * n


def _fwd_math(xs, bn_w, bn_b, conv_w, conv_b, act, eps, stride, padding, dilation, groups, dtype):
    forward, _ = activation(OPS[act])
    with torch.autocast(xs[0].device.type, enabled=False):
        y, mean, invstd = torch.native_batch_norm(torch.cat(xs, 1), bn_w, bn_b, None, None, True, 0.0, eps)
        y = forward(y)
        z = F.conv2d(y.to(dtype), conv_w.to(dtype), None if conv_b is None else conv_b.to(dtype), stride, padding,
                     dilation, groups)
    return z, mean, invstd


@torch.library.custom_op(_LIB + "::concat_norm_act_conv", mutates_args=())
def concat_norm_act_conv(xs: list[Tensor], bn_w: Optional[Tensor], bn_b: Optional[Tensor], conv_w: Tensor,
                         conv_b: Optional[Tensor], act: str, eps: float, stride: list[int], padding: list[int],
                         dilation: list[int], groups: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """conv(act(bn(cat(xs)))) with batch statistics, and those statistics (mean, 1/std); `act` is the
    word of a recomputable activation in the op registry. Functional (a custom op with autograd may not
    mutate), so the caller updates the running averages."""
    return _fwd_math(xs, bn_w, bn_b, conv_w, conv_b, act, eps, stride, padding, dilation, groups, dtype)


@concat_norm_act_conv.register_fake
def _(xs, bn_w, bn_b, conv_w, conv_b, act, eps, stride, padding, dilation, groups, dtype):
    return _fwd_math(xs, bn_w, bn_b, conv_w, conv_b, act, eps, stride, padding, dilation, groups, dtype)


def _bwd_math(gz, xs, mean, invstd, bn_w, bn_b, conv_w, bias_size, act, eps, stride, padding, dilation, groups,
              dtype, mask):
    need_xs, need_bw, need_bb, need_cw, need_cb = mask
    need_y = need_xs or need_bw or need_bb
    forward, backward = activation(OPS[act])
    with torch.autocast(gz.device.type, enabled=False):
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        var = invstd.pow(-2) - eps
        h = torch.batch_norm(x, bn_w, bn_b, mean, var, False, 0.0, eps, torch.backends.cudnn.enabled)
        y = forward(h)
        gy, gcw, gcb = torch.ops.aten.convolution_backward(
            gz, y.to(dtype), conv_w.to(dtype), bias_size or None, stride, padding, dilation, False, [0] * len(padding),
            groups, [need_y, need_cw, need_cb])
        gx, gbw, gbb = None, None, None
        if need_y:
            gy = backward(gy.to(y.dtype), h, y)
            del h, y
            gx, gbw, gbb = torch.ops.aten.native_batch_norm_backward(
                gy, x, bn_w, None, None, mean, invstd, True, eps, [need_xs, need_bw, need_bb])
    gcw = None if gcw is None else gcw.to(conv_w.dtype)
    gcb = None if gcb is None else gcb.to(conv_w.dtype)
    # a custom op returns no None (the caller's mask says which are real) and no output twice
    return tuple(gz.new_empty(0) if g is None else g for g in (gx, gbw, gbb, gcw, gcb))


@torch.library.custom_op(_LIB + "::concat_norm_act_conv_backward", mutates_args=())
def concat_norm_act_conv_backward(gz: Tensor, xs: list[Tensor], mean: Tensor, invstd: Tensor, bn_w: Optional[Tensor],
                                  bn_b: Optional[Tensor], conv_w: Tensor, bias_size: list[int], act: str, eps: float,
                                  stride: list[int], padding: list[int], dilation: list[int], groups: int,
                                  dtype: torch.dtype, mask: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of the concatenation, the batch norm's weight and bias, the convolution's weight and
    bias, rebuilding the normalised activation from `xs` and the statistics."""
    return _bwd_math(gz, xs, mean, invstd, bn_w, bn_b, conv_w, bias_size, act, eps, stride, padding, dilation,
                     groups, dtype, mask)


@concat_norm_act_conv_backward.register_fake
def _(gz, xs, mean, invstd, bn_w, bn_b, conv_w, bias_size, act, eps, stride, padding, dilation, groups, dtype,
      mask):
    need_xs, need_bw, need_bb, need_cw, need_cb = mask
    like = lambda t, need: torch.empty_like(t) if need and t is not None else gz.new_empty(0)  # noqa: E731
    gx = torch.cat(xs, 1) if need_xs else gz.new_empty(0)
    return (torch.empty_like(gx), like(bn_w, need_bw), like(bn_b, need_bb), like(conv_w, need_cw),
            gz.new_empty(bias_size, dtype=conv_w.dtype) if need_cb and bias_size else gz.new_empty(0))


def _setup(ctx, inputs, output):
    (xs, bn_w, bn_b, conv_w, conv_b, act, eps, stride, padding, dilation, groups, dtype) = inputs
    _z, mean, invstd = output
    ctx.save_for_backward(mean, invstd, bn_w, bn_b, conv_w, *xs)
    ctx.geometry = (act, eps, stride, padding, dilation, groups, dtype)
    ctx.bias_size = [] if conv_b is None else list(conv_b.shape)
    ctx.mark_non_differentiable(mean, invstd)


def _backward(ctx, gz, _gmean, _ginvstd):
    mean, invstd, bn_w, bn_b, conv_w, *xs = ctx.saved_tensors
    act, eps, stride, padding, dilation, groups, dtype = ctx.geometry
    need = ctx.needs_input_grad
    mask = [any(_needs(need[0], len(xs))), bool(need[1]) and bn_w is not None, bool(need[2]) and bn_b is not None,
            bool(need[3]), bool(need[4]) and bool(ctx.bias_size)]
    gx, gbw, gbb, gcw, gcb = concat_norm_act_conv_backward(gz, xs, mean, invstd, bn_w, bn_b, conv_w, ctx.bias_size,
                                                           act, eps, stride, padding, dilation, groups, dtype, mask)
    gxs = [g.to(t.dtype) for g, t in zip(gx.split([t.shape[1] for t in xs], 1), xs)] if mask[0] else None
    pick = lambda g, m: g if m else None
    return (gxs, pick(gbw, mask[1]), pick(gbb, mask[2]), pick(gcw, mask[3]), pick(gcb, mask[4]),
            None, None, None, None, None, None, None)


concat_norm_act_conv.register_autograd(_backward, setup_context=_setup)


class ConcatNormActConv(nn.Module):
    """`conv(act(bn(cat(xs, 1))))` for a given BatchNorm2d and Conv2d and a recomputable activation `act`
    (a word of the op registry, which gives its forward and backward), holding no weights of its own:
    the graph passes both modules in, so they stay at their own paths (state_dict keys do not change)
    and anything that swaps them (SyncBatchNorm conversion, folding) is seen on the next call. Training
    runs the batch norm through `F.batch_norm`'s own kernel outside autograd, inside one opaque custom op
    (with its backward another), so that torch.compile cannot merge backward's rebuilt concatenation
    with forward's and save it; the running averages are updated here, since such an op may not mutate.
    `names` are the graph names of the cat, bn, activation and conv it stands for."""

    def __init__(self, names: tuple[str, str, str, str], act: str):
        super().__init__()
        if act not in OPS or not OPS[act].recomputable:
            raise ValueError(f"{act!r} is not a recomputable activation of the op registry")
        self.names, self.act = tuple(names), act

    def forward(self, bn: nn.BatchNorm2d, conv: nn.Conv2d, *xs: torch.Tensor) -> torch.Tensor:
        if not (bn.training and torch.is_grad_enabled()) or xs[0].numel() <= xs[0].shape[1]:
            forward, _ = activation(OPS[self.act])  # the last case raises F.batch_norm's own error
            return conv(forward(bn(torch.cat(xs, 1))))
        z, mean, invstd = concat_norm_act_conv(list(xs), bn.weight, bn.bias, conv.weight, conv.bias, self.act, bn.eps,
                                               list(conv.stride), list(conv.padding), list(conv.dilation),
                                               conv.groups, _run_dtype(xs))
        if bn.track_running_stats and bn.running_mean is not None:
            momentum = 0.0 if bn.momentum is None else bn.momentum
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if bn.momentum is None:
                    momentum = 1.0 / float(bn.num_batches_tracked)
            with torch.no_grad():  # as native_batch_norm does: the unbiased batch variance into the average
                n = xs[0].numel() // xs[0].shape[1]
                var = (invstd.pow(-2) - bn.eps) * (n / max(n - 1, 1))
                bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
                bn.running_var.lerp_(var.to(bn.running_var.dtype), momentum)
        return z

    def extra_repr(self) -> str:
        return f"names={self.names!r}, act={self.act!r}"


def _geometry(flat: list[int], k: int) -> tuple[list[int], list[int], list[int], int]:
    """Convolution k's (stride, padding, dilation, groups) out of the flat list a custom op can take."""
    g = flat[7 * k:7 * k + 7]
    return g[0:2], g[2:4], g[4:6], g[6]


def _conv_input(xs: list[Tensor], noise: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
    return (x if noise is None else x * noise).to(dtype)


def _concat_conv_math(xs, noise, weights, biases, has_bias, geometry, dtype):
    found = iter(biases)
    with torch.autocast(xs[0].device.type, enabled=False):
        x = _conv_input(xs, noise, dtype)
        return [F.conv2d(x, w.to(dtype), next(found).to(dtype) if b else None, *_geometry(geometry, k))
                for k, (w, b) in enumerate(zip(weights, has_bias))]


@torch.library.custom_op(_LIB + "::concat_conv", mutates_args=())
def concat_conv(xs: list[Tensor], noise: Optional[Tensor], weights: list[Tensor], biases: list[Tensor],
                has_bias: list[bool], geometry: list[int], dtype: torch.dtype) -> list[Tensor]:
    """Every conv_k(cat(xs) · noise), noise a per-(image, channel) dropout mask or None; `biases` are
    those of the convolutions `has_bias` marks; `geometry` holds each convolution's stride, padding,
    dilation (two each) and groups."""
    return _concat_conv_math(xs, noise, weights, biases, has_bias, geometry, dtype)


@concat_conv.register_fake
def _(xs, noise, weights, biases, has_bias, geometry, dtype):
    return _concat_conv_math(xs, noise, weights, biases, has_bias, geometry, dtype)


def _concat_conv_grads(gzs, xs, noise, weights, bias_sizes, geometry, dtype, mask):
    """[grad of the concatenation, each weight's, each bias's], empty where `mask` says none is needed;
    the masked concatenation is rebuilt once for all the weight gradients."""
    k = len(weights)
    need_x, need_ws, need_bs = mask[0], mask[1:1 + k], mask[1 + k:]
    empty = lambda: gzs[0].new_empty(0)  # noqa: E731  (a custom op's outputs may not alias each other)
    gx, gws, gbs = None, [], []
    with torch.autocast(xs[0].device.type, enabled=False):
        x = _conv_input(xs, noise, dtype)
        for j, (gz, w) in enumerate(zip(gzs, weights)):
            stride, padding, dilation, groups = _geometry(geometry, j)
            has_bias = bool(bias_sizes[j])
            gi, gw, gb = torch.ops.aten.convolution_backward(
                gz, x, w.to(dtype), bias_sizes[j] if has_bias else None, stride, padding, dilation, False,
                [0, 0], groups, [need_x, need_ws[j], need_bs[j] and has_bias])
            gx = gi if gx is None else gx + gi
            gws.append(empty() if gw is None else gw.to(w.dtype))
            gbs.append(empty() if gb is None else gb.to(w.dtype))
        if gx is None:
            gx = empty()
        elif noise is not None:
            gx = gx * noise.to(gx.dtype)
    return [gx, *gws, *gbs]


@torch.library.custom_op(_LIB + "::concat_conv_backward", mutates_args=())
def concat_conv_backward(gzs: list[Tensor], xs: list[Tensor], noise: Optional[Tensor], weights: list[Tensor],
                         bias_sizes: list[int], geometry: list[int], dtype: torch.dtype,
                         mask: list[bool]) -> list[Tensor]:
    """Gradients of `concat_conv`: [concatenation, each weight, each bias] (`bias_sizes` 0 for none)."""
    return _concat_conv_grads(gzs, xs, noise, weights, [[n] if n else [] for n in bias_sizes], geometry, dtype, mask)


@concat_conv_backward.register_fake
def _(gzs, xs, noise, weights, bias_sizes, geometry, dtype, mask):
    k = len(weights)
    empty = lambda: gzs[0].new_empty(0)  # noqa: E731
    gx = gzs[0].new_empty((xs[0].shape[0], sum(t.shape[1] for t in xs), *xs[0].shape[2:]), dtype=dtype) \
        if mask[0] else empty()
    gws = [torch.empty_like(w) if need else empty() for w, need in zip(weights, mask[1:1 + k])]
    gbs = [w.new_empty(n) if need and n else empty() for w, n, need in zip(weights, bias_sizes, mask[1 + k:])]
    return [gx, *gws, *gbs]


def _concat_conv_setup(ctx, inputs, output):
    xs, noise, weights, biases, has_bias, geometry, dtype = inputs
    ctx.save_for_backward(noise, *weights, *xs)
    found = iter(biases)
    ctx.shape = (len(xs), len(weights), [next(found).shape[0] if b else 0 for b in has_bias], geometry, dtype)


def _concat_conv_backward(ctx, gzs):
    parts, k, bias_sizes, geometry, dtype = ctx.shape
    noise, *rest = ctx.saved_tensors
    weights, xs = rest[:k], rest[k:]
    need = ctx.needs_input_grad
    need_xs, need_ws = _needs(need[0], parts), _needs(need[2], k)
    present = iter(_needs(need[3], k))  # one flag per bias that exists
    need_bs = [next(present) if size else False for size in bias_sizes]
    mask = [any(need_xs), *need_ws, *need_bs]
    grads = concat_conv_backward(list(gzs), list(xs), noise, list(weights), bias_sizes, geometry, dtype, mask)
    gx, gws, gbs = grads[0], grads[1:1 + k], grads[1 + k:]
    gxs = None
    if mask[0]:
        gxs = [g.to(t.dtype) if n else None for g, t, n in zip(gx.split([t.shape[1] for t in xs], 1), xs, need_xs)]
    gbs = [g if n else None for g, n, size in zip(gbs, need_bs, bias_sizes) if size]
    return (gxs, None, [g if n else None for g, n in zip(gws, need_ws)], gbs, None, None, None)


concat_conv.register_autograd(_concat_conv_backward, setup_context=_concat_conv_setup)


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
        noise = None
        if drop is not None and drop.training and drop.p > 0:
            shape = (xs[0].shape[0], sum(t.shape[1] for t in xs)) + (1,) * (xs[0].dim() - 2)
            noise = xs[0].new_empty(shape, dtype=_dtype(xs))
            if drop.p == 1:
                noise.zero_()
            else:
                noise.bernoulli_(1 - drop.p).div_(1 - drop.p)
        geometry = [v for m in convs for v in (*m.stride, *m.padding, *m.dilation, m.groups)]
        zs = concat_conv(list(xs), noise, [m.weight for m in convs], [m.bias for m in convs if m.bias is not None],
                         [m.bias is not None for m in convs], geometry, _run_dtype(xs))
        return tuple(zs) if len(convs) > 1 else zs[0]

    def extra_repr(self) -> str:
        return "names=" + repr(self.names)
