"""Backbones: a small DelugeNet as a three-level feature pyramid (stages, channels and reductions as
`feature_info` says; the same values as the whole model computes; trainable under a small FPN), the
`out_indices` choice and its errors, taps written in a spec, and the classifier's reset."""

import copy

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import archspec
from archspec.errors import RunError, SpecError

SMALL = dict(n=2, w=0.25)  # DelugeNet-146's structure at widths 8/16/32 and 2/4/6 layers: ~30k parameters
X_SHAPE = (2, 3, 32, 32)

TAPPED = """
layer unit(c: int, label: str) { bn relu conv(c, 3, padding=1) tap(label) }
network tapped(classes: int = 10) {
  input(3, 16, 16)
  stem { conv(8, 3, padding=1) }
  tap
  block residual { unit(8, "r1") unit(8, "r2") }
  transition { conv(16, 3, stride=2, padding=1) }
  head { bn relu tap("last") gap linear(classes) }
}
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small tensors on a shared CPU."""


def _backbone(**kw):
    return archspec.build("delugenet146", **SMALL, features_only=True, **kw)


class _Record(fx.Interpreter):
    """Every fx node's value in one run of the whole model, by the spec path it was made for."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        out = super().run_node(n)
        if "spec_path" in n.meta:
            self.values[n.meta["spec_path"]] = out
        return out


def _same_weights(full, part):
    """`part` gets `full`'s weights; every one of its own must be among them."""
    res = part.load_state_dict(full.state_dict(), strict=False)
    assert res.missing_keys == []
    return res.unexpected_keys


