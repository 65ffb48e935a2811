"""Residual projections (`residual(projection=...)`): torchvision's ResNets written as specs get its exact
parameter counts and compute the same function; a template can be the projection; and the silent trap
of a residual body written as a row of bare ops is refused at the first lone op."""

from __future__ import annotations

import pytest

import archspec
from archspec import SpecError
from conftest import assert_same_function
from reference_counts import BY_NAME

# torchvision's ResNet (v1.5: the stride on the 3×3), ImageNet input. Each unit is its own residual block
# so that the ReLU after the sum comes before the next unit's shortcut, as torchvision computes it.
RESNET = """
layer basic(w: int, stride: int = 1) {
  block residual(projection=PROJ) sum {
    { conv(w, 3, stride=stride, padding=1) bn relu conv(w, 3, padding=1) bn }
  }
  relu
}

layer bottleneck(w: int, stride: int = 1) {
  block residual(projection=PROJ) sum {
    { conv(w, 1) bn relu conv(w, 3, stride=stride, padding=1) bn relu conv(4 * w, 1) bn }
  }
  relu
}

layer down(c: int, stride: int) { conv(c, 1, stride=stride) bn }

network resnet(classes: int = 1000, blocks: list = [2, 2, 2, 2], deep: bool = false) {
  input(3, 224, 224)
  stem { conv(64, 7, stride=2, padding=3) bn relu maxpool(3, stride=2, padding=1) }
  let widths = [64, 128, 256, 512]
  for i in range(4) {
    for j in range(blocks[i]) {
      let stride = 2 if i > 0 and j == 0 else 1
      if deep { bottleneck(widths[i], stride) } else { basic(widths[i], stride) }
    }
  }
  head { gap linear(classes) }
}
"""


def resnet(proj: str = '"conv_bn"', **alias: str) -> str:
    text = RESNET.replace("PROJ", proj)
    if alias:
        text += "network chosen = resnet(" + ", ".join(f"{k}={v}" for k, v in alias.items()) + ")\n"
    return text


def test_resnet18_and_resnet50_have_torchvisions_parameter_counts():
    assert archspec.summary(resnet()).params == BY_NAME["resnet18"].params
    r50 = archspec.summary(resnet(blocks="[3, 4, 6, 3]", deep="true"))
    assert r50.params == BY_NAME["resnet50"].params
    assert r50.output_shape == (1000,)


def test_a_template_projection_equals_the_built_in_conv_bn():
    """`projection="down"` runs the spec's own template `down(channels, stride)` where the shape changes."""
    small = dict(blocks="[1, 1, 1, 1]")
    builtin = archspec.network(resnet(**small))
    template = archspec.network(resnet('"down"', **small))
    assert archspec.summary(template).params == archspec.summary(builtin).params
    shortcut = [n for n in builtin.nodes() if n.role == "shortcut"]
    assert [n.op for n in shortcut] == ["conv", "bn"] * 3  # stages 2–4 change the shape; stage 1 does not
    assert {n.args.stride for n in shortcut if n.op == "conv"} == {2}
    named = [n.name for n in template.nodes() if ".shortcut." in n.name]
    assert named == [f"basic{i}.block1.layer1.shortcut.{op}" for i in (2, 3, 4) for op in ("conv1", "bn1")]


def test_the_default_projection_stays_a_bare_conv():
    plain = archspec.network(resnet('"conv"', blocks="[1, 1, 1, 1]"))
    bn = archspec.network(resnet(blocks="[1, 1, 1, 1]"))
    assert [n.op for n in plain.nodes() if n.role == "shortcut"] == ["conv"] * 3
    default = archspec.network(resnet('"conv"', blocks="[1, 1, 1, 1]").replace('(projection="conv")', ""))
    assert archspec.summary(default).params == archspec.summary(plain).params
    # each of the three projections gains a batch norm: 2 parameters per channel
    assert archspec.summary(bn).params - archspec.summary(plain).params == 2 * (128 + 256 + 512)


UNIT = """
network unit() {
  input(4, 8, 8)
  block residual(projection="conv_bn") sum {
    { conv(6, 3, stride=2, padding=1) bn relu conv(6, 3, padding=1) bn }
  }
  relu
}
"""


