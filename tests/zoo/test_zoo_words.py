"""The words that reach the torchvision classifier zoo (activations, layer and group norm, the full
arguments of bn and the pools, adaptive pools, layer scale, stochastic depth, channel split and
shuffle): each compiled module computes, in float64, what a hand computation with the same weights
does, costs what the summary says, refuses bad shapes with a located SpecError, survives the lean
memory pass (the recomputable activations) and the standalone file."""

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.compiler import modules as custom
from archspec.compiler.codegen import lowered
from archspec.compiler.passes.fused import ConcatNormActConv
from archspec.compiler.resolve import activation
from archspec.graph.ops import OPS
from archspec.errors import SpecError
from conftest import assert_same_function


def _randomised(gm):
    """`gm` in float64 with every parameter drawn afresh, so that no weight sits at its start value."""
    gm = gm.double()
    with torch.no_grad():
        for p in gm.parameters():
            p.copy_(torch.randn_like(p))
    return gm


def _located_error(text: str, needle: str) -> SpecError:
    """The SpecError `text` raises, checked to point at the line holding `needle`."""
    with pytest.raises(SpecError) as e:
        archspec.network(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)
    assert e.value.loc is not None and e.value.loc.line == line, e.value.render()
    return e.value


def _count_matches(text: str) -> int:
    """The summary's parameter count, checked against the built module's."""
    n = archspec.summary(text).params
    assert n == sum(p.numel() for p in archspec.build(text).parameters())
    return n


# --- activations --------------------------------------------------------------------------------------

def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {  # call → the function by hand
    "relu6": lambda x: x.clamp(0, 6),
    "gelu": _gelu,
    'gelu(approximate="tanh")': _gelu_tanh,
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "hardswish": lambda x: x * (x + 3).clamp(0, 6) / 6,
    "hardsigmoid": lambda x: (x + 3).clamp(0, 6) / 6,
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "leaky_relu(negative_slope=0.2)": lambda x: torch.where(x > 0, x, 0.2 * x),
}


@pytest.mark.parametrize("call", list(ACTIVATIONS))
def test_activation_computes_its_formula(call):
    """Outputs to 1e-10 and every gradient to 1e-9, but hardsigmoid's: torch's own backward multiplies by
    1/6 rounded to single precision, ~3e-8 off in float64."""
    text = f"network n() {{ input(3, 6, 6) stem {{ conv(4, 3, padding=1, bias=true) {call} }} }}"
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text))
    conv = gm.get_submodule("stem.conv1")
    x = 2 * torch.randn(3, 3, 6, 6, dtype=torch.float64)
    pre = F.conv2d(x, conv.weight, conv.bias, padding=1)
    # the inputs reach every piece of the piecewise ones: below -3, between, above 6
    assert (pre < -3).any() and (pre > 6).any() and ((pre > 0) & (pre < 3)).any()
    x.requires_grad_(True)
    got, want = gm(x), ACTIVATIONS[call](F.conv2d(x, conv.weight, conv.bias, padding=1))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    tol = 1e-7 if call == "hardsigmoid" else 1e-9
    for a, b in zip(torch.autograd.grad(got.square().sum(), [x, *gm.parameters()]),
                    torch.autograd.grad(want.square().sum(), [x, *gm.parameters()])):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert _count_matches(text) == 4 * 3 * 9 + 4


DENSE = """
layer unit() {{ bn {act} conv(4, 3, padding=1) }}
network n() {{
  input(3, 6, 6)
  stem {{ conv(4, 3, padding=1) }}
  block dense concat {{ repeat 2 {{ unit }} }}
  head {{ bn {act} gap linear(3) }}
}}"""


@pytest.mark.parametrize("call, fused", [("relu6", True), ("gelu", True), ("sigmoid", True), ("hardswish", True),
                                         ("hardsigmoid", True), ("leaky_relu", True),
                                         ('gelu(approximate="tanh")', False), ("leaky_relu(0.2)", False)])
