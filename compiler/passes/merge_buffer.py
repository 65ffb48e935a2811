"""Buffered cross-layer merges: a training-speed pass for the fast policy (the `buffered` implementations
of `merges/crossdepthwise.py`; this pass groups the merges and writes the calls). A DelugeNet block of L layers
runs O(L²) per-inflow batch norms, each moving its inflow four to six times per step. Here the tensors
that a group of CrossDepthwise merges reads (a block's outputs) are written once into one channels-last
buffer as they are made, with their batch moments computed once; each merge is then one kernel
(Σ_l scale·x_l + shift, `merge_kernels.py`) that reads each inflow once, and its backward keeps its
gradient and reads each inflow once more for the scales' gradients. Once every merge reading an inflow
is done, one kernel sums their kept gradients into the inflow's, with the moments' terms added.

Exact, as the per-inflow batch norms are: each inflow is normalised by its own batch statistics
(mean, biased variance, each merge's eps), scaled and shifted per (inflow, channel); each merge updates
its own running statistics as batch norm does. In eval mode the merges use their running statistics.
Parameters, buffers and state_dict keys do not change, and the merge modules are not called (their
hooks do not run). The buffer is a Python object flowing through the graph, so the result runs eagerly,
captured as a CUDA graph, or regionally compiled with these calls left out of the regions (their nodes
carry `meta["eager"]`); not under whole-model torch.compile (which fuses merges itself) or export."""

from __future__ import annotations

import torch.fx as fx

from ..merges.crossdepthwise import Buffer, merge, open_buffer, put
from ..modules import CrossDepthwise
from .contract import Pass

__all__ = ["Buffer", "apply", "merge", "open_buffer", "put"]


def _merges(gm: fx.GraphModule) -> list[fx.Node]:
    """The CrossDepthwise calls the pass can take: plain modules, every inflow a node of one shape, and
    every inflow as wide as the merge."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.kwargs:
            continue
        m = gm.get_submodule(node.target)
        if type(m) is not CrossDepthwise or not node.args or not all(isinstance(a, fx.Node) for a in node.args):
            continue
        shapes = {a.meta.get("shape") for a in node.args}
        if len(set(m.widths)) == 1 and len(shapes) == 1 and None not in shapes:
            out.append(node)
    return out


def _groups(merges: list[fx.Node]) -> list[list[fx.Node]]:
    """Merges that share an inflow, transitively: each group gets one buffer."""
    parent: dict[fx.Node, fx.Node] = {}

    def root(n: fx.Node) -> fx.Node:
        while parent.setdefault(n, n) is not n:
            n = parent[n]
        return n

    for node in merges:
        for a in node.args[1:]:
            parent[root(a)] = root(node.args[0])
    groups: dict[fx.Node, list[fx.Node]] = {}
    for node in merges:
        groups.setdefault(root(node.args[0]), []).append(node)
    return list(groups.values())


def _apply(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with each group of CrossDepthwise merges reading one buffer: a `put` after every inflow, and
    every merge a `merge` call on its module. A group whose merges read their inflows in another order
    than the graph makes them (so that a merge's inflows are not consecutive slots) keeps its plain
    merges, as does one where the merges reading an inflow are not consecutive. Modifies `gm` in place and
    returns it."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    changed = False
    for group in _groups(_merges(gm)):
        slots = sorted({a for node in group for a in node.args}, key=order.__getitem__)
        index = {n: i for i, n in enumerate(slots)}
        if not all([index[a] for a in node.args] == list(range(index[node.args[0]], index[node.args[0]] + len(node.args)))
                   for node in group):
            continue
        readers = [[k for k, node in enumerate(group) if a in node.args] for a in slots]
        if not all(r == list(range(r[0], r[-1] + 1)) for r in readers):
            continue
        g = gm.graph
        anchor = slots[0] if slots[0].op != "placeholder" else [n for n in g.nodes if n.op == "placeholder"][-1]
        with g.inserting_after(anchor):
            buf = g.call_function(open_buffer, (tuple((r[0], r[-1] + 1) for r in readers),))
        with g.inserting_before(buf):  # in order, each before the buffer
            modules = tuple(g.get_attr(node.target) for node in group)
        buf.meta.update(op="buffer", spec_path=group[-1].meta.get("spec_path"), eager=True)
        puts: dict[fx.Node, fx.Node] = {}
        for i, src in enumerate(slots):
            with g.inserting_after(buf if i == 0 or src.op == "placeholder" else src):
                puts[src] = g.call_function(put, (buf, src, i, modules))
            puts[src].meta.update(src.meta, op="buffer", eager=True)
        for k, (node, module) in enumerate(zip(group, modules)):
            with g.inserting_before(node):
                new = g.call_function(merge, (module, buf, k, index[node.args[0]], *(puts[a] for a in node.args)))
            new.meta.update(node.meta, eager=True)
            node.replace_all_uses_with(new)
            g.erase_node(node)
        changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm


# It takes plain merges (no shared moments) of a training module, not the inference form.
apply = Pass("merge_buffer", _apply, forbids=("normalise_once", "fold_bn"))
