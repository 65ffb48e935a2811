"""A whole training step — forward, loss, backward, optimizer step — captured once as a CUDA graph and
replayed: one launch instead of thousands, for steps bound by Python and kernel-launch overhead (deep
networks of small layers at moderate batch sizes). Shapes are static, so a batch of another size (the
last, partial one) takes the same step eagerly on the same parameters, gradients and optimizer state.

The optimizer must take its learning rate as a tensor on the device (`graph_optimizer`), so that a
scheduler's change reaches the replayed step; every other hyper-parameter is fixed at capture."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def graph_optimizer(params, device: torch.device, lr: float, **kw) -> torch.optim.SGD:
    """SGD whose learning rate lives on `device` as a tensor (schedulers update it in place) and whose
    update is one fused kernel: a step a CUDA graph can replay."""
    return torch.optim.SGD(params, lr=torch.tensor(lr, dtype=torch.float32, device=device), fused=True, **kw)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def eager_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               dtype: torch.dtype | None, loss_fn: Callable = F.cross_entropy) -> tuple[torch.Tensor, torch.Tensor]:
    """One plain training step → (logits, loss); gradients are zeroed in place, so that tensors a captured
    graph writes stay the parameters' gradients."""
    with _autocast(x.device, dtype):
        logits = model(x).float()
        loss = loss_fn(logits, y)
    opt.zero_grad(set_to_none=False)
    loss.backward()
    opt.step()
    return logits.detach(), loss.detach()


class GraphedStep:
    """`step(x, y)` → (logits, loss), replaying a captured training step when the batch has the captured
    shape and running `eager_step` otherwise. Capture needs a few eager steps first (to allocate
    gradients and optimizer state outside the graph); their effect on weights, buffers and optimizer
    state is undone, so the first replayed step is the run's first step."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 dtype: torch.dtype | None = None, loss_fn: Callable = F.cross_entropy, warmup: int = 3):
        if x.device.type != "cuda":
            raise ValueError("a CUDA graph step needs a CUDA device")
        for group in opt.param_groups:
            if not torch.is_tensor(group["lr"]):
                raise ValueError("the optimizer's lr must be a tensor on the device: use graph_optimizer")
        self.model, self.opt, self.dtype, self.loss_fn = model, opt, dtype, loss_fn
        self.x, self.y = x.clone(), y.clone()
        _state_like_params(opt)
        saved = _snapshot(model, opt)
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(max(warmup, 1)):
                eager_step(model, opt, self.x, self.y, dtype, loss_fn)
        torch.cuda.current_stream(x.device).wait_stream(side)
        _restore(model, opt, saved)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            with _autocast(x.device, dtype):
                self.logits = model(self.x).float()
                self.loss = loss_fn(self.logits, self.y)
            opt.zero_grad(set_to_none=False)
            self.loss.backward()
            opt.step()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape != self.x.shape or y.shape != self.y.shape:
            return eager_step(self.model, self.opt, x, y, self.dtype, self.loss_fn)
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()
        return self.logits.detach(), self.loss.detach()


@torch.no_grad()
def _state_like_params(opt: torch.optim.Optimizer) -> None:
    """Optimizer state laid out as its parameter (a resumed state loads contiguous, a channels_last
    parameter is not), as the fused update requires."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p).copy_(v)


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, list[torch.Tensor]]:
    """Copies of what the warm-up steps change; tensors keep their identity when restored."""
    return {"model": [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())],
            "lr": [g["lr"].clone() for g in opt.param_groups]}


@torch.no_grad()
def _restore(model: nn.Module, opt: torch.optim.Optimizer, saved: dict[str, list[torch.Tensor]]) -> None:
    """Weights and buffers back in place; momentum buffers zeroed, which makes the next update the
    first step's (buf = 0·momentum + grad = grad, SGD without dampening)."""
    for t, v in zip(list(model.parameters()) + list(model.buffers()), saved["model"]):
        t.copy_(v)
    for g, lr in zip(opt.param_groups, saved["lr"]):
        g["lr"].copy_(lr)
    for state in opt.state.values():
        for k, v in state.items():
            if torch.is_tensor(v) and k == "momentum_buffer":
                v.zero_()