def test_lean_memory_gives_the_plain_numbers(call, fused):
    """A dense block with the activation: the lean pass fuses its default form (recomputed in backward
    by the op's own backward) and leaves a form with arguments to autograd; either way outputs, every
    gradient and the running statistics are the plain graph's."""
    text = DENSE.format(act=call)
    torch.manual_seed(0)
    plain = _randomised(archspec.build(text)).train()
    lean = archspec.build(text, memory="lean").double().train()
    lean.load_state_dict(plain.state_dict())
    made = [m for m in lean.modules() if isinstance(m, ConcatNormActConv)]
    assert len(made) == (1 if fused else 0)  # the second layer reads a concatenation; the first, the stem
    if fused:
        assert made[0].act == call
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    y_plain, y_lean = plain(x), lean(x)
    torch.testing.assert_close(y_lean, y_plain, rtol=1e-10, atol=1e-10)
    g_plain = torch.autograd.grad(y_plain.square().sum(), [x, *plain.parameters()])
    g_lean = torch.autograd.grad(y_lean.square().sum(), [x, *lean.parameters()])
    for a, b in zip(g_lean, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    for (k, a), b in zip(lean.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=k)


def test_recomputable_form_is_the_default_form():
    """`activation(op)` stands for the call a memory pass may recompute: the one with no arguments."""
    x = 4 * torch.randn(50, dtype=torch.float64)
    for kind in ("gelu", "leaky_relu"):
        forward, _ = activation(OPS[kind])
        fn, extra, kwargs = lowered(OPS[kind], OPS[kind].Args(), [(50,)])
        assert not extra and not kwargs
        torch.testing.assert_close(forward(x), fn(x))
    assert lowered(OPS["gelu"], OPS["gelu"].Args(approximate="tanh"), [(50,)])[2] == {"approximate": "tanh"}
    assert lowered(OPS["leaky_relu"], OPS["leaky_relu"].Args(negative_slope=0.2), [(50,)])[2] == {
        "negative_slope": 0.2}


def test_activation_arguments_are_checked():
    e = _located_error('network n() {\n  input(3, 4, 4)\n  stem { gelu(approximate="erf") }\n}', "gelu")
    assert "approximate" in e.message and "tanh" in e.message
    e = _located_error("network n() {\n  input(3, 4, 4)\n  stem { leaky_relu(-1) }\n}", "leaky_relu")
    assert "negative_slope" in e.message


# --- normalisation ---------------------------------------------------------------------------------------

def test_layernorm_normalises_channels_at_each_position():
    text = ("network n() { input(4, 5, 5) stem { conv(6, 3, padding=1) layernorm } "
            "head { gap layernorm(eps=1e-3) linear(2) } }")
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text))
    conv, ln, ln_flat, fc = (gm.get_submodule(p) for p in ("stem.conv1", "stem.layernorm1", "head.layernorm1",
                                                            "head.linear1"))
    assert ln.weight.shape == (6,) and ln.eps == 1e-6 and ln_flat.eps == 1e-3

    def by_hand(x):
        h = F.conv2d(x, conv.weight, padding=1)
        mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-6) * ln.weight[:, None, None] + ln.bias[:, None, None]
        v = h.mean(dim=(2, 3))
        v = (v - v.mean(1, keepdim=True)) / torch.sqrt(v.var(1, unbiased=False, keepdim=True) + 1e-3)
        return (v * ln_flat.weight + ln_flat.bias) @ fc.weight.T + fc.bias

    assert_same_function(gm, by_hand, torch.randn(3, 4, 5, 5, dtype=torch.float64))
    assert _count_matches(text) == 6 * 4 * 9 + 2 * 6 + 2 * 6 + 6 * 2 + 2
    fresh = archspec.build(text).get_submodule("stem.layernorm1")
    assert (fresh.weight == 1).all() and not fresh.bias.any()


def test_groupnorm_normalises_each_group_of_channels():
    text = "network n() { input(3, 4, 4) stem { conv(6, 3, padding=1) groupnorm(3, eps=1e-4) } }"
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text))
    conv, gn = gm.get_submodule("stem.conv1"), gm.get_submodule("stem.groupnorm1")

    def by_hand(x):
        h = F.conv2d(x, conv.weight, padding=1)
        g = h.reshape(h.shape[0], 3, -1)
        g = (g - g.mean(2, keepdim=True)) / torch.sqrt(g.var(2, unbiased=False, keepdim=True) + 1e-4)
        return g.reshape(h.shape) * gn.weight[:, None, None] + gn.bias[:, None, None]

    assert_same_function(gm, by_hand, torch.randn(2, 3, 4, 4, dtype=torch.float64))
    assert _count_matches(text) == 6 * 3 * 9 + 2 * 6


