"""Each learned merge that the graph still calls as a module runs the implementation its merge's
`choose` names at run time: the pass sets the module's `dispatch` to `merges.crossdepthwise.run` under
the policy and compile mode (training or eval, device, dtype and size are read per call). Without it a
merge module runs its reference formula. Only module attributes change: no node, parameter, buffer or
state_dict key."""

from __future__ import annotations

import functools

import torch.fx as fx

from ..merges import crossdepthwise
from ..modules import CrossDepthwise
from .contract import Pass


def _apply(gm: fx.GraphModule, *, policy: str, compile_mode: str = "none") -> fx.GraphModule:
    """`gm` with every CrossDepthwise it calls dispatching under `policy` ("fast" or "lean") and
    `compile_mode`. Modifies `gm` in place and returns it."""
    run = functools.partial(crossdepthwise.run, policy=policy, compile_mode=compile_mode)
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(m := gm.get_submodule(node.target), CrossDepthwise):
            m.dispatch = run
    return gm


# The inference form has no merge modules left to dispatch.
apply = Pass("merge_dispatch", _apply, forbids=("fold_bn",))
