"""A weights file given the structure of the model it was saved from (`archspec transfer --like`): the
model built with fresh weights from a library by name (`timm:NAME`, `torchvision:NAME`,
`MODULE:FUNCTION`), then given the file's tensors, whose names and shapes must be its own."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from .checks import check_tensors
from .files import WeightsFile
from .report import TransferError, fmt_shape


def like_module(text: str) -> nn.Module:
    """The module `text` names, built with fresh weights, to give a weights file its structure:
    `timm:NAME` (timm's `create_model(NAME)`), `torchvision:NAME` (`torchvision.models.NAME()`), or
    `MODULE:FUNCTION` (a function of an importable module, called with no arguments)."""
    lib, sep, name = text.partition(":")
    if not sep or not lib or not name:
        raise TransferError(f"cannot read --like '{text[:200]}'",
                            "give timm:NAME, torchvision:NAME or MODULE:FUNCTION")
    try:
        if lib == "timm":
            model = importlib.import_module("timm").create_model(name, pretrained=False)
        elif lib == "torchvision":
            model = getattr(importlib.import_module("torchvision.models"), name)(weights=None)
        else:
            model = getattr(importlib.import_module(lib), name)()
    except Exception as e:  # a library that does not import, a name it lacks, a constructor that fails
        raise TransferError(f"cannot build --like {text[:200]}: {type(e).__name__}: {e}".splitlines()[0][:400],
                            "the library must import here, and the name be one of its models") from None
    if not isinstance(model, nn.Module):
        raise TransferError(f"--like {text[:200]} gives a {type(model).__name__}, not an nn.Module")
    return model


def load_like(model: nn.Module, weights: WeightsFile) -> nn.Module:
    """`model` holding `weights`, whose names and shapes must be its own; refused (a TransferError naming
    the first difference) otherwise; the file's tensors are checked first, as `check_tensors` does."""
    check_tensors(weights.state.items())
    own = model.state_dict()
    missing = [k for k in own if k not in weights.state]
    extra = [k for k in weights.state if k not in own]
    wrong = [k for k in own if k in weights.state and tuple(own[k].shape) != tuple(weights.state[k].shape)]
    if missing or extra or wrong:
        what = (f"has no tensor '{missing[0][:200]}'" if missing else f"has tensor '{extra[0][:200]}', which the "
                f"model lacks" if extra else f"has '{wrong[0][:200]}' of shape "
                f"{fmt_shape(tuple(weights.state[wrong[0]].shape))}, not {fmt_shape(tuple(own[wrong[0]].shape))}")
        raise TransferError(f"{weights.path} is not the --like model's state dict: it {what}",
                            "--like names the model the weights were saved from")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(weights.state[k].to(v.dtype))
    return model
