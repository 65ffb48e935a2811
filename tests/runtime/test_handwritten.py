"""The hand-written baselines are true equivalents of the specs: exactly the spec's parameters, and,
with the compiled module's weights copied across, the same function in float64 (on 16×16 inputs: the
function does not depend on the size, and every stage keeps at least 4×4)."""

import pytest
import torch

import archspec
from archspec.compiler.codegen import to_module
from archspec.runtime.bench.handwritten import copy_parameters, count, handwritten_for
from conftest import SPECS, network_of

FULL = ["delugenet146", "densenet_bc100_k12", "gunn15", "seqresnet_k8r4"]

SMALL = {
    "delugenet146": dict(n=2, w=0.25),
    "delugenet218": dict(n=1, w=0.25),  # one-tensor blocks: no cross-layer merge before the transitions
    "densenet_bc100_k12": dict(depth=16, k=4),
    "gunn15": dict(widths=[8, 12, 16], segments=[2, 3, 4]),
    "gunn24": dict(widths=[8, 12, 16], segments=[2, 3, 4]),  # K 3, M 2: two bottlenecks per unit
    "sunn15": dict(widths=[8, 12, 16], segments=[2, 3, 4]),
    "seqresnet_k8r4": dict(r=1, k=4, drop=0.0, blocks=[2, 1, 2]),
    "seqresnetb_k16r7": dict(r=1, k=4, drop=0.0),  # bottleneck groups
    "seqconv_s2": dict(r=1, k=4, drop=0.0),  # dense SeqConv layers
}


@pytest.mark.parametrize("spec", FULL)
def test_parameter_count_is_the_specs(spec):
    net = network_of(spec)
    make = handwritten_for(net)
    assert make is not None
    with torch.device("meta"):
        assert count(make()) == archspec.summary(net).params


def test_no_baseline_where_the_family_is_unknown_or_the_count_differs():
    assert handwritten_for(archspec.network(SPECS / "tiny_delugenet.arch")) is None  # 8×8 input, two blocks
    assert handwritten_for(archspec.network(SPECS / "wrn28_10.arch")) is None


def _randomised(net, dtype=torch.float64):
    """The compiled module with every parameter moved off its initial value (zero-initialised
    convolutions included, so every path counts), and the hand-written one with the same weights."""
    torch.manual_seed(0)
    gm = to_module(net).to(dtype)
    with torch.no_grad():
        for p in gm.parameters():
            p.add_(0.2 * torch.randn_like(p))
    hand = handwritten_for(net)().to(dtype)
    copy_parameters(gm, hand)
    return gm, hand


@pytest.mark.parametrize("spec", list(SMALL))
def test_same_function_as_the_compiled_module(spec, one_thread):
    net = archspec.network(SPECS / f"{spec}.arch", **SMALL[spec])
    gm, hand = _randomised(net)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for mode in ("train", "eval"):
        gm.train(mode == "train")
        hand.train(mode == "train")
        torch.testing.assert_close(hand(x), gm(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spec", ["delugenet146", "densenet_bc100_k12"])
def test_same_gradients_as_the_compiled_module(spec, one_thread):
    net = archspec.network(SPECS / f"{spec}.arch", **SMALL[spec])
    gm, hand = _randomised(net)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = []
    for m in (gm, hand):
        xi = x.clone().requires_grad_(True)
        m(xi).square().sum().backward()
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b.reshape(a.shape), a, rtol=1e-9, atol=1e-9)
    assert all(g.abs().sum() > 0 for g in grads[0])


def test_copy_parameters_refuses_modules_that_do_not_line_up():
    a = handwritten_for(archspec.network(SPECS / "gunn15.arch", **SMALL["gunn15"]))()
    b = handwritten_for(archspec.network(SPECS / "densenet_bc100_k12.arch", **SMALL["densenet_bc100_k12"]))()
    with pytest.raises(ValueError, match="do not line up"):
        copy_parameters(a, b)
