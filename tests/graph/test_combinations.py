"""Patterns and merge words are orthogonal: changing the pattern or merge word of a library spec gives
a valid, different network, whose analytic parameter count still equals the built module's and which
runs forward."""

import re

import pytest
import torch

import archspec
from conftest import SPECS

LIB = SPECS / "lib"

# (library file, words to replace (a regex, matched only where a block body opens after it), replacement,
#  alias appended to select a small network, op that the variant must have, op it must no longer have)
VARIANTS = [
    # DelugeNet's cross-layer depthwise convolutions become DenseNet concatenations or residual-style sums.
    ("delugenet.arch", "crossdepthwise", "concat",
     "network small = delugenet_cifar(n=2, w=0.25)", "concat", "crossdepthwise"),
    ("delugenet.arch", "crossdepthwise", "sum",
     "network small = delugenet_cifar(n=2, w=0.25)", "add", "crossdepthwise"),
    ("delugenet.arch", "crossdepthwise", "concat",
     "network small = delugenet_imagenet(layers=[2, 2, 2, 2], widths=[8, 16, 32, 64], size=64)",
     "concat", "crossdepthwise"),
    # DenseNet-BC's concatenations become cross-layer depthwise convolutions (inputs of different widths
    # aligned at channel 0), and the whole dense pattern becomes residual or a plain chain.
    ("densenet.arch", "concat", "crossdepthwise",
     "network small = densenet_bc_cifar(depth=16, k=4)", "crossdepthwise", "concat"),
    ("densenet.arch", "dense concat", "residual sum",
     "network small = densenet_bc_cifar(depth=16, k=4)", "add", "concat"),
    ("densenet.arch", "dense concat", "chain",
     "network small = densenet_bc_cifar(depth=16, k=4)", "conv", "concat"),
    ("densenet.arch", "concat", "crossdepthwise",
     "network small = densenet_cifar(depth=10, k=4)", "crossdepthwise", "concat"),
    # Pre-activation ResNet whose shortcut sums become cross-layer depthwise convolutions.
    ("resnet.arch", "residual sum", "residual crossdepthwise",
     "network small = preresnet_cifar(depth=20)", "crossdepthwise", "add"),
    # A library that `use`s another one: its path resolves from the current directory.
    ("resnetlike.arch", "residual sum", "residual crossdepthwise",
     "network small = resnetlike_cifar(n=2, w=0.25)", "crossdepthwise", "add"),
]


def _ops(net) -> set[str]:
    return {n.op for n in net.nodes()}


@pytest.mark.parametrize("lib,old,new,alias,has,lacks", VARIANTS,
                         ids=[f"{v[0].split('.')[0]}:{v[1]}->{v[2]}:{v[3].split('= ')[1].split('(')[0]}"
                              for v in VARIANTS])
def test_changed_word_gives_valid_different_network(monkeypatch, lib, old, new, alias, has, lacks):
    monkeypatch.chdir(LIB)  # `use` in spec text resolves relative to the current directory
    text = (LIB / lib).read_text()
    new_text, count = re.subn(rf"\b{old}(?= \{{)", new, text)
    assert count >= 1
    original = archspec.network(archspec.parse(text + "\n" + alias + "\n"))
    changed = archspec.network(archspec.parse(new_text + "\n" + alias + "\n"))
    assert changed.name == original.name == "small"

    assert lacks in _ops(original) and has in _ops(changed) and lacks not in _ops(changed)
    s0, s1 = archspec.summary(original), archspec.summary(changed)
    assert s1.params != s0.params

    for net, s in [(original, s0), (changed, s1)]:
        gm = archspec.build(net)
        assert sum(p.numel() for p in gm.parameters()) == s.params
        y = gm(torch.randn(2, *s.input_shape))
        assert y.shape == (2, net.params["classes"])
        assert torch.isfinite(y).all()
        y.sum().backward()
        assert all(p.grad is not None for p in gm.parameters())
