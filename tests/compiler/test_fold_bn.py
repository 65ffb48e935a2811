"""The inference form (`fold_bn.fold`): each cross-layer depthwise merge is one weighted sum, each batch
norm went where folding is exact and only one that folds nowhere is left, and the function is the eval
model's — to float64 rounding, and to ~1e-5 in float32; DelugeNet-146's ONNX graph has no
BatchNormalization node."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
from torch import nn

import archspec
from archspec.compiler.modules import CrossDepthwise
from archspec.compiler.passes.fold_bn import ScaleSum, fold, merge_form
from archspec.compiler.passes.fused import ConcatNormActConv
from archspec.compiler.passes.normalise_once import BatchMoments
from conftest import SPECS
from families import FAMILIES, _close, _family, _inputs, _perturbed


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _called(gm: fx.GraphModule, kind: type) -> list[str]:
    return [n.target for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), kind)]


def _foldable(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether the batch norm at `node` had a neighbour to fold into: a convolution or merge producing
    its input alone, an unpadded convolution reading it alone, or merges reading its input too."""
    src, users = node.args[0], list(node.users)
    kind = lambda n: type(gm.get_submodule(n.target)) if n.op == "call_module" else None  # noqa: E731
    if kind(src) in (nn.Conv2d, ScaleSum, CrossDepthwise) and len(src.users) == 1:
        return True
    if len(users) == 1 and kind(users[0]) is nn.Conv2d and gm.get_submodule(users[0].target).padding == (0, 0):
        return True
    return any(kind(u) in (CrossDepthwise, ScaleSum) for u in src.users)


@pytest.mark.parametrize("family", FAMILIES)
def test_only_batch_norms_that_fold_nowhere_are_left(family, one_thread):
    net, model = _family(family)
    bns, merges = _count(model, nn.BatchNorm2d), _count(model, CrossDepthwise)
    folded = fold(model)
    kept = _called(folded, nn.BatchNorm2d)
    assert bns > 0 and _count(folded, nn.BatchNorm2d) == len(kept) < bns and _count(folded, CrossDepthwise) == 0
    assert len(_called(folded, ScaleSum)) >= merges  # every merge is one ScaleSum; some BNs are one more
    nodes = {n.target: n for n in folded.graph.nodes if n.op == "call_module"}
    assert not any(_foldable(folded, nodes[t]) for t in kept)
    if family in ("delugenet", "gunn"):  # conv → bn, merge → bn, and bns of tensors merges read: all fold
        assert kept == []
    else:  # pre-activation bns of a concatenation, a sum, or a tensor others read raw stay
        assert kept
    x = _inputs(net, 3)
    with torch.no_grad():
        _close(folded(x), model(x), 1e-5)
        exact = fold(model.double())
        want = model(x.double())
        assert (exact(x.double()) - want).abs().max() <= 1e-12 * want.abs().max()
    assert model.training is False and _count(model, nn.BatchNorm2d) == bns  # the original is left alone


def test_where_each_delugenet_batch_norm_went(one_thread):
    """Into the convolution before it; into the merge before it (transitions, the head, each layer's
    first BN); a one-inflow ScaleSum only where the convolution before it is read by merges too."""
    net, model = _family("delugenet")
    folded = fold(model)
    ones = sorted(t for t in _called(folded, ScaleSum) if len(folded.get_submodule(t).widths) == 1)
    assert ones == ["block2.layer1.bn1", "block3.layer1.bn1"]
    merged = {t: folded.get_submodule(t) for t in _called(folded, ScaleSum) if t not in ones}
    assert sorted(merged) == sorted(_called(model, CrossDepthwise))
    convs = {t: folded.get_submodule(t) for t in _called(folded, nn.Conv2d)}
    assert all(c.bias is not None for t, c in convs.items() if t.endswith(("conv1", "conv2")) and ".layer" in t)


@pytest.mark.parametrize("widths", [[4, 4, 4], [4, 2, 2, 4, 3], [5]])
def test_merge_form_is_the_eval_merge(widths):
    g = torch.Generator().manual_seed(1)
    m = _perturbed(CrossDepthwise(widths)).double()
    xs = [torch.randn(2, c, 3, 3, generator=g, dtype=torch.float64) for c in widths]
    sums = merge_form(m)
    assert sums.widths == widths
    with torch.no_grad():
        torch.testing.assert_close(sums(*xs), m(*xs), rtol=1e-12, atol=1e-12)
        scale, shift = torch.rand(max(widths), dtype=torch.float64) + 0.5, torch.randn(max(widths), dtype=torch.float64)
        want = m(*xs) * scale.view(-1, 1, 1) + shift.view(-1, 1, 1)
        sums.then(scale, shift)
        torch.testing.assert_close(sums(*xs), want, rtol=1e-12, atol=1e-12)


