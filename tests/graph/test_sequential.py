"""SeqConv (`block seq`, `block window`, the `shortcut` mark, `residual(embedded=true)`): depth, a
training step that reaches every weight, Eq. 1 and Eq. 2 and the raw residual stream computed directly
(float64, outputs and gradients), the authors' initialisation and dropout placement, and located
errors. The SeqConv specs' parameter counts, MACs and builds are in `test_specs.py`."""

import copy
import gc
import math
import re
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import archspec
from archspec.errors import SpecError
from conftest import SPECS, assert_same_function, built


@pytest.mark.parametrize("name,depth", [("seqresnext24", 24), ("seqresnetb42", 42), ("seqresnetb22", 22)])
def test_imagenet_depth_is_above_the_name(name, depth):
    """The name counts a SeqConv layer as one layer; its groups run in sequence, so the longest path of
    weighted layers is far longer: that is the point of the paper ("the depth is drastically increased")."""
    assert archspec.summary(SPECS / f"{name}.arch").depth > depth


@pytest.mark.parametrize("name", ["seqresnet_k8r4", "seqresnet_k16r10", "seqresnetb_k16r7", "seqresnetb_k32r12n3",
                                  "seqconv_s2", "seqconv_s3", "seqconv_s4"])
def test_a_training_step_reaches_every_weight(name):
    """Every group of every sequential layer takes part: each parameter gets a gradient (on 8×8 inputs:
    which weights take part does not depend on the size)."""
    gm = copy.deepcopy(built(name)).train()  # its gradients are its own
    y = gm(torch.randn(2, 3, 8, 8))
    y.sum().backward()
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert all(p.grad is not None for p in gm.parameters())


def test_patterns_are_visible_in_graph_and_code():
    net = archspec.network(SPECS / "seqresnet_k8r4.arch")
    patterns = {e["edge"].pattern for _, _, e in net.graph.edges(data=True)}
    assert {"seq", "window", "residual"} <= patterns
    code = archspec.build(net).code
    assert "_window = " in code and "_shortcut = " in code


def test_initialisation_follows_the_authors():
    gm = archspec.build(SPECS / "seqresnet_k8r4.arch")
    convs = dict((n, m) for n, m in gm.named_modules() if isinstance(m, torch.nn.Conv2d))
    second = [m for n, m in convs.items() if re.match(r"block\d\.layer1\.seqconv2\.", n)]
    first = [m for n, m in convs.items() if re.match(r"block\d\.layer1\.seqconv1\.", n)]
    assert second and first
    assert all(m.weight.abs().sum() == 0 for m in second)  # the residual branch starts as nothing
    for m in first + [convs["stem.cbr1.conv1"]]:
        bound = math.sqrt(3) * math.sqrt(2 / (m.out_channels * m.kernel_size[0] * m.kernel_size[1]))
        assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound  # He-uniform, fan-out
    fc = gm.get_submodule("head.linear1")
    assert fc.weight.abs().max() <= math.sqrt(3 / 10) and fc.weight.abs().max() > 0.9 * math.sqrt(3 / 10)
    assert fc.bias.abs().sum() == 0
    # the bottleneck variant zeroes only the 3×3 of its second layer's groups
    gm = archspec.build(SPECS / "seqresnetb_k16r7.arch")
    for n, m in gm.named_modules():
        if re.match(r"block\d\.layer1\.seqconv2\.", n) and isinstance(m, torch.nn.Conv2d):
            assert (m.weight.abs().sum() == 0) == (m.kernel_size == (3, 3)), n


def test_dropout_on_every_group_input_but_the_first_layers():
    net = archspec.network(SPECS / "seqresnet_k8r4.arch")
    drops = [n.name for n in net.nodes() if n.op == "dropout2d"]
    assert not [d for d in drops if d.startswith("stem.")]
    assert "head.cbr1.dropout2d1" in drops
    # every group's 3×3 outside the stem (the down-sampling blocks' downsizing convs are grouped)
    groups = [n.name for n in net.nodes() if n.op == "conv" and n.args.kernel == 3 and n.args.groups == 1
              and not n.name.startswith("stem.")]
    assert len(groups) == 2 * (64 + 128 + 192) // 8 + (64 + 64) // 8
    assert len(drops) == len(groups) + 1
    assert all(n.args.p == 0.1 for n in net.nodes() if n.op == "dropout2d")
    imagenet = archspec.network(SPECS / "seqresnetb22.arch", size=32)
    assert not any(n.op.startswith("dropout") for n in imagenet.nodes())


# ---- small layers, computed directly -------------------------------------------------------------

def _net(body: str, c: int = 6) -> str:
    return f"""
layer cbr(out: int, mark: bool = true) {{
  conv(out, 3, padding=1)
  if mark {{ shortcut }}
  bn relu
}}
network n() {{
  input({c}, 5, 5)
  {body}
}}"""


