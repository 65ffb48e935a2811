"""The `sparse` pattern (SparseNet): layer i reads the merge of the tensors at offsets 1, 2, 4, … back
(the block input is tensor 0), and the block's output is that merge for a virtual layer n + 1."""

from __future__ import annotations

import pytest
import torch

import archspec
from archspec import SpecError
from conftest import assert_same_function


def spec(n: int, *, width: int = 2, channels: int = 4, pattern: str = "sparse", merge: str = "") -> str:
    return (f"network n() {{\n  input({channels}, 8, 8)\n"
            f"  block {pattern} {merge} {{ repeat {n} {{ conv({width}, 3, padding=1) }} }}\n}}\n")


def index_of(net, name: str) -> int:
    """0 for the block input, i for a tensor made in the block's layer i."""
    if name == net.input:
        return 0
    return int(net.node(name).layer.rsplit("layer", 1)[1])


def read(net, tensor: str) -> list[int]:
    """The tensors (by index) a reader of `tensor` reads: the inflows of a merge, or `tensor` itself."""
    if net.node(tensor).role == "merge":
        return [index_of(net, p) for p in net.inputs(tensor)]
    return [index_of(net, tensor)]


def wiring(net) -> dict:
    """Layer i → the tensors its conv reads, and "out" → those the block's output is made of."""
    got = {index_of(net, n.name): read(net, net.inputs(n.name)[0]) for n in net.nodes() if n.op == "conv"}
    got["out"] = read(net, net.output)
    return got


# Offsets 1, 2, 4, 8 back from each layer, worked out by hand; "out" is the virtual layer 9.
WITH_INPUT = {1: [0], 2: [0, 1], 3: [1, 2], 4: [0, 2, 3], 5: [1, 3, 4], 6: [2, 4, 5], 7: [3, 5, 6],
              8: [0, 4, 6, 7], "out": [1, 5, 7, 8]}
# Without the input, index 0 is never aggregated: layer 1 reads the block input alone, the rest lose it.
WITHOUT_INPUT = {1: [0], 2: [1], 3: [1, 2], 4: [2, 3], 5: [1, 3, 4], 6: [2, 4, 5], 7: [3, 5, 6],
                 8: [4, 6, 7], "out": [1, 5, 7, 8]}


@pytest.mark.parametrize("include_input,want", [(True, WITH_INPUT), (False, WITHOUT_INPUT)])
def test_each_layer_reads_the_outputs_at_exponential_offsets(include_input, want):
    net = archspec.network(spec(8, pattern=f"sparse(include_input={str(include_input).lower()})"))
    assert wiring(net) == want
    # a single inflow is read as it is: no merge node for it
    merges = {n.layer for n in net.nodes() if n.role == "merge"}
    for i, producers in want.items():
        if i != "out":
            assert (f"block1.layer{i}" in merges) == (len(producers) > 1)
    assert all(n.pattern == "sparse" for n in net.nodes() if n.role == "merge")


def test_a_short_block_and_an_empty_one():
    assert wiring(archspec.network(spec(1))) == {1: [0], "out": [0, 1]}
    assert wiring(archspec.network(spec(2))) == {1: [0], 2: [0, 1], "out": [1, 2]}
    net = archspec.network(spec(0))
    assert net.output == net.input  # the virtual layer 1 reads the block input alone


# Five layers of conv(2, 3×3) on a 4-channel input with concat. Layer i reads (by the table above)
# 1: x0 = 4 ch, 2: x0 x1 = 6, 3: x1 x2 = 4, 4: x0 x2 x3 = 8, 5: x1 x3 x4 = 6; the output is x2 x4 x5 = 6.
# Without the input: 1: x0 = 4, 2: x1 = 2, 3: x1 x2 = 4, 4: x2 x3 = 4, 5: x1 x3 x4 = 6; output 6.
@pytest.mark.parametrize("include_input,in_widths", [(True, [4, 6, 4, 8, 6]), (False, [4, 2, 4, 4, 6])])
def test_shapes_and_parameters_with_concat(include_input, in_widths):
    text = spec(5, pattern=f"sparse(include_input={str(include_input).lower()})")
    net = archspec.network(text)
    convs = [n for n in net.nodes() if n.op == "conv"]
    assert [net.shape(net.inputs(n.name)[0])[0] for n in convs] == in_widths
    assert net.shape(net.output) == (6, 8, 8)
    params = sum(9 * 2 * c for c in in_widths)  # 3×3 kernels, 2 filters, no bias
    assert archspec.summary(net).params == params
    gm = archspec.build(net)
    assert sum(p.numel() for p in gm.parameters()) == params


