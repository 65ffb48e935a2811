"""`block parallel`: branches that all read the block input, merged by the block's merge (Inception and
Fire with `concat`, squeeze-and-excitation with `mul`); braced groups as branches; the `mul` op's
broadcasting rule; and the errors of a branch written wrong."""

from __future__ import annotations

import pytest

import archspec
from archspec import SpecError
from archspec.graph.ops import OPS, ShapeError
from reference_counts import BY_NAME

CBN = "layer cbn(c: int, k: int = 1, stride: int = 1, padding: int = 0) " \
      "{ conv(c, k, stride=stride, padding=padding) bn(eps=0.001) relu }\n"

# torchvision's GoogLeNet (its third branch uses a 3×3, as torchvision's does), without the auxiliary heads.
GOOGLENET = CBN + """
layer inception(c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int) {
  block parallel concat {
    cbn(c1)
    { cbn(c3r) cbn(c3, 3, padding=1) }
    { cbn(c5r) cbn(c5, 3, padding=1) }
    { maxpool(3, stride=1, padding=1, ceil_mode=true) cbn(pool) }
  }
}

network googlenet(classes: int = 1000) {
  input(3, 224, 224)
  stem {
    cbn(64, 7, stride=2, padding=3) maxpool(3, stride=2, ceil_mode=true)
    cbn(64) cbn(192, 3, padding=1) maxpool(3, stride=2, ceil_mode=true)
  }
  inception(64, 96, 128, 16, 32, 32)
  inception(128, 128, 192, 32, 96, 64)
  maxpool(3, stride=2, ceil_mode=true)
  inception(192, 96, 208, 16, 48, 64)
  inception(160, 112, 224, 24, 64, 64)
  inception(128, 128, 256, 24, 64, 64)
  inception(112, 144, 288, 32, 64, 64)
  inception(256, 160, 320, 32, 128, 128)
  maxpool(2, stride=2, ceil_mode=true)
  inception(256, 160, 320, 32, 128, 128)
  inception(384, 192, 384, 48, 128, 128)
  head { gap dropout(0.2) linear(classes) }
}
"""

# torchvision's SqueezeNet 1.1: Fire = squeeze 1×1, then a 1×1 and a 3×3 expand side by side.
SQUEEZENET = """
layer fire(s: int, e1: int, e3: int) {
  conv(s, 1, bias=true) relu
  block parallel concat {
    { conv(e1, 1, bias=true) relu }
    { conv(e3, 3, padding=1, bias=true) relu }
  }
}

network squeezenet11(classes: int = 1000) {
  input(3, 224, 224)
  stem { conv(64, 3, stride=2, bias=true) relu maxpool(3, stride=2, ceil_mode=true) }
  fire(16, 64, 64) fire(16, 64, 64) maxpool(3, stride=2, ceil_mode=true)
  fire(32, 128, 128) fire(32, 128, 128) maxpool(3, stride=2, ceil_mode=true)
  fire(48, 192, 192) fire(48, 192, 192) fire(64, 256, 256) fire(64, 256, 256)
  head { dropout(0.5) conv(classes, 1, bias=true) relu gap }
}
"""

SE = """
# Squeeze-and-excitation: the input times a per-channel gate computed from its global average.
layer se(r: int = 4) {
  let c = channels
  block parallel mul {
    identity
    { adaptive_avgpool(1) conv(c // r, 1, bias=true) relu conv(c, 1, bias=true) sigmoid }
  }
}
"""


def _net(body: str, layers: str = "", shape: str = "4, 8, 8") -> str:
    return f"{layers}network n() {{\n  input({shape})\n  {body}\n}}\n"


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        archspec.network(text)
    return e.value


def test_googlenet_and_squeezenet_have_torchvisions_parameter_counts():
    g = archspec.summary(GOOGLENET)
    assert g.params == BY_NAME["googlenet"].params and g.output_shape == (1000,)
    s = archspec.summary(SQUEEZENET)
    assert s.params == BY_NAME["squeezenet1_1"].params and s.output_shape == (1000,)


def test_an_inception_block_concatenates_its_branches_in_order():
    net = archspec.network(_net("inception(2, 3, 4, 1, 5, 6)", GOOGLENET.split("network")[0], "8, 6, 6"))
    merge = net.node(net.output)
    assert merge.op == "concat" and merge.shape == (2 + 4 + 5 + 6, 6, 6) and merge.pattern == "parallel"
    branches = [net.node(i) for i in net.inputs(net.output)]
    assert [b.layer for b in branches] == [f"inception1.block1.layer{i}" for i in (1, 2, 3, 4)]
    # every branch starts from the block input
    firsts = [n for n in net.nodes() if net.inputs(n.name) == [net.input]]
    assert [n.layer for n in firsts] == [f"inception1.block1.layer{i}" for i in (1, 2, 3, 4)]


def test_a_parallel_concat_computes_the_concatenation_of_its_branches():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.manual_seed(0)
    text = _net("block parallel concat {\n"
                "    { conv(3, 1) relu }\n"
                "    { maxpool(3, stride=1, padding=1) conv(2, 3, padding=1) }\n"
                "    identity\n"
                "  }")
    gm = archspec.build(text).double()
    a, b = gm.get_submodule("block1.layer1.conv1"), gm.get_submodule("block1.layer2.conv1")
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    want = torch.cat([F.relu(F.conv2d(x, a.weight)), F.conv2d(F.max_pool2d(x, 3, 1, 1), b.weight, padding=1), x], 1)
    torch.testing.assert_close(gm(x), want, rtol=1e-12, atol=1e-12)


