"""CUDA-graph capture: a function of tensors recorded once as one CUDA graph and replayed, one launch
instead of thousands, for work bound by Python and kernel-launch overhead. It serves the captured
training step (`step.Step`) and `bench infer`'s captured inference alike.

Capture needs a few calls first, on a side stream: cuDNN's autotuning and the allocator's pools settle
there, and a training step allocates its gradients and optimizer state outside the graph. Whatever
those warm-up calls change in a module and its optimizer (`keep`) is put back, so the first replay is
the first real call."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


class Snapshot:
    """Copies of what a warm-up step changes — a module's parameters and buffers, an optimizer's learning
    rates and state — put back by `restore` into the same tensors, which keep their identity."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer | None = None):
        self.model, self.opt = model, opt
        self.tensors = [t.detach().clone() for t in _state(model)]
        self.lr = [g["lr"].clone() if torch.is_tensor(g["lr"]) else g["lr"] for g in opt.param_groups] if opt else []
        self.state = {p: {k: v.detach().clone() for k, v in s.items() if torch.is_tensor(v)}
                      for p, s in opt.state.items()} if opt else {}

    @torch.no_grad()
    def restore(self) -> None:
        """Weights, buffers, learning rates and the optimizer state held before (a resumed run's) back in
        place; state the warm-up created is zeroed, which makes the next update the first step's (SGD:
        buf = 0·momentum + grad = grad, without dampening)."""
        for t, v in zip(_state(self.model), self.tensors):
            t.copy_(v)
        if self.opt is None:
            return
        for g, lr in zip(self.opt.param_groups, self.lr):
            if torch.is_tensor(lr):
                g["lr"].copy_(lr)
            else:
                g["lr"] = lr
        for p, state in self.opt.state.items():
            saved = self.state.get(p, {})
            for k, v in state.items():
                if not torch.is_tensor(v):
                    continue
                if k in saved:
                    v.copy_(saved[k])
                else:  # as the optimizer makes it on its first step: zeros (step counts, moments, momenta)
                    v.zero_()


def _state(model: nn.Module) -> list[torch.Tensor]:
    return list(model.parameters()) + list(model.buffers())


class Captured:
    """`fn(*inputs)` recorded as one CUDA graph on static copies of `inputs`. A call copies its tensors
    into those copies and replays; it returns the static outputs, which the next replay overwrites.
    `fits(*args)` says whether tensors have the captured shapes (anything else must run `fn` itself)."""

    def __init__(self, fn: Callable[..., object], inputs: Sequence[torch.Tensor], warmup: int = 3,
                 keep: Snapshot | None = None):
        device = inputs[0].device
        if device.type != "cuda":
            raise ValueError("a CUDA graph needs a CUDA device")
        self.inputs = tuple(t.detach().clone() for t in inputs)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(max(warmup, 1)):
                fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        if keep is not None:
            keep.restore()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def fits(self, *args: torch.Tensor) -> bool:
        return len(args) == len(self.inputs) and all(a.shape == s.shape for a, s in zip(args, self.inputs))

    def __call__(self, *args: torch.Tensor):
        for static, a in zip(self.inputs, args):
            static.copy_(a, non_blocking=True)
        self.graph.replay()
        return self.outputs
