"""The memory policy: which memory pass a training module gets. `fast` runs the plain ops (the
fastest step, every activation held), with buffered cross-layer merges where the step runs eagerly, as a
CUDA graph or regionally compiled (`training`); `lean` applies the lean pass (memory linear in depth, no
convolution recomputed, some elementwise work redone in backward); `auto` goes lean only where the
plain step would not fit the memory the device has free. The estimate comes from the graph alone."""

from __future__ import annotations

import torch.fx as fx

from archspec.graph.ir import Network
from archspec.errors import RunError, did_you_mean

from . import lean, merge_buffer

MODES = ("fast", "lean", "auto")
HEADROOM = 0.8  # of the free memory a step may take: the allocator's caching and fragmentation need the rest


def held_bytes(net: Network, batch: int, bytes_per_element: int = 4) -> int:
    """What autograd holds for backward in a plain training step, estimated from the graph: every
    node's output, once (each is saved by its consumer at most once, and most by one)."""
    per_sample = sum(_numel(n.shape) for n in net.nodes() if n.role != "input")
    return per_sample * batch * bytes_per_element


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def resolve(mode: str, net: Network, batch: int, free_bytes: int | None, bytes_per_element: int = 4) -> str:
    """`fast` or `lean` for `mode`: `auto` is lean only where the plain step's held bytes exceed the
    free memory's headroom; with no free-memory figure it stays fast."""
    if mode not in MODES:
        raise RunError(f"unknown memory mode {mode!r}", "\n".join(
            filter(None, (did_you_mean(str(mode), MODES), f"memory modes: {', '.join(MODES)}"))))
    if mode != "auto":
        return mode
    if free_bytes is None:
        return "fast"
    return "lean" if held_bytes(net, batch, bytes_per_element) > HEADROOM * free_bytes else "fast"


def apply(gm: fx.GraphModule, mode: str) -> fx.GraphModule:
    """`gm` under a resolved mode: unchanged for `fast`, the lean pass applied in place for `lean`."""
    if mode == "fast":
        return gm
    if mode == "lean":
        return lean.apply(gm)
    raise ValueError(f"apply takes a resolved memory mode, fast or lean, got {mode!r}")


def training(gm: fx.GraphModule, mode: str, compile_mode: str = "none") -> fx.GraphModule:
    """`gm` as a training step runs it: `apply`'s pass, and under `fast` the buffered merges wherever
    they run eagerly (not under whole-model torch.compile, which fuses the merges itself). Same
    parameters, buffers and state_dict keys either way."""
    gm = apply(gm, mode)
    return merge_buffer.apply(gm) if mode == "fast" and compile_mode != "whole" else gm
