"""The crossdepthwise merge: exactly one batch norm per inflow summed (DelugeNet's Eq. 1 written out, against
the module's reference and the implementations its run-time choice picks), in a number of kernels that does
not grow with the number of inflows. Every implementation against the reference: test_merge_conformance.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from archspec.compiler.merges import crossdepthwise
from archspec.compiler.modules import CrossDepthwise


def _dispatched(m: CrossDepthwise, policy: str | None) -> CrossDepthwise:
    """`m` running its reference (policy None) or what `choose` names under `policy`."""
    m.dispatch = None if policy is None else lambda m, *xs, moments=None: crossdepthwise.run(m, *xs, policy=policy)
    return m


def reference(m: CrossDepthwise, xs: list[torch.Tensor], rm: torch.Tensor, rv: torch.Tensor,
              training: bool) -> torch.Tensor:
    """DelugeNet's Eq. 1 written out: one batch norm per inflow on its own slice of the merge's state."""
    out, start, width = None, 0, max(m.widths)
    for x, c in zip(xs, m.widths):
        y = F.batch_norm(x, rm[start:start + c], rv[start:start + c], m.weight[start:start + c],
                         m.bias[start:start + c], training, m.momentum, m.eps)
        y = F.pad(y, (0, 0, 0, 0, 0, width - c))
        out = y if out is None else out + y
        start += c
    return out


def _inputs(widths: list[int], channels_last: bool, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(4, c, 5, 6, generator=g, dtype=torch.float64) * (i + 1) + i for i, c in enumerate(widths)]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    return [x.requires_grad_() for x in xs]


@pytest.mark.parametrize("widths", [[8, 8, 8, 8], [8], [16, 8, 8, 8], [8, 8, 4, 4, 8]])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("concat_below,policy", [(2**24, "fast"), (0, "fast"), (2**24, None)],
                         ids=["concatenated", "per-inflow", "reference"])
def test_matches_one_batch_norm_per_inflow(widths, channels_last, concat_below, policy, monkeypatch):
    monkeypatch.setattr(crossdepthwise, "CONCAT_BELOW", concat_below)
    m = _dispatched(CrossDepthwise(widths).double().train(), policy)
    with torch.no_grad():
        m.weight.uniform_(-1, 1), m.bias.uniform_(-1, 1)
    rm, rv = m.running_mean.clone(), m.running_var.clone()
    xs = _inputs(widths, channels_last)
    ref_xs = [x.detach().clone().requires_grad_() for x in xs]
    g = torch.randn(4, max(widths), 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    out = m(*xs)
    grads = torch.autograd.grad(out, [*xs, m.weight, m.bias], g)
    want = reference(m, ref_xs, rm, rv, True)
    want_grads = torch.autograd.grad(want, [*ref_xs, m.weight, m.bias], g)

    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m.running_mean, rm, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.running_var, rv, rtol=1e-12, atol=1e-12)
    assert int(m.num_batches_tracked) == 1

    m.eval()
    torch.testing.assert_close(m(*xs), reference(m, ref_xs, rm, rv, False), rtol=1e-12, atol=1e-12)


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += not func.is_view
        return func(*args, **(kwargs or {}))


def _ops_per_step(k: int) -> int:
    m = _dispatched(CrossDepthwise([8] * k).train(), "fast")
    assert crossdepthwise.choose(training=True, numel=2 * 8 * 4 * 4).name == "concatenated"
    xs = [torch.randn(2, 8, 4, 4, requires_grad=True) for _ in range(k)]
    g = torch.randn(2, 8, 4, 4)
    with _Count() as c:
        torch.autograd.grad(m(*xs), [*xs, m.weight, m.bias], g)
    return c.calls


def test_kernel_count_does_not_grow_with_inflows():
    """Forward and backward of a merge of 2 and of 24 inflows dispatch the same number of non-view ops,
    where one batch norm per inflow would need several more per inflow."""
    assert _ops_per_step(24) == _ops_per_step(2)


@pytest.mark.parametrize("policy", ["fast", None], ids=["concatenated", "reference"])
def test_bf16_autocast_close_to_fp32(policy):
    torch.manual_seed(0)
    m = _dispatched(CrossDepthwise([8] * 6).train(), policy)
    xs = [torch.randn(4, 8, 5, 5) for _ in range(6)]
    want = m(*xs)
    m.running_mean.zero_(), m.running_var.fill_(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m(*[x.bfloat16() for x in xs])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)
