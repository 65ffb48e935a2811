"""Weight initialisation by name (`archspec/graph/ops/weight_init.py`): each scheme draws the distribution
its formula gives, from torch's fans; biases start at 0 or at torch's own; `std` belongs to the normal
schemes alone; and the torchvision zoo's specs start every weight as torchvision's constructors do."""

import copy
import math

import pytest
import torch

import archspec
import references
from archspec.compiler.transfer import transfer_weights
from conftest import built
from reference_counts import BY_NAME

# input 64 channels, a 3×3 convolution to 128 in 2 groups: fan_in = 32·9, fan_out = 128·9 (torch's count)
FAN_IN, FAN_OUT = 32 * 9, 128 * 9
LIN_IN, LIN_OUT = 512, 256


def _layers(init: str, std: float | None = None, bias_init: str = "zeros"):
    extra = (f', std={std}' if std is not None else "") + f', bias_init="{bias_init}"'
    torch.manual_seed(0)
    gm = archspec.build(f"""
    network n() {{
      input(64, 6, 6)
      conv(128, 3, groups=2, bias=true, init="{init}"{extra})
      gap linear({LIN_OUT * 2}) linear({LIN_OUT}, init="{init}"{extra})
    }}""")
    return gm.get_submodule("conv1"), gm.get_submodule("linear2")


# scheme → (distribution, spread from (fan_in, fan_out)): a normal's std or a uniform's bound
EXPECTED = {
    "he_normal": ("normal", lambda i, o: math.sqrt(2 / o)),
    "he_normal_in": ("normal", lambda i, o: math.sqrt(2 / i)),
    "he_uniform": ("uniform", lambda i, o: math.sqrt(6 / o)),
    "he_uniform_in": ("uniform", lambda i, o: math.sqrt(6 / i)),
    "torch": ("uniform", lambda i, o: 1 / math.sqrt(i)),
    "uniform_out": ("uniform", lambda i, o: math.sqrt(3 / o)),
    "uniform_inv_out": ("uniform", lambda i, o: 1 / math.sqrt(o)),
    "normal": ("normal", lambda i, o: 0.01),
    "trunc_normal": ("normal", lambda i, o: 0.02),
}


def _assert_drawn(w: torch.Tensor, kind: str, spread: float) -> None:
    if kind == "normal":
        assert abs(w.std().item() / spread - 1) < 0.05, (w.std().item(), spread)
        assert abs(w.mean().item()) < 0.05 * spread
    else:  # uniform: bounded, reaching its bound, with the uniform's std
        assert w.abs().max().item() <= spread and w.abs().max().item() > 0.98 * spread
        assert abs(w.std().item() / (spread / math.sqrt(3)) - 1) < 0.05


@pytest.mark.parametrize("scheme", list(EXPECTED))
def test_each_scheme_draws_its_formulas_distribution(scheme):
    conv, lin = _layers(scheme)
    kind, spread = EXPECTED[scheme]
    _assert_drawn(conv.weight.detach(), kind, spread(FAN_IN, FAN_OUT))
    _assert_drawn(lin.weight.detach(), kind, spread(LIN_IN, LIN_OUT))
    assert not conv.bias.any() and not lin.bias.any()


def test_default_is_each_ops_own_scheme_and_zeros_are_zeros():
    conv, lin = _layers("default")
    _assert_drawn(conv.weight.detach(), "normal", math.sqrt(2 / FAN_OUT))  # conv: He on fan-out
    _assert_drawn(lin.weight.detach(), "uniform", 1 / math.sqrt(LIN_IN))  # linear: torch's own
    conv, lin = _layers("zeros")
    assert not conv.weight.any() and not lin.weight.any()


def test_std_and_truncation():
    conv, lin = _layers("trunc_normal", std=1.5)
    for w in (conv.weight.detach(), lin.weight.detach()):
        assert w.abs().max().item() <= 2.0  # torch's trunc_normal_ bounds are absolute: ±2
        assert 1.0 < w.std().item() < 1.5  # truncated at ±1.33 std: narrower than 1.5
    conv, lin = _layers("normal", std=0.3)
    _assert_drawn(conv.weight.detach(), "normal", 0.3)
    _assert_drawn(lin.weight.detach(), "normal", 0.3)


