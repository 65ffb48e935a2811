"""MobileNetV2, MobileNetV3, EfficientNet (V1 and V2) and MnasNet as specs: torchvision's exact parameter
counts, its residual rule (an input is added only where a block keeps the shape), its squeeze widths,
batch-norm settings and stochastic-depth schedule, the same function as torchvision's blocks, and a
forward pass of every model at 64×64."""

from __future__ import annotations

import pytest

import archspec
from conftest import SPECS, assert_same_function

# torchvision's parameter counts (1000 classes)
COUNTS = {
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_small": 2_542_856,
    "mobilenet_v3_large": 5_483_032,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_v2_s": 21_458_488,
    "efficientnet_v2_m": 54_139_356,
    "mnasnet0_5": 2_218_512,
    "mnasnet0_75": 3_170_208,
    "mnasnet1_0": 4_383_312,
    "mnasnet1_3": 6_282_256,
}

# batch-norm (eps, momentum) of each model, as torchvision sets them
NORMS = {
    "mobilenet_v2": (1e-5, 0.1),
    "mobilenet_v3_small": (0.001, 0.01),
    "mobilenet_v3_large": (0.001, 0.01),
    "efficientnet_b0": (1e-5, 0.1),
    "efficientnet_b1": (1e-5, 0.1),
    "efficientnet_b2": (1e-5, 0.1),
    "efficientnet_b3": (1e-5, 0.1),
    "efficientnet_b4": (1e-5, 0.1),
    "efficientnet_v2_s": (0.001, 0.1),
    "efficientnet_v2_m": (0.001, 0.1),
    "mnasnet0_5": (1e-5, 1 - 0.9997),
    "mnasnet0_75": (1e-5, 1 - 0.9997),
    "mnasnet1_0": (1e-5, 1 - 0.9997),
    "mnasnet1_3": (1e-5, 1 - 0.9997),
}


def spec(name: str) -> str:
    return str(SPECS / f"{name}.arch")


@pytest.mark.parametrize("name", COUNTS)
def test_every_model_has_torchvisions_parameter_count(name):
    s = archspec.summary(spec(name))
    assert s.params == COUNTS[name]
    assert s.input_shape == (3, 224, 224) and s.output_shape == (1000,)


