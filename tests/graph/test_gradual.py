"""GUNN (`block gradual`): depth and stage structure, the segment updates of the paper's Eq. 3–5
computed directly (float64, outputs and gradients), SUNN and GUNN-NoRes with GUNN's parameters, and
located errors. The GUNN specs' parameter counts, MACs and builds are in `test_specs.py`."""

import pytest
import torch
import torch.nn.functional as F

import archspec
from archspec.errors import SpecError
from conftest import SPECS, assert_same_function, network_of, on_meta


pytestmark = pytest.mark.usefixtures("one_thread")


PAIRS = [("gunn15", "sunn15"), ("gunn15", "gunn15_nores"), ("gunn24", "sunn24"), ("gunn18", "sunn18")]


@pytest.mark.parametrize("name,depth", [("sunn15", 15), ("sunn24", 24), ("sunn18", 18)])
def test_sunn_depth_is_the_name_and_gunn_is_deeper(name, depth):
    """The models are named after SUNN's depth (weighted layers on the longest path); the conversion
    to GUNN only makes them deeper."""
    assert archspec.summary(network_of(name)).depth == depth
    assert archspec.summary(network_of(name.replace("sunn", "gunn"))).depth > depth


def test_stage_structure():
    s = archspec.summary(SPECS / "gunn15.arch")
    blocks = [g for g in s.groups if g.name.startswith("block")]
    assert [g.layers for g in blocks] == [20, 25, 30]
    assert [g.output_shape for g in blocks] == [(240, 32, 32), (300, 16, 16), (360, 8, 8)]
    s = archspec.summary(SPECS / "gunn18.arch")
    blocks = [g for g in s.groups if g.name.startswith("block")]
    assert [g.layers for g in blocks] == [10, 20, 40, 50]
    assert [g.output_shape for g in blocks] == [(400, 56, 56), (800, 28, 28), (1600, 14, 14), (2000, 7, 7)]


@pytest.mark.parametrize("a,b", PAIRS)
def test_gunn_and_sunn_have_identical_parameter_shapes(a, b):
    sa = {k: v.shape for k, v in on_meta(a).state_dict().items()}  # shapes only: no memory for the weights
    sb = {k: v.shape for k, v in on_meta(b).state_dict().items()}
    assert sa == sb
    assert any(k.endswith("layer1.conv1.weight") for k in sa)


# ---- a small block, computed directly ------------------------------------------------------------

UNIT = """
layer unit(o: int) { bn relu conv(2 * o, 1) bn relu conv(o, 3, padding=1) }
"""


def _spec(words: str, c: int = 6, p: int = 3) -> str:
    return UNIT + f"""
network n() {{
  input({c}, 5, 5)
  block {words} {{ unit({c // p}) }}
}}"""


def _bn_train(x, bn, eps=1e-5):
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def _unit(gm, prefix, x):
    """bn relu conv1×1 bn relu conv3×3, from the module's parameters."""
    m = gm.get_submodule(prefix)
    y = F.conv2d(F.relu(_bn_train(x, m.bn1)), m.conv1.weight)
    return F.conv2d(F.relu(_bn_train(y, m.bn2)), m.conv2.weight, padding=1)


