"""DenseNet, DenseNet-BC, pre-activation ResNet-164 and WideResNet-28-10 (CIFAR): exact parameter
counts from the reference, and built modules that agree with the analytic count and run."""

import pytest
import torch

import archspec
from conftest import SPECS

# (spec, params with 10 classes, params with 100 classes)
COUNTS = [
    ("densenet40_k12", 1_019_722, 1_060_132),
    ("densenet100_k12", 6_979_642, 7_084_852),
    ("densenet100_k24", 27_249_082, 27_457_972),
    ("densenet_bc100_k12", 769_162, 800_032),
    ("densenet_bc250_k24", 15_324_406, 15_480_556),
    ("densenet_bc190_k40", 25_624_430, 25_821_620),
    ("preresnet164", 1_703_258, 1_726_388),
    ("wrn28_10", 36_479_194, 36_536_884),
]

# Large networks: forward one image under no_grad to keep the suite fast on a small CPU.
BIG = {"densenet100_k24", "densenet_bc250_k24", "densenet_bc190_k40", "wrn28_10"}


@pytest.mark.parametrize("name,c10,c100", COUNTS)
def test_reference_counts(name, c10, c100):
    assert archspec.summary(SPECS / f"{name}.arch").params == c10
    assert archspec.summary(SPECS / f"{name}.arch", classes=100).params == c100


@pytest.mark.parametrize("name,classes", [(name, 10) for name, _, _ in COUNTS]
                         + [("densenet_bc100_k12", 100), ("preresnet164", 100)])
def test_built_module_matches_analytic_count_and_runs(name, classes):
    net = archspec.network(SPECS / f"{name}.arch", classes=classes)
    gm = archspec.build(net)
    s = archspec.summary(net)
    assert sum(p.numel() for p in gm.parameters()) == s.params
    batch = 1 if name in BIG else 2
    gm.eval()
    with torch.no_grad():
        y = gm(torch.randn(batch, 3, 32, 32))
    assert y.shape == (batch, classes)
    assert torch.isfinite(y).all()


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
