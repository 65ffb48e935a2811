"""MobileNetV2, MobileNetV3, EfficientNet (V1 and V2) and MnasNet as specs: the other members of the
families at torchvision's counts, its residual rule (an input is added only where a block keeps the
shape), its squeeze widths, batch-norm settings and stochastic-depth schedule, and the same function as
torchvision's blocks. torchvision's counts of the shipped models are in `tests/reference_counts.py`,
checked with every model's build by `test_specs.py`."""

from __future__ import annotations

import pytest

import archspec
from conftest import SPECS, assert_same_function, on_meta
from reference_counts import BY_NAME

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


@pytest.mark.parametrize("name", list(NORMS))
def test_every_batch_norm_has_torchvisions_settings(name):
    """On the meta device: the settings are the modules' own, and need no weights."""
    torch = pytest.importorskip("torch")
    gm = on_meta(name, **BY_NAME[name].small)
    norms = {(m.eps, m.momentum) for m in gm.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert norms == {NORMS[name]}


# the other members of the families that the library ships (B5–B7 and V2-L, which it does not, are
# variants in tests/reference_counts.py)
@pytest.mark.parametrize("name,overrides,same_as", [
    # MnasNet's other depth multipliers
    ("mnasnet1_0", {"alpha": 0.5}, "mnasnet0_5"),
    ("mnasnet1_0", {"alpha": 0.75}, "mnasnet0_75"),
    ("mnasnet1_0", {"alpha": 1.3}, "mnasnet1_3"),
    # EfficientNet-B1, B2, B4: the B0 table under other width and depth multipliers
    ("efficientnet_b0", {"width": 1.0, "depth": 1.1}, "efficientnet_b1"),
    ("efficientnet_b0", {"width": 1.1, "depth": 1.2}, "efficientnet_b2"),
    ("efficientnet_b0", {"width": 1.4, "depth": 1.8}, "efficientnet_b4"),
    # EfficientNetV2-M: a seven-row table
    ("efficientnet_v2_s", {"table": [["fused", 1, 3, 1, 24, 3], ["fused", 4, 3, 2, 48, 5],
                                     ["fused", 4, 3, 2, 80, 5], ["mbconv", 4, 3, 2, 160, 7],
                                     ["mbconv", 6, 3, 1, 176, 14], ["mbconv", 6, 3, 2, 304, 18],
                                     ["mbconv", 6, 3, 1, 512, 5]]}, "efficientnet_v2_m"),
])
def test_the_families_other_members_have_torchvisions_counts(name, overrides, same_as):
    assert archspec.summary(spec(name), **overrides).params == BY_NAME[same_as].params


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
