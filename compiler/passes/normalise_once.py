"""Normalise each cross-layer depthwise producer once. In training, every CrossDepthwise that reads a
tensor batch-normalises it with the same batch statistics, so a DelugeNet block of L layers computes
O(L²) identical moments. `apply` inserts one `BatchMoments` node per producer and hands its (var, mean)
to every CrossDepthwise that reads it; each then computes Σ_i scale_i·x_i + shift_i with per-channel
vectors only (no per-pair statistics, no normalised copy per input), holds for backward only its inputs
(held anyway) and the shared moments, and updates its own running statistics as `F.batch_norm` would.
Backward is the per-pair graph's: one training-mode batch-norm backward per input. In eval mode the
moments are None and each CrossDepthwise runs its plain per-pair path. Parameters, buffers and
state_dict keys do not change. Each moments node carries its producer's `meta`, with `op` "moments"
and the per-channel `shape` of the statistics, so that later passes see where it belongs.

At run time this file needs only torch and `modules.CrossDepthwise`."""

from __future__ import annotations

import functools

import torch
import torch.fx as fx
from torch import nn

from ..modules import CrossDepthwise


def _reduce_dims(x: torch.Tensor) -> list[int]:
    """Every dimension but the channels'."""
    return [0] + list(range(2, x.dim()))


def _channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.dim() - 2)


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    """Batch statistics in fp32 at least, as batch norm keeps them for reduced-precision inputs."""
    return torch.promote_types(x.dtype, torch.float32)


class BatchMoments(nn.Module):
    """The batch (var, mean) of one producer in training, in at least fp32, shared by every
    CrossDepthwise that reads it; None in eval mode. They are constants to autograd: each consumer's
    backward is batch norm's training-mode backward, which carries the gradient through them. Stateless,
    so that inserting it changes no state_dict key."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.training:
            return None
        if x.numel() // x.shape[1] == 1:  # F.batch_norm's own check, with its message
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            var, mean = torch.var_mean(x.to(_stat_dtype(x)), dim=_reduce_dims(x), correction=0)
        return var, mean


def _dtype(xs) -> torch.dtype:
    """The dtype the per-pair sum has: batch norm keeps each input's dtype, the sum promotes."""
    return functools.reduce(torch.promote_types, (t.dtype for t in xs))


def _pair_backward(g, x, weight, mean, invstd, eps: float, mask: list[bool]):
    """Gradients (x, weight, bias) of one input's term weight·(x − mean)·invstd + bias, the batch
    statistics being those of x: batch norm's training-mode backward."""
    return torch.ops.aten.native_batch_norm_backward(g, x, weight, None, None, mean, invstd, True, eps, mask)


class _CrossDepthwiseFn(torch.autograd.Function):
    """Σ_i scale_i·x_i + shift_i (narrower inputs added to the first channels), scale = weight·rsqrt(var
    + eps), shift = bias − scale·mean, from the per-producer batch moments. Saves the weight, the inputs
    and their moments — tensors held anyway or shared with the other consumers — and nothing of its own:
    backward recomputes the per-channel vectors and runs one training-mode batch-norm backward per
    input, as the plain per-pair graph does."""

    @staticmethod
    def forward(ctx, widths: tuple[int, ...], eps: float, weight, bias, *tensors):
        k = len(widths)
        vars_, means, xs = tensors[:k], tensors[k:2 * k], tensors[2 * k:]
        width = max(widths)
        shape = _channel_shape(xs[0])
        with torch.autocast(xs[0].device.type, enabled=False):
            var, mean = torch.cat(vars_), torch.cat(means)
            scale = weight.to(var.dtype) * torch.rsqrt(var + eps)
            shift = bias.to(var.dtype) - scale * mean
            if all(c == width for c in widths):
                shift = shift.view(k, width).sum(0)
            else:
                total = shift.new_zeros(width)
                for s, c in zip(shift.split(widths), widths):
                    total[:c] += s
                shift = total
            scales = scale.split(widths)
            first = widths.index(width)
            out = torch.addcmul(shift.view(shape), xs[first], scales[first].view(shape))
            for i, (x, s, c) in enumerate(zip(xs, scales, widths)):
                if i != first:
                    (out if c == width else out.narrow(1, 0, c)).addcmul_(x, s.view(shape))
        ctx.save_for_backward(weight, *vars_, *means, *xs)
        ctx.widths, ctx.eps = widths, eps
        return out.to(_dtype(xs))

    @staticmethod
    def backward(ctx, g):
        widths, eps = ctx.widths, ctx.eps
        k = len(widths)
        weight, *rest = ctx.saved_tensors
        vars_, means, xs = rest[:k], rest[k:2 * k], rest[2 * k:]
        need_w, need_b = ctx.needs_input_grad[2:4]
        need_x = ctx.needs_input_grad[4 + 2 * k:]
        gxs, gws, gbs = [], [], []
        with torch.autocast(g.device.type, enabled=False):
            invstds = torch.rsqrt(torch.cat(vars_) + eps).split(widths)
            ws = weight.split(widths)
            for x, w, mean, invstd, c, nx in zip(xs, ws, means, invstds, widths, need_x):
                if not (nx or need_w or need_b):
                    gxs.append(None)
                    continue
                gx, gw, gb = _pair_backward(g.narrow(1, 0, c).to(x.dtype), x, w, mean, invstd, eps,
                                            [nx, need_w, need_b])
                gxs.append(gx), gws.append(gw), gbs.append(gb)
            gw = torch.cat(gws).to(weight.dtype) if need_w else None
            gb = torch.cat(gbs).to(weight.dtype) if need_b else None
        return (None, None, gw, gb, *(None,) * (2 * k), *gxs)


