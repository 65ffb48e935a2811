"""The op and merge registry: every op declares itself in one place, and the compiler reads each
declaration — its lowering, its constructor text for a standalone file, its memory trait — rather than
tables of its own. Parsing and elaboration never load torch."""

import re
import subprocess
import sys

import pytest
import torch

import archspec
from archspec.compiler.codegen import lowered
from archspec.compiler.resolve import activation, named
from archspec.compiler.modules import CrossDepthwise
from archspec.graph import ops as ops_pkg
from archspec.graph.merges import BY_OP, MERGES
from archspec.graph.ops import Op, register
from archspec.graph.vocabulary import OPS, PRIMITIVES

EVERY_MODULE = """
network n() {
  input(4, 8, 8)
  stem { conv(4, 3, padding=1, bias=true) bn dropout2d(0.1) maxpool(2) }
  block dense crossdepthwise(eps=1e-3) { repeat 2 { bn relu conv(4, 3, padding=1, groups=2) } }
  head { avgpool(3, stride=1, padding=1) dropout(0.25) linear(3) }
}"""


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_op_class_of_the_package_is_registered_under_its_kind():
    defined = [c for c in _subclasses(Op) if c.__module__.startswith(ops_pkg.__name__ + ".") and "kind" in vars(c)]
    assert {c.kind for c in defined} == set(OPS)
    for kind, op in OPS.items():
        assert op.kind == kind
        assert re.fullmatch(r"#[0-9a-f]{6}", op.colour), kind
        assert op.short and isinstance(op.short, str)
    assert set(PRIMITIVES) <= set(OPS) and "input" not in PRIMITIVES and "concat" not in PRIMITIVES


def test_register_refuses_a_second_op_of_one_kind():
    class Again(Op):
        kind = "relu"

    with pytest.raises(ValueError, match="registered twice"):
        register(Again)
    assert OPS["relu"] is not Again


def test_each_merge_takes_its_ops_arguments_and_has_a_colour():
    for word, m in MERGES.items():
        assert m.op in OPS and m.Args is OPS[m.op].Args
        assert re.fullmatch(r"#[0-9a-f]{6}", m.colour), word
        assert BY_OP[m.op] is m
    assert len({m.colour for m in MERGES.values()}) == len(MERGES)


def test_constructor_text_builds_the_same_module():
    """Each submodule's standalone constructor, evaluated with torch alone, gives the module codegen built."""
    gm = archspec.build(EVERY_MODULE)
    seen = set()
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        m = gm.get_submodule(n.target)
        text = OPS[n.meta["op"]].source(m)
        rebuilt = eval(text, {"torch": torch, "CrossDepthwise": CrossDepthwise})
        assert type(rebuilt) is type(m) and repr(rebuilt) == repr(m), text
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
        seen.add(n.meta["op"])
    assert seen == {"conv", "bn", "dropout", "dropout2d", "maxpool", "avgpool", "linear", "crossdepthwise"}


def test_every_lowering_names_its_torch_code_by_path():
    """archspec's own ops lower to a `Build` or `Call` (or identity): the graph layer names torch code, the
    compiler imports it. Every path of the zoo's networks resolves."""
    from archspec.graph.ops import Build, Call

    gm = archspec.build(EVERY_MODULE)
    net = archspec.network(EVERY_MODULE)
    for node in net.nodes():
        if node.role == "input":
            continue
        ins = [net.shape(s) for s in net.inputs(node.name)]
        low = OPS[node.op].lower(node.args, ins)
        assert low is None or isinstance(low, (Build, Call)), (node.op, low)
        if isinstance(low, Build):
            assert type(gm.get_submodule(node.name)).__name__ == low.path.rpartition(".")[2]
    assert isinstance(OPS["crossdepthwise"].lower(OPS["crossdepthwise"].Args(), [(4, 2, 2)] * 2), Build)
    with pytest.raises(ImportError, match="'torch.nn.NoSuchLayer'"):
        named("torch.nn.NoSuchLayer")


def test_initialisation_follows_each_ops_scheme():
    torch.manual_seed(0)
    gm = archspec.build("""
    network n() {
      input(16, 8, 8)
      stem { conv(64, 3, padding=1) conv(16, 1, init="zeros") conv(64, 3, init="he_uniform") bn }
      block dense crossdepthwise { repeat 3 { conv(64, 1) } }
      head { gap linear(200, init="uniform_out") }
    }""")
    normal, zeros, uniform = (gm.get_submodule(f"stem.conv{i}").weight for i in (1, 2, 3))
    std = (2 / (9 * 64)) ** 0.5
    assert abs(normal.std().item() / std - 1) < 0.05
    assert not zeros.any()
    assert uniform.abs().max() <= 3**0.5 * std and abs(uniform.std().item() / std - 1) < 0.05
    bn = gm.get_submodule("stem.bn1")
    assert (bn.weight == 1).all() and not bn.bias.any()
    merge = gm.get_submodule("block1.merge")
    assert torch.equal(merge.weight, torch.full_like(merge.weight, 1 / 4)) and not merge.bias.any()
    fc = gm.get_submodule("head.linear1")
    assert fc.weight.abs().max() <= (3 / 200) ** 0.5 and fc.weight.abs().max() > 0.9 * (3 / 200) ** 0.5
    assert not fc.bias.any()