def test_default_features_are_a_pyramid_of_three_stages():
    net = _backbone()
    info = net.feature_info
    # DenseNet's convention (timm): each dense block's output, then the map the global pooling reads
    assert info.module_name() == ["block1.merge", "block2.merge", "head.relu1"]
    assert info.channels() == [16, 32, 64] and info.reduction() == [1, 2, 4]
    assert info.out_indices == (0, 1, 2)
    maps = net(torch.randn(X_SHAPE))
    assert isinstance(maps, list) and len(maps) == len(info)
    for m, f in zip(maps, info):
        assert m.shape == (X_SHAPE[0], f["num_chs"], X_SHAPE[2] // f["reduction"], X_SHAPE[3] // f["reduction"])
    assert not any("linear" in name for name, _ in net.named_modules())  # the classifier is gone
    assert info.get_dicts(keys=("num_chs",), idx=1) == {"num_chs": 32}
    assert copy.deepcopy(net).feature_info == info  # survives a copy, as a timm model's does


def test_features_equal_the_whole_models_intermediates():
    torch.manual_seed(0)
    full = archspec.build("delugenet146", **SMALL).double()
    net = _backbone().double()
    left_out = _same_weights(full, net)
    assert left_out and all(k.startswith("head.linear") for k in left_out)
    x = torch.randn(X_SHAPE, dtype=torch.float64)
    rec = _Record(full)
    logits = rec.run(x)
    maps = net(x)
    for m, f in zip(maps, net.feature_info):
        torch.testing.assert_close(m, rec.values[f["module"]], rtol=1e-12, atol=1e-12)
    out, inter = archspec.forward_intermediates(full, x)
    torch.testing.assert_close(out, logits, rtol=1e-12, atol=1e-12)
    for a, b in zip(inter, maps):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    last = archspec.forward_intermediates(full, x, indices=1, intermediates_only=True)
    assert len(last) == 1
    torch.testing.assert_close(last[0], maps[-1], rtol=1e-12, atol=1e-12)


def test_lean_backbone_computes_the_same_features():
    torch.manual_seed(0)
    lean = archspec.build("densenet_bc100_k12", depth=16, features_only=True, memory="lean").double()
    plain = archspec.build("densenet_bc100_k12", depth=16, features_only=True).double()
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for a, b in zip(lean(x), plain(x)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert lean.feature_info == plain.feature_info and len(lean.feature_info) == 3
    assert any(type(m).__name__ == "ConcatNormActConv" for m in lean.modules())  # the lean pass did act


class _TinyFPN(nn.Module):
    """Top-down pathway with lateral 1×1s, a per-pixel prediction at the finest level."""

    def __init__(self, backbone, width=8, classes=3):
        super().__init__()
        self.backbone = backbone
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in backbone.feature_info.channels())
        self.out = nn.Conv2d(width, classes, 3, padding=1)

    def forward(self, x):
        maps = [lat(m) for lat, m in zip(self.lateral, self.backbone(x))]
        top = maps[-1]
        for m in reversed(maps[:-1]):
            top = m + F.interpolate(top, size=m.shape[-2:], mode="nearest")
        return self.out(top)


def test_fpn_on_the_backbone_trains_one_step():
    torch.manual_seed(0)
    model = _TinyFPN(_backbone())
    x, y = torch.randn(X_SHAPE), torch.randint(0, 3, (X_SHAPE[0], X_SHAPE[2], X_SHAPE[3]))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = model.backbone.stem.conv1.weight.detach().clone()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for name, p in model.backbone.named_parameters():
        assert p.grad is not None, name  # every backbone weight takes part
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(model.backbone.stem.conv1.weight, before)
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < loss


@pytest.mark.parametrize("out_indices, modules", [
    ((0, 2), ["block1.merge", "head.relu1"]),
    ([-1], ["head.relu1"]),
    ((2, 0), ["block1.merge", "head.relu1"]),  # network order, as timm returns them
    (2, ["block2.merge", "head.relu1"]),  # an int: the last n
])
def test_out_indices_pick_features(out_indices, modules):
    net = _backbone(out_indices=out_indices)
    assert net.feature_info.module_name() == modules
    maps = net(torch.randn(X_SHAPE))
    assert [m.shape[1] for m in maps] == net.feature_info.channels()


@pytest.mark.parametrize("out_indices, words", [
    ((0, 3), "holds 3, but the network has 3 features"),
    ((-4,), "holds -4"),
    ((1, -2), "names feature 1 twice"),
    ((), "out_indices is empty"),
    (("a",), "not an index"),
    ((True,), "not an index"),
    (0, "the last 0 of 3"),
    (4, "the last 4 of 3"),
    (1.5, "must be a list of feature indices"),
])
def test_bad_out_indices_are_clear_errors(out_indices, words):
    with pytest.raises(RunError, match=words):
        _backbone(out_indices=out_indices)


def test_out_indices_need_features_only():
    with pytest.raises(RunError, match="features_only=True"):
        archspec.build("delugenet146", **SMALL, out_indices=(0,))


def test_taps_in_a_spec_are_the_features():
    torch.manual_seed(0)
    full = archspec.build(TAPPED).double()
    net = archspec.build(TAPPED, features_only=True).double()
    _same_weights(full, net)
    info = net.feature_info
    assert info.get("name") == ["tap1", "r1", "r2", "last"]
    assert info.module_name() == ["stem.conv1", "block1.layer1.conv1", "block1.layer2.conv1", "head.relu1"]
    assert info.channels() == [8, 8, 8, 16] and info.reduction() == [1, 1, 1, 2]
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    rec = _Record(full)
    rec.run(x)
    for m, f in zip(net(x), info):
        torch.testing.assert_close(m, rec.values[f["module"]], rtol=0, atol=0)
    # a tap is an identity: no parameters, no ops, the same network without it
    plain = TAPPED.replace('tap("last")', "").replace(" tap(label)", "").replace("  tap\n", "")
    assert "tap(" not in plain and "  tap\n" not in plain
    assert archspec.summary(plain).params == archspec.summary(TAPPED).params
    assert len(archspec.build(plain).graph.nodes) == len(full.graph.nodes)


def test_taps_select_with_out_indices_and_intermediates():
    net = archspec.build(TAPPED, features_only=True, out_indices=(1, 3))
    assert net.feature_info.get("name") == ["r1", "last"] and net.feature_info.out_indices == (1, 3)
    full = archspec.build(TAPPED)
    maps = archspec.forward_intermediates(full, torch.randn(1, 3, 16, 16), indices=(1, 3), intermediates_only=True)
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 16, 16), (16, 8, 8)]


