"""The inference form of a module. In eval mode a batch norm is a fixed per-channel scale and shift, so
each one is folded, where that is exact, into a neighbour that is itself affine in that tensor: the
convolution that produces its input, the cross-layer depthwise merge that produces it (every merge
becomes a `ScaleSum`: Σ_i w_i·x_i + b with per-inflow, per-channel weights, its inflows' batch norms
folded in), or the convolution that reads it where no zero padding sits between them. A DelugeNet
layer's batch norm of a tensor that merges read too (a block's first layer reads its block input alone)
is a merge of one inflow and takes that form. Any other batch norm that folds nowhere (after a ReLU,
a concatenation or a sum, before a ReLU) stays one: it is the single op that eager PyTorch and ONNX
runtimes run fastest (measured in onnxruntime: about 1.5× faster than the Mul and Add of a scale and
shift). Fewer ops to run, trace and export; the same function up to rounding."""

from __future__ import annotations

import copy
from collections import Counter

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..merges.crossdepthwise import merge_form
from ..modules import CrossDepthwise, ScaleSum
from .contract import Pass
from .normalise_once import BatchMoments

__all__ = ["ScaleSum", "bn_affine", "fold", "merge_form"]


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(x) == scale·x + shift per channel in eval mode."""
    return _affine(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)


def _affine(mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
            eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        scale = torch.rsqrt(var + eps)
        if weight is not None:
            scale = scale * weight
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
    return scale, shift


def _fold(gm: fx.GraphModule) -> fx.GraphModule:
    """A deep copy of `gm` in eval mode with every cross-layer depthwise merge a `ScaleSum` and each
    BatchNorm2d folded where that is exact: into the Conv2d or ScaleSum that produces its input (when
    nothing else reads that), else into the Conv2d that alone reads it when that convolution pads with
    no zeros, else, when merges read its input too, into a one-inflow ScaleSum of its own. Modules a
    fused op reaches by reference (`get_attr`), modules called more than once, and batch norms without
    running statistics (they normalise by the batch even in eval) are left as they are; so is `gm`.
    Undoes `normalise_once` (the merges' shared moments go) and `merge_dispatch` (no merge module is left)."""
    out = copy.deepcopy(gm).eval()
    calls = Counter(n.target for n in out.graph.nodes if n.op == "call_module")
    attrs = [n.target for n in out.graph.nodes if n.op == "get_attr"]

    def free(target: str) -> bool:
        return calls[target] == 1 and not any(_overlap(target, a) for a in attrs)

    changed = False
    for node in list(out.graph.nodes):
        if node.op != "call_module" or not free(node.target):
            continue
        m = out.get_submodule(node.target)
        if isinstance(m, CrossDepthwise) and all(isinstance(a, fx.Node) for a in node.args):
            _replace_module(out, node.target, merge_form(m))
            node.kwargs = {}  # shared batch moments (training only, `normalise_once`): undone here
            changed = True
        elif type(m) is nn.BatchNorm2d and _plain_bn(node, m):
            changed |= _fold_bn(out, node, m, free)
    if changed:
        _drop_unread(out)
        out.graph.lint()
        out.recompile()
        out.delete_all_unused_submodules()
    return out


def _plain_bn(node: fx.Node, bn: nn.BatchNorm2d) -> bool:
    return (len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node)
            and bn.running_mean is not None and bn.running_var is not None)


def _fold_bn(gm: fx.GraphModule, node: fx.Node, bn: nn.BatchNorm2d, free) -> bool:
    """Fold the batch norm called at `node` into a neighbour, or make it a one-inflow ScaleSum where
    merges read its input too; whether it did either."""
    src = node.args[0]
    producer = gm.get_submodule(src.target) if src.op == "call_module" else None
    if producer is not None and len(src.users) == 1 and free(src.target):
        if isinstance(producer, nn.Conv2d) and producer.out_channels == bn.num_features:
            _conv_then(producer, bn)
            _bypass(gm, node, src)
            return True
        if isinstance(producer, ScaleSum) and max(producer.widths) == bn.num_features:
            producer.then(*bn_affine(bn))
            _bypass(gm, node, src)
            return True
    [user] = node.users if len(node.users) == 1 else [None]
    if (user is not None and user.op == "call_module" and free(user.target) and user.args[:1] == (node,)
            and len(user.args) == 1 and not user.kwargs):
        conv = gm.get_submodule(user.target)
        if type(conv) is nn.Conv2d and _no_zero_padding(conv) and conv.in_channels == bn.num_features:
            _replace_module(gm, user.target, _conv_after(bn, conv))
            _bypass(gm, node, src)
            return True
    if any(u.op == "call_module" and isinstance(gm.get_submodule(u.target), (CrossDepthwise, ScaleSum))
           for u in src.users if u is not node):
        scale, shift = bn_affine(bn)
        _replace_module(gm, node.target, ScaleSum([scale], shift))
        return True
    return False


def _conv_then(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """`bn` ∘ `conv` as `conv`, in place (the module is the pass's own copy): weights scaled per output
    channel, the shift into the bias."""
    conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                  bn.eps, bn.weight, bn.bias)


def _no_zero_padding(conv: nn.Conv2d) -> bool:
    """Whether conv(a·x + b) == conv'(x) exactly: no padding, or padding that copies the input (reflect,
    replicate, circular) rather than inserting zeros that the shift b would have moved."""
    if conv.padding_mode != "zeros" or conv.padding == "valid":
        return True
    if conv.padding == "same":
        return all(d * (k - 1) == 0 for d, k in zip(conv.dilation, conv.kernel_size))
    return all(p == 0 for p in conv.padding)


def _conv_after(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """`conv` ∘ `bn` as one convolution: weights scaled per input channel, the shift through the kernel
    into the bias."""
    scale, shift = bn_affine(bn)
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        w = conv.weight
        groups, per = conv.groups, conv.in_channels // conv.groups
        out_per = conv.out_channels // groups
        s = scale.reshape(groups, 1, per, 1, 1).to(w.dtype)
        b = shift.reshape(groups, 1, per, 1, 1).to(w.dtype)
        grouped = w.reshape(groups, out_per, per, *w.shape[2:])
        extra = (grouped * b).sum(dim=(2, 3, 4)).reshape(-1)
        fused.weight.copy_((grouped * s).reshape(w.shape))
        bias = extra if conv.bias is None else conv.bias + extra
        fused.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
    return fused


def _bypass(gm: fx.GraphModule, node: fx.Node, src: fx.Node) -> None:
    """Remove the batch-norm call `node` (folded away): its readers read `src` instead."""
    node.replace_all_uses_with(src)
    gm.graph.erase_node(node)


def _drop_unread(gm: fx.GraphModule) -> None:
    """Module calls nothing reads any more (the merges' shared batch moments, None in eval mode)."""
    for node in reversed(list(gm.graph.nodes)):
        if node.op == "call_module" and not node.users and isinstance(gm.get_submodule(node.target), BatchMoments):
            gm.graph.erase_node(node)


def _overlap(module: str, attr: str) -> bool:
    """Whether reading `attr` reads `module` or part of it (or a module that holds it)."""
    return attr == module or attr.startswith(module + ".") or module.startswith(attr + ".")


def _replace_module(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


# A buffered merge is no module call, so it cannot fold: fold the plain or lean module whose state it shares.
fold = Pass("fold_bn", _fold, forbids=("merge_buffer",), undoes=("normalise_once", "merge_dispatch"))