def test_squeeze_excite_is_a_short_layer_whose_gate_broadcasts():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    text = _net("se()", SE, "8, 5, 5")
    net = archspec.network(text)
    out = net.node(net.output)
    assert out.op == "mul" and out.shape == (8, 5, 5)
    assert [net.shape(i) for i in net.inputs(net.output)] == [(8, 5, 5), (8, 1, 1)]
    s = archspec.summary(text)
    assert s.params == (8 * 2 + 2) + (2 * 8 + 8)
    torch.manual_seed(0)
    gm = archspec.build(text).double()
    c1, c2 = gm.get_submodule("se1.block1.layer2.conv1"), gm.get_submodule("se1.block1.layer2.conv2")
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64)
    squeezed = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), c1.weight, c1.bias))
    gate = torch.sigmoid(F.conv2d(squeezed, c2.weight, c2.bias))
    torch.testing.assert_close(gm(x), x * gate, rtol=1e-12, atol=1e-12)


def test_branches_come_from_templates_loops_repeats_and_used_files(tmp_path):
    (tmp_path / "lib.arch").write_text("layer branch(c: int, k: int) { conv(c, k, padding=k // 2) bn relu }\n")
    text = 'use "lib.arch"\n' + _net(
        "block parallel concat {\n"
        "    for k in [1, 3, 5] { branch(2, k) }\n"
        "    repeat 2 { { conv(1, 1) relu } }\n"
        "  }")
    path = tmp_path / "net.arch"
    path.write_text(text)
    net = archspec.network(path)
    out = net.node(net.output)
    assert out.shape == (3 * 2 + 2 * 1, 8, 8) and len(net.inputs(net.output)) == 5
    kernels = [n.args.kernel for n in net.nodes() if n.op == "conv"]
    assert kernels == [1, 3, 5, 1, 1]


@pytest.mark.parametrize("merge,op,params", [
    ("sum", "add", 3 * (4 * 4 * 9)),
    ("mul", "mul", 3 * (4 * 4 * 9)),
    ("crossdepthwise", "crossdepthwise", 3 * (4 * 4 * 9) + 2 * 4 * 3),
])
def test_every_merge_combines_the_branches(merge, op, params):
    torch = pytest.importorskip("torch")
    text = _net(f"block parallel {merge} {{ repeat 3 {{ conv(4, 3, padding=1) }} }}")
    net = archspec.network(text)
    assert net.node(net.output).op == op and len(net.inputs(net.output)) == 3
    assert archspec.summary(text).params == params
    gm = archspec.build(text)
    assert sum(p.numel() for p in gm.parameters()) == params
    assert gm(torch.randn(2, 4, 8, 8)).shape == (2, 4, 8, 8)


def test_a_branch_may_hold_a_nested_block_and_one_branch_passes_through():
    net = archspec.network(_net("block parallel concat { { block residual { conv(4, 3, padding=1) } } conv(2, 1) }"))
    assert net.node(net.output).shape == (6, 8, 8)
    assert any(n.name.startswith("block1.layer1.block1.") for n in net.nodes())
    one = archspec.network(_net("block parallel concat { { conv(2, 1) relu } }"))
    assert one.node(one.output).op == "relu"  # a single inflow needs no merge


def test_braces_outside_a_block_are_a_plain_sequence():
    grouped = archspec.network(_net("{ let c = 6 conv(c, 1) relu } conv(3, 1)"))
    plain = archspec.network(_net("conv(6, 1) relu conv(3, 1)"))
    assert [(n.name, n.op, n.shape) for n in grouped.nodes()] == [(n.name, n.op, n.shape) for n in plain.nodes()]
    # braces, like loops, share the names around them: a let inside carries on after the braces
    carried = archspec.network(_net("{ let c = 6 } conv(c, 1)"))
    assert [n.shape[0] for n in carried.nodes() if n.op == "conv"] == [6]


def test_mul_broadcasts_like_numpy_and_counts_no_macs():
    mul = OPS["mul"]
    a = mul.Args()
    assert mul.shape([(8, 5, 5), (8, 1, 1)], a) == (8, 5, 5)
    assert mul.shape([(1, 5, 1), (8, 1, 4)], a) == (8, 5, 4)
    assert mul.shape([(5, 5), (8, 1, 1)], a) == (8, 5, 5)
    assert mul.macs([(8, 5, 5), (8, 1, 1)], (8, 5, 5), a) == 0  # as add and scale: MACs are conv/linear work
    assert mul.params([(8, 5, 5), (8, 1, 1)], a) == 0
    with pytest.raises(ShapeError, match="broadcast"):
        mul.shape([(8, 5, 5), (4, 1, 1)], a)


def test_branches_that_cannot_meet_are_located_errors():
    text = _net("block parallel mul { identity { adaptive_avgpool(1) conv(2, 1) } }")
    e = _error(text)
    assert (e.loc.line, e.loc.column) == (3, 3)
    assert "broadcast" in e.message and "4×8×8, 2×1×1" in e.message
    e = _error(_net("block parallel sum { conv(4, 1) conv(2, 1) }"))
    assert "a sum needs inputs of one shape" in e.message


def test_an_empty_parallel_block_and_a_lone_activation_branch_are_refused():
    e = _error(_net("block parallel concat { }"))
    assert "at least one branch" in e.message and (e.loc.line, e.loc.column) == (3, 3)
    text = _net("block parallel concat { conv(4, 1) bn relu }")
    e = _error(text)
    assert "`bn`" in e.message and "branch" in e.message and "braces" in e.hint
    assert (e.loc.line, e.loc.column) == (3, text.splitlines()[2].index("bn") + 1)


def test_parallel_is_suggested_for_its_other_names():
    e = _error(_net("block branches concat { conv(4, 1) }"))
    assert "did you mean 'parallel'" in e.hint
    e = _error(_net("block parallel multiply { conv(4, 1) }"))
    assert "did you mean 'mul'" in e.hint
