"""The training step, once: how a step is configured (`StepConfig`, checked once), the module it runs
(`assemble`: memory policy, layout, compiled regions or the whole network compiled, DDP), and `Step`,
which takes forward, loss, backward and the optimizer's update. Compilation, CUDA-graph capture and DDP
wrap the same module and the same update, as in nanoGPT's train.py; `archspec train`, `bench train`
and evaluation all go through here.

Two choices hold for every step: gradients are zeroed in place (`set_to_none=False`), because a
captured step's gradient tensors must stay the parameters' gradients between replays; and the loss
and the scores read the logits in float32 (`.float()`), so bf16 autocast changes the network's
arithmetic, never the loss's or the accuracy's."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from archspec.compiler.codegen import to_module
from archspec.compiler.passes import memory as memory_policy
from archspec.compiler.passes.regional import compile_regions
from archspec.errors import RunError, did_you_mean
from archspec.graph.ir import Network

from .capture import Captured, Snapshot

COMPILE_MODES = ("none", "regional", "whole", "cudagraph", "regional+cudagraph")
"""`--compile`: eager; torch.compile once per layer structure (compile time flat in depth); the whole
network; each training step captured as one CUDA graph (launch-bound steps on a GPU); or both the first
and the last: compiled layers, their step captured."""

DTYPES = {"fp32": False, "bf16": True}
"""`bench train --dtype`: the step's autocast, as `archspec train --amp/--no-amp` says it."""


def compiles_regions(mode: str) -> bool:
    return mode in ("regional", "regional+cudagraph")


def captures_step(mode: str) -> bool:
    return mode in ("cudagraph", "regional+cudagraph")


def check_compile_mode(mode: str | bool) -> str:
    """A `--compile` word (`True`: regional, `False`: none), or a RunError naming the nearest."""
    if isinstance(mode, bool):
        return "regional" if mode else "none"
    if mode not in COMPILE_MODES:
        raise RunError(f"unknown compile mode '{mode}'",
                       did_you_mean(str(mode), COMPILE_MODES) or f"compile modes: {', '.join(COMPILE_MODES)}")
    return mode


def amp_of(dtype: str) -> bool:
    """Whether `--dtype` asks for bf16 autocast."""
    if dtype not in DTYPES:
        raise RunError(f"unknown dtype '{dtype}'", "dtypes: " + ", ".join(DTYPES))
    return DTYPES[dtype]


@dataclass(frozen=True)
class StepConfig:
    """How every step of a run is taken, checked when made: the memory policy asked for (fast, lean or
    auto), the compile mode, bf16 autocast and channels_last (None: on for CUDA), DDP, and the device."""

    device: torch.device = torch.device("cpu")
    memory: str = "fast"
    compile: str | bool = "none"
    amp: bool | None = None
    channels_last: bool | None = None
    ddp: bool = False

    def __post_init__(self) -> None:
        device = torch.device(self.device)
        cuda = device.type == "cuda"
        memory_policy.check_mode(self.memory)
        mode = check_compile_mode(self.compile)
        if captures_step(mode) and not cuda:
            raise RunError(f"--compile {mode} needs a CUDA device", "use --device cuda, or --compile regional")
        if captures_step(mode) and self.ddp:
            raise RunError(f"--compile {mode} runs one process", "use --compile regional with --nproc")
        for name, value in (("device", device), ("compile", mode),
                            ("amp", cuda if self.amp is None else self.amp),
                            ("channels_last", cuda if self.channels_last is None else self.channels_last)):
            object.__setattr__(self, name, value)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None: the module's own (float32)."""
        return torch.bfloat16 if self.amp else None

    @property
    def captures(self) -> bool:
        return captures_step(self.compile)

    def memory_for(self, net: Network, batch: int) -> str:
        """`fast` or `lean`: the policy resolved for `net` at `batch` images per step (`auto` weighs the
        plain step, at the step's element size, against the GPU's free memory; on the CPU it is fast)."""
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else None
        return memory_policy.resolve(self.memory, net, batch, free, 2 if self.amp else 4)

    def autocast(self):
        return autocast(self.device, self.dtype)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the step's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