def convs_by_layer(gm) -> dict[int, torch.nn.Module]:
    return {int(n.meta["layer"].rsplit("layer", 1)[1]): gm.get_submodule(n.target)
            for n in gm.graph.nodes if n.meta.get("op") == "conv"}


def test_it_computes_the_sparse_aggregation_with_concat(one_thread):
    gm = archspec.build(spec(5)).double()
    c = convs_by_layer(gm)

    def by_hand(x):
        x1 = c[1](x)
        x2 = c[2](torch.cat([x, x1], 1))
        x3 = c[3](torch.cat([x1, x2], 1))
        x4 = c[4](torch.cat([x, x2, x3], 1))
        x5 = c[5](torch.cat([x1, x3, x4], 1))
        return torch.cat([x2, x4, x5], 1)

    assert_same_function(gm, by_hand, torch.randn(2, 4, 8, 8, dtype=torch.float64))


def test_it_combines_with_sum_where_shapes_agree(one_thread):
    text = spec(4, width=4, merge="sum")
    net = archspec.network(text)
    assert net.shape(net.output) == (4, 8, 8)
    assert {n.op for n in net.nodes() if n.role == "merge"} == {"add"}
    assert archspec.summary(net).params == 4 * 9 * 4 * 4
    gm = archspec.build(text).double()
    c = convs_by_layer(gm)

    def by_hand(x):
        x1 = c[1](x)
        x2 = c[2](x + x1)
        x3 = c[3](x1 + x2)
        x4 = c[4](x + x2 + x3)
        return x1 + x3 + x4

    assert_same_function(gm, by_hand, torch.randn(2, 4, 8, 8, dtype=torch.float64))


def test_it_combines_with_crossdepthwise(one_thread):
    text = spec(4, width=4, merge="crossdepthwise")
    net = archspec.network(text)
    merges = [n for n in net.nodes() if n.role == "merge"]
    assert [len(net.inputs(m.name)) for m in merges] == [2, 2, 3, 3]  # layers 2, 3, 4 and the output
    # a crossdepthwise merge has a weight and a bias per channel of each inflow: 2·4 per inflow
    params = 4 * 9 * 4 * 4 + 2 * 4 * (2 + 2 + 3 + 3)
    assert archspec.summary(net).params == params
    gm = archspec.build(text)
    assert sum(p.numel() for p in gm.parameters()) == params
    y = gm(torch.randn(3, 4, 8, 8))
    assert y.shape == (3, 4, 8, 8) and torch.isfinite(y).all()


def test_sum_with_disagreeing_shapes_is_a_located_error():
    text = spec(3, width=2, channels=4, merge="sum")  # layer 2 would add the 4-channel input to 2 channels
    with pytest.raises(SpecError) as e:
        archspec.network(text)
    assert "shapes cannot meet" in e.value.message
    assert (e.value.loc.line, e.value.loc.column) == (3, 3)  # the block statement
    assert "^" in e.value.render({e.value.loc.file: text})


@pytest.mark.parametrize("args,needle,words", [
    ("include_input=3", "include_input=3", ["pattern 'sparse'", "must be true or false, got int 3"]),
    ("offsets=2", "offsets=2", ["pattern 'sparse' has no argument 'offsets'", "include_input"]),
    ("true, false", "false", ["takes at most 1 argument (include_input)"]),
])
def test_a_bad_argument_is_a_located_error(args, needle, words):
    text = spec(2, pattern=f"sparse({args})")
    with pytest.raises(SpecError) as e:
        archspec.network(text)
    line = text.splitlines()[2]
    assert (e.value.loc.line, e.value.loc.column) == (3, line.index(needle) + 1)
    said = f"{e.value.message}\n{e.value.hint or ''}"
    for w in words:
        assert w in said, (w, said)
    rendered = e.value.render({e.value.loc.file: text}).splitlines()
    assert rendered[1] == "    " + line and rendered[2].index("^") - 4 == line.index(needle)


def test_another_name_for_it_is_pointed_at_sparse():
    with pytest.raises(SpecError) as e:
        archspec.network(spec(2, pattern="sparsenet"))
    assert "unknown connection pattern 'sparsenet'" in e.value.message and "sparse" in (e.value.hint or "")