def test_norm_shape_errors_are_located():
    e = _located_error("network n() {\n  input(3, 4, 4)\n  stem { conv(6, 1)\n    groupnorm(4) }\n}", "groupnorm")
    assert "groupnorm groups=4 must divide the input channels (6)" in e.message


def test_bn_takes_eps_momentum_and_affine():
    text = "network n() { input(3, 4, 4) stem { conv(5, 1) bn(eps=1e-3, momentum=0.3, affine=false) } }"
    assert _count_matches(text) == 5 * 3
    assert _count_matches(text.replace(", affine=false", "")) == 5 * 3 + 2 * 5
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text)).train()
    conv, bn = gm.get_submodule("stem.conv1"), gm.get_submodule("stem.bn1")
    assert bn.weight is None and bn.bias is None and bn.eps == 1e-3 and bn.momentum == 0.3
    x = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    h = F.conv2d(x, conv.weight)
    mean, var = h.mean(dim=(0, 2, 3)), h.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(gm(x), (h - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-3))
    n = 4 * 4 * 4
    torch.testing.assert_close(bn.running_mean, 0.3 * mean)
    torch.testing.assert_close(bn.running_var, 0.7 + 0.3 * var * n / (n - 1))


def test_bn_defaults_are_unchanged():
    gm = archspec.build("network n() { input(3, 4, 4) stem { bn } }")
    assert repr(gm.get_submodule("stem.bn1")) == repr(torch.nn.BatchNorm2d(3))


# --- pooling ----------------------------------------------------------------------------------------------

def _torch_pool_size(size, k, s, p, ceil):
    try:
        return F.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, ceil_mode=ceil).shape[-1]
    except RuntimeError:
        return None


def test_pool_shapes_follow_torch_in_both_rounding_modes():
    """Over a grid of sizes, kernels, strides and paddings, the shape rule gives torch's output size, or
    refuses exactly where torch does; in ceil mode a last window starting past the input and its left
    padding is dropped."""
    seen_ceil_differs = False
    for op in ("maxpool", "avgpool"):
        Args = OPS[op].Args
        for ceil in (False, True):
            for size in range(1, 9):
                for k in range(1, 5):
                    for s in range(1, 4):
                        for p in range(0, k // 2 + 1):
                            want = _torch_pool_size(size, k, s, p, ceil)
                            a = Args(kernel=k, stride=s, padding=p, ceil_mode=ceil)
                            if want is None:
                                with pytest.raises(ValueError):
                                    OPS[op].shape([(1, size, size)], a)
                                continue
                            assert OPS[op].shape([(1, size, size)], a) == (1, want, want), (op, size, k, s, p, ceil)
                            seen_ceil_differs |= ceil and want != _torch_pool_size(size, k, s, p, False)
    assert seen_ceil_differs


def test_avgpool_count_include_pad_and_ceil_mode():
    text = ("network n() { input(2, 6, 6) stem { conv(3, 1, bias=true) "
            "avgpool(3, stride=2, padding=1, ceil_mode=true, count_include_pad=false) "
            "maxpool(3, stride=2, ceil_mode=true) } }")
    # 6 → ⌈(6+2−3)/2⌉+1 = 4 (the last window starts in the right padding), then ⌈(4−3)/2⌉+1 = 2
    assert archspec.summary(text).output_shape == (3, 2, 2)
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text))
    conv = gm.get_submodule("stem.conv1")

    def by_hand(x):
        h = F.conv2d(x, conv.weight, conv.bias)
        padded = F.pad(h, (1, 2, 1, 2))  # the padding on the left, the last window's overhang on the right
        real = F.pad(torch.ones_like(h[:, :1]), (1, 2, 1, 2))
        sums = padded.unfold(2, 3, 2).unfold(3, 3, 2).sum(dim=(-1, -2))
        avg = sums / real.unfold(2, 3, 2).unfold(3, 3, 2).sum(dim=(-1, -2))  # the input's values alone
        return F.pad(avg, (0, 1, 0, 1), value=-math.inf).unfold(2, 3, 2).unfold(3, 3, 2).amax(dim=(-1, -2))

    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    assert by_hand(x).shape == (2, 3, 2, 2)
    assert_same_function(gm, by_hand, x)


