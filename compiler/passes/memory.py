"""The memory policy: which memory pass a training module gets. `fast` runs the plain ops (the
fastest step, every activation held), with buffered cross-layer merges where the step runs eagerly, as a
CUDA graph or regionally compiled (`training`); `lean` applies the lean pass (memory linear in depth, no
convolution recomputed, some elementwise work redone in backward); `auto` goes lean only where the
plain step would not fit the memory the device has free, by the one estimate from the graph
(`activation_memory.estimate`) that also refuses a step too large for the device."""

from __future__ import annotations

import torch.fx as fx

from archspec.graph.ir import Network
from archspec.errors import RunError, did_you_mean

from ..activation_memory import estimate
from ..merges import crossdepthwise
from . import lean, merge_buffer, merge_dispatch, normalise_once

MODES = ("fast", "lean", "auto")
HEADROOM = 0.8  # of the free memory a step may take: the allocator's caching and fragmentation need the rest


def step_bytes(net: Network, batch: int, bytes_per_element: int = 4) -> int:
    """The bytes a plain training step of `net` at `batch` needs, as `activation_memory.estimate` (the
    estimate behind the refusal `refuse_above`) counts them: weights, gradients, optimizer state, input,
    saved activations and working space."""
    return estimate(net, batch, training=True, bytes_per_element=bytes_per_element).total


def check_mode(mode: str) -> str:
    """`mode` if it is a memory mode; otherwise a RunError naming the nearest mode and every mode."""
    if mode not in MODES:
        raise RunError(f"unknown memory mode {mode!r}", "\n".join(
            filter(None, (did_you_mean(str(mode), MODES), f"memory modes: {', '.join(MODES)}"))))
    return mode


def resolve(mode: str, net: Network, batch: int, free_bytes: int | None, bytes_per_element: int = 4) -> str:
    """`fast` or `lean` for `mode`: `auto` is lean only where the plain step's estimate (`step_bytes`)
    exceeds the free memory's headroom; with no free-memory figure it stays fast."""
    if check_mode(mode) != "auto":
        return mode
    if free_bytes is None:
        return "fast"
    return "lean" if step_bytes(net, batch, bytes_per_element) > HEADROOM * free_bytes else "fast"


def _buffers(mode: str, compile_mode: str) -> bool:
    """Whether a training step of `mode` and `compile_mode` buffers the merges that can share a buffer."""
    return crossdepthwise.choose(training=True, policy=mode, compile_mode=compile_mode, buffer=True).name in (
        "buffered", "buffered_triton")


def apply(gm: fx.GraphModule, mode: str) -> fx.GraphModule:
    """`gm` under a resolved mode, in place: for `lean` the lean pass and one batch-moments node per merge
    producer (`normalise_once`); then, either way, each merge dispatching to the implementation its
    `choose` names (`merge_dispatch`)."""
    if mode == "lean":
        gm = normalise_once.apply(lean.apply(gm))
    elif mode != "fast":
        raise ValueError(f"apply takes a resolved memory mode, fast or lean, got {mode!r}")
    return merge_dispatch.apply(gm, policy=mode)


def training(gm: fx.GraphModule, mode: str, compile_mode: str = "none") -> fx.GraphModule:
    """`gm` as a training step runs it: under `lean`, `apply`'s passes; under `fast`, the buffered merges
    wherever they run eagerly (not under whole-model torch.compile, which fuses the merges itself), then
    every merge left dispatching under the compile mode. Same parameters, buffers and state_dict keys
    either way."""
    if mode == "fast" and _buffers(mode, compile_mode):
        gm = merge_buffer.apply(gm)
    elif mode == "lean":
        gm = normalise_once.apply(lean.apply(gm))
    elif mode != "fast":
        raise ValueError(f"training takes a resolved memory mode, fast or lean, got {mode!r}")
    return merge_dispatch.apply(gm, policy=mode, compile_mode=compile_mode)