def _gunn(gm, x, segments, order="gradual", identity=True, projection=False):
    """Eq. 3–5 as a loop over segments: segment i becomes old_i + U_i(x_i), x_i holding the segments
    updated so far and the old rest (gradual) or the input (simultaneous)."""
    old = list(x.split(x.shape[1] // segments, dim=1))
    new = []
    for i in range(segments):
        xi = torch.cat(new + old[i:], dim=1) if order == "gradual" else x
        u = _unit(gm, f"block1.layer{i + 1}", xi)
        if projection:
            m = gm.get_submodule(f"block1.layer{i + 1}")
            u = u + _bn_train(F.conv2d(xi, m.shortcut.weight), m.shortcut_bn)
        new.append(old[i] + u if identity else u)
    return torch.cat(new, dim=1)


CASES = [
    ("gradual(3)", {}),
    ('gradual(3, order="simultaneous")', {"order": "simultaneous"}),
    ("gradual(3, identity=false)", {"identity": False}),
    ('gradual(segments=3, order="simultaneous", identity=false)', {"order": "simultaneous", "identity": False}),
    ("gradual(3, projection=true) sum", {"projection": True}),
    ("gradual(3, identity=false, projection=true)", {"identity": False, "projection": True}),
]


@pytest.mark.parametrize("words,kw", CASES, ids=[c[0] for c in CASES])
def test_block_computes_the_segment_updates(words, kw):
    gm = archspec.build(_spec(words)).double().train()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in gm.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    assert gm(x).shape == x.shape
    assert_same_function(gm, lambda x: _gunn(gm, x, 3, **kw), x)  # every unit, and the input, takes part


def test_gradual_differs_from_simultaneous():
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    torch.manual_seed(0)
    g = archspec.build(_spec("gradual(3)")).double().eval()
    torch.manual_seed(0)
    s = archspec.build(_spec('gradual(3, order="simultaneous")')).double().eval()
    s.load_state_dict(g.state_dict())
    yg, ys = g(x), s(x)
    torch.testing.assert_close(yg[:, :2], ys[:, :2])  # the first segment reads x in both
    assert not torch.allclose(yg[:, 2:], ys[:, 2:])


def test_graph_wiring():
    """The first update reads the block input itself (no slice + concat); later ones read one concat of
    the updated segments and one slice of the rest; every slice and concat is tagged `gradual`."""
    net = archspec.network(_spec("gradual(3)"))
    assert net.inputs("block1.layer1.bn1") == [net.input]
    assert net.inputs("block1.layer2.join") == ["block1.layer1.merge", "block1.layer2.rest"]
    assert net.inputs("block1.layer3.join") == ["block1.layer1.merge", "block1.layer2.merge",
                                                "block1.layer3.segment"]
    assert net.inputs("block1.layer2.merge") == ["block1.layer2.segment", "block1.layer2.conv2"]
    assert net.output == "block1.join"
    assert net.inputs(net.output) == [f"block1.layer{i}.merge" for i in (1, 2, 3)]
    for n in net.nodes():
        if n.op in ("slice", "concat", "add"):
            assert n.pattern == "gradual"
            assert all(net.graph.edges[i, n.name]["edge"].pattern == "gradual" for i in net.inputs(n.name))
    roles = {n.role for n in net.nodes() if n.op in ("slice", "concat")}
    assert roles == {"segment", "join"}

    sunn = archspec.network(_spec('gradual(3, order="simultaneous")'))
    assert [n.name for n in sunn.nodes() if n.op == "concat"] == ["block1.join"]
    assert all(sunn.inputs(f"block1.layer{i}.bn1") == [sunn.input] for i in (1, 2, 3))

    one = archspec.network(_spec("gradual(1)", c=4, p=1))  # one segment: a plain residual unit
    assert not any(n.op in ("slice", "concat") for n in one.nodes())
    assert one.inputs(one.output) == [one.input, "block1.layer1.conv2"]


# ---- located errors --------------------------------------------------------------------------------


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        archspec.network(text)
    return e.value


def test_segments_must_divide_the_channels():
    text = _spec("gradual(4)", c=6, p=3)
    err = _error(text)
    assert err.loc is not None and err.loc.line == _line_of(text, "block gradual")
    assert "4 segments" in err.message and "6 channels" in err.message


@pytest.mark.parametrize("body", ["unit(2) unit(2)", "repeat 2 { unit(2) }", "unit(2)\n  bn"])
def test_body_must_hold_exactly_one_layer(body):
    text = UNIT + f"""
network n() {{
  input(6, 5, 5)
  block gradual(3) {{ {body} }}
}}"""
    err = _error(text)
    assert err.loc is not None and err.loc.line == _line_of(text, "block gradual")
    assert "exactly one layer" in err.message and "holds 2" in err.message


@pytest.mark.parametrize("unit,got", [
    ("bn relu conv(3, 1)", "3×5×5"),  # too wide
    ("bn relu conv(2, 3, stride=2, padding=1)", "2×3×3"),  # right width, smaller
])
def test_update_must_keep_its_segments_shape(unit, got):
    text = f"""layer u() {{ {unit} }}
network n() {{
  input(6, 5, 5)
  block gradual(3) {{
    u()
  }}
}}"""
    err = _error(text)
    assert err.loc is not None and err.loc.line == _line_of(text, "block gradual")
    assert f"gives {got}" in err.message and "segment is 2×5×5" in err.message


def test_bad_words():
    err = _error(_spec("gradual(3) concat"))
    assert "concat" in err.message and err.loc.line == _line_of(_spec("gradual(3) concat"), "block gradual")
    err = _error(_spec('gradual(3, order="sideways")'))
    assert "order" in err.message
    err = _error(_spec("gradual(0)"))
    assert "segments" in err.message
