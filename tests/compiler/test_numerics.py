"""The compiled modules compute what the papers say: DelugeNet's Eq. (1) with per-input batch norm,
and DenseNet's concatenation wiring. float64 throughout."""

import torch
import torch.nn.functional as F

import archspec

UNIT = """
layer unit(c: int) { bn relu conv(c, 3, padding=1) }
"""


def _bn_train(x, eps=1e-5):
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _unit(gm, prefix, x):
    """BN(train) → ReLU → conv, computed directly from the module's parameters."""
    bn = gm.get_submodule(f"{prefix}.bn1")
    conv = gm.get_submodule(f"{prefix}.conv1")
    y = _bn_train(x) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    return F.conv2d(F.relu(y), conv.weight, padding=1)


def _randomise(gm):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in gm.named_parameters():
            p.copy_(torch.randn_like(p))


def test_crossdepthwise_block_computes_eq1():
    spec = UNIT + """
    network n() {
      input(4, 6, 6)
      block dense crossdepthwise { repeat 3 { unit(4) } }
    }"""
    gm = archspec.build(spec).double().train()
    _randomise(gm)
    x = torch.randn(5, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    got = gm(x)

    def cldc(name, hs):
        m = gm.get_submodule(name)
        w, b = m.weight.view(len(hs), -1), m.bias.view(len(hs), -1)  # input after input
        return sum(_bn_train(h) * w[i][None, :, None, None] + b[i][None, :, None, None] for i, h in enumerate(hs))

    feats = [x]
    for i in range(3):
        inp = feats[0] if i == 0 else cldc(f"block1.layer{i + 1}.merge", feats)
        feats.append(_unit(gm, f"block1.layer{i + 1}", inp))
    want = cldc("block1.merge", feats)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

    g_got = torch.autograd.grad(got.square().sum(), [x] + list(gm.parameters()), retain_graph=True)
    g_want = torch.autograd.grad(want.square().sum(), [x] + list(gm.parameters()))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)

    # running statistics: one set per input, updated from each input's own batch statistics
    m = gm.get_submodule("block1.merge")
    mean = torch.cat([h.mean(dim=(0, 2, 3)) for h in feats])
    var = torch.cat([h.var(dim=(0, 2, 3), unbiased=True) for h in feats])
    torch.testing.assert_close(m.running_mean, 0.1 * mean.detach())
    torch.testing.assert_close(m.running_var, 0.9 + 0.1 * var.detach())


def test_crossdepthwise_has_2CL_parameters_and_paper_initialisation():
    spec = UNIT + """
    network n() {
      input(8, 4, 4)
      block dense crossdepthwise { repeat 4 { unit(8) } }
    }"""
    gm = archspec.build(spec)
    m = gm.get_submodule("block1.merge")
    assert m.weight.numel() + m.bias.numel() == 2 * 8 * 5
    assert torch.all(m.weight == 1 / 5) and torch.all(m.bias == 0)
    assert not hasattr(gm.get_submodule("block1.layer1"), "merge")  # L = 1: no cross-layer merge


def test_concat_reproduces_densenet_wiring():
    spec = UNIT + """
    network n() {
      input(3, 5, 5)
      block dense concat { repeat 3 { unit(2) } }
    }"""
    gm = archspec.build(spec).double().train()
    _randomise(gm)
    for i in range(3):
        assert gm.get_submodule(f"block1.layer{i + 1}.conv1").in_channels == 3 + 2 * i
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    feats = [x]
    for i in range(3):
        feats.append(_unit(gm, f"block1.layer{i + 1}", torch.cat(feats, 1)))
    torch.testing.assert_close(gm(x), torch.cat(feats, 1), rtol=1e-10, atol=1e-10)
    assert "torch.cat(" in gm.code


def test_residual_sum_with_projection():
    spec = UNIT + """
    layer down(c: int) { bn relu conv(c, 3, stride=2, padding=1) }
    network n() {
      input(3, 8, 8)
      block residual { down(6) unit(6) }
    }"""
    gm = archspec.build(spec).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    proj = gm.get_submodule("block1.layer1.shortcut")
    assert (proj.kernel_size, proj.stride, proj.in_channels, proj.out_channels) == ((1, 1), (2, 2), 3, 6)
    l1 = gm.block1.layer1
    y1 = F.conv2d(x, proj.weight, stride=2) + l1.conv1(F.relu(l1.bn1(x)))
    l2 = gm.block1.layer2
    y2 = y1 + l2.conv1(F.relu(l2.bn1(y1)))
    torch.testing.assert_close(gm(x), y2)
