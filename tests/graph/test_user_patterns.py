"""Connection patterns a user adds without editing archspec: written in a spec (`pattern NAME(...) { ... }`,
wiring the block's layers with `apply`), or registered by an installed package's entry points (a
`Pattern` and a `Merge` subclass, no op). Either way the block compiles, is counted statically, is
drawn, trains a step under the `fast` and `lean` memory policies with the same result, and exports."""

from __future__ import annotations


import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.errors import SpecError
from archspec.graph.vocabulary import MERGES, OPS, PATTERNS, PRIMITIVES, loaded_plugins, reset_plugins
from archspec.plugins import Merge, Pattern, PluginError, register_merge, register_pattern
from archspec.runtime.export import ExportOptions, export_model
from conftest import assert_same_steps
from test_plugins import PKG, clean_registry, install  # noqa: F401  (a fixture)

# HarDNet's harmonic wiring: layer k reads layers k - 2**n for each 2**n dividing k (layer 0 is the input);
# the block gives its odd layers and its last.
HARMONIC = """
pattern harmonic(keep_input: bool = false) concat {
  -> x0
  let outs = [x0]
  for k in range(1, layers + 1) {
    let reads = []
    for n in range(0, 1 + int(log2(k))) {
      if k % 2 ** n == 0 { let reads = reads + [outs[k - 2 ** n]] }
    }
    apply(k, reads) -> y
    let outs = outs + [y]
  }
  let keep = [x0] if keep_input else []
  for k in range(1, layers + 1) { if k % 2 == 1 or k == layers { let keep = keep + [outs[k]] } }
  merge(keep)
}
layer cbr(c: int) { bn relu conv(c, 3, padding=1) }
"""


def harmonic_net(layers: int = 8, growth: int = 4, merge: str = "") -> str:
    return HARMONIC + f"""
network h(classes: int = 5) {{
  input(3, 8, 8)
  conv(6, 3, padding=1)
  block harmonic {merge} {{ repeat {layers} {{ cbr({growth}) }} }}
  head {{ bn relu gap linear(classes) }}
}}
"""


def test_a_spec_pattern_wires_by_its_rule():
    net = archspec.network(harmonic_net())
    made = lambda j: f"block1.layer{j}.conv1" if j else "conv1"  # noqa: E731  (layer 0: the block input)
    for k in range(1, 9):
        want = [made(k - 2 ** n) for n in range(4) if k % 2 ** n == 0 and k - 2 ** n >= 0]
        got = net.inputs(f"block1.layer{k}.merge") if len(want) > 1 else net.inputs(f"block1.layer{k}.bn1")
        assert got == want, k
    assert net.inputs("block1.concat1") == [made(k) for k in (1, 3, 5, 7, 8)]
    # one edge per link: no slices, no copies
    assert not [n for n in net.nodes() if n.op in ("slice", "split", "identity")]


def test_a_spec_pattern_counts_like_the_module_it_builds():
    s = archspec.summary(harmonic_net())
    gm = archspec.build(harmonic_net())
    assert s.params == sum(p.numel() for p in gm.parameters())
    # layer k's input width: the sum of what it reads (6 for the input, 4 per layer)
    widths = {k: sum(6 if k - 2 ** n == 0 else 4 for n in range(4) if k % 2 ** n == 0 and k - 2 ** n >= 0)
              for k in range(1, 9)}
    convs = sum(w * 4 * 9 for w in widths.values())  # convolutions without bias, as archspec's `conv` defaults
    bns = sum(2 * w for w in widths.values())
    assert s.params == 3 * 6 * 9 + convs + bns + 2 * 20 + 20 * 5 + 5  # the block gives 5 layers: 20 channels


def test_a_block_may_name_another_merge_for_a_spec_pattern():
    net = archspec.network(harmonic_net(layers=2, growth=6, merge="sum"))
    assert net.node("block1.layer2.merge").op == "add"


def test_a_spec_pattern_draws(tmp_path):
    spec = tmp_path / "h.arch"
    spec.write_text(harmonic_net())
    done = CliRunner().invoke(app, ["graph", str(spec), "-o", str(tmp_path / "h.svg")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "h.svg").read_text().count("<svg") == 1


def test_a_spec_pattern_exports(tmp_path, one_thread):
    net = archspec.network(harmonic_net())
    torch.manual_seed(0)
    gm = archspec.build(net).eval()
    out = export_model(net, gm, ExportOptions("pt2", tmp_path / "h.pt2", batch=2), Console(quiet=True))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(str(out)).module()(x), gm(x), rtol=1e-5, atol=1e-5)


def test_a_spec_pattern_trains_alike_under_fast_and_lean(one_thread):
    torch.manual_seed(0)
    plain = archspec.build(harmonic_net(), memory="fast").double()
    lean = archspec.build(harmonic_net(), memory="lean").double()
    lean.load_state_dict(plain.state_dict())
    assert any("Concat" in type(m).__name__ for m in lean.modules())  # the lean pass found the concats
    assert_same_steps(plain, lean, torch.randn(4, 3, 8, 8, dtype=torch.float64))


