"""Tensors as values: `-> a` names the current tensor, `from a` reads it again, merge words merge named
tensors in the order written (`concat(b, a)`), templates take and pass them on, and names carry across
loops, so an aggregation tree, an earlier block's output or a stage-crossing link is written directly,
with one graph edge per link."""

from __future__ import annotations

import pytest

import archspec
from archspec.errors import SpecError
from archspec.language.evaluate import evaluate
from archspec.language.syntax import parse_expr


def net(body: str, defs: str = "") -> str:
    return defs + "\nnetwork n() {\n  input(3, 8, 8)\n" + body + "\n}\n"


def error(text: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        archspec.network(text)
    return e.value


def test_a_named_tensor_is_read_again_later():
    n = archspec.network(net("conv(4, 1) -> a\n  relu conv(6, 1) -> b\n  from a\n  conv(6, 1)\n  -> c\n  sum(b, c)"))
    assert n.inputs("conv3") == ["conv1"]  # `from a` made conv1 current again
    assert n.inputs("sum1") == ["conv2", "conv3"]
    assert n.output == "sum1"


def test_merge_order_is_the_order_written_not_the_order_made():
    n = archspec.network(net("conv(4, 1) -> a\n  conv(2, 1) -> b\n  concat(b, a)"))
    assert n.inputs("concat1") == ["conv2", "conv1"] and n.shape("concat1") == (6, 8, 8)


def test_lists_of_tensors_merge_flattened_and_one_tensor_passes_through():
    n = archspec.network(net("-> x\n  let outs = [x]\n  for i in range(3) { conv(2, 1) -> y\n let outs = outs + [y] }\n"
                             "  concat(outs)\n  -> all\n  mean(all)"))
    assert n.inputs("concat1") == ["input", "conv1", "conv2", "conv3"]
    assert n.output == "concat1"  # mean of one tensor is that tensor: no node


def test_a_template_takes_tensors_and_gives_its_current_one():
    defs = "layer fuse(a: tensor, b: tensor, c: int) { concat(a, b) conv(c, 1) }"
    n = archspec.network(net("conv(4, 1) -> p\n  conv(4, 1) -> q\n  fuse(q, p, 5)", defs))
    assert n.inputs("fuse1.concat1") == ["conv2", "conv1"] and n.shape(n.output) == (5, 8, 8)


def test_a_tensor_named_in_a_block_layer_is_read_by_later_layers_and_after_the_block():
    n = archspec.network(net("block chain { { conv(4, 1) -> a } { conv(4, 1) } { -> b sum(a, b) } }\n  -> c\n"
                             "  concat(a, c)"))
    assert n.inputs("block1.layer3.sum1") == ["block1.layer1.conv1", "block1.layer2.conv1"]
    assert n.inputs(n.output) == ["block1.layer1.conv1", "block1.layer3.sum1"]


def test_a_result_nothing_reads_is_refused_where_it_is_made():
    """A one-tensor merge passes that tensor on alone: the work before it would be computed for nothing."""
    e = error(net("conv(4, 1) -> a\n  conv(4, 3, padding=1) bn sum(a) relu"))
    assert "never read" in e.message and "bn" in e.message and "-> y sum(y, short)" in e.hint
    assert (e.loc.line, e.loc.column) == (5, 25)  # the `bn` of the second line of the body


def test_an_aggregation_tree_has_one_edge_per_link():
    """DLA's tree: two levels of residual pairs, the root reading every child by name."""
    defs = """
layer unit(c: int) { conv(c, 3, padding=1) bn relu }
layer tree(c: int, levels: int) {
  if levels == 1 { unit(c) -> l unit(c) -> r concat(l, r) }
  else { tree(c, levels - 1) -> l tree(c, levels - 1) -> r concat(r, l) }
  conv(c, 1)
}"""
    n = archspec.network(net("tree(4, 2)", defs))
    assert not [x for x in n.nodes() if x.op in ("slice", "split", "identity")]
    assert sum(1 for x in n.nodes() if x.op == "concat") == 3
    assert n.graph.number_of_edges() == sum(len(n.inputs(x.name)) for x in n.nodes())


def test_a_channel_slice_of_any_range_is_a_view():
    n = archspec.network(net("conv(10, 1) -> a\n  slice(3, 10) -> hi\n  from a\n  slice(0, 3)\n  -> lo\n  concat(hi, lo)"))
    assert n.shape("slice1") == (7, 8, 8) and n.shape("slice2") == (3, 8, 8)
    gm = archspec.build(net("conv(10, 1) -> a\n  slice(3, 10)"))  # indexing: a view of the convolution's output
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [__import__("operator").getitem]


def test_names_carry_across_loop_iterations():
    n = archspec.network(net("let c = 2\n  for i in range(3) { let c = c * 2\n conv(c, 1) }\n  conv(c, 1)"))
    assert [x.shape[0] for x in n.nodes() if x.op == "conv"] == [4, 8, 16, 16]


def test_powers_logs_and_tensor_dims():
    assert evaluate(parse_expr("2 ** 3 ** 2"), {}) == 512
    assert evaluate(parse_expr("-2 ** 2"), {}) == -4
    assert evaluate(parse_expr("pow(2, 10) + int(log2(1024)) + int(log(1000, 10) + 0.5)"), {}) == 1024 + 10 + 3
    n = archspec.network(net("conv(4, 1) -> a\n  conv(channels(a) * 2 + height(a) + width(a), 1)"))
    assert n.shape(n.output) == (24, 8, 8)


@pytest.mark.parametrize("expr, words", [
    ("2 ** 1000", ["too large"]),
    ("0 ** -1", ["negative power"]),
    ("log(0)", ["positive"]),
    ("2.0 ** 5000", ["too large"]),
    ("channels(3)", ["needs a tensor"]),
])
def test_bad_powers_and_logs_are_located_errors(expr, words):
    with pytest.raises(SpecError) as e:
        evaluate(parse_expr(expr), {})
    assert all(w in e.value.message for w in words), e.value.message
    assert e.value.loc is not None


def test_a_size_parameter_takes_an_int_or_a_list():
    defs = "layer c(k: size) { conv(4, k, padding=0) }"
    assert archspec.network(net("c(3)", defs)).shape("c1.conv1") == (4, 6, 6)
    assert archspec.network(net("c([1, 3])", defs)).shape("c1.conv1") == (4, 8, 6)
    e = error(net('c("3")', defs))
    assert "must be a size" in e.message


@pytest.mark.parametrize("body, words", [
    ("from 3", ["from needs a tensor, got int 3"]),
    ("conv(4, 1) -> a\n  from b", ["unknown name 'b'"]),
    ("concat", ["'concat' is a merge", "concat(a, b)"]),
    ("conv(4, 1) -> a\n  concat(a, a)", ["reads the same tensor twice"]),
    ("conv(4, 1) -> a\n  concat(a, 2)", ["needs a tensor, got int 2"]),
    ("conv(4, 1) -> a\n  conv(5, 1) -> b\n  sum(a, b)", ["shapes cannot meet"]),
    ("-> len", ["function"]),
    ("block chain { -> a }", ["cannot go directly inside", "`-> name`"]),
])
def test_misused_tensors_are_located_errors(body, words):
    e = error(net(body))
    assert all(w in e.message + (e.hint or "") for w in words), (e.message, e.hint)
    assert e.loc is not None and e.loc.line >= 3


def test_a_tensor_name_that_is_a_keyword_is_a_syntax_error():
    e = error(net("conv(4, 1) -> stem"))
    assert "reserved word" in (e.hint or "") + e.message


@pytest.mark.parametrize("text, words", [
    ("layer concat(c: int) { conv(c, 1) }\nnetwork n() { input(3, 8, 8) concat(4) }", ["'concat' is a merge"]),
    ("layer apply() { relu }\nnetwork n() { input(3, 8, 8) apply }", ["'apply' is a word of the language"]),
    ("pattern p(layers: int = 2) { apply(1) }\nnetwork n() { input(3, 8, 8) block p { conv(4, 1) } }",
     ["given `layers`"]),
])
def test_a_name_the_language_gives_a_meaning_cannot_be_defined(text, words):
    e = error(text)
    assert all(w in e.message for w in words) and e.loc is not None and e.loc.line == 1


PAIR = """
# two branches of the current tensor, both given back: HRNet's modules give a list of branches this way
layer pair(c: int) { -> x conv(c, 1) -> a from x conv(c, 3, padding=1) -> b return [a, b] }
"""


def test_a_template_returns_several_tensors_to_a_let():
    n = archspec.network(net("let ys = pair(4)\n  concat(ys[1], ys[0])", PAIR))
    assert n.inputs("pair1.conv1") == n.inputs("pair1.conv2") == ["input"]  # the current tensor stayed
    assert n.inputs(n.output) == ["pair1.conv2", "pair1.conv1"]


def test_a_template_returns_one_tensor_to_a_call_and_a_let_takes_its_last_one():
    defs = "layer first(c: int) { conv(c, 1) -> a conv(c, 1) -> b concat(a, b) return a }\n" \
           "layer plain(c: int) { conv(c, 1) }"
    e = error(net("first(4)", defs))  # b and the concat are made for nothing
    assert "never read" in e.message
    n = archspec.network(net("let t = plain(4)\n  from t\n  relu", defs))
    assert n.inputs(n.output) == ["plain1.conv1"]


@pytest.mark.parametrize("body, defs, words", [
    ("return 3", "", ["only in one's own body"]),
    ("t", "layer t() { return 3 }", ["called as a layer, so it returns a tensor, not int 3", "let ys = t(...)"]),
    ("t", "layer t() { block chain { { return 1 } } }", ["only in one's own body"]),
    ("block p { conv(4, 1) }", "pattern p() { return 1 }", ["only in one's own body"]),
    ("conv(4, 1)", "layer max(c: int) { conv(c, 1) }", ["'max' is a function"]),
])
def test_return_outside_a_template_or_of_a_value_to_a_call_is_located(body, defs, words):
    e = error(net(body, defs))
    assert all(w in e.message + (e.hint or "") for w in words), (e.message, e.hint)
    assert e.loc is not None

