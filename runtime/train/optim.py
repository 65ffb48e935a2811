"""A recipe's optimizer and learning-rate schedule, from torch.optim and torch.optim.lr_scheduler: SGD
(Nesterov), AdamW or RMSprop, with weight decay left off norm weights, biases and scales where the recipe
says so; step drops, cosine or one-cycle, after a linear warmup (SequentialLR), in epochs or in steps.

For a step replayed as a CUDA graph (`captures`), the learning rate lives on the device as a tensor,
so that a scheduler's change reaches the replayed step: SGD and AdamW update in one fused kernel,
RMSprop in its capturable multi-tensor form (`build_optimizer` with `lr_device`). Such a step takes
only the optimizers whose state the capture's warm-up puts back (`CAPTURED`), and no schedule that
changes a hyperparameter the captured step holds as a number (one-cycle's momentum).

The moving average of the weights (`make_ema`) is torch.optim.swa_utils' AveragedModel with its EMA
update, over parameters and buffers alike."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import lr_scheduler as S
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from archspec.compiler.modules import CrossDepthwise, Scale
from archspec.errors import RunError

from .recipes import Recipe

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, CrossDepthwise, Scale)
"""Modules whose weights are scales and shifts of activations, not filters: a recipe with
`no_decay_norms` applies no weight decay to them (nor to any bias)."""

TENSOR_LR = {"sgd", "adamw", "rmsprop"}
"""The optimizers that take their learning rate as a device tensor (a captured step's)."""

CAPTURED = {"sgd"}
"""The optimizers a step replayed as one CUDA graph may use: those with a tensor learning rate whose
state the capture's warm-up puts back (`capture.Snapshot` zeroes momentum buffers; AdamW's and RMSprop's
moments and step counts it leaves as the warm-up's steps made them)."""


def no_decay(model: nn.Module) -> set[str]:
    """Names of `model`'s parameters that `no_decay_norms` exempts from weight decay: every parameter of
    a normalisation (BatchNorm, LayerNorm, GroupNorm, CrossDepthwise) or Scale module, and every bias."""
    names = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias"}
    for prefix, module in model.named_modules():
        if isinstance(module, NORMS):
            names |= {f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)}
    return names


def param_groups(model: nn.Module, r: Recipe) -> list[dict]:
    """The optimizer's parameter groups: one, or, under `no_decay_norms`, the decayed parameters and then
    the exempt ones (weight decay 0), each in `model.parameters()` order."""
    params = list(model.named_parameters())
    if not r.no_decay_norms:
        return [{"params": [p for _, p in params]}]
    exempt = no_decay(model)
    return [{"params": [p for n, p in params if n not in exempt]},
            {"params": [p for n, p in params if n in exempt], "weight_decay": 0.0}]


def check_capture(r: Recipe, captures: bool) -> None:
    """Refuse a recipe that a step replayed as one CUDA graph cannot follow."""
    if not captures:
        return
    if r.optimizer not in CAPTURED:
        why = ("its state is not yet put back after the capture's warm-up" if r.optimizer in TENSOR_LR
               else "it takes no learning rate on the device")
        raise RunError(f"optimizer {r.optimizer} cannot be replayed as one CUDA graph: {why}",
                       f"use --compile regional, or optimizer {', '.join(sorted(CAPTURED))}")
    if r.schedule == "onecycle":
        raise RunError("one-cycle changes the momentum every step, which a step replayed as one CUDA graph holds "
                       "fixed", "use --compile regional, or the cosine schedule with a warmup")


def make_optimizer(model: nn.Module, r: Recipe, captures: bool = False,
                   device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """The recipe's optimizer over `model`'s parameters; for a captured step (`captures`), checked to fit
    one, with its learning rate a tensor on `device`."""
    check_capture(r, captures)
    return build_optimizer(model, r, device if captures else None)


def build_optimizer(model: nn.Module, r: Recipe, lr_device: torch.device | str | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer over `model`'s parameters (`param_groups`); with `lr_device`, its learning
    rate a float32 tensor there, updated in the form that takes one (fused SGD and AdamW, capturable
    RMSprop)."""
    if lr_device is not None and r.optimizer not in TENSOR_LR:
        raise RunError(f"optimizer {r.optimizer} takes no learning rate on the device")
    tensor = lr_device is not None
    lr = torch.tensor(r.peak_lr(), dtype=torch.float32, device=lr_device) if tensor else r.peak_lr()
    groups = param_groups(model, r)
    eps = {} if r.eps is None else {"eps": r.eps}
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0,
                               weight_decay=r.weight_decay, **({"fused": True} if tensor else {}))
    if r.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=r.betas, weight_decay=r.weight_decay, **eps,
                                 **({"fused": True} if tensor else {}))
    return torch.optim.RMSprop(groups, lr=lr, alpha=r.alpha, momentum=r.momentum, weight_decay=r.weight_decay,
                               **eps, **({"capturable": True, "foreach": True} if tensor else {}))


def make_scheduler(opt: torch.optim.Optimizer, r: Recipe, steps_per_epoch: int) -> S.LRScheduler:
    """The recipe's schedule on `opt`, to be stepped once an epoch (`schedule_per` epoch) or once a
    training step (`schedule_per` step, `steps_per_epoch` of them an epoch). A warmup rises linearly from
    lr × warmup_from to lr over `warmup_epochs`; the schedule after it counts from its end (cosine, over
    the rest of training), except that step drops fall where the recipe puts them in the whole run."""
    per = steps_per_epoch if r.schedule_per == "step" else 1
    total = r.epochs * per
    warm = round(r.warmup_epochs * per) if r.warmup_epochs else 0
    if r.schedule == "onecycle":
        return S.OneCycleLR(opt, max_lr=r.peak_lr(), total_steps=total, pct_start=r.pct_start)
    if r.schedule == "cosine":
        main = S.CosineAnnealingLR(opt, T_max=max(1, total - warm), eta_min=r.min_lr)
    else:
        milestones = r.milestone_epochs() if per == 1 else r.milestone_steps(per)
        main = S.MultiStepLR(opt, [m - warm for m in milestones if m > warm], gamma=r.gamma)
    if not warm:
        return main
    rise = S.LinearLR(opt, start_factor=r.warmup_from, end_factor=1.0, total_iters=warm)
    return S.SequentialLR(opt, [rise, main], milestones=[warm])


def steps_each(r: Recipe) -> bool:
    """Whether the schedule is stepped after every training step (else after every epoch)."""
    return r.schedule_per == "step"


def make_ema(model: nn.Module, r: Recipe) -> AveragedModel | None:
    """Under a recipe with `ema`, a copy of `model` holding the exponential moving average of its
    parameters and buffers, `ema_decay` to the average so far at each `update_parameters(model)` (the
    first copies the weights); else None."""
    if not r.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(r.ema_decay), use_buffers=True)
