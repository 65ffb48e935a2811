"""What a picture of a network shows at one level (block, layer or op): its units (a group, a layer,
a merge or an op), the edges between them with the patterns they carry, and each top-level group's
title. Units come from each IR node's `block` and `layer`, never from parsing its name."""

from __future__ import annotations

from dataclasses import dataclass, field

from archspec.graph.ir import Network, node_macs, node_params
from archspec.graph.merges import BY_OP
from archspec.graph.ops import OPS
from archspec.errors import RunError

LEVELS = ("block", "layer", "op")
MERGE_WORDS = {op: merge.word for op, merge in BY_OP.items()}  # `add` is written `sum`


def group_of(name: str) -> str:
    """The top-level group (stem, block1, transition1, head, ...) a node belongs to."""
    return name.split(".", 1)[0]


@dataclass
class Unit:
    """One drawn node: a layer, a merge, a whole small group, or one op."""

    key: str
    kind: str  # box, layer, merge, segment, join, op, input
    group: str
    label: str
    shape: tuple
    op: str
    merge: str  # merge op of its block, for colour ("chain" when none)
    sub: str | None  # the nested block (layer level) or layer (op level) it sits in, for a band
    first: int  # creation index of its first node: the drawing order
    block: str | None = None  # the block of the node it is named after


@dataclass
class Group:
    """A top-level group (stem, block1, transition1, head): what its box or frame says."""

    name: str
    title: str  # "dense · crossdepthwise, 8 layers"
    shape: tuple
    params: int = 0
    macs: int = 0
    has_blocks: bool = False
    merge: str = "chain"


@dataclass
class View:
    """What a picture or a DOT file shows at one level."""

    network: str
    level: str
    units: dict[str, Unit] = field(default_factory=dict)
    edges: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (u, v) → patterns
    groups: dict[str, Group] = field(default_factory=dict)


def _groups(net: Network) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    layer_names = {node.layer for node in net.nodes() if node.layer is not None}
    kinds: dict[str, dict[str, None]] = {}
    layers: dict[str, set[str]] = {}
    for node in net.nodes():
        g = group_of(node.name)
        grp = groups.setdefault(g, Group(g, "", node.shape))
        grp.shape = node.shape
        if node.role != "input":
            grp.params += node_params(net, node)
            grp.macs += node_macs(net, node)
        if node.layer is not None or node.role == "merge":
            grp.has_blocks = True
        top = ".".join(node.layer.split(".")[:2]) if node.layer is not None else None
        if top in layer_names:  # the layer of the group's own block that holds the node
            layers.setdefault(g, set()).add(top)
        if node.role == "merge":
            kinds.setdefault(g, {})[f"{node.pattern} · {MERGE_WORDS.get(node.op, node.op)}"] = None
            if grp.merge == "chain":
                grp.merge = node.op
        elif node.pattern != "chain" and not any(k.startswith(node.pattern + " ") for k in kinds.get(g, {})):
            kinds.setdefault(g, {})[node.pattern] = None
    for g, grp in groups.items():
        words = [k for k in kinds.get(g, {}) if " " in k or not any(j.startswith(k + " ") for j in kinds[g])]
        n = len(layers.get(g, ()))
        if n:
            what = "segment" if any(k.startswith("gradual") for k in words) else "layer"
            words.append(f"{n} {what}" + ("s" if n > 1 else ""))
        grp.title = ", ".join(words)
    return groups


def _block_merges(net: Network) -> dict[str, str]:
    """Each block's merge op, read off its merge nodes (an embedded residual block adds: `add`)."""
    out: dict[str, str] = {}
    for node in net.nodes():
        b = node.block
        if b is None:
            continue
        if node.role == "merge":
            out.setdefault(b, node.op)
        elif node.role == "shortcut" and node.op == "add":
            out.setdefault(b, "add")
    return out