def test_torch_biases_start_as_torchs_own():
    conv, lin = _layers("default", bias_init="torch")
    for b, fan_in in ((conv.bias.detach(), FAN_IN), (lin.bias.detach(), LIN_IN)):
        bound = 1 / math.sqrt(fan_in)
        assert b.abs().max().item() <= bound and b.abs().max().item() > 0.9 * bound and b.std().item() > 0.4 * bound


def test_init_arguments_follow_the_ops_own_by_position_and_std_needs_a_normal():
    net = archspec.network('network n() { input(3, 8, 8) conv(4, 3, 1, 1, 1, true, "normal", 0.5) }')
    (conv,) = [n for n in net.nodes() if n.op == "conv"]
    assert (conv.args.padding, conv.args.bias, conv.args.init, conv.args.std) == (1, True, "normal", 0.5)
    with pytest.raises(archspec.SpecError, match='std. sets the spread of init="normal" or "trunc_normal", '
                                                 'not of init="he_normal"') as e:
        archspec.network('network n() {\n  input(3, 8, 8)\n  conv(4, 3, init="he_normal", std=0.05)\n}')
    assert (e.value.loc.line, e.value.loc.column) == (3, 32)  # at the std
    with pytest.raises(archspec.SpecError, match="argument 'bias_init' must be one of 'zeros', 'torch'"):
        archspec.network('network n() { input(3, 8, 8) gap linear(4, bias_init="ones") }')


# ---- the torchvision zoo ------------------------------------------------------------------------------

def _fans(w: torch.Tensor) -> tuple[int, int]:
    area = math.prod(w.shape[2:])
    return w.shape[1] * area, w.shape[0] * area


def _weights(gm, kind):
    return [(name, m) for name, m in gm.named_modules() if isinstance(m, kind) and m.weight.numel() >= 2000]


def _convs_and_linears(gm):
    return _weights(gm, (torch.nn.Conv2d, torch.nn.Linear))


def _head(gm) -> torch.nn.Linear:
    return [m for m in gm.modules() if isinstance(m, torch.nn.Linear)][-1]


def _convs(gm) -> list[torch.nn.Conv2d]:
    return [m for m in gm.modules() if isinstance(m, torch.nn.Conv2d)]


def _convnext(gm):  # every conv and linear: trunc_normal_(std=0.02), bias 0
    for _, m in _convs_and_linears(gm):
        _assert_drawn(m.weight.detach(), "normal", 0.02)
        assert not m.bias.any()


def _densenet(gm):  # kaiming_normal_ (fan_in) convs; the classifier torch's own, its bias 0
    for _, m in _weights(gm, torch.nn.Conv2d):
        _assert_drawn(m.weight.detach(), "normal", math.sqrt(2 / _fans(m.weight)[0]))
    _assert_drawn(_head(gm).weight.detach(), "uniform", 1 / math.sqrt(_head(gm).in_features))
    assert not _head(gm).bias.any()


def _googlenet(gm):  # trunc_normal_(std=0.01) weights; the classifier's bias torch's own
    for _, m in _convs_and_linears(gm):
        _assert_drawn(m.weight.detach(), "normal", 0.01)
    _torch_bias(_head(gm))


def _inception(gm):  # trunc_normal_(std=0.1, a=-2, b=2): ±20 std, a plain normal in effect; fc bias torch's own
    for _, m in _convs_and_linears(gm):
        _assert_drawn(m.weight.detach(), "normal", 0.1)
        assert m.weight.abs().max() <= 2
    _torch_bias(_head(gm))


def _shufflenet(gm):  # no init loop: torch's own everywhere
    for _, m in _convs_and_linears(gm):
        _assert_drawn(m.weight.detach(), "uniform", 1 / math.sqrt(_fans(m.weight)[0]))
    _torch_bias(_head(gm))


def _squeezenet(gm):  # kaiming_uniform_ (fan_in, gain √2); the final conv N(0, 0.01²); biases 0
    *body, last = _convs(gm)
    for m in body:
        if m.weight.numel() >= 2000:
            _assert_drawn(m.weight.detach(), "uniform", math.sqrt(6 / _fans(m.weight)[0]))
    _assert_drawn(last.weight.detach(), "normal", 0.01)
    assert not any(m.bias.any() for m in _convs(gm))