def _adaptive_by_hand(h, size, reduce):
    n_h, n_w = h.shape[-2:]
    rows = []
    for i in range(size[0]):
        r0, r1 = (i * n_h) // size[0], -((-(i + 1) * n_h) // size[0])
        cols = [reduce(h[..., r0:r1, (j * n_w) // size[1]:-((-(j + 1) * n_w) // size[1])])
                for j in range(size[1])]
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


@pytest.mark.parametrize("word, size, reduce", [
    ("adaptive_avgpool(3)", (3, 3), lambda t: t.mean(dim=(-1, -2))),
    ("adaptive_avgpool([2, 4])", (2, 4), lambda t: t.mean(dim=(-1, -2))),
    ("adaptive_maxpool([4, 1])", (4, 1), lambda t: t.amax(dim=(-1, -2))),
])
def test_adaptive_pools_reach_their_size(word, size, reduce):
    text = f"network n() {{ input(2, 7, 5) stem {{ conv(3, 1) {word} }} head {{ linear(2) }} }}"
    assert archspec.summary(text).params == 3 * 2 + 3 * size[0] * size[1] * 2 + 2
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text))
    conv, fc = gm.get_submodule("stem.conv1"), gm.get_submodule("head.linear1")
    assert_same_function(gm, lambda x: _adaptive_by_hand(F.conv2d(x, conv.weight), size, reduce).flatten(1)
                         @ fc.weight.T + fc.bias, torch.randn(2, 2, 7, 5, dtype=torch.float64))


def test_adaptive_pool_size_errors_are_located():
    e = _located_error("network n() {\n  input(2, 7, 5)\n  stem { adaptive_avgpool([1, 2, 3]) }\n}", "adaptive")
    assert "must be an int or a list of two ints" in e.message
    e = _located_error("network n() {\n  input(2, 7, 5)\n  stem { adaptive_maxpool(0) }\n}", "adaptive")
    assert "must be positive" in e.message


# --- layer scale, stochastic depth ----------------------------------------------------------------------

def test_scale_multiplies_each_channel_and_is_shaped_as_convnext_layer_scale():
    text = "network n() { input(3, 4, 4) stem { conv(5, 1) scale(1e-6) } }"
    assert _count_matches(text) == 5 * 3 + 5
    fresh = archspec.build(text).get_submodule("stem.scale1")
    assert fresh.weight.shape == (5, 1, 1) and torch.equal(fresh.weight, torch.full((5, 1, 1), 1e-6))
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text))
    conv, sc = gm.get_submodule("stem.conv1"), gm.get_submodule("stem.scale1")
    assert_same_function(gm, lambda x: F.conv2d(x, conv.weight) * sc.weight.flatten()[None, :, None, None],
                         torch.randn(2, 3, 4, 4, dtype=torch.float64))
    e = _located_error("network n() {\n  input(3, 4, 4)\n  head { gap\n    scale }\n}", "scale")
    assert "C×H×W" in e.message


RESIDUAL_DROP = """
layer unit(p: float) { conv(4, 3, padding=1) drop_path(p) }
network n(p: float = 0.5) {
  input(4, 3, 3)
  block residual { repeat 2 { unit(p) } }
}"""


