"""torchvision's DenseNet-121/161/169/201, GoogLeNet, Inception v3, SqueezeNet 1.0/1.1, ShuffleNet V2
0.5×/1.0×/1.5×/2.0× and ConvNeXt-T/S/B as library specs: each has torchvision's final feature map and
builds for other class counts; the units that are new to the library (the ShuffleNet V2 unit at both
strides, the ConvNeXt block, Inception v3's InceptionE) compute torchvision's function in float64.
torchvision's parameter counts and GMACs are in `tests/reference_counts.py`, checked with every model's
build by `test_specs.py`."""

from __future__ import annotations

import pytest

import archspec
from archspec import library
from archspec.errors import SpecError
from conftest import assert_same_function, network_of, on_meta
from reference_counts import BY_NAME

SPECS = library.folder()

# name → the tensor the head reads at the spec's own input (224×224; Inception v3 299×299)
FEATURES = {
    "densenet121": (1024, 7, 7),
    "densenet161": (2208, 7, 7),
    "densenet169": (1664, 7, 7),
    "densenet201": (1920, 7, 7),
    "googlenet": (1024, 7, 7),
    "inception_v3": (2048, 8, 8),
    "squeezenet1_0": (512, 13, 13),
    "squeezenet1_1": (512, 13, 13),
    "shufflenet_v2_x0_5": (192, 7, 7),
    "shufflenet_v2_x1_0": (464, 7, 7),
    "shufflenet_v2_x1_5": (704, 7, 7),
    "shufflenet_v2_x2_0": (976, 7, 7),
    "convnext_tiny": (768, 7, 7),
    "convnext_small": (768, 7, 7),
    "convnext_base": (1024, 7, 7),
}


def _path(name: str) -> str:
    return str(SPECS / f"{name}.arch")


def _nodes(net, op: str) -> list:
    return [n for n in net.nodes() if n.op == op]


@pytest.mark.parametrize("name", list(FEATURES))
def test_torchvisions_final_feature_map(name):
    net = network_of(name)
    head = next(n for n in net.nodes() if n.name.startswith("head."))
    assert [net.shape(i) for i in net.inputs(head.name)] == [FEATURES[name]]


@pytest.mark.parametrize("name", list(FEATURES))
def test_a_build_for_ten_classes_holds_the_summarys_count(name):
    """On the meta device (a count needs no weights), at the quick input; the forward pass of the real build
    at 1000 classes is `test_specs.py`'s."""
    torch = pytest.importorskip("torch")
    sets = {**BY_NAME[name].small, "classes": 10}
    gm = on_meta(name, **sets).eval()
    assert sum(p.numel() for p in gm.parameters()) == archspec.summary(network_of(name, **sets)).params
    with torch.no_grad():
        y = gm(torch.empty(2, *archspec.summary(network_of(name, **sets)).input_shape, device="meta"))
    assert y.shape == (2, 10)


def test_densenet_transitions_halve_the_width():
    net = archspec.network(_path("densenet121"))
    convs = [n for n in _nodes(net, "conv") if n.name.startswith("transition")]
    assert [(net.shape(net.inputs(c.name)[0])[0], c.shape[0]) for c in convs] == [(256, 128), (512, 256),
                                                                                   (1024, 512)]
    assert {n.args.kernel for n in _nodes(net, "avgpool")} == {2}


def test_googlenet_uses_torchvisions_basic_conv_and_rounding_pools():
    net = archspec.network(_path("googlenet"))
    assert {n.args.eps for n in _nodes(net, "bn")} == {0.001}
    assert not any(n.args.bias for n in _nodes(net, "conv"))
    assert all(n.args.ceil_mode for n in _nodes(net, "maxpool"))
    assert len(_nodes(net, "concat")) == 9  # 3a–3b, 4a–4e, 5a–5b