def _regnet(gm):  # N(0, 2/fan_out) convs; classifier N(0, 0.01²), bias 0; squeeze-excite conv biases torch's
    for _, m in _weights(gm, torch.nn.Conv2d):
        _assert_drawn(m.weight.detach(), "normal", math.sqrt(2 / _fans(m.weight)[1]))
    _assert_drawn(_head(gm).weight.detach(), "normal", 0.01)
    assert not _head(gm).bias.any()
    with_bias = [m for m in _convs(gm) if m.bias is not None]
    assert with_bias and all(m.bias.any() for m in with_bias)


def _resnet(gm):  # fan-out He convs; the classifier torch's own, bias included
    for _, m in _weights(gm, torch.nn.Conv2d):
        _assert_drawn(m.weight.detach(), "normal", math.sqrt(2 / _fans(m.weight)[1]))
    _torch_bias(_head(gm))


def _vgg(gm):  # fan-out He convs, bias 0; every linear N(0, 0.01²), bias 0
    for _, m in _weights(gm, torch.nn.Linear):
        _assert_drawn(m.weight.detach(), "normal", 0.01)
        assert not m.bias.any()
    for _, m in _weights(gm, torch.nn.Conv2d):
        _assert_drawn(m.weight.detach(), "normal", math.sqrt(2 / _fans(m.weight)[1]))
        assert not m.bias.any()


def _alexnet(gm):  # no init loop: torch's own weights and biases
    for _, m in _convs_and_linears(gm):
        _assert_drawn(m.weight.detach(), "uniform", 1 / math.sqrt(_fans(m.weight)[0]))
        _torch_bias(m)


def _torch_bias(m):
    bound = 1 / math.sqrt(_fans(m.weight)[0])
    assert m.bias.abs().max() <= bound and m.bias.std() > 0.3 * bound


# spec → (settings: the quick ones of `tests/reference_counts.py`, shared with the other tests' builds of
# the model, or a narrower member of the family for the 60M+ ones), the check of what torchvision's
# constructor does; 1000 classes, torchvision's
ZOO = {
    "convnext_tiny": ({}, _convnext),
    "densenet121": ({}, _densenet),
    "googlenet": ({}, _googlenet),
    "inception_v3": ({}, _inception),
    "shufflenet_v2_x1_0": ({}, _shufflenet),
    "squeezenet1_0": ({}, _squeezenet),
    "regnet_y_400mf": ({}, _regnet),
    "resnet18": ({}, _resnet),
    "vgg11_bn": (dict(size=32, widths=[16, 32, 64, 64, 64], hidden=256), _vgg),
    "vgg11": (dict(size=32, widths=[16, 32, 64, 64, 64], hidden=256), _vgg),
    "alexnet": (dict(size=64, hidden=512), _alexnet),
}


def _sets(name: str) -> dict:
    return ZOO[name][0] or BY_NAME[name].small


@pytest.mark.parametrize("name", list(ZOO))
def test_the_zoo_starts_as_torchvisions_constructors_do(name):
    ZOO[name][1](built(name, **_sets(name)))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ZOO if not ZOO[n][0]])  # the 60M+ ones are narrowed above
def test_each_weight_starts_with_the_spread_of_its_torchvision_twin(name):
    """Where torchvision imports: every tensor paired by weight transfer starts with the same spread. The
    spec is built at its quick input: the weights do not depend on it (global pooling)."""
    models = references.torchvision().models
    torch.manual_seed(0)
    options = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    tv = getattr(models, name)(weights=None, **options)
    gm = copy.deepcopy(built(name, **_sets(name)))  # the transfer writes into it
    ours = {k: v.detach().clone() for k, v in gm.state_dict().items()}
    theirs = tv.state_dict()
    report = transfer_weights(tv, gm)
    compared = 0
    for pair in report.pairs:
        source = theirs[pair.source[0]]
        if len(pair.source) != 1 or source.numel() < 2000 or not source.is_floating_point():
            continue
        a, b = ours[pair.target].float(), source.float()
        if b.std() == 0:
            assert a.std() == 0 and a.mean() == b.mean(), pair
        else:
            assert abs(a.std().item() / b.std().item() - 1) < 0.1, (pair, a.std().item(), b.std().item())
        compared += 1
    assert compared >= 10
