"""Analytic costs read off the graph, with no tensor allocated: parameters, multiply-accumulates
(convolutions and linear layers, one input), depth, and the same per top-level group (stem, blocks,
transitions, head)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from archspec.graph.ir import Network, node_macs, node_params
from archspec.graph.ops import OPS, Shape


@dataclass
class GroupCost:
    name: str  # top-level scope: stem, block1, transition1, head, ...
    layers: int  # layers of a block; 0 for stem, transitions, head and loose ops
    output_shape: Shape
    params: int = 0
    macs: int = 0


@dataclass
class Summary:
    network: str
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int
    depth: int
    groups: list[GroupCost] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["output_shape"] = list(self.output_shape)
        for g in d["groups"]:
            g["output_shape"] = list(g["output_shape"])
        return d


def depth(net: Network) -> int:
    """Weighted layers (convolutions, linear) on the longest input → output path."""
    best: dict[str, int] = {}
    for node in net.nodes():
        here = 1 if OPS[node.op].weighted else 0
        best[node.name] = here + max((best[i] for i in net.inputs(node.name)), default=0)
    return best[net.output]


def summarize(net: Network) -> Summary:
    groups: dict[str, GroupCost] = {}
    layers: dict[str, set[str]] = {}
    total_p = total_m = 0
    for node in net.nodes():
        if node.role == "input":
            continue
        parts = node.name.split(".")
        g = groups.setdefault(parts[0], GroupCost(parts[0], 0, node.shape))
        g.output_shape = node.shape
        p, m = node_params(net, node), node_macs(net, node)
        g.params += p
        g.macs += m
        total_p += p
        total_m += m
        if len(parts) > 2 and parts[1].startswith("layer"):
            layers.setdefault(parts[0], set()).add(parts[1])
    for name, g in groups.items():
        g.layers = len(layers.get(name, ()))
    return Summary(
        network=net.name,
        input_shape=net.shape(net.input),
        output_shape=net.shape(net.output),
        params=total_p,
        macs=total_m,
        depth=depth(net),
        groups=list(groups.values()),
        ops=dict(Counter(n.op for n in net.nodes() if n.role != "input")),
        parameters=dict(net.params),
    )
