"""silu: a spec using it builds, computes x·σ(x) (float64, against a hand computation) and costs what
the summary says."""

import pytest
import torch
import torch.nn.functional as F

import archspec
from archspec.errors import SpecError
from conftest import assert_same_function

SPEC = """
network n() {
  input(3, 8, 8)
  stem { conv(4, 3, padding=1) silu }
  head { bn silu gap linear(5) }
}"""


def test_silu_network_computes_x_sigmoid_x():
    gm = archspec.build(SPEC).double().train()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in gm.parameters():
            p.copy_(torch.randn_like(p))
    conv, bn, fc = (gm.get_submodule(n) for n in ("stem.conv1", "head.bn1", "head.linear1"))

    def by_hand(x):
        h = F.conv2d(x, conv.weight, padding=1)
        h = h / (1 + torch.exp(-h))
        mean, var = h.mean(dim=(0, 2, 3), keepdim=True), h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-5) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
        h = h / (1 + torch.exp(-h))
        return h.mean(dim=(2, 3)) @ fc.weight.T + fc.bias

    assert_same_function(gm, by_hand, torch.randn(6, 3, 8, 8, dtype=torch.float64))


def test_silu_is_counted_and_weightless():
    s = archspec.summary(SPEC)
    assert s.ops["silu"] == 2
    assert s.params == 4 * 3 * 9 + 2 * 4 + 4 * 5 + 5
    assert s.params == sum(p.numel() for p in archspec.build(SPEC).parameters())
    assert s.depth == 2


def test_swish_suggests_silu():
    with pytest.raises(SpecError) as e:
        archspec.network(SPEC.replace("bn silu", "bn swish"))
    assert "silu" in f"{e.value.message} {e.value.hint}"