@pytest.mark.parametrize("kind", [k for k, op in OPS.items() if op.recomputable])
def test_recomputable_activation_gradient_matches_autograd(kind):
    forward, backward = activation(OPS[kind])
    fn, extra, kwargs = lowered(OPS[kind], None, [(3, 5, 5)])
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    y = forward(x)
    torch.testing.assert_close(y, fn(x, *extra, **kwargs))
    (want,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(backward(g, x.detach(), y.detach()), want)


def test_every_recomputable_op_is_shape_preserving_and_weightless():
    for kind, op in OPS.items():
        if op.recomputable:
            assert op.shape([(3, 4, 4)], op.Args()) == (3, 4, 4) and op.params([(3, 4, 4)], op.Args()) == 0


def test_parsing_and_elaboration_never_load_torch():
    script = (f"import sys, archspec.graph.elaborate, archspec.language.loader as l\n"
              f"from archspec.graph.elaborate import elaborate\n"
              f"elaborate(l.load({EVERY_MODULE!r}))\n"
              f"assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


RECTANGLES = """
network n() {
  input(8, 17, 17)
  conv(16, [1, 7], padding=[0, 3]) bn relu
  conv(16, [7, 1], stride=[2, 1], padding=[3, 0], bias=true)
}"""


def test_a_convolution_may_be_rectangular():
    """kernel, stride and padding take an int or [height, width] (Inception's 1×7 and 7×1): shapes,
    parameters and MACs as torch's Conv2d has them, and the built module computes the same."""
    s = archspec.summary(RECTANGLES)
    assert s.output_shape == (16, 9, 17)
    assert s.params == 16 * 8 * 7 + 2 * 16 + (16 * 16 * 7 + 16)
    assert s.macs == 16 * 17 * 17 * 8 * 7 + 16 * 9 * 17 * 16 * 7
    gm = archspec.build(RECTANGLES).eval()
    first, second = gm.get_submodule("conv1"), gm.get_submodule("conv2")
    assert (first.kernel_size, first.padding, second.kernel_size, second.stride) == ((1, 7), (0, 3), (7, 1), (2, 1))
    x = torch.randn(2, 8, 17, 17, dtype=torch.float64)
    gm.double()
    bn = gm.get_submodule("bn1")
    want = second(torch.relu(bn(first(x))))
    torch.testing.assert_close(gm(x), want)


@pytest.mark.parametrize("arg, message", [
    ("[1]", "must be an int or a list of two ints [height, width], got list [1]"),
    ("[0, 3]", "must be positive, got list [0, 3]"),
    ("[2, 3, 4]", "must be an int or a list of two ints"),
    ('"3"', "must be an int or a list of two ints"),
])
def test_a_bad_window_side_is_a_located_error(arg, message):
    with pytest.raises(archspec.SpecError, match=re.escape(message)) as e:
        archspec.network(f"network n() {{\n  input(8, 9, 9)\n  conv(4, {arg})\n}}")
    assert (e.value.loc.line, e.value.loc.column) == (3, 11)


def test_a_negative_margin_is_refused():
    with pytest.raises(archspec.SpecError, match="argument 'padding' must not be negative"):
        archspec.network("network n() {\n  input(8, 9, 9)\n  conv(4, 3, padding=[1, -1])\n}")


def test_pools_take_rectangles_too():
    pools = ["avgpool([1, 3], stride=1, padding=[0, 1])", "maxpool(3, [2, 1])", "adaptive_avgpool([3, 2])"]

    def spec(n: int) -> str:  # the first n pools
        return f"network n() {{ input(8, 17, 17) {' '.join(pools[:n])} }}"

    assert [archspec.summary(spec(n)).output_shape for n in (1, 2, 3)] == [(8, 17, 17), (8, 8, 15), (8, 3, 2)]
    gm = archspec.build(spec(3))
    x = torch.randn(2, 8, 17, 17)
    want = torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.max_pool2d(
        torch.nn.functional.avg_pool2d(x, (1, 3), 1, (0, 1)), 3, (2, 1)), (3, 2))
    torch.testing.assert_close(gm(x), want)
    with pytest.raises(archspec.SpecError, match=r"padding \[2, 1\] must be at most half the kernel 3"):
        archspec.network("network n() { input(8, 9, 9) maxpool(3, padding=[2, 1]) }")