def _unit_key(net: Network, name: str, level: str, groups: dict[str, Group]) -> str:
    node = net.node(name)
    g = group_of(name)
    if level == "block":
        return g
    if level == "op" or node.role in ("input", "merge"):
        return name
    if node.role == "join" and node.layer is None:
        return name
    if node.role == "window":  # a window's slice belongs to the merge it feeds, which comes before the layer
        merges = [s for s in net.graph.successors(name) if net.node(s).role == "merge"]
        if merges:
            return merges[0]
    lay = node.layer
    if lay is not None:
        return lay
    if not groups[g].has_blocks or "." not in name:
        return g
    return name.rsplit(".", 1)[0]


def units_of(net: Network, level: str = "layer") -> dict[str, str]:
    """Each node's unit at `level`: the layer, merge or small group the picture draws it in."""
    groups = _groups(net)
    return {n.name: _unit_key(net, n.name, level, groups) for n in net.nodes()}


def _layer_number(key: str) -> str:
    """`12` for `block2.layer12`: the label of a layer's dot."""
    return key.rsplit(".", 1)[-1].removeprefix("layer")


def view(net: Network, level: str = "layer") -> View:
    """The units drawn at `level` and the edges between them: every node-level edge between two
    different units becomes one unit edge, carrying the patterns of the edges it stands for."""
    if level not in LEVELS:
        raise RunError(f"unknown drawing level '{level}'", f"levels: {', '.join(LEVELS)}")
    groups = _groups(net)
    merges = _block_merges(net)
    v = View(net.name, level, groups=groups)
    key_of: dict[str, str] = {}
    for i, node in enumerate(net.nodes()):
        key = _unit_key(net, node.name, level, groups)
        key_of[node.name] = key
        unit = v.units.get(key)
        if unit is None:
            v.units[key] = unit = _make_unit(net, key, node, level, groups, merges, i)
            unit.block = net.node(key).block if key in net.graph else None
        else:
            unit.shape = node.shape  # the last node made gives the unit's output
    for a, b, data in net.graph.edges(data=True):
        ka, kb = key_of[a], key_of[b]
        if ka != kb:
            v.edges.setdefault((ka, kb), set()).add(data["edge"].pattern)
    return v


def _make_unit(net: Network, key: str, node, level: str, groups: dict[str, Group], merges: dict[str, str],
               index: int) -> Unit:
    if key in net.graph:  # a unit named after a node is that node's (a window's slice joins its merge)
        node = net.node(key)
    g = group_of(key)
    block = node.block
    merge = merges.get(block, "chain") if block else "chain"
    if level == "block":
        grp = groups[g]
        return Unit(key, "input" if node.role == "input" else "box", g, g, node.shape, node.op, grp.merge, None,
                    index)
    if level == "op":
        kind = {"input": "input", "merge": "merge"}.get(node.role, "op")
        sub = node.layer or (None if groups[g].has_blocks or kind == "input" else g)
        return Unit(key, kind, g, OPS[node.op].short, node.shape, node.op,
                    node.op if node.role == "merge" else merge, sub, index)
    if node.role == "input":
        return Unit(key, "input", g, "input", node.shape, node.op, "chain", None, index)
    if node.role == "merge":
        kind = "segment" if node.pattern == "gradual" else "merge"
        return Unit(key, kind, g, "merge", node.shape, node.op, node.op, _sub(block, g), index)
    if node.role == "join" and key == node.name:
        return Unit(key, "join", g, "join", node.shape, node.op, merge, _sub(block, g), index)
    if key == g:
        return Unit(key, "box", g, g, node.shape, node.op, "chain", None, index)
    if node.layer == key:
        return Unit(key, "layer", g, _layer_number(key), node.shape, node.op, merge, _sub(block, g), index)
    return Unit(key, "box", g, key.rsplit(".", 1)[-1], node.shape, node.op, "chain", None, index)


def _sub(block: str | None, group: str) -> str | None:
    """A nested block (one below the group's own), which the picture marks with a band."""
    return block if block and block != group else None