def test_inception_v3_uses_torchvisions_basic_conv_pools_and_factorised_convolutions():
    net = archspec.network(_path("inception_v3"))
    convs = _nodes(net, "conv")
    assert len(convs) == 94  # stem 5, Mixed_5b–5d 3·7, 6a 4, 6b–6e 4·10, 7a 6, 7b–7c 2·9
    assert {n.args.eps for n in _nodes(net, "bn")} == {0.001} and len(_nodes(net, "bn")) == 94
    assert not any(n.args.bias for n in convs)
    assert {(n.args.init, n.args.std) for n in convs} == {("trunc_normal", 0.1)}
    kernels = [n.args.kernel for n in convs]
    assert [kernels.count(k) for k in ((1, 7), (7, 1), (1, 3), (3, 1))] == [13, 13, 4, 4]
    assert all(n.args.padding == (n.args.kernel[0] // 2, n.args.kernel[1] // 2)
               for n in convs if isinstance(n.args.kernel, tuple))
    assert all((n.args.kernel, n.args.stride, n.args.padding, n.args.count_include_pad) == (3, 1, 1, True)
               for n in _nodes(net, "avgpool")) and len(_nodes(net, "avgpool")) == 9
    assert all((n.args.kernel, n.args.stride, n.args.ceil_mode) == (3, 2, False) for n in _nodes(net, "maxpool"))
    assert len(_nodes(net, "concat")) == 15  # 11 modules, and 7b–7c's two split branches each
    with pytest.raises(SpecError, match="at least 75"):
        archspec.network(_path("inception_v3"), size=74)


def test_squeezenet_convolutions_carry_biases_and_no_batch_norm():
    for name in ("squeezenet1_0", "squeezenet1_1"):
        net = archspec.network(_path(name))
        assert all(n.args.bias for n in _nodes(net, "conv")) and not _nodes(net, "bn")
        assert len(_nodes(net, "concat")) == 8
    with pytest.raises(SpecError, match="1_0 or 1_1"):
        archspec.network(_path("squeezenet1_1"), version="1_2")


def test_convnext_stochastic_depth_grows_linearly_over_the_blocks():
    for name, depth, p in (("convnext_tiny", 18, 0.1), ("convnext_small", 36, 0.4), ("convnext_base", 36, 0.5)):
        net = archspec.network(_path(name))
        rates = [n.args.p for n in _nodes(net, "drop_path")]
        assert rates == pytest.approx([p * i / (depth - 1) for i in range(depth)])
        assert all(n.args.bias for n in _nodes(net, "conv"))
        assert {n.args.eps for n in _nodes(net, "layernorm")} == {1e-6}
        assert {n.args.init for n in _nodes(net, "scale")} == {1e-6}


def _unit(lib: str, body: str, shape: str) -> str:
    return f'use "{SPECS / "lib" / lib}"\nnetwork n() {{\n  input({shape})\n  {body}\n}}\n'


def _randomised(gm):
    """`gm` in float64 with every parameter drawn afresh, so that none sits at its start value."""
    import torch

    gm = gm.double()
    with torch.no_grad():
        for p in gm.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.dim() == 1 else 0.0))
    return gm


