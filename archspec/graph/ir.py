"""The intermediate representation: one networkx DiGraph of ops. Every later stage reads it;
none writes back into it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
from pydantic import BaseModel, ConfigDict, SerializeAsAny

from ..errors import Loc
from .ops import OPS, OpArgs, Shape


class Node(BaseModel):
    """One op. `name` is hierarchical (`block2.layer5.conv2`) and is also the node's key."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    op: str
    args: SerializeAsAny[OpArgs]
    shape: Shape  # output shape, from the op's rule when the node was made
    loc: Loc
    pattern: str = "chain"  # the connection pattern that made this node
    role: str = "op"  # op, merge, shortcut, join, input
    block: str | None = None  # the innermost block holding the node (`block2`), None outside blocks
    layer: str | None = None  # the innermost block layer holding it (`block2.layer5`), None outside every layer


class Edge(BaseModel):
    """Data flow from a producer to input `slot` of a consumer, tagged with the pattern that made it."""

    model_config = ConfigDict(frozen=True)

    slot: int
    pattern: str = "chain"


@dataclass
class Network:
    """An elaborated network: the graph plus what it was made from."""

    name: str
    graph: nx.DiGraph
    input: str
    output: str
    params: dict[str, Any]  # resolved network parameters
    sources: dict[str, str] = field(default_factory=dict)  # file → text, for error messages and checkpoints
    main_file: str = "<spec>"
    notes: list[tuple[Loc, str]] = field(default_factory=list)  # choices archspec made that the spec left open

    def node(self, name: str) -> Node:
        return self.graph.nodes[name]["node"]

    def nodes(self) -> Iterator[Node]:
        """Nodes in topological (creation) order."""
        for n in self.graph.nodes:
            yield self.graph.nodes[n]["node"]

    def inputs(self, name: str) -> list[str]:
        """Producers of `name`, in slot order."""
        preds = self.graph.pred[name]
        return sorted(preds, key=lambda p: preds[p]["edge"].slot)

    def shape(self, name: str) -> Shape:
        return self.graph.nodes[name]["node"].shape


def node_params(net: Network, node: Node) -> int:
    return OPS[node.op].params([net.shape(i) for i in net.inputs(node.name)], node.args)


def node_macs(net: Network, node: Node) -> int:
    return OPS[node.op].macs([net.shape(i) for i in net.inputs(node.name)], net.shape(node.name), node.args)
