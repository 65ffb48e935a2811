"""DelugeNet and ResNet-like specs: exact parameter counts and MACs from the reference, and the
analytic counts equal to the built module's."""

import pytest
import torch

import archspec
from conftest import SPECS

# (spec, overrides, params, macs or None)
CASES = [
    ("delugenet146", {}, 6_686_250, 691_898_880),
    ("delugenet146", {"classes": 100}, 6_709_380, None),
    ("delugenet218", {}, 9_981_738, 1_019_054_592),
    ("delugenet218", {"classes": 100}, 10_004_868, None),
    ("wide_delugenet146", {}, 20_150_658, 2_117_775_744),
    ("wide_delugenet146", {"classes": 100}, 20_191_068, None),
    ("delugenet143", {}, 43_589_928, 4_942_903_296),
    ("delugenet152", {}, 51_725_928, 5_224_691_712),
    ("resnetlike146", {}, 6_500_100, None),
    ("resnetlike146", {"shortcut": 1}, 6_172_420, None),
    ("resnetlike146", {"shortcut": 1, "classes": 10}, 6_149_290, None),
    ("resnetlike218", {}, 9_552_644, None),
    ("resnetlike218", {"shortcut": 1}, 9_224_964, None),
    ("wide_resnetlike146", {}, 19_824_828, None),
    ("wide_resnetlike146", {"shortcut": 1}, 18_821_308, None),
]


@pytest.mark.parametrize("name,overrides,params,macs", CASES)
def test_reference_counts(name, overrides, params, macs):
    s = archspec.summary(SPECS / f"{name}.arch", **overrides)
    assert s.params == params
    if macs is not None:
        assert s.macs == macs
        assert round(s.macs / 1e9, 3) == round(macs / 1e9, 3)


def test_cldc_parameters_of_delugenet146():
    net = archspec.network(SPECS / "delugenet146.arch")
    cldc = [n for n in net.nodes() if n.op == "crossdepthwise"]
    assert sum(archspec.graph.ir.node_params(net, n) for n in cldc) == 209_280
    assert max(len(net.inputs(n.name)) for n in cldc) == 25


@pytest.mark.parametrize("name,size", [("delugenet146", None), ("resnetlike146", None), ("delugenet143", 64)])
def test_built_module_matches_analytic_count_and_runs(name, size):
    overrides = {"size": size} if size else {}
    net = archspec.network(SPECS / f"{name}.arch", **overrides)
    gm = archspec.build(net)
    s = archspec.summary(net)
    assert sum(p.numel() for p in gm.parameters()) == s.params
    x = torch.randn(2, *s.input_shape)
    assert gm(x).shape == (2, net.params["classes"])