@pytest.mark.parametrize("name", COUNTS)
def test_every_model_builds_and_runs_at_64(name, one_thread):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    gm = archspec.build(spec(name), size=64).eval()
    assert sum(p.numel() for p in gm.parameters()) == COUNTS[name]
    norms = {(m.eps, m.momentum) for m in gm.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert norms == {NORMS[name]}
    with torch.no_grad():
        y = gm(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()


@pytest.mark.parametrize("name,overrides,params", [
    # MnasNet's other depth multipliers
    ("mnasnet1_0", {"alpha": 0.5}, 2_218_512),
    ("mnasnet1_0", {"alpha": 0.75}, 3_170_208),
    ("mnasnet1_0", {"alpha": 1.3}, 6_282_256),
    # EfficientNet-B1, B2, B4 to B7: the B0 table under other width and depth multipliers
    ("efficientnet_b0", {"width": 1.0, "depth": 1.1}, 7_794_184),
    ("efficientnet_b0", {"width": 1.1, "depth": 1.2}, 9_109_994),
    ("efficientnet_b0", {"width": 1.4, "depth": 1.8}, 19_341_616),
    ("efficientnet_b0", {"width": 1.6, "depth": 2.2}, 30_389_784),
    ("efficientnet_b0", {"width": 1.8, "depth": 2.6}, 43_040_704),
    ("efficientnet_b0", {"width": 2.0, "depth": 3.1}, 66_347_960),
    # EfficientNetV2-M and -L: seven-row tables
    ("efficientnet_v2_s", {"table": [["fused", 1, 3, 1, 24, 3], ["fused", 4, 3, 2, 48, 5],
                                     ["fused", 4, 3, 2, 80, 5], ["mbconv", 4, 3, 2, 160, 7],
                                     ["mbconv", 6, 3, 1, 176, 14], ["mbconv", 6, 3, 2, 304, 18],
                                     ["mbconv", 6, 3, 1, 512, 5]]}, 54_139_356),
    ("efficientnet_v2_s", {"stem_width": 32,
                           "table": [["fused", 1, 3, 1, 32, 4], ["fused", 4, 3, 2, 64, 7],
                                     ["fused", 4, 3, 2, 96, 7], ["mbconv", 4, 3, 2, 192, 10],
                                     ["mbconv", 6, 3, 1, 224, 19], ["mbconv", 6, 3, 2, 384, 25],
                                     ["mbconv", 6, 3, 1, 640, 7]]}, 118_515_272),
])
def test_the_families_other_members_have_torchvisions_counts(name, overrides, params):
    assert archspec.summary(spec(name), **overrides).params == params


@pytest.mark.parametrize("name,adds", [
    # blocks with stride 1 and as many channels out as in, counted from torchvision's tables
    ("mobilenet_v2", 10), ("mobilenet_v3_small", 6), ("mobilenet_v3_large", 10),
    ("efficientnet_b0", 9), ("efficientnet_b3", 19), ("efficientnet_v2_s", 35), ("mnasnet1_0", 10),
])
def test_an_input_is_added_only_where_a_block_keeps_the_shape(name, adds):
    net = archspec.network(spec(name))
    merges = [n for n in net.nodes() if n.op == "add"]
    assert len(merges) == adds
    for m in merges:
        assert len({net.shape(i) for i in net.inputs(m.name)}) == 1
    assert not [n for n in net.nodes() if n.role == "shortcut"]  # never a projection


def test_mobilenet_v3_squeezes_to_a_quarter_of_the_expansion_rounded_to_eight():
    net = archspec.network(spec("mobilenet_v3_large"))
    fcs = [n for n in net.nodes() if n.op == "conv" and n.args.bias]
    # _make_divisible(e // 4, 8) for the expansions 72, 120, 120, 480, 672, 672, 960, 960
    assert [n.args.out for n in fcs[::2]] == [24, 32, 32, 120, 168, 168, 240, 240]
    assert [n.args.out for n in fcs[1::2]] == [72, 120, 120, 480, 672, 672, 960, 960]
    gates = [n for n in net.nodes() if n.op == "hardsigmoid"]
    assert [net.inputs(g.name)[0] for g in gates] == [n.name for n in fcs[1::2]]
    muls = [n for n in net.nodes() if n.op == "mul"]
    assert [net.inputs(m.name)[1] for m in muls] == [g.name for g in gates]


def test_efficientnet_stochastic_depth_rises_linearly_with_the_block_index():
    net = archspec.network(spec("efficientnet_b0"))
    p = [n.args.p for n in net.nodes() if n.op == "drop_path"]
    # 16 blocks; the residual ones are 2, 4, 6, 7, 9, 10, 12, 13, 14 (counting from 0)
    assert p == pytest.approx([0.2 * i / 16 for i in (2, 4, 6, 7, 9, 10, 12, 13, 14)])
    b3 = archspec.network(spec("efficientnet_b3"))
    p3 = [n.args.p for n in b3.nodes() if n.op == "drop_path"]
    assert len(p3) == 19 and p3[-1] == pytest.approx(0.2 * 25 / 26)  # 26 blocks after the depth multiplier


def test_efficientnet_squeezes_to_a_quarter_of_the_block_input():
    net = archspec.network(spec("efficientnet_b3"))
    squeeze = [n.args.out for n in net.nodes() if n.op == "conv" and n.args.bias][::2]
    assert squeeze[:4] == [10, 6, 6, 8]  # inputs 40 (stem), 24, 24, 32: max(1, C // 4)
    head = [n for n in net.nodes() if n.op == "conv"][-1]
    assert head.args.out == 1536  # four times the last stage's 384


def _lib(tmp_path, family: str, body: str, shape: str) -> tuple[str, list]:
    path = tmp_path / "net.arch"
    path.write_text(f'use "{SPECS / "lib" / family}.arch"\nnetwork n() {{\n  input({shape})\n  {body}\n}}\n')
    return str(path), [SPECS]


def _randomise_norms(gm, torch):
    for m in gm.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # away from 1 and 0, so every parameter's role shows
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_a_mobilenet_v3_bottleneck_computes_torchvisions_function(tmp_path):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.manual_seed(0)
    path, allow = _lib(tmp_path, "mobilenet", 'bneck_v3(5, 72, 16, true, "HS", 1)', "16, 7, 7")
    gm = archspec.build(path, allow_paths=allow).double().train()
    _randomise_norms(gm, torch)
    expand, dw, fc1, fc2, project = (m for m in gm.modules() if isinstance(m, torch.nn.Conv2d))
    b1, b2, b3 = (m for m in gm.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert fc1.out_channels == 24 and dw.groups == 72 and dw.kernel_size == (5, 5)

    def reference(x):
        def norm(t, bn):
            return F.batch_norm(t, None, None, bn.weight, bn.bias, training=True, eps=0.001)

        y = F.hardswish(norm(F.conv2d(x, expand.weight), b1))
        y = F.hardswish(norm(F.conv2d(y, dw.weight, padding=2, groups=72), b2))
        gate = F.conv2d(F.relu(F.conv2d(y.mean((2, 3), keepdim=True), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
        return x + norm(F.conv2d(y * F.hardsigmoid(gate), project.weight), b3)

    assert_same_function(gm, reference, torch.randn(3, 16, 7, 7, dtype=torch.float64))


def test_an_efficientnet_mbconv_block_computes_torchvisions_function(tmp_path):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.manual_seed(0)
    path, allow = _lib(tmp_path, "efficientnet", 'mbblock("mbconv", 6, 3, 1, 16, 0.0, 0.001, 0.1)', "16, 6, 6")
    gm = archspec.build(path, allow_paths=allow).double().train()
    _randomise_norms(gm, torch)
    expand, dw, fc1, fc2, project = (m for m in gm.modules() if isinstance(m, torch.nn.Conv2d))
    b1, b2, b3 = (m for m in gm.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert fc1.out_channels == 4 and expand.out_channels == 96

    def reference(x):
        def norm(t, bn):
            return F.batch_norm(t, None, None, bn.weight, bn.bias, training=True, eps=0.001)

        y = F.silu(norm(F.conv2d(x, expand.weight), b1))
        y = F.silu(norm(F.conv2d(y, dw.weight, padding=1, groups=96), b2))
        gate = F.conv2d(F.silu(F.conv2d(y.mean((2, 3), keepdim=True), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
        return x + norm(F.conv2d(y * torch.sigmoid(gate), project.weight), b3)

    assert_same_function(gm, reference, torch.randn(3, 16, 6, 6, dtype=torch.float64))


def test_a_fused_mbconv_block_is_a_strided_full_convolution_then_a_projection(tmp_path):
    path, allow = _lib(tmp_path, "efficientnet", 'mbblock("fused", 4, 3, 2, 48, 0.1, 0.001, 0.1)', "24, 8, 8")
    net = archspec.network(path, allow_paths=allow)
    assert [(n.op, n.shape) for n in net.nodes() if n.op != "input"] == [
        ("conv", (96, 4, 4)), ("bn", (96, 4, 4)), ("silu", (96, 4, 4)), ("conv", (48, 4, 4)), ("bn", (48, 4, 4))]
    assert [n.args.groups for n in net.nodes() if n.op == "conv"] == [1, 1]


def test_a_table_with_an_unknown_block_or_nonlinearity_is_refused_where_it_is_used():
    with pytest.raises(archspec.SpecError, match="mbconv or fused"):
        archspec.network(spec("efficientnet_b0"), table=[["mbconv", 1, 3, 1, 16, 1], ["sepconv", 6, 3, 2, 24, 2]])
    with pytest.raises(archspec.SpecError, match="RE .ReLU. or HS"):
        archspec.network(spec("mobilenet_v3_small"), table=[[3, 16, 16, True, "GELU", 2]])


def test_classifier_inits_are_torchvisions():
    """MobileNet's classifier starts N(0, 0.01²), EfficientNet's U(±1/√out), biases 0."""
    import torch

    torch.manual_seed(0)
    v2 = archspec.build("mobilenet_v2", size=32, classes=500)
    w = v2.get_submodule("head.linear1").weight.detach()
    assert abs(float(w.std()) - 0.01) < 0.001 and float(v2.get_submodule("head.linear1").bias.detach().abs().max()) == 0
    b0 = archspec.build("efficientnet_b0", size=32, classes=400)
    w = b0.get_submodule("head.linear1").weight.detach()
    assert float(w.abs().max()) <= 1 / 400 ** 0.5 and float(w.abs().max()) > 0.9 / 400 ** 0.5