class _BnBeforeConv(nn.Module):
    """x → relu → bn → conv: the BN's input comes from no affine op, so only the conv after it can take
    it; `relu2` reads the BN's input too, so no producer could anyway."""

    def __init__(self, **conv):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 6, **conv)

    def forward(self, x):
        r = torch.relu(x)
        return self.conv(self.bn(r)).sum() + r.sum()


@pytest.mark.parametrize("conv, into_conv", [
    (dict(kernel_size=1), True),
    (dict(kernel_size=3, groups=2, bias=True), True),
    (dict(kernel_size=3, padding=1, padding_mode="reflect"), True),
    (dict(kernel_size=3, padding=1), False),  # zero padding: folding would shift the border; not exact
])
def test_batch_norm_before_a_convolution_folds_where_exact(conv, into_conv):
    model = _perturbed(fx.symbolic_trace(_BnBeforeConv(**conv))).double()
    folded = fold(model)
    assert _count(folded, nn.BatchNorm2d) == (0 if into_conv else 1) and _called(folded, ScaleSum) == []
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-12, atol=1e-12)


def test_lean_delugenet_drops_its_shared_moments():
    net = archspec.network(SPECS / "tiny_delugenet.arch", n=2, w=4)
    plain = _perturbed(archspec.build(net))
    lean = archspec.build(net, memory="lean")
    lean.load_state_dict(plain.state_dict())
    assert _called(lean, BatchMoments)
    folded = fold(lean.eval())
    assert not _called(folded, BatchMoments) and _count(folded, nn.BatchNorm2d) == 0
    x = _inputs(net, 2)
    with torch.no_grad():
        _close(folded(x), plain(x), 1e-5)


def test_folding_a_densenet_bc_and_its_lean_form():
    """Each DenseNet-BC layer's BN after its 1×1 conv folds away in the plain module. In the lean one the
    fused concat → BN → ReLU → conv modules reach their BN and conv by reference: those are left
    unfolded, and the function is the same either way."""
    net = archspec.network(SPECS / "densenet_bc100_k12.arch", depth=16, k=4)
    gm = _perturbed(archspec.build(net))
    x = torch.randn(2, 3, 32, 32)
    folded = fold(gm)
    layers = sum(1 for n in net.nodes() if n.op == "conv" and n.args.kernel == 1 and ".layer" in n.name)
    assert _count(gm, nn.BatchNorm2d) - _count(folded, nn.BatchNorm2d) == layers > 0
    torch.testing.assert_close(folded(x), gm(x), rtol=1e-4, atol=1e-5)

    lean = archspec.build(net, memory="lean")
    lean.load_state_dict(gm.state_dict())
    lean_folded = fold(lean)
    reached = [(n.args[0].target, n.args[1].target) for n in lean_folded.graph.nodes
               if n.op == "call_module" and isinstance(lean_folded.get_submodule(n.target), ConcatNormActConv)]
    assert reached
    for bn, conv in reached:  # still a batch norm, the convolution still without the bias folding would add
        assert type(lean_folded.get_submodule(bn)) is nn.BatchNorm2d and lean_folded.get_submodule(conv).bias is None
    # a 1×1 conv inside a fused module has no conv node
    assert 0 < _count(lean, nn.BatchNorm2d) - _count(lean_folded, nn.BatchNorm2d) < layers
    torch.testing.assert_close(lean_folded(x), gm(x), rtol=1e-4, atol=1e-5)


def _onnx_batch_norms_and_outputs(net, model, tmp_path, batch: int):
    import onnx
    import onnxruntime as ort
    from rich.console import Console

    from archspec.runtime.export import ExportOptions, export_model

    path = export_model(net, model, ExportOptions("onnx", tmp_path / "m.onnx", dynamic_batch=f"1:{batch}:{batch}"),
                        Console(quiet=True))
    nodes = [n.op_type for n in onnx.load(str(path)).graph.node]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _inputs(net, batch)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        want = model(x)
    return nodes, got, want


def test_small_delugenet_onnx_has_no_batch_norm(tmp_path, one_thread):
    net, model = _family("delugenet")
    nodes, got, want = _onnx_batch_norms_and_outputs(net, model, tmp_path, 3)
    assert "Conv" in nodes and "BatchNormalization" not in nodes
    _close(got, want, 1e-5)


@pytest.mark.slow
def test_delugenet146_onnx_has_no_batch_norm(tmp_path, one_thread):
    net = archspec.network(SPECS / "delugenet146.arch")
    torch.manual_seed(0)
    model = _perturbed(archspec.build(net))
    nodes, got, want = _onnx_batch_norms_and_outputs(net, model, tmp_path, 2)
    assert nodes.count("Conv") == 147 and "BatchNormalization" not in nodes
    _close(got, want, 1e-5)
    with torch.no_grad():  # and the inference form itself, in float64
        x = _inputs(net, 2).double()
        exact, want = fold(model.double())(x), model(x)
    assert (exact - want).abs().max() <= 1e-12 * want.abs().max()
