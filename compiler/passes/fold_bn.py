"""Batch-norm folding, the inference form of a module: each BatchNorm2d that only normalises a
convolution's output is folded into that convolution, one op per pair fewer to run or export."""

from __future__ import annotations

import copy
from collections import Counter

import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold(gm: fx.GraphModule) -> fx.GraphModule:
    """A deep copy of `gm` in eval mode in which every BatchNorm2d whose input is a Conv2d's output, used
    by it alone, is folded into that convolution (which gains a bias) and removed from the graph: the
    same function up to rounding. Batch norms after anything else (pre-activation ones after a ReLU or
    a concatenation, DelugeNet's cross-layer depthwise merges) and convolution outputs also read
    elsewhere stay as they are; so do modules a fused op reaches by reference. `gm` is left as it is."""
    out = copy.deepcopy(gm).eval()
    modules = dict(out.named_modules())
    calls = Counter(n.target for n in out.graph.nodes if n.op == "call_module")
    attrs = [n.target for n in out.graph.nodes if n.op == "get_attr"]
    folded = 0
    for node in list(out.graph.nodes):
        conv = _folded_conv(node, modules, calls, attrs)
        if conv is None:
            continue
        _replace_module(out, conv.target, fuse_conv_bn_eval(modules[conv.target], modules[node.target]))
        node.replace_all_uses_with(conv)
        out.graph.erase_node(node)
        folded += 1
    if folded:
        out.graph.lint()
        out.recompile()
        out.delete_all_unused_submodules()
    return out


def _folded_conv(node: fx.Node, modules: dict[str, nn.Module], calls: Counter, attrs: list[str]) -> fx.Node | None:
    """The convolution node `node` (a batch norm) can be folded into, or None. Both modules must be
    called once and never read as attributes (a fused op handed the module or its weight would see
    the folded weights)."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    bn = modules.get(node.target)
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
        return None
    src = node.args[0]
    if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
        return None
    conv = modules.get(src.target)
    if not isinstance(conv, nn.Conv2d) or conv.out_channels != bn.num_features:
        return None
    for target in (src.target, node.target):
        if calls[target] != 1 or any(_overlap(target, a) for a in attrs):
            return None
    return src


def _overlap(module: str, attr: str) -> bool:
    """Whether reading `attr` reads `module` or part of it (or a module that holds it)."""
    return attr == module or attr.startswith(module + ".") or module.startswith(attr + ".")


def _replace_module(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)