def _bn(x, bn, eps=1e-5):
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def _group(gm, prefix, x, shortcut=None):
    """conv3×3 (+ a raw shortcut) → BN → ReLU; returns (activated, raw)."""
    m = gm.get_submodule(prefix)
    raw = F.conv2d(x, m.conv1.weight, padding=1)
    if shortcut is not None:
        raw = raw + shortcut
    return F.relu(_bn(raw, m.bn1)), raw


def _seqconv(gm, prefix, x, groups, width=None, shortcut=None):
    """Eq. 1 (width None) or Eq. 2: group i reads [x, y_1 … y_{i-1}], or its last `width` channels."""
    history, outs, raws = x, [], []
    for i in range(groups):
        inp = history if width is None else history[:, -width:]
        s = None if shortcut is None else shortcut[:, 2 * i:2 * i + 2]
        y, r = _group(gm, f"{prefix}.layer{i + 1}", inp, s)
        history = torch.cat([history, y], dim=1)
        outs.append(y)
        raws.append(r)
    return torch.cat(outs, dim=1), torch.cat(raws, dim=1)


def _randomise(gm):
    """Random weights; small batch-norm shifts, so that no ReLU is dead for the whole batch."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in gm.named_parameters():
            p.copy_(torch.randn_like(p) * (0.1 if name.endswith("bias") else 1.0))
    return gm


def _check(gm, want_fn, c=6):
    assert_same_function(gm, want_fn, torch.randn(4, c, 5, 5, dtype=torch.float64))  # every group takes part


@pytest.mark.parametrize("words,width,groups", [
    ("window", 6, 4),          # Eq. 2 with the default window: as wide as the input
    ("window(4)", 4, 4),       # narrower: the first group reads the input's tail
    ("window(width=10)", 10, 4),  # wider than the input: early groups read all their history
    ("seq", None, 3),          # Eq. 1
])
def test_sequential_layer_computes_eq_1_and_2(words, width, groups):
    gm = _randomise(archspec.build(_net(f"block {words} concat {{ repeat {groups} {{ cbr(2) }} }}")).double())
    _check(gm.train(), lambda x: _seqconv(gm, "block1", x, groups, width)[0])
    assert archspec.summary(_net(f"block {words} {{ repeat {groups} {{ cbr(2) }} }}")).output_shape == (2 * groups, 5, 5)


def test_embedded_residual_adds_the_raw_stream_before_each_groups_norm():
    """A stem whose raw tensor starts the stream, then a SeqConv residual block of two windowed layers:
    the second layer's group i adds channels [2i, 2i+2) of the raw stream before its batch norm; the
    block's raw output is the next block's stream."""
    pair = "layer pair() { block window { repeat 3 { cbr(2, mark=false) } } block window { repeat 3 { cbr(2) } } }"
    body = "cbr(6) " + " ".join(["block residual(embedded=true) { pair }"] * 2)
    gm = _randomise(archspec.build(pair + _net(body)).double()).train()

    def direct(x):
        a, raw = _group(gm, "cbr1", x)
        for b in ("block1", "block2"):
            a, _ = _seqconv(gm, f"{b}.layer1.block1", a, 3, 6)
            a, raw = _seqconv(gm, f"{b}.layer1.block2", a, 3, 6, shortcut=raw)
        return a
    _check(gm, direct)


# ---- combinations with other merges --------------------------------------------------------------

COMBOS = [
    # a windowed DelugeNet block: each composite layer reads the CLDC of the last three outputs
    ("layer composite(n: int) { bn relu conv(n, 1) bn relu conv(n, 3, padding=1) }",
     "conv(8, 1) block window(24) crossdepthwise { repeat 6 { composite(8) } }", "crossdepthwise"),
    ("layer composite(n: int) { bn relu conv(n, 1) bn relu conv(n, 3, padding=1) }",
     "conv(8, 1) block seq crossdepthwise { repeat 4 { composite(8) } }", "crossdepthwise"),
    ("layer composite(n: int) { bn relu conv(n, 1) bn relu conv(n, 3, padding=1) }",
     "conv(8, 1) block window(16) sum { repeat 5 { composite(8) } }", "add"),
    # a gradual DenseNet-style layer: DenseNet-BC composite units update the segments, CLDC merges
    ("layer composite(n: int) { bn relu conv(4 * n, 1) bn relu conv(n, 3, padding=1) }",
     "conv(12, 1) block gradual(3) crossdepthwise { composite(4) }", "crossdepthwise"),
]


@pytest.mark.parametrize("layers,body,op", COMBOS)
def test_pattern_and_merge_combinations(layers, body, op):
    text = layers + f"\nnetwork n() {{ input(3, 8, 8) {body} gap linear(5) }}"
    net = archspec.network(text)
    s = archspec.summary(net)
    assert op in {n.op for n in net.nodes()}
    gm = archspec.build(net)
    assert sum(p.numel() for p in gm.parameters()) == s.params
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        y = gm.eval()(torch.randn(2, 3, 8, 8))
    assert fc.get_total_flops() == 2 * 2 * s.macs and y.shape == (2, 5)


def test_windowed_delugenet_reads_the_last_three_outputs():
    text = COMBOS[0][0] + "\nnetwork n() { input(3, 8, 8) " + COMBOS[0][1] + " }"
    net = archspec.network(text)
    merges = [n for n in net.nodes() if n.op == "crossdepthwise"]
    assert [len(net.inputs(m.name)) for m in merges] == [2, 3, 3, 3, 3, 6]  # layers 2–6, then the output


# ---- errors ----------------------------------------------------------------------------------------

def _error(text: str, **overrides) -> SpecError:
    with pytest.raises(SpecError) as e:
        archspec.network(text, **overrides)
    return e.value


def test_window_wider_than_the_history():
    e = _error(_net("block window(20) { repeat 3 { cbr(2) } }"))
    assert "window(20) is wider than the whole history" in str(e) and "10 channels" in str(e)
    assert e.loc.line == 9 and "use `seq`" in e.render()


def test_window_that_cuts_an_inflow_of_an_equal_shape_merge():
    e = _error(_net("block window(9) sum { repeat 3 { cbr(6) } }"))
    assert "would cut an inflow of 6 channels" in str(e) and "multiple of 6" in e.render()


def test_groups_not_dividing_the_layer_width_is_reported_where_the_user_calls():
    text = 'use "lib/seqconv.arch"\nnetwork n() {\n  input(3, 8, 8)\n  seqconv(20, 8)\n}\n'
    e = _error(text.replace('lib/seqconv.arch', str(SPECS / "lib/seqconv.arch")))
    assert "whole number of groups of k channels" in str(e)
    assert (e.loc.line, e.loc.column) == (4, 3)
    assert "out = 20, k = 8" in e.render() and "seqconv.arch" in e.render()


def test_network_parameters_that_break_a_library_assert():
    e = _error(str(SPECS / "seqresnet_k8r4.arch"), k=6)
    assert "whole number of groups" in str(e) and "out = 64, k = 6" in e.render()


def test_grouped_conv_not_dividing_channels():
    e = _error(_net("conv(8, 3, groups=4)"))
    assert "groups=4 must divide both the input channels (6)" in str(e)


def test_shortcut_marks_that_do_not_add_the_whole_stream():
    e = _error(_net("block residual(embedded=true) { block1 }").replace(
        "network n", "layer block1() { block window { repeat 2 { cbr(2) } } }\nnetwork n"))
    assert "add 4 of the stream's 6 channels" in str(e)
    e = _error(_net("block residual(embedded=true) { cbr(2, mark=false) }"))
    assert "has no `shortcut` mark" in str(e)
    e = _error(_net("block residual(embedded=true) { cbr(8) }"))
    assert "channels [0, 8) of a residual stream of only 6" in str(e)
    assert e.loc.line == 4  # the mark inside the layer template


def test_embedded_residual_needs_sum_and_shortcut_takes_no_arguments():
    e = _error(_net("block residual(embedded=true) concat { cbr(6) }"))
    assert "its merge is sum" in str(e)
    e = _error(_net("conv(6, 1) shortcut(2)"))
    assert "shortcut takes no arguments" in str(e)


def test_shortcut_outside_an_embedded_residual_only_marks():
    net = archspec.network(_net("cbr(6) cbr(6)"))
    assert "add" not in {n.op for n in net.nodes()}


def _window_cpu_seconds(depth: int) -> float:
    """CPU seconds to elaborate a window block `depth` groups deep (the cyclic garbage collector paused,
    so that its full passes over the test process's heap are not counted as elaboration)."""
    text = (f"network w() {{\n  input(3, 8, 8)\n  block window(width=3) {{ repeat {depth} {{ conv(3, 1) }} }}\n}}\n")
    gc.collect()
    gc.disable()
    try:
        start = time.thread_time()
        net = archspec.network(text)
        spent = time.thread_time() - start
    finally:
        gc.enable()
    assert len([n for n in net.nodes() if n.op == "conv"]) == depth
    return spent


def test_m3_window_elaboration_is_linear_in_depth():
    """Each group of a window looks at its window only, not its whole history: 20,000 groups take about
    ten times the CPU of 2,000 (a quadratic elaboration took 100 times, and 112 s for `archspec check`)."""
    _window_cpu_seconds(200)  # the first elaboration loads the vocabulary
    small = min(_window_cpu_seconds(2_000) for _ in range(2))
    large = _window_cpu_seconds(20_000)
    assert large < 20.0, large
    assert large / small < 20, (small, large)
