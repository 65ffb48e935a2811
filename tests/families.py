"""Small members of each network family (32×32 inputs) with non-trivial statistics, shared by the
export and inference-form tests."""

from __future__ import annotations

import torch
from torch import nn

from archspec.compiler.modules import CrossDepthwise
from archspec.runtime.train import model_from_source
from conftest import SPECS

# Small variants of each family (32×32 inputs).
FAMILIES = {
    "delugenet": ("delugenet146.arch", {"n": 1, "w": 0.25}),
    "densenet": ("densenet_bc100_k12.arch", {"depth": 16, "k": 4}),
    "preresnet": ("preresnet164.arch", {"depth": 11}),
    "seqconv": ("seqresnet_k8r4.arch", {"r": 1, "k": 16}),
    "gunn": ("gunn15.arch", {"widths": [8, 8, 8], "segments": [2, 2, 2]}),
}


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Normalisation statistics and affine terms away from their initial (identity) values, and no
    all-zero convolution, so that folding and exporting are tested on a non-trivial function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, CrossDepthwise)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, nn.Conv2d) and not m.weight.any():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
    return model.eval()


def _family(name: str):
    spec, sets = FAMILIES[name]
    net, model = model_from_source(SPECS / spec, sets, seed=0)
    return net, _perturbed(model)


def _close(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    """Equal up to `rel` of the output's scale (the measure `--verify` uses)."""
    assert got.shape == want.shape
    scale = want.abs().max().item()
    assert scale > 0
    err = (got - want).abs().max().item()
    assert err <= rel * scale, (err, scale)


def _inputs(net, batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, *net.shape(net.input), generator=torch.Generator().manual_seed(seed))
