"""Normalise each cross-layer depthwise producer once. In training, every CrossDepthwise that reads a
tensor batch-normalises it with the same batch statistics, so a DelugeNet block of L layers computes
O(L²) identical moments. The pass inserts one `BatchMoments` node per producer and hands its (var, mean)
to every CrossDepthwise that reads it as `moments=`; the implementation `merges.crossdepthwise.choose`
names for merges given moments (`from_moments`, once the `merge_dispatch` pass has set it) normalises
through them. In eval mode the moments are None. Parameters, buffers and state_dict keys do not change.
Each moments node carries its producer's `meta`, with `op` "moments" and the per-channel `shape` of the
statistics, so that later passes see where it belongs."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ..merges import crossdepthwise
from ..modules import CrossDepthwise
from .contract import Pass


class BatchMoments(nn.Module):
    """The batch (var, mean) of one producer in training (`merges.crossdepthwise.moments`), shared by
    every CrossDepthwise that reads it; None in eval mode. Stateless, so that inserting it changes no
    state_dict key."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        return crossdepthwise.moments(x) if self.training else None


def _free_name(parent: nn.Module, leaf: str) -> str:
    name, k = leaf, 1
    while hasattr(parent, name):
        k += 1
        name = f"{leaf}{k}"
    return name


def _apply(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with one `BatchMoments` node after every tensor that a CrossDepthwise reads, its result passed
    to each such CrossDepthwise as `moments=`. A moments module sits beside its producer's module, or
    beside the first consumer's when the producer is not a module call. Modifies `gm` in place and
    returns it."""
    merges = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or "moments" in node.kwargs:
            continue
        m = gm.get_submodule(node.target)
        if isinstance(m, CrossDepthwise) and all(isinstance(a, fx.Node) for a in node.args):
            merges.append((node, m))
    moments: dict[fx.Node, fx.Node] = {}
    for node, _ in merges:
        for src in node.args:
            if src in moments:
                continue
            if src.op == "call_module":
                parent_path, _, leaf = src.target.rpartition(".")
            else:
                parent_path, leaf = node.target.rpartition(".")[0], src.name
            parent = gm.get_submodule(parent_path)
            name = _free_name(parent, leaf + "_moments")
            parent.add_module(name, BatchMoments())
            path = f"{parent_path}.{name}" if parent_path else name
            anchor = src if src.op != "placeholder" else [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
            with gm.graph.inserting_after(anchor):
                moments[src] = gm.graph.create_node("call_module", path, (src,), name=path.replace(".", "_"))
            shape = src.meta.get("shape")
            moments[src].meta.update(src.meta, op="moments", shape=None if shape is None else (shape[0],))
    for node, _ in merges:
        node.kwargs = {**node.kwargs, "moments": tuple(moments[a] for a in node.args)}
    if merges:
        gm.graph.lint()
        gm.recompile()
    return gm


# Buffered merges are no module calls, and the inference form has no batch moments.
apply = Pass("normalise_once", _apply, forbids=("merge_buffer", "fold_bn"))