def _shuffle(x, groups: int):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def test_shufflenet_units_compute_torchvisions_inverted_residual():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.manual_seed(0)
    text = _unit("shufflenet.arch", "shufflenet_unit(12, 2) shufflenet_unit(12)", "8, 6, 6")
    # stride 2: depthwise 8 + BN + 1×1 8→6 + BN; 1×1 8→6, depthwise 6, 1×1 6→6, three BNs. Stride 1: on 6.
    assert archspec.summary(text).params == (72 + 16 + 48 + 12) + (48 + 54 + 36 + 36) + (36 + 54 + 36 + 36)
    gm = _randomised(archspec.build(text)).train()

    def m(unit, layer, name):
        return gm.get_submodule(f"shufflenet_unit{unit}.block1.layer{layer}.{name}")

    def cb(x, unit, layer, i, stride=1, groups=1, relu=False):
        conv, bn = m(unit, layer, f"conv{i}"), m(unit, layer, f"bn{i}")
        y = F.conv2d(x, conv.weight, stride=stride, padding=conv.padding, groups=groups)
        y = F.batch_norm(y, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        return F.relu(y) if relu else y

    def reference(x):
        # stride 2: both branches read the whole input
        b1 = cb(cb(x, 1, 1, 1, stride=2, groups=8), 1, 1, 2, relu=True)
        b2 = cb(cb(cb(x, 1, 2, 1, relu=True), 1, 2, 2, stride=2, groups=6), 1, 2, 3, relu=True)
        x = _shuffle(torch.cat([b1, b2], 1), 2)
        # stride 1: the first half passes through
        x1, x2 = x.chunk(2, dim=1)
        b2 = cb(cb(cb(x2, 2, 2, 1, relu=True), 2, 2, 2, groups=6), 2, 2, 3, relu=True)
        return _shuffle(torch.cat([x1, b2], 1), 2)

    assert_same_function(gm, reference, torch.randn(3, 8, 6, 6, dtype=torch.float64))


def test_a_shufflenet_stride_1_unit_must_keep_its_width():
    with pytest.raises(SpecError, match="keeps its width"):
        archspec.network(_unit("shufflenet.arch", "shufflenet_unit(12)", "8, 6, 6"))


def test_the_convnext_block_computes_torchvisions_cnblock():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.manual_seed(0)
    text = _unit("convnext.arch", "block residual sum { cnblock(0.3) }", "8, 9, 9")
    assert archspec.summary(text).params == (8 * 49 + 8) + 2 * 8 + (32 * 8 + 32) + (8 * 32 + 8) + 8
    gm = _randomised(archspec.build(text)).eval()  # stochastic depth is the identity in eval

    def m(name):
        return gm.get_submodule(f"block1.layer1.{name}")

    def reference(x):
        dw, ln, fc1, fc2, scale = m("conv1"), m("layernorm1"), m("conv2"), m("conv3"), m("scale1")
        y = F.conv2d(x, dw.weight, dw.bias, padding=3, groups=8).permute(0, 2, 3, 1)  # N H W C
        y = F.layer_norm(y, (8,), ln.weight, ln.bias, eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, fc1.weight[:, :, 0, 0], fc1.bias)), fc2.weight[:, :, 0, 0], fc2.bias)
        return x + scale.weight * y.permute(0, 3, 1, 2)

    assert m("scale1").weight.shape == (8, 1, 1)  # torchvision's layer_scale
    assert_same_function(gm, reference, torch.randn(2, 8, 9, 9, dtype=torch.float64))


def test_the_inception_e_module_computes_torchvisions_inception_e():
    """Mixed_7b/7c's module, on 8 channels: the 1×3 and 3×1 halves of its split branches read the same
    tensor and are concatenated inside the module's own concatenation, in torchvision's order."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.manual_seed(0)
    text = _unit("inception.arch", "inception_e()", "8, 5, 5")

    def basic(cin, cout, kh, kw):  # a BasicConv2d's parameters: weights and BN's two vectors
        return cout * cin * kh * kw + 2 * cout

    assert archspec.summary(text).params == (
        basic(8, 320, 1, 1) + basic(8, 384, 1, 1) + basic(384, 384, 1, 3) + basic(384, 384, 3, 1)
        + basic(8, 448, 1, 1) + basic(448, 384, 3, 3) + basic(384, 384, 1, 3) + basic(384, 384, 3, 1)
        + basic(8, 192, 1, 1))
    assert archspec.summary(text).output_shape == (320 + 2 * 384 + 2 * 384 + 192, 5, 5)
    gm = _randomised(archspec.build(text)).train()

    def bc(x, path, padding=0):  # torchvision's BasicConv2d, from the built module's own weights
        conv, bn = (gm.get_submodule(f"inception_e1.block1.{path}.{m}") for m in ("conv1", "bn1"))
        y = F.conv2d(x, conv.weight, padding=padding)
        return F.relu(F.batch_norm(y, None, None, bn.weight, bn.bias, training=True, eps=0.001))

    def split(x, layer):
        return torch.cat([bc(x, f"{layer}.split_3x31.block1.layer1", (0, 1)),
                          bc(x, f"{layer}.split_3x31.block1.layer2", (1, 0))], 1)

    def reference(x):
        branch1x1 = bc(x, "layer1")
        branch3x3 = split(bc(x, "layer2.basic_conv1"), "layer2")
        branch3x3dbl = split(bc(bc(x, "layer3.basic_conv1"), "layer3.basic_conv2", 1), "layer3")
        branch_pool = bc(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1), "layer4.basic_conv1")
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)

    assert_same_function(gm, reference, torch.randn(2, 8, 5, 5, dtype=torch.float64))
