"""Res2Net-101 26w×4s, Res2NeXt-50 and CSPResNeXt-50 against timm's modules, and FractalNet-40 against
khanrc/pt.fractalnet's (written out below as its fractal.py defines it): after `transfer_weights`, the
outputs in evaluation, and in training the outputs, the input's and every parameter's gradient, and the
running statistics and weights after an SGD step, agree in float64. Res2Net's hierarchy and FractalNet's
joins are spec-written patterns (`specs/lib/res2net.arch`, `fractalnet.arch`), CSPNet's cross stage a
template with named tensors and channel slices (`cspnet.arch`)."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archspec
from archspec.compiler.modules import Mean
from conftest import assert_same_steps, built, network_of
from references import TOL, assert_same_after_transfer, timm, timm_model, with_random_norms



# ---- khanrc/pt.fractalnet's fractal.py (per-sample drop path): its printing and the options the model
# ---- does not use left out, NumPy's removed `np.int` written `int` ----------------------------------

class ConvBlock(nn.Module):
    """Conv - Dropout - BN - ReLU (its default `CDBR` order, zero padding)."""

    def __init__(self, C_in, C_out, kernel_size=3, stride=1, padding=1, dropout=None):
        super().__init__()
        self.pad = nn.ZeroPad2d(padding)
        self.conv = nn.Conv2d(C_in, C_out, kernel_size, stride, padding=0, bias=False)
        self.dropout = nn.Dropout2d(p=dropout, inplace=True) if dropout is not None and dropout > 0. else None
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, x):
        out = self.conv(self.pad(x))
        if self.dropout:
            out = self.dropout(out)
        return F.relu_(self.bn(out))


class FractalBlock(nn.Module):
    def __init__(self, n_columns, C_in, C_out, p_ldrop, p_dropout):
        super().__init__()
        self.n_columns = n_columns
        self.p_ldrop = p_ldrop
        self.columns = nn.ModuleList([nn.ModuleList() for _ in range(n_columns)])
        self.max_depth = 2 ** (n_columns - 1)
        dist = self.max_depth
        self.count = np.zeros([self.max_depth], dtype=int)
        for col in self.columns:
            for i in range(self.max_depth):
                if (i + 1) % dist == 0:
                    cur_C_in = C_in if i + 1 == dist else C_out
                    col.append(ConvBlock(cur_C_in, C_out, dropout=p_dropout))
                    self.count[i] += 1
                else:
                    col.append(None)
            dist //= 2

    def drop_mask(self, B, global_cols, n_cols):
        GB = global_cols.shape[0]
        gdrop_cols = global_cols - (self.n_columns - n_cols)
        gdrop_indices = np.where(gdrop_cols >= 0)[0]
        gdrop_mask = np.zeros([n_cols, GB], dtype=np.float32)
        gdrop_mask[gdrop_cols[gdrop_indices], gdrop_indices] = 1.
        LB = B - GB
        ldrop_mask = np.random.binomial(1, 1. - self.p_ldrop, [n_cols, LB]).astype(np.float32)
        alive_count = ldrop_mask.sum(axis=0)
        dead_indices = np.where(alive_count == 0.)[0]
        ldrop_mask[np.random.randint(0, n_cols, size=dead_indices.shape), dead_indices] = 1.
        return torch.from_numpy(np.concatenate((gdrop_mask, ldrop_mask), axis=1))

    def join(self, outs, global_cols):
        n_cols = len(outs)
        out = torch.stack(outs)
        if self.training:
            mask = self.drop_mask(out.size(1), global_cols, n_cols).to(out.device)
            mask = mask.view(*mask.size(), 1, 1, 1)
            n_alive = mask.sum(dim=0)
            masked_out = out * mask
            n_alive[n_alive == 0.] = 1.
            out = masked_out.sum(dim=0) / n_alive
        else:
            out = out.mean(dim=0)
        return out

    def forward(self, x, global_cols):
        outs = [x] * self.n_columns
        for i in range(self.max_depth):
            st = self.n_columns - self.count[i]
            cur_outs = [self.columns[c][i](outs[c]) for c in range(st, self.n_columns)]
            joined = self.join(cur_outs, global_cols)
            for c in range(st, self.n_columns):
                outs[c] = joined
        return outs[-1]


class FractalNet(nn.Module):
    """`FractalNet(data_shape, n_columns, init_channels, p_ldrop, dropout_probs, gdrop_ratio)` with the
    defaults (max pool after every block, a linear classifier, consistent global drop columns); its xavier
    initialisation is left out: the tests transfer whatever weights it holds."""

    def __init__(self, data_shape, n_columns, init_channels, p_ldrop, dropout_probs, gdrop_ratio):
        super().__init__()
        self.B = len(dropout_probs)
        self.gdrop_ratio = gdrop_ratio
        self.n_columns = n_columns
        C_in, H, W, n_classes = data_shape
        size = H
        layers = nn.ModuleList()
        C_out = init_channels
        for b, p_dropout in enumerate(dropout_probs):
            layers.append(FractalBlock(n_columns, C_in, C_out, p_ldrop, p_dropout))
            layers.append(nn.MaxPool2d(2))
            size //= 2
            C_in = C_out
            if b < self.B - 2:
                C_out *= 2
        layers.append(nn.Flatten())
        layers.append(nn.Linear(C_out * size * size, n_classes))
        self.layers = layers

    def forward(self, x):
        GB = int(x.size(0) * self.gdrop_ratio)
        out, global_cols = x, None
        for layer in self.layers:
            if isinstance(layer, FractalBlock):
                if global_cols is None:
                    global_cols = np.random.randint(0, self.n_columns, size=[GB])
                out = layer(out, global_cols)
            else:
                out = layer(out)
        return out


# ---- one comparison for all four ---------------------------------------------------------------------

def _transferred(ref: nn.Module, name: str, **sets):
    """The spec's module (one build per run), a float64 copy of it holding `ref`'s weights, and the pairs.
    Where the transfer's comparison of hyper-parameters cannot see what the reference does (`FORCED`),
    the weights are copied with `force` and every difference it lists must be the one expected."""
    gm = copy.deepcopy(built(name, **sets)).double().eval()
    report = archspec.transfer_weights(ref, gm, force=name in FORCED)
    assert report.tensors == len(gm.state_dict()) - len(report.kept)
    expected = FORCED.get(name, ())
    assert all(all(w in warning for w in expected) for warning in report.warnings), report.warnings
    return gm, report.pairs


# Where the transfer's comparison of hyper-parameters could not see what a reference does, its weights
# would be copied with `force` and every difference listed here expected; none of these needs it.
FORCED: dict[str, tuple[str, ...]] = {}


def _csp_small():
    """timm's CspNet in cspresnext50's configuration with one bottleneck per stage, narrower, in 8 groups."""
    from dataclasses import replace

    cspnet = timm().models.cspnet
    stages = cspnet.CspStagesCfg(depth=(1, 1, 1, 1), out_chs=(64, 128, 128, 256), stride=(1, 2), groups=8,
                                 expand_ratio=1., bottle_ratio=1., block_ratio=0.5, cross_linear=True)
    return cspnet.CspNet(replace(cspnet.model_cfgs["cspresnext50"], stages=stages), num_classes=10).eval()


def _timm_small(name: str, **kw):
    return _csp_small() if name == "cspresnext50" else timm_model(name, num_classes=10, **kw)


def _fractal(columns: int, width: int) -> FractalNet:
    return FractalNet((3, 32, 32, 10), n_columns=columns, init_channels=width, p_ldrop=0.15,
                      dropout_probs=[0, .1, .2, .3, .4], gdrop_ratio=0.5).eval()


NARROW = [16, 32, 32, 64]  # Res2Net's stage widths in the small variants (the stem keeps its 64)

# (spec, its overrides, the reference of those settings); inputs are two images of the spec's size
SMALL = [
    ("res2net101_26w_4s", dict(blocks=[1, 2, 1, 1], widths=NARROW, classes=10, size=32),
     lambda: _timm_small("res2net101_26w_4s", layers=[1, 2, 1, 1], channels=NARROW)),
    ("res2next50", dict(blocks=[1, 2, 1, 1], widths=NARROW, classes=10, size=32),
     lambda: _timm_small("res2next50", layers=[1, 2, 1, 1], channels=NARROW)),
    ("cspresnext50", dict(depths=[1, 1, 1, 1], widths=[64, 128, 128, 256], groups=8, classes=10, size=32),
     lambda: _timm_small("cspresnext50")),
    ("fractalnet40", dict(columns=3, width=4), lambda: _fractal(3, 4)),
]
FULL = [  # at the sizes `test_specs.py` builds them, so that a run builds each once
    ("res2net101_26w_4s", dict(size=64), lambda: timm_model("res2net101_26w_4s")),
    ("res2next50", dict(size=64), lambda: timm_model("res2next50")),
    ("cspresnext50", dict(size=64), lambda: timm_model("cspresnext50")),
    ("fractalnet40", {}, lambda: _fractal(4, 64)),
]


def _without_drops(ref: nn.Module, gm: nn.Module) -> None:
    """Every dropout, FractalNet's local drop-path and the reference's global drop-path set to 0 on both
    sides (checked to be there first)."""
    drops = [m for m in gm.modules() if isinstance(m, (Mean, nn.Dropout2d))]
    assert {round(m.drop if isinstance(m, Mean) else m.p, 2) for m in drops} == {0.1, 0.15, 0.2, 0.3, 0.4}
    for m in drops + [m for m in ref.modules() if isinstance(m, nn.Dropout2d)]:
        setattr(m, "drop" if isinstance(m, Mean) else "p", 0.0)
    for m in ref.modules():
        if isinstance(m, FractalBlock):
            m.p_ldrop = 0.0
    ref.gdrop_ratio = 0.0


def _check(name: str, sets: dict, reference) -> None:
    """The same outputs in evaluation (FractalNet's joins all plain means there), then the same training
    step (FractalNet's with its drops set to 0, the joins' means against the reference's masked sum over
    the count of columns)."""
    torch.manual_seed(0)
    ref = with_random_norms(reference())
    gm, pairs = _transferred(ref, name, **sets)
    side = sets.get("size", 32)
    x = torch.randn(2, 3, side, side, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), ref(x), **TOL)
    if name == "fractalnet40":
        _without_drops(ref, gm)
    assert_same_after_transfer(ref, gm, pairs, x)


@pytest.mark.parametrize("name,sets,reference", SMALL, ids=[s[0] for s in SMALL])
def test_a_small_variant_computes_what_its_reference_does(name, sets, reference):
    """Fewer blocks (each stage's first and, in stage 2, a later Res2Net block), narrower stages,
    FractalNet with 3 columns of width 4: the rules and templates at other settings than the models'."""
    _check(name, sets, reference)


@pytest.mark.slow
@pytest.mark.parametrize("name,sets,reference", FULL, ids=[s[0] for s in FULL])
def test_the_model_computes_what_its_reference_does(name, sets, reference):
    """The models themselves: timm's at 64×64, FractalNet-40 at CIFAR's 32×32."""
    _check(name, sets, reference)


LEAN = [
    ("res2next50", dict(blocks=[1, 2, 1, 1], widths=NARROW, classes=10, size=32)),
    ("cspresnext50", dict(depths=[1, 1, 1, 1], widths=[64, 128, 128, 256], groups=8, classes=10, size=32)),
    ("fractalnet40", dict(columns=3, width=4, drops=[0.0] * 5, local_drop=0.0)),
]


@pytest.mark.parametrize("name,sets", LEAN, ids=[s[0] for s in LEAN])
def test_a_small_variant_trains_alike_under_fast_and_lean(name, sets):
    """The hierarchy's slices and sums, the cross stage's halves, the fractal joins' means: the lean
    memory policy gives the same training steps as plain ops."""
    torch.manual_seed(0)
    plain = archspec.build(name, memory="fast", **sets).double()
    lean = archspec.build(name, memory="lean", **sets).double()
    lean.load_state_dict(plain.state_dict())
    side = sets.get("size", 32)
    assert_same_steps(plain.train(), lean.train(), torch.randn(2, 3, side, side, dtype=torch.float64))


def test_the_wiring_reads_channel_groups_by_slices_and_joins_by_means():
    """No `split`: each Res2Net block reads its `scale` groups through one slice each and sums a group
    with the previous layer's output in every block but a stage's first; each cross stage slices its two
    halves; each fractal block joins by 2^(C − 2) means of several columns (the one-column joins pass
    their tensor on)."""
    blocks, scale = [3, 4, 6, 3], 4
    ops = Counter(n.op for n in network_of("res2next50").nodes())
    assert "split" not in ops and ops["slice"] == sum(blocks) * scale
    assert ops["add"] == sum(blocks) + (sum(blocks) - len(blocks)) * (scale - 2)
    assert ops["concat"] == sum(blocks) and ops["avgpool"] == len(blocks)
    ops = Counter(n.op for n in network_of("cspresnext50").nodes())
    assert "split" not in ops and ops["slice"] == 2 * 4 and ops["concat"] == 4
    ops = Counter(n.op for n in network_of("fractalnet40").nodes())
    assert "split" not in ops and ops["mean"] == 5 * 2 ** (4 - 2) and ops["conv"] == 5 * (2 ** 4 - 1)