def test_a_spec_pattern_is_lean_in_memory(one_thread):
    """Under `lean` a harmonic block holds, for backward, only its layers' outputs and per-channel terms:
    about half what the plain module holds, and the same more for every added layer."""
    from archspec.compiler.codegen import to_module
    from archspec.compiler.passes import memory
    from archspec.runtime.bench.train import saved_bytes

    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 5, (2,))
    held = {}
    for n in (8, 16, 32):
        net = archspec.network(harmonic_net(layers=n).replace("input(3, 8, 8)", "input(3, 16, 16)"))
        held[n] = [saved_bytes(m, x, y) for m in (to_module(net, init=False),
                                                  memory.apply(to_module(net, init=False), "lean"))]
    plain, lean = zip(*held.values())
    growth = (lean[2] - lean[1]) / (lean[1] - lean[0]) / 2  # per added layer, from 16 to 32 against 8 to 16
    assert 0.9 < growth < 1.1, held
    assert lean[2] < 0.6 * plain[2], held


@pytest.mark.parametrize("text, words", [
    ("block harmonic { cbr(4) cbr(4) } -> a apply(1)", ["apply(k)", "only in the body of a `pattern`"]),
    ("block harmonic { cbr(4) } merge(a)", ["merge(...)", "only in the body of a `pattern`"]),
])
def test_pattern_words_outside_a_pattern_are_refused(text, words):
    with pytest.raises(SpecError) as e:
        archspec.network(HARMONIC + f"network n() {{ input(3, 8, 8) conv(4, 1) -> a {text} }}")
    assert all(w in e.value.message + (e.value.hint or "") for w in words), e.value


@pytest.mark.parametrize("body, words", [
    ("apply(1) apply(1)", ["layer 1 of the block is applied twice"]),
    ("apply(1)", ["never applies layer 2"]),
    ("apply(3)", ["numbered 1 to 2"]),
    ("-> a apply(1) -> b apply(2) concat(a, b) merge(a, b)", ["no merge word"]),
    ("block p { conv(4, 1) conv(4, 1) } apply(1) apply(2)", ["pattern 'p' calls itself without end"]),
])
def test_a_pattern_that_miswires_its_block_is_refused_at_the_block(body, words):
    text = f"pattern p() {{ {body} }}\nnetwork n() {{ input(3, 8, 8) block p {{ conv(4, 1) conv(4, 1) }} }}"
    with pytest.raises(SpecError) as e:
        archspec.network(text)
    assert all(w in e.value.message + (e.value.hint or "") for w in words), e.value
    assert e.value.loc is not None


def test_a_pattern_cannot_take_a_builtin_word():
    with pytest.raises(SpecError, match="'dense' is a built-in connection pattern"):
        archspec.network("pattern dense() { apply(1) }\nnetwork n() { input(3, 8, 8) conv(4, 1) }")


def test_a_pattern_used_from_another_file(tmp_path):
    (tmp_path / "patterns.arch").write_text(HARMONIC)
    spec = tmp_path / "net.arch"
    spec.write_text('use "patterns.arch"\n' + harmonic_net().replace(HARMONIC, ""))
    assert archspec.summary(spec).params == archspec.summary(harmonic_net()).params


# ---- a pattern and a merge from an installed package -------------------------------------------------

PATTERN_MODULE = '''
"""Test plugin: a connection pattern and a merge, and no op."""
from archspec.plugins import Call, Merge, Pattern, register_merge, register_pattern


@register_pattern
class Ladder(Pattern):
    """Each layer reads the merge of the two tensors before it (the input counts twice at the start)."""

    word = "ladder"
    default_merge = "maxout"

    @classmethod
    def build(cls, ctx, x, layers, args):
        prev, cur = x, x
        for i, layer in enumerate(layers):
            scope = ctx.layer_scope(i)
            inp = ctx.merge_of([prev, cur], scope) if prev != cur else cur
            prev, cur = cur, ctx.run(layer, inp, scope)
        return cur


@register_merge
class MaxOut(Merge):
    """The element-wise maximum of the inflows."""

    word = "maxout"
    gather = "pairwise"

    @classmethod
    def shape(cls, ins, a):
        return ins[0]

    @classmethod
    def lower(cls, args, ins):
        return Call("torch.maximum")

    @classmethod
    def source(cls, m):
        raise NotImplementedError
'''

PLUGGED = """
layer unit(c: int) { conv(c, 3, padding=1) bn relu }
network laddered(classes: int = 3) {
  input(3, 8, 8)
  conv(6, 3, padding=1)
  block ladder { unit(6) unit(6) unit(6) }
  -> a
  conv(6, 1) -> b
  maxout(a, b)
  head { gap linear(classes) }
}
"""


@pytest.fixture
def pattern_plugin(tmp_path, monkeypatch, clean_registry):  # noqa: F811
    install(tmp_path, monkeypatch, {"ladder": f"{PKG}.words"}, {"words.py": PATTERN_MODULE})
    yield tmp_path
    reset_plugins()


