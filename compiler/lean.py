"""Memory-lean training for concatenating blocks. A naive dense layer keeps, for backward, a fresh copy of
the concatenation of every earlier feature map plus its batch-norm and ReLU outputs: memory quadratic
in depth. `apply` replaces each `cat → BatchNorm2d → relu → Conv2d` chain by one `ConcatNormActConv`
that keeps only the inputs (held anyway) and the batch statistics, and rebuilds the concatenation and
its activation in backward: elementwise passes, never a convolution. In eval mode, or with grad
disabled, it runs the plain ops, so export sees ordinary ones. `restore` undoes the pass.

This file imports only torch at run time, so that a standalone file can carry its source."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from archspec.ir import Network


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


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_cat(node: fx.Node) -> bool:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    return (node.op == "call_function" and node.target is torch.cat and isinstance(node.args[0], (list, tuple))
            and dim in (1, -3) and set(node.kwargs) <= {"dim"})


def _chain(relu: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node | None, fx.Node, fx.Node] | None:
    """(cat, bn, conv) around `relu` when they form a fusable chain: the concatenation (or None for a
    single input) read only by the batch norm, its output only by the ReLU, the ReLU's only by the
    convolution."""
    if relu.op != "call_function" or relu.target not in (F.relu, torch.relu) or relu.kwargs.get("inplace"):
        return None
    bn, conv = relu.args[0], _only_user(relu)
    if not isinstance(bn, fx.Node) or bn.op != "call_module" or len(bn.users) != 1 or bn.kwargs or len(bn.args) != 1:
        return None
    if conv is None or conv.op != "call_module" or conv.args != (relu,) or conv.kwargs:
        return None
    b, c = modules.get(bn.target), modules.get(conv.target)
    if type(b) is not nn.BatchNorm2d or type(c) is not nn.Conv2d:
        return None
    if c.groups != 1 or c.padding_mode != "zeros" or isinstance(c.padding, str):
        return None
    src = bn.args[0]
    if isinstance(src, fx.Node) and _is_cat(src) and len(src.users) == 1:
        return src, bn, conv
    return None


def _rebuild(gm: fx.GraphModule, emit: dict[fx.Node, Callable[[fx.Graph, dict], fx.Node]],
             drop: set[fx.Node]) -> None:
    """Copy `gm`'s graph into a fresh one, so that the nodes written in place of others can take their
    names: `emit[n]` writes n's replacement, nodes in `drop` are left out."""
    graph, env = fx.Graph(), {}
    for n in gm.graph.nodes:
        if n in emit:
            env[n] = emit[n](graph, env)
        elif n not in drop:
            env[n] = graph.node_copy(n, env.__getitem__)
    graph.lint()
    gm.graph = graph


def apply(gm: fx.GraphModule, net: Network) -> fx.GraphModule:
    """`gm` with every `cat → BatchNorm2d → relu → Conv2d` chain (groups 1, any kernel) replaced by one
    `ConcatNormActConv` registered beside the convolution as `<bn>_<relu>_<conv>`; everything else is
    left alone. Modifies `gm` in place and returns it."""
    spec_names = {n.name.replace(".", "_"): n.name for n in net.nodes()}
    modules = dict(gm.named_modules())
    emit, drop = {}, set()
    for relu in gm.graph.nodes:
        found = _chain(relu, modules)
        if found is None:
            continue
        cat, bn, conv = found
        parent, _, conv_leaf = conv.target.rpartition(".")
        leaf = "_".join(spec_names.get(n.name, n.name).rpartition(".")[2] for n in (bn, relu, conv))
        path = f"{parent}.{leaf}" if parent else leaf
        gm.get_submodule(parent).add_module(leaf, ConcatNormActConv((cat.name, bn.name, relu.name, conv.name)))

        def write(graph: fx.Graph, env: dict, cat=cat, bn=bn, conv=conv, path=path) -> fx.Node:
            refs = (graph.create_node("get_attr", bn.target, name=bn.name),
                    graph.create_node("get_attr", conv.target, name=conv.name))
            xs = tuple(env[x] for x in cat.args[0])
            return graph.create_node("call_module", path, refs + xs, name=path.replace(".", "_"))

        emit[conv] = write
        drop |= {cat, bn, relu}
    if emit:
        _rebuild(gm, emit, drop)
    return gm


def restore(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with every `ConcatNormActConv` expanded back into `cat → bn → relu → conv` under their
    original names, for passes that look at the plain ops (batch-norm folding for inference). Modifies
    `gm` in place and returns it."""
    emit, drop, paths = {}, set(), []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), ConcatNormActConv):
            continue
        bn_ref, conv_ref, *xs = node.args
        cat_name, bn_name, relu_name, conv_name = gm.get_submodule(node.target).names
        paths.append(node.target)

        def write(graph: fx.Graph, env: dict, bn=bn_ref.target, conv=conv_ref.target, xs=xs,
                  names=(cat_name, bn_name, relu_name, conv_name)) -> fx.Node:
            ins = [env[x] for x in xs]
            x = graph.create_node("call_function", torch.cat, (ins, 1), name=names[0]) if len(ins) > 1 else ins[0]
            y = graph.create_node("call_module", bn, (x,), name=names[1])
            y = graph.create_node("call_function", F.relu, (y,), name=names[2])
            return graph.create_node("call_module", conv, (y,), name=names[3])

        emit[node] = write
        drop |= {ref for ref in (bn_ref, conv_ref) if set(ref.users) == {node}}
    if emit:
        _rebuild(gm, emit, drop)
        for path in paths:
            parent, _, leaf = path.rpartition(".")
            delattr(gm.get_submodule(parent), leaf)
    return gm
