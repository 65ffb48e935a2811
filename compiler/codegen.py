"""Graph → torch.fx: each node becomes one fx node (a submodule call named after the spec, or a
torch function), written straight into an fx.Graph — nothing is traced. The result is a GraphModule
whose `code` is straight-line Python."""

from __future__ import annotations

import operator
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from archspec.graph.ir import Network, Node
from archspec.graph.ops import Shape

from .modules import CrossDepthwise

# A lowering turns a node (and its input shapes) into either a module or a (function, extra args).
Lowered = nn.Module | tuple[Callable, tuple, dict]


def _conv(n: Node, ins: list[Shape]) -> nn.Module:
    a = n.args
    return nn.Conv2d(ins[0][0], a.out, a.kernel, a.stride, a.padding, groups=a.groups, bias=a.bias)


def _linear(n: Node, ins: list[Shape]) -> nn.Module:
    return nn.Linear(int(torch.Size(ins[0]).numel()), n.args.out, bias=n.args.bias)


def _pool(cls):
    return lambda n, ins: cls(n.args.kernel, n.args.stride or n.args.kernel, n.args.padding)


LOWER: dict[str, Callable[[Node, list[Shape]], Lowered]] = {
    "conv": _conv,
    "bn": lambda n, ins: nn.BatchNorm2d(ins[0][0], n.args.eps, n.args.momentum),
    "relu": lambda n, ins: (F.relu, (), {}),
    "identity": lambda n, ins: None,
    "dropout": lambda n, ins: nn.Dropout(n.args.p),
    "dropout2d": lambda n, ins: nn.Dropout2d(n.args.p),
    "avgpool": _pool(nn.AvgPool2d),
    "maxpool": _pool(nn.MaxPool2d),
    "gap": lambda n, ins: (torch.mean, (), {"dim": (2, 3)}),
    "linear": _linear,
    "concat": lambda n, ins: (torch.cat, (), {}),
    "add": lambda n, ins: (operator.add, (), {}),
    "slice": lambda n, ins: (operator.getitem, ((slice(None), slice(n.args.start, n.args.stop)),), {}),
    "crossdepthwise": lambda n, ins: CrossDepthwise([s[0] for s in ins], n.args.eps, n.args.momentum),
}


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, leaf = path.split(".")
    m = root
    for p in parents:
        if not hasattr(m, p):
            m.add_module(p, nn.Module())
        m = getattr(m, p)
    m.add_module(leaf, module)


def to_graph(net: Network) -> tuple[nn.Module, fx.Graph]:
    """The fx.Graph of `net` and the module tree its call_module nodes refer to."""
    root, graph = nn.Module(), fx.Graph()
    env: dict[str, fx.Node] = {}
    for node in net.nodes():
        if node.role == "input":
            env[node.name] = graph.placeholder("x")
            continue
        srcs = net.inputs(node.name)
        ins = [env[s] for s in srcs]
        lowered = LOWER[node.op](node, [net.shape(s) for s in srcs])
        fx_name = node.name.replace(".", "_")
        if lowered is None:  # identity
            env[node.name] = ins[0]
        elif isinstance(lowered, nn.Module):
            if node.op == "linear" and len(net.shape(srcs[0])) > 1:
                ins = [graph.create_node("call_function", torch.flatten, (ins[0], 1), name=fx_name + "_flat")]
            _set_submodule(root, node.name, lowered)
            env[node.name] = graph.create_node("call_module", node.name, tuple(ins), name=fx_name)
        else:
            fn, extra, kwargs = lowered
            args = (ins, 1) if fn is torch.cat else tuple(ins) + extra
            if fn is operator.add and len(ins) > 2:
                acc = ins[0]
                for k, other in enumerate(ins[1:-1]):
                    acc = graph.create_node("call_function", operator.add, (acc, other), name=f"{fx_name}_{k}")
                args = (acc, ins[-1])
            env[node.name] = graph.create_node("call_function", fn, args, kwargs, name=fx_name)
    graph.output(env[net.output])
    return root, graph


def to_module(net: Network, init: bool = True, lean: bool = True) -> fx.GraphModule:
    """A runnable GraphModule for `net`, its weights initialised as the reference describes. `lean` fuses
    each concatenation → batch norm → ReLU → convolution so that training holds memory linear in depth
    (see `lean.apply`); the weights and state_dict keys are the same either way."""
    root, graph = to_graph(net)
    gm = fx.GraphModule(root, graph, class_name=_class_name(net.name))
    if init:
        from .init import initialise
        initialise(gm, {n.name: n.args.init for n in net.nodes() if n.op in ("conv", "linear")})
    if lean:
        from .passes import lean as lean_pass
        lean_pass.apply(gm)
    return gm


def _class_name(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.replace("-", "_").split("_") if p) or "Network"