def test_drop_path_drops_whole_samples_in_training_only():
    assert _count_matches(RESIDUAL_DROP) == 2 * 4 * 4 * 9
    torch.manual_seed(0)
    gm = _randomised(archspec.build(RESIDUAL_DROP))
    x = torch.randn(64, 4, 3, 3, dtype=torch.float64)
    convs = [gm.get_submodule(f"block1.layer{i}.conv1") for i in (1, 2)]

    def by_hand(x, masks):
        for conv, m in zip(convs, masks):
            x = x + F.conv2d(x, conv.weight, padding=1) * m[:, None, None, None]
        return x

    torch.testing.assert_close(gm.eval()(x), by_hand(x, [torch.ones(64, dtype=torch.float64)] * 2))
    gm.train()
    torch.manual_seed(1)
    got = gm(x)
    torch.manual_seed(1)  # torchvision's stochastic_depth(p, "row"): a Bernoulli(1−p) per sample, over 1−p
    masks = [torch.empty(64, 1, 1, 1, dtype=torch.float64).bernoulli_(0.5).div_(0.5).flatten() for _ in range(2)]
    assert 0 < int((masks[0] == 0).sum()) < 64  # some samples dropped, some kept
    torch.testing.assert_close(got, by_hand(x, masks))


def test_drop_path_ends_in_identity_or_zero_at_the_bounds():
    x = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    for p, want in ((0.0, lambda x, y: y), (1.0, lambda x, y: x)):
        gm = archspec.build(RESIDUAL_DROP, p=p).double().train()
        plain = gm.eval()(x)
        torch.testing.assert_close(gm.train()(x), want(x, plain))


def test_drop_path_draws_its_mask_where_the_input_lives():
    """On a meta tensor (no data, its own device) any mask made elsewhere would fail to combine."""
    m = custom.DropPath(0.3).train()
    y = m(torch.empty(5, 2, 3, 3, device="meta", dtype=torch.bfloat16))
    assert y.device.type == "meta" and y.dtype == torch.bfloat16 and y.shape == (5, 2, 3, 3)


def test_drop_path_needs_a_probability():
    e = _located_error("network n() {\n  input(4, 3, 3)\n  stem { drop_path }\n}", "drop_path")
    assert "needs argument 'p'" in e.message
    e = _located_error("network n() {\n  input(4, 3, 3)\n  stem { drop_path(1.5) }\n}", "drop_path")
    assert "at most 1" in e.message


# --- channel split and shuffle --------------------------------------------------------------------------

def test_split_takes_one_equal_part_of_the_channels():
    text = "network n() { input(3, 4, 4) stem { conv(6, 1) split(3, 2) } head { gap linear(2) } }"
    assert archspec.summary(text).ops["split"] == 1
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text))
    conv, fc = gm.get_submodule("stem.conv1"), gm.get_submodule("head.linear1")
    # by hand: only the last two output channels of the conv reach the classifier
    assert_same_function(gm, lambda x: F.conv2d(x, conv.weight[4:6]).mean(dim=(2, 3)) @ fc.weight.T + fc.bias,
                         torch.randn(2, 3, 4, 4, dtype=torch.float64))
    assert _count_matches(text) == 6 * 3 + 2 * 2 + 2


def test_split_errors_are_located():
    e = _located_error("network n() {\n  input(3, 4, 4)\n  stem { conv(6, 1)\n  split(4, 0) }\n}", "split")
    assert "4 parts must divide the input channels (6)" in e.message
    e = _located_error("network n() {\n  input(4, 4, 4)\n  stem { split(2, 2) }\n}", "split")
    assert "index 2" in e.message


def test_shuffle_interleaves_the_groups():
    text = "network n() { input(2, 3, 3) stem { conv(6, 1) shuffle(2) } }"
    torch.manual_seed(0)
    gm = _randomised(archspec.build(text))
    conv = gm.get_submodule("stem.conv1")
    order = [0, 3, 1, 4, 2, 5]  # the 2×3 grid of channels read column by column
    assert_same_function(gm, lambda x: F.conv2d(x, conv.weight[order]), torch.randn(2, 2, 3, 3, dtype=torch.float64))
    e = _located_error("network n() {\n  input(2, 3, 3)\n  stem { conv(6, 1)\n    shuffle(4) }\n}", "shuffle")
    assert "shuffle groups=4 must divide the input channels (6)" in e.message


# --- the words as words; the standalone file ------------------------------------------------------------

