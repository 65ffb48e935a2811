"""Weight initialisation as the authors' code does it: each module is set by its op's `initialise`
(He on fan-out for convolutions, γ=1 β=0 for batch norm, ...), in module order, so that a seed gives
the same weights on every build."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from archspec.graph.ir import Node
from archspec.graph.ops import OPS


@torch.no_grad()
def initialise(model: nn.Module, nodes: Mapping[str, Node]) -> None:
    """Initialise every submodule of `model` that stands for a graph node; `nodes` maps a node's name
    (its submodule's path) to the node."""
    for name, m in model.named_modules():
        node = nodes.get(name)
        if node is not None:
            OPS[node.op].initialise(m, node.args)