def test_a_basic_unit_with_conv_bn_projection_computes_torchvisions_function():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.manual_seed(0)
    gm = archspec.build(UNIT).double().train()
    m = gm.get_submodule
    c1, b1, c2, b2 = (m(f"block1.layer1.{n}") for n in ("conv1", "bn1", "conv2", "bn2"))
    sc, sbn = m("block1.layer1.shortcut"), m("block1.layer1.shortcut_bn")
    assert sc.stride == (2, 2) and sc.kernel_size == (1, 1) and sc.bias is None
    for bn in (b1, b2, sbn):  # away from the initial 1/0, so every parameter's role shows
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)

    def reference(x):
        def norm(t, bn):
            return F.batch_norm(t, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)

        y = norm(F.conv2d(F.relu(norm(F.conv2d(x, c1.weight, stride=2, padding=1), b1)), c2.weight, padding=1), b2)
        return F.relu(y + norm(F.conv2d(x, sc.weight, stride=2), sbn))

    assert_same_function(gm, reference, torch.randn(3, 4, 8, 8, dtype=torch.float64))


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        archspec.network(text)
    return e.value


def _net(body: str, layers: str = "") -> str:
    return f"{layers}network n() {{\n  input(4, 8, 8)\n  {body}\n}}\n"


def test_projection_none_refuses_a_layer_that_changes_the_shape():
    text = _net('block residual(projection="none") { { conv(8, 3, padding=1) bn } }')
    e = _error(text)
    assert (e.loc.line, e.loc.column) == (3, 3)
    assert 'projection="none"' in e.message and "4×8×8 into 8×8×8" in e.message
    # a shape-keeping layer needs no projection
    net = archspec.network(_net('block residual(projection="none") { { conv(4, 3, padding=1) bn } }'))
    assert not [n for n in net.nodes() if n.role == "shortcut"]


def test_an_unknown_or_misfitting_projection_template_is_located_at_the_block():
    down = "layer down(c: int, s: int) { conv(c, 1, stride=s) }\n"
    e = _error(_net('block residual(projection="dwn") { conv(8, 1) }', down))
    assert "unknown projection 'dwn'" in e.message and "did you mean 'down'" in e.hint
    assert (e.loc.line, e.loc.column) == (4, 3)
    wide = "layer wide(c: int, s: int) { conv(2 * c, 1) }\n"
    e = _error(_net('block residual(projection="wide") { conv(8, 1) }', wide))
    assert "cannot turn 4×8×8 into 8×8×8" in e.message and "projection 'wide' gives 16×8×8" in e.message
    e = _error(_net('block residual(projection="one") { conv(8, 1) }', "layer one(c: int) { conv(c, 1) }\n"))
    assert "layer 'one' takes 1 argument (c), got 2" in e.message


def test_a_row_of_bare_ops_in_a_residual_block_is_refused_at_the_first_lone_op():
    text = _net("block residual sum { conv(4, 3, padding=1) bn relu conv(4, 3, padding=1) bn }")
    e = _error(text)
    assert (e.loc.line, e.loc.column) == (3, text.splitlines()[2].index("bn") + 1)
    assert "each call is a layer of its own" in e.message and "`bn`" in e.message
    assert "braces" in e.hint
    rendered = e.render({e.loc.file: text})
    assert rendered.splitlines()[2].strip() == "^^"


def test_braces_make_the_same_calls_one_residual_layer():
    net = archspec.network(_net("block residual sum { { conv(4, 3, padding=1) bn relu conv(4, 3, padding=1) bn } }"))
    merges = [n for n in net.nodes() if n.role == "merge"]
    assert len(merges) == 1 and merges[0].op == "add"
    assert {n.layer for n in net.nodes() if n.op in ("conv", "bn", "relu")} == {"block1.layer1"}
    # a lone conv is still a residual layer of its own, as before
    lone = archspec.network(_net("block residual { conv(4, 3, padding=1) conv(4, 3, padding=1) }"))
    assert len([n for n in lone.nodes() if n.role == "merge"]) == 2