NEW_WORDS = ("relu6", "gelu", "sigmoid", "hardswish", "hardsigmoid", "leaky_relu", "layernorm", "groupnorm",
             "adaptive_avgpool", "adaptive_maxpool", "scale", "drop_path", "split", "shuffle")


def test_new_words_are_ops_a_spec_can_call():
    for word in NEW_WORDS:
        assert word in OPS and OPS[word].user, word
    for word in ("relu6", "gelu", "sigmoid", "hardswish", "hardsigmoid", "leaky_relu"):
        assert OPS[word].recomputable and OPS[word].colour == OPS["relu"].colour


@pytest.mark.parametrize("written, meant", [("LeakyReLU", "leaky_relu"), ("hswish", "hardswish"),
                                            ("stochastic_depth", "drop_path"), ("chunk", "split"),
                                            ("channel_shuffle", "shuffle"), ("AdaptiveAvgPool2d", "adaptive_avgpool"),
                                            ("LayerNorm2d", "layernorm"), ("layer_scale", "scale")])
def test_other_names_suggest_the_word(written, meant):
    e = _located_error(f"network n() {{\n  input(4, 4, 4)\n  stem {{ {written} }}\n}}", written)
    assert f"'{meant}'" in (e.hint or "")


EVERY_NEW_MODULE = """
layer unit() { conv(8, 3, padding=1) hardswish scale(1e-6) drop_path(0.2) }
network zoo() {
  input(4, 9, 9)
  stem { conv(8, 3, padding=1) layernorm groupnorm(2) bn(eps=1e-3, affine=false) gelu(approximate="tanh") }
  block residual { repeat 2 { unit } }
  transition { shuffle(4) split(2, 1) maxpool(3, stride=2, ceil_mode=true)
               avgpool(2, padding=1, ceil_mode=true, count_include_pad=false) adaptive_maxpool([3, 2])
               adaptive_avgpool(2) }
  head { layernorm linear(3) sigmoid }
}"""


def test_constructor_text_builds_the_same_modules():
    gm = archspec.build(EVERY_NEW_MODULE)
    names = {k: getattr(custom, k) for k in ("LayerNorm2d", "Scale", "DropPath")}
    seen = set()
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        m = gm.get_submodule(n.target)
        text = OPS[n.meta["op"]].source(m)
        rebuilt = eval(text, {"torch": torch, **names})
        assert type(rebuilt) is type(m) and repr(rebuilt) == repr(m), text
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
        seen.add(n.meta["op"])
    assert seen >= {"layernorm", "groupnorm", "bn", "scale", "drop_path", "maxpool", "avgpool", "adaptive_maxpool",
                    "adaptive_avgpool"}


def test_standalone_file_round_trips(tmp_path, monkeypatch):
    """`archspec compile SPEC -o model.py`: the file's module has the built module's parameters and
    buffers and computes its function, in eval mode and (with the same seed) in training."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoo.arch").write_text(EVERY_NEW_MODULE)
    r = CliRunner().invoke(app, ["compile", "zoo.arch", "-o", "model.py"])
    assert r.exit_code == 0, r.output
    src = (tmp_path / "model.py").read_text()
    assert "archspec" not in src.split('"""', 2)[2]
    spec = importlib.util.spec_from_file_location("zoo_model", tmp_path / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    gm = _randomised(archspec.build(tmp_path / "zoo.arch"))
    standalone = module.Zoo().double()
    assert ({k: v.shape for k, v in standalone.state_dict().items()}
            == {k: v.shape for k, v in gm.state_dict().items()})
    standalone.load_state_dict(gm.state_dict())
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(standalone.eval()(x), gm.eval()(x), rtol=1e-10, atol=1e-10)
        torch.manual_seed(2)
        want = gm.train()(x)
        torch.manual_seed(2)
        torch.testing.assert_close(standalone.train()(x), want, rtol=1e-10, atol=1e-10)


def test_a_leaky_slope_beyond_float32_is_a_located_error():
    """A slope the kernels cannot hold in float32 is refused where it is written, not mid-step."""
    e = _located_error("network n() {\n  input(3, 4, 4)\n  stem { leaky_relu(1e308) }\n}", "leaky_relu")
    assert "negative_slope" in e.message
