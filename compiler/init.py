"""Weight initialisation as the authors' code does it: each module is set by its op (He on fan-out for
convolutions, γ=1 β=0 for batch norm, ...), in module order, so that a seed gives the same weights on
every build. An op whose arguments choose a weight scheme (`InitArgs`: conv, linear) is drawn here by
that scheme; any other by its op's `initialise`."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from archspec.graph.ir import Node
from archspec.graph.ops import OPS, Op, OpArgs
from archspec.graph.ops.weight_init import InitArgs, draw, fans


@torch.no_grad()
def initialise(model: nn.Module, nodes: Mapping[str, Node]) -> None:
    """Initialise every submodule of `model` that stands for a graph node; `nodes` maps a node's name
    (its submodule's path) to the node."""
    for name, m in model.named_modules():
        node = nodes.get(name)
        if node is not None:
            initialise_module(OPS[node.op], m, node.args)


@torch.no_grad()
def initialise_module(op: type[Op], m: nn.Module, a: OpArgs) -> None:
    """Initialise `m`, the module of one `op` node with arguments `a`."""
    if op.default_init is not None and isinstance(a, InitArgs):
        init_weights(m.weight, m.bias, a, op.default_init)
    else:
        op.initialise(m, a)


def init_weights(weight: torch.Tensor, bias: torch.Tensor | None, a: InitArgs, default: str) -> None:
    """Set `weight` by `a.init` (`default` standing for the op's own scheme) and `bias`, if any, by
    `a.bias_init`, in place: weight first, so a seed gives the same weights as before biases had a choice."""
    fan_in, fan_out = fans(weight)
    kind, spread = draw(a, default, fan_in, fan_out)
    if kind == "normal":
        weight.normal_(0.0, spread)
    elif kind == "uniform":
        weight.uniform_(-spread, spread)
    elif kind == "trunc_normal":
        nn.init.trunc_normal_(weight, 0.0, spread)
    else:
        weight.zero_()
    if bias is not None:
        if a.bias_init == "torch":
            bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        else:
            bias.zero_()
