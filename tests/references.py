"""Reference implementations from other libraries, imported for comparison tests: timm's and torchvision's
model definitions. Their compiled operators need a torch build of their own, but the model code does not:
an empty `torchvision._meta_registrations` lets the definitions import on any torch. A test that needs a
library it cannot import is skipped with the reason."""

from __future__ import annotations

import sys
import types
from types import ModuleType

import pytest

_STUB = "torchvision._meta_registrations"


def _import(name: str) -> ModuleType:
    sys.modules.setdefault(_STUB, types.ModuleType(_STUB))
    try:
        return __import__(name)
    except Exception as err:  # a missing package, or one built for another torch
        pytest.skip(f"{name} does not import here: {type(err).__name__}: {err}")


def timm() -> ModuleType:
    """timm, or a skip of the calling test."""
    return _import("timm")


def torchvision() -> ModuleType:
    """torchvision (with `torchvision.models`), or a skip of the calling test."""
    tv = _import("torchvision")
    __import__("torchvision.models")
    return tv


def timm_model(name: str, **kw):
    """timm's `name`, built without pretrained weights, in evaluation mode."""
    return timm().create_model(name, pretrained=False, **kw).eval()


# ---- one comparison of a spec's module with its reference, after weight transfer ----------------------------

TOL = dict(rtol=1e-9, atol=1e-9)  # float64: only the order of additions may differ


def with_random_norms(ref):
    """`ref` in float64, its batch norms given random affine weights and statistics (references often start
    a block's last one at γ = 0, which would hide gradients), every other weight as its code draws it."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    ref = ref.double()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
    return ref


def seeded(m, x):
    """`m(x)` from random seed 1, the caller's random state untouched: dropout drops alike on both sides."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return m(x)


def assert_same_after_transfer(ref, gm, pairs, x, every_tensor: bool = True) -> None:
    """`gm` given `ref`'s weights (`pairs`, a transfer report's) computes what `ref` does, in training mode:
    outputs, the input's and every paired parameter's gradient (all nonzero) agree; after an SGD step on
    both, every paired tensor (weights and running statistics) and the next outputs agree. Each forward
    pass starts from the same random state. `every_tensor`: the pairs cover all of `ref`'s tensors."""
    import torch
    from torch import nn

    ref.train(), gm.train()
    src = dict(ref.named_parameters()) | dict(ref.named_buffers())
    dst = dict(gm.named_parameters()) | dict(gm.named_buffers())
    xs = [x.detach().clone().requires_grad_(True) for _ in range(2)]
    outs = [seeded(m, xi) for m, xi in zip((ref, gm), xs)]
    w = torch.randn(outs[0].shape, generator=torch.Generator().manual_seed(2), dtype=outs[0].dtype)
    for out in outs:
        (out * w).sum().backward()
    torch.testing.assert_close(outs[1], outs[0], **TOL)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, **TOL)
    assert xs[0].grad.abs().sum() > 0
    if every_tensor:
        assert len(pairs) == len(src)
    for p in pairs:
        a, b = src[p.source[0]], dst[p.target]
        if isinstance(b, nn.Parameter):
            assert a.grad is not None and a.grad.abs().sum() > 0, p.source[0]
            torch.testing.assert_close(b.grad, a.grad.reshape(b.shape), **TOL, msg=lambda m: f"{p.target}: {m}")
    with torch.no_grad():
        for m in (ref, gm):
            for q in m.parameters():
                q -= 0.1 * q.grad
            m.zero_grad(set_to_none=True)
    for p in pairs:
        a, b = src[p.source[0]], dst[p.target]
        torch.testing.assert_close(b, a.reshape(b.shape), **TOL, msg=lambda m: f"{p.target}: {m}")
    with torch.no_grad():
        outs = [seeded(m, x) for m in (ref, gm)]
    assert torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[1], outs[0], **TOL)