class CrossDepthwiseFromMoments(CrossDepthwise):
    """A CrossDepthwise that, given its inputs' batch moments in training, normalises through them: no
    per-pair statistics, no normalised copy per input. Without moments, or in eval mode, it is the plain
    CrossDepthwise. Same parameters and buffers; `apply` swaps the class in place."""

    def forward(self, *xs: torch.Tensor, moments=None) -> torch.Tensor:
        if not self.training or moments is None or any(m is None for m in moments):
            return super().forward(*xs)
        vars_ = tuple(m[0] for m in moments)
        means = tuple(m[1] for m in moments)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum
            if momentum is None:  # cumulative average, as BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
            n = xs[0].numel() // xs[0].shape[1]
            rm, rv = self.running_mean, self.running_var
            rm.mul_(1.0 - momentum).add_(torch.cat(means).to(rm.dtype), alpha=momentum)
            rv.mul_(1.0 - momentum).add_(torch.cat(vars_).to(rv.dtype) * (n / (n - 1)), alpha=momentum)
        return _CrossDepthwiseFn.apply(tuple(self.widths), float(self.eps), self.weight, self.bias,
                                       *vars_, *means, *xs)


def _free_name(parent: nn.Module, leaf: str) -> str:
    name, k = leaf, 1
    while hasattr(parent, name):
        k += 1
        name = f"{leaf}{k}"
    return name


def apply(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with one `BatchMoments` node after every tensor that a CrossDepthwise reads, its result passed
    to each such CrossDepthwise as `moments=`, and those modules' class swapped to
    `CrossDepthwiseFromMoments` (same object, parameters, buffers and hooks, so optimisers and
    state_dict see no change). A moments module sits beside its producer's module, or beside the first
    consumer's when the producer is not a module call. Modifies `gm` in place and returns it."""
    merges = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or "moments" in node.kwargs:
            continue
        m = gm.get_submodule(node.target)
        if isinstance(m, CrossDepthwise) and all(isinstance(a, fx.Node) for a in node.args):
            merges.append((node, m))
    moments: dict[fx.Node, fx.Node] = {}
    for node, _ in merges:
        for src in node.args:
            if src in moments:
                continue
            if src.op == "call_module":
                parent_path, _, leaf = src.target.rpartition(".")
            else:
                parent_path, leaf = node.target.rpartition(".")[0], src.name
            parent = gm.get_submodule(parent_path)
            name = _free_name(parent, leaf + "_moments")
            parent.add_module(name, BatchMoments())
            path = f"{parent_path}.{name}" if parent_path else name
            anchor = src if src.op != "placeholder" else [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
            with gm.graph.inserting_after(anchor):
                moments[src] = gm.graph.create_node("call_module", path, (src,), name=path.replace(".", "_"))
            shape = src.meta.get("shape")
            moments[src].meta.update(src.meta, op="moments", shape=None if shape is None else (shape[0],))
    for node, m in merges:
        node.kwargs = {**node.kwargs, "moments": tuple(moments[a] for a in node.args)}
        if type(m) is CrossDepthwise:
            m.__class__ = CrossDepthwiseFromMoments
    if merges:
        gm.graph.lint()
        gm.recompile()
    return gm