def place(model: nn.Module, cfg: StepConfig) -> nn.Module:
    """`model` on the step's device, in its memory format."""
    model = model.to(cfg.device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def wrap(model: nn.Module, cfg: StepConfig) -> nn.Module:
    """What a full batch runs through: `model` with its regions compiled, under DDP, whole compiled, as
    `cfg` says; the same parameters and buffers (a captured step is taken by `Step`)."""
    run = compile_regions(model) if compiles_regions(cfg.compile) else model
    if cfg.ddp:
        run = DistributedDataParallel(run, device_ids=[cfg.device.index] if cfg.device.type == "cuda" else None)
    return torch.compile(run) if cfg.compile == "whole" else run


def assemble(net: Network, cfg: StepConfig, memory: str) -> tuple[fx.GraphModule, nn.Module]:
    """(model, run) for `net`: the module under the resolved memory mode `memory`, as a step of
    `cfg.compile` runs it, placed on the device (the module whose state is saved: every form holds the
    same parameters and buffers under the same names, so a checkpoint of one loads into the others);
    and `wrap`'s module around it."""
    model = place(memory_policy.training(to_module(net), memory, cfg.compile), cfg)
    return model, wrap(model, cfg)


def sgd(params, cfg: StepConfig, lr: float, **hyper) -> torch.optim.SGD:
    """SGD for a step of `cfg` (a recipe's optimizer, whichever it names: `optim.make_optimizer`); for a
    captured step, its learning rate lives on the device as a tensor (a scheduler's change reaches the
    replayed step) and its update is one fused kernel."""
    if cfg.captures:
        return torch.optim.SGD(params, lr=torch.tensor(lr, dtype=torch.float32, device=cfg.device), fused=True,
                               **hyper)
    return torch.optim.SGD(params, lr=lr, **hyper)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device`'s type; None or float32: none."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def forward_loss(module: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None,
                 loss_fn: Callable = F.cross_entropy) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits in float32, loss) of one batch, under autocast to `dtype` (None: none)."""
    with autocast(x.device, dtype):
        logits = module(x).float()
        return logits, loss_fn(logits, y)


class Step:
    """`step(x, y)` → (logits, loss): one step of `opt` on `model`'s parameters, on `loss_fn` (the
    recipe's cross-entropy), the gradient's norm clipped to `clip` where given. A batch of `batch`
    images runs through `run` (compiled, DDP-wrapped), and under a capture mode replays the step
    captured on the first such batch; a batch of another size (the last, partial one) takes the same
    update on the same weights through `model` itself, rather than compiling every region again, or
    capturing again, for one batch (under DDP it stays `run`, which reduces the gradients)."""

    def __init__(self, model: nn.Module, run: nn.Module, opt: torch.optim.Optimizer, cfg: StepConfig, batch: int,
                 loss_fn: Callable = F.cross_entropy, clip: float | None = None):
        self.model, self.run, self.opt, self.cfg, self.batch, self.loss_fn = model, run, opt, cfg, batch, loss_fn
        self.clip = clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.captured: Captured | None = None

    def module_for(self, n: int) -> nn.Module:
        """What a batch of `n` images runs through."""
        if n != self.batch and self.cfg.compile != "none" and not self.cfg.ddp:
            return self.model
        return self.run

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        self.run.train(mode)

    def update(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, gradient clipping (where asked) and the optimizer's update through
        `module` → (logits, loss), detached. The clipping reads the norm on the device (no host sync), so a
        captured step clips as an eager one does."""
        logits, loss = forward_loss(module, x, y, self.cfg.dtype, self.loss_fn)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        return logits.detach(), loss.detach()

    def capture(self, x: torch.Tensor, y: torch.Tensor) -> Captured:
        """The step on `run` captured for batches shaped as (x, y); the warm-up leaves no trace."""
        for group in self.opt.param_groups:
            if not torch.is_tensor(group["lr"]):
                raise ValueError("the optimizer's lr must be a tensor on the device: use step.sgd or "
                                 "optim.make_optimizer(captures=True)")
        _state_like_params(self.opt)
        self.captured = Captured(lambda a, b: self.update(self.run, a, b), (self.cfg.layout(x), y),
                                 keep=Snapshot(self.model, self.opt))
        return self.captured

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.cfg.layout(x)
        if self.cfg.captures and len(y) == self.batch:
            captured = self.captured or self.capture(x, y)
            if captured.fits(x, y):
                return captured(x, y)
        return self.update(self.module_for(len(y)), x, y)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of a batch, as the step's forward computes them; the caller sets the mode
        and grad."""
        with self.cfg.autocast():
            return self.module_for(len(x))(self.cfg.layout(x)).float()


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