def test_an_installed_pattern_and_merge_are_words(pattern_plugin):
    net = archspec.network(PLUGGED)  # the first elaboration loads the entry points
    assert "ladder" in PATTERNS and "maxout" in MERGES and "maxout" not in PRIMITIVES
    assert set(next(iter(loaded_plugins().values()))) == {"ladder", "maxout"}
    merges = [n for n in net.nodes() if n.role == "merge"]
    assert [n.op for n in merges] == ["maxout"] * 3
    assert net.inputs("block1.layer2.merge") == ["conv1", "block1.layer1.relu1"]
    assert net.inputs("block1.layer3.merge") == ["block1.layer1.relu1", "block1.layer2.relu1"]
    assert net.inputs(merges[-1].name) == ["block1.layer3.relu1", "conv2"]


def test_an_installed_pattern_compiles_counts_trains_and_exports(pattern_plugin, tmp_path, one_thread):
    s = archspec.summary(PLUGGED)
    torch.manual_seed(0)
    gm = archspec.build(PLUGGED)
    assert s.params == sum(p.numel() for p in gm.parameters())
    x = torch.randn(2, 3, 8, 8)
    lean = archspec.build(PLUGGED, memory="lean").double()
    lean.load_state_dict(gm.state_dict())
    assert_same_steps(gm.double(), lean, x.double())
    net = archspec.network(PLUGGED)
    out = export_model(net, gm.float().eval(), ExportOptions("pt2", tmp_path / "l.pt2", batch=2),
                       Console(quiet=True))
    program = torch.export.load(str(out)).module()
    with torch.no_grad():
        torch.testing.assert_close(program(x), gm(x), rtol=1e-5, atol=1e-5)
    spec = tmp_path / "l.arch"
    spec.write_text(PLUGGED)
    done = CliRunner().invoke(app, ["graph", str(spec), "-o", str(tmp_path / "l.svg")])
    assert done.exit_code == 0, done.output


def test_register_pattern_refuses_a_taken_word(clean_registry):  # noqa: F811
    class Dense(Pattern):
        word = "dense"

        @classmethod
        def build(cls, ctx, x, layers, args):
            return x

    with pytest.raises(PluginError, match="'dense' is already a connection pattern"):
        register_pattern(Dense)

    class Conv(Merge):
        word = "conv"

    with pytest.raises(PluginError, match="already an op"):
        register_merge(Conv)


def test_an_error_in_a_plugin_pattern_names_the_pattern(clean_registry):  # noqa: F811
    @register_pattern
    class Broken(Pattern):
        word = "broken_wiring"

        @classmethod
        def build(cls, ctx, x, layers, args):
            raise ZeroDivisionError("oops")

    try:
        with pytest.raises(PluginError) as e:
            archspec.network("network n() { input(3, 8, 8) block broken_wiring { conv(4, 1) } }")
        assert "plugin pattern 'broken_wiring'" in e.value.message and "ZeroDivisionError" in e.value.message
    finally:
        PATTERNS.pop("broken_wiring", None)
    assert "broken_wiring" not in OPS


def test_the_readmes_worked_examples_compile():
    """The section "Writing a connection pattern" teaches with HarDNet's rule and DLA's tree: both build."""
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Writing a connection pattern"):text.index("## Your own ops")]
    blocks = section.split("```")[1::2]
    harmonic, tree = blocks[0], blocks[1]
    net = archspec.network(harmonic + tree + "\nnetwork t() { input(3, 16, 16) tree(8, 2, 2) }")
    assert net.shape(net.output) == (8, 8, 8)
    assert sum(1 for n in net.nodes() if n.op == "concat") == 3
    assert archspec.summary(harmonic).params > 0


MERGE_TEMPLATE = """
# a learned merge written in the spec: the inflows side by side, mixed by a 1×1 convolution
layer mix(xs: list, width: int = 6) { concat(xs) conv(width, 1) }
"""


def test_a_template_is_a_merge_word_of_any_pattern():
    net = archspec.network(MERGE_TEMPLATE + "network n() { input(3, 8, 8) conv(6, 1)\n"
                           "  block dense mix { repeat 3 { conv(6, 3, padding=1) } } }")
    convs = [n for n in net.nodes() if n.op == "conv" and ".mix" in n.name]
    # layers 2 and 3 read two and three inflows, the block's output four: a mix for each
    assert [len(net.inputs(net.inputs(c.name)[0])) for c in convs] == [2, 3, 4]
    assert net.shape(net.output) == (6, 8, 8)


def test_a_template_merges_a_spec_patterns_inflows():
    net = archspec.network(MERGE_TEMPLATE + HARMONIC + harmonic_net().replace(HARMONIC, "").replace(
        "block harmonic  {", "block harmonic mix {"))
    assert net.node("block1.layer8.mix1.conv1").shape[0] == 6
    assert net.inputs("block1.layer8.mix1.concat1")[0] == "block1.layer7.conv1"


def test_a_template_that_cannot_merge_is_refused_at_the_block():
    with pytest.raises(SpecError, match="cannot merge a block's inflows"):
        archspec.network("layer two(c: int) { conv(c, 1) }\nnetwork n() { input(3, 8, 8) conv(6, 1)\n"
                         "  block dense two { conv(6, 1) conv(6, 1) } }")
