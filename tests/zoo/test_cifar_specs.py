"""DenseNet, DenseNet-BC, pre-activation ResNet-164 and WideResNet-28-10 (CIFAR): layers per block,
transition widths, projection shortcuts, dropout and depth. Their parameter counts and builds are in
`test_specs.py`."""

import pytest

import archspec
from conftest import SPECS

def test_densenet_structure():
    """Depth (L − 4)/3 layers per block for DenseNet, (L − 4)/6 for DenseNet-BC, and the widths the
    transitions give: DenseNet keeps the width, DenseNet-BC halves it."""
    s = archspec.summary(SPECS / "densenet40_k12.arch")
    blocks = [g for g in s.groups if g.name.startswith("block")]
    assert [g.layers for g in blocks] == [12, 12, 12]
    assert [g.output_shape for g in blocks] == [(160, 32, 32), (304, 16, 16), (448, 8, 8)]
    s = archspec.summary(SPECS / "densenet_bc100_k12.arch")
    blocks = [g for g in s.groups if g.name.startswith("block")]
    trans = [g for g in s.groups if g.name.startswith("transition")]
    assert [g.layers for g in blocks] == [16, 16, 16]
    assert [g.output_shape for g in blocks] == [(216, 32, 32), (300, 16, 16), (342, 8, 8)]
    assert [g.output_shape for g in trans] == [(108, 16, 16), (150, 8, 8)]


def test_resnet_projections():
    """A 1×1 projection shortcut in exactly the first unit of each stage (stride 2 in stages 2 and 3)."""
    for name, units in [("preresnet164", 18), ("wrn28_10", 4)]:
        net = archspec.network(SPECS / f"{name}.arch")
        shortcuts = [n for n in net.nodes() if n.role == "shortcut"]
        assert [n.name for n in shortcuts] == [f"block{i}.layer1.shortcut" for i in (1, 2, 3)]
        assert [n.args.stride for n in shortcuts] == [1, 2, 2]
        s = archspec.summary(net)
        assert [g.layers for g in s.groups if g.name.startswith("block")] == [units] * 3


def test_wrn_dropout_adds_no_parameters():
    net = archspec.network(SPECS / "wrn28_10.arch", depth=10, k=2, drop=0.3)
    assert sum(n.op == "dropout" for n in net.nodes()) == 3
    assert archspec.summary(net).params == archspec.summary(SPECS / "wrn28_10.arch", depth=10, k=2).params


@pytest.mark.parametrize("name,depth", [
    ("densenet40_k12", 40), ("densenet100_k12", 100), ("densenet100_k24", 100), ("densenet_bc100_k12", 100),
    ("densenet_bc250_k24", 250), ("densenet_bc190_k40", 190), ("preresnet164", 164),
    # WRN's 28 = 6·4 + 4 counts the projection shortcuts; the longest path has stem + 24 convs + linear.
    ("wrn28_10", 26),
])
def test_depth(name, depth):
    assert archspec.summary(SPECS / f"{name}.arch").depth == depth