def test_taps_survive_the_lean_pass():
    """Taps on tensors the lean pass fuses (a dense layer's convolution, the block's concatenation)."""
    spec = """
    layer unit(k: int) { bn relu conv(k, 3, padding=1) tap }
    network d() {
      input(3, 8, 8)
      tap("image")
      stem { conv(8, 3, padding=1) }
      block dense concat { repeat 3 { unit(4) } }
      tap("dense")
      head { bn relu gap linear(10) }
    }"""
    torch.manual_seed(0)
    fast = archspec.build(spec).double()
    lean = archspec.build(spec, memory="lean").double()
    lean.load_state_dict(fast.state_dict())
    assert any(type(m).__name__ == "ConcatNormActConv" for m in lean.modules())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    (out_f, maps_f), (out_l, maps_l) = archspec.forward_intermediates(fast, x), archspec.forward_intermediates(lean, x)
    assert [m.shape[1] for m in maps_f] == [3, 4, 4, 4, 20]
    torch.testing.assert_close(maps_f[0], x, rtol=0, atol=0)
    for a, b in zip([out_f, *maps_f], [out_l, *maps_l]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    net = archspec.build(spec, memory="lean", features_only=True)
    assert net.feature_info.get("name") == ["image", "block1.layer1.tap1", "block1.layer2.tap1",
                                            "block1.layer3.tap1", "dense"]


@pytest.mark.parametrize("edit, words", [
    (('tap("last")', 'tap("r1")'), "two taps are named 'r1'"),
    (('unit(8, "r2")', 'unit(8, "r1")'), "two taps are named 'r1'"),
    (("gap linear", "gap tap linear"), "tap needs a C×H×W input"),
    (('tap("last")', 'tap("")'), "argument 'name'"),
])
def test_bad_taps_are_located_errors(edit, words):
    with pytest.raises(SpecError, match=words) as e:
        archspec.build(TAPPED.replace(*edit))
    assert e.value.loc is not None and "tap" in e.value.render()


def test_a_tap_alone_as_a_block_layer_is_refused():
    spec = TAPPED.replace("block residual", "block dense").replace('unit(8, "r2")', 'unit(8, "r2") tap')
    with pytest.raises(SpecError, match="layer") as e:
        archspec.build(spec)
    assert e.value.loc is not None and e.value.loc.line == 7 and "tap" in e.value.render()


def test_reset_classifier():
    torch.manual_seed(0)
    full = archspec.build("delugenet146", **SMALL).double()
    fc = archspec.get_classifier(full)
    assert isinstance(fc, nn.Linear) and (fc.in_features, fc.out_features) == (64, 10)
    x = torch.randn(X_SHAPE, dtype=torch.float64)
    assert archspec.reset_classifier(full, 7) is full
    fc = archspec.get_classifier(full)
    assert fc.out_features == 7 and fc.weight.dtype == torch.float64 and fc.weight.device == x.device
    assert fc.bias.abs().sum() == 0  # initialised as the compiler initialises a linear
    assert full(x).shape == (X_SHAPE[0], 7)
    archspec.reset_classifier(full, 0)  # timm: no classifier, the pooled features come out
    _, maps = archspec.forward_intermediates(full, x)
    torch.testing.assert_close(full(x), maps[-1].mean((2, 3)), rtol=1e-12, atol=1e-12)
    archspec.reset_classifier(full, 5)
    assert full(x).shape == (X_SHAPE[0], 5) and archspec.get_classifier(full).weight.dtype == torch.float64


@pytest.mark.parametrize("bad", [-1, 2.0, True, "10"])
def test_reset_classifier_refuses_bad_counts(bad):
    full = archspec.build("delugenet146", **SMALL)
    with pytest.raises(RunError, match="num_classes"):
        archspec.reset_classifier(full, bad)


def test_classes_parameter_sets_the_classifier():
    assert archspec.get_classifier(archspec.build("delugenet146", **SMALL, classes=100)).out_features == 100


def test_a_network_without_a_classifier_says_so():
    spec = "network plain() { input(3, 8, 8) conv(4, 3, padding=1) }"
    with pytest.raises(RunError, match="no linear classifier"):
        archspec.get_classifier(archspec.build(spec))
    assert archspec.build(spec, features_only=True).feature_info.module_name() == ["conv1"]
