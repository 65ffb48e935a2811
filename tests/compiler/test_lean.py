"""The lean pass: DenseNets fused to `ConcatNormActConv` (with any recomputable activation: relu, silu),
SeqConv groups and GUNN units to `ConcatConv`, compute exactly what the plain graph computes — outputs,
every gradient, batch-norm running statistics, dropout masks — while holding memory linear in depth;
eval mode and export see plain ops; weights and state_dict keys do not change. Whole networks run at
8×8 (`_small`): what is checked (equality with the plain graph, memory growth in depth) does not depend on
the resolution."""

import copy
import functools
import re

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import archspec
from archspec.compiler.codegen import to_module
from archspec.compiler.passes import fused as fused_ops
from archspec.compiler.passes import lean, memory, normalise_once
from archspec.compiler.passes.fused import ConcatConv, ConcatNormActConv
from archspec.runtime.bench.train import saved_bytes
from conftest import SPECS, assert_same_steps

SIZE = 8  # the input resolution of every whole network here


def _small(spec, size: int = SIZE) -> str:
    """The text of `spec` (a file that uses one library, or text) with its CIFAR input made size×size."""
    if not isinstance(spec, str):
        lines = spec.read_text().splitlines()
        lib = [ln for ln in lines if ln.startswith("use ")]
        spec = "\n".join([(spec.parent / re.fullmatch(r'use "(.*)"', ln)[1]).read_text() for ln in lib]
                         + [ln for ln in lines if not ln.startswith("use ")])
    small = spec.replace("input(3, 32, 32)", f"input(3, {size}, {size})")
    assert small != spec, "no 32×32 input to shrink"
    return small

# DenseNet-BC with silu in place of relu: the lean pass fuses any activation the registry marks recomputable
SILU_BC = """
layer bottleneck(k: int) {
  bn silu conv(4 * k, 1)
  bn silu conv(k, 3, padding=1)
}
network densenet_bc_silu(classes: int = 10, depth: int = 100, k: int = 12) {
  input(3, 8, 8)
  let n = (depth - 4) // 6
  stem { conv(2 * k, 3, padding=1) }
  for i in range(3) {
    if i > 0 {
      transition { bn silu conv(floor(channels * 0.5), 1) avgpool(2) }
    }
    block dense concat { repeat n { bottleneck(k) } }
  }
  head { bn silu gap linear(classes) }
}
"""

SMALL = {
    "bc": (_small(SPECS / "densenet_bc100_k12.arch"), {"depth": 16, "k": 4}),  # 2 bottleneck layers per block, 1×1
    "bc_silu": (SILU_BC, {"depth": 16, "k": 4}),
    "basic": (_small(SPECS / "densenet40_k12.arch"), {"depth": 10, "k": 4}),  # 2 basic layers per block, 3×3
    # GUNN units with their projection shortcut: two convolutions read each join
    "gunn": (_small(SPECS / "gunn15.arch"), {"widths": [8, 12, 16], "segments": [2, 3, 4]}),
    "gunn_nores": (_small(SPECS / "gunn15_nores.arch"), {"widths": [8, 12, 16], "segments": [2, 3, 4]}),
    # windowed SeqConv with dropout on every group input
    "seqconv": (_small(SPECS / "seqresnet_k8r4.arch"), {"r": 1, "k": 4, "drop": 0.3}),
    "seqconv_dense": (_small(SPECS / "seqconv_s2.arch"), {"r": 1, "k": 4, "drop": 0.3}),
}


def _lean(net, init: bool = False) -> fx.GraphModule:
    """`net` as the lean policy builds it: the lean pass, then the merges' moments shared."""
    return memory.apply(to_module(net, init=init), "lean")


def _x(n: int, dtype=torch.float32, size: int = SIZE) -> torch.Tensor:
    return torch.randn(n, 3, size, size, dtype=dtype)


@functools.cache
def _built(kind: str, dtype) -> tuple[nn.Module, nn.Module]:
    spec, overrides = SMALL[kind]
    net = archspec.network(spec, **overrides)
    torch.manual_seed(0)
    plain = to_module(net).to(dtype)
    with torch.no_grad():  # no weight left at zero (SeqConv zero-initialises layers): every gradient flows
        for p in plain.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fused = _lean(net).to(dtype)
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def _pair(kind: str, dtype=torch.float64) -> tuple[nn.Module, nn.Module]:
    """The plain module of `kind` and its lean form with the same weights, each built once for the module;
    a test gets its own copies."""
    return tuple(copy.deepcopy(m) for m in _built(kind, dtype))


PASS_MADE = (ConcatNormActConv, ConcatConv, normalise_once.BatchMoments)


def _fused(gm: nn.Module) -> list[nn.Module]:
    return [m for m in gm.modules() if isinstance(m, (ConcatNormActConv, ConcatConv))]


def _plain_paths(gm: nn.Module) -> list[str]:
    """The module paths of `gm` other than those the lean pass adds."""
    return [n for n, m in gm.named_modules() if not isinstance(m, PASS_MADE)]


def _assert_same_training_step(plain: nn.Module, fused: nn.Module, x: torch.Tensor, rtol: float = 1e-10) -> None:
    """One training step of each from the same state (`conftest.assert_same_steps`), with the same dropout
    masks: outputs, the input's and every parameter's gradient (all nonzero), and every buffer agree."""
    plain.train(), fused.train()
    seed = int(torch.randint(0, 2**31, ()))

    def same_masks(module, args) -> None:
        torch.manual_seed(seed)

    hooks = [m.register_forward_pre_hook(same_masks) for m in (plain, fused)]
    try:
        assert_same_steps(plain, fused, x, 1, rtol=rtol, atol=rtol)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("kind", ["bc", "basic", "bc_silu"])
def test_fused_training_step_equals_plain_in_float64(kind):
    plain, fused = _pair(kind)
    convs = [n.args[1].target for n in fused.graph.nodes
             if n.op == "call_module" and isinstance(fused.get_submodule(n.target), ConcatNormActConv)]
    assert {m.act for m in _fused(fused)} == {"silu" if kind == "bc_silu" else "relu"}
    in_blocks = [fused.get_submodule(c) for c in convs if c.startswith("block")]
    assert len(convs) == 5 and len(in_blocks) == 3
    assert all(c.kernel_size == ((3, 3) if kind == "basic" else (1, 1)) for c in in_blocks)
    torch.manual_seed(1)
    x = _x(3, torch.float64)
    _assert_same_training_step(plain, fused, x)
    _assert_same_training_step(plain, fused, x)  # running averages after two steps too
    assert int(fused.block1.layer2.bn1.num_batches_tracked) == 2


@pytest.mark.parametrize("kind", ["bc", "bc_silu"])
def test_a_wrong_backward_is_caught(monkeypatch, kind):
    """The equality check above sees a fused backward that loses the gradient of the concatenation."""
    backward = fused_ops.concat_norm_act_conv_backward

    def lossy(*args):
        gx, *rest = backward(*args)
        return (gx * 0.5, *rest)

    monkeypatch.setattr(fused_ops, "concat_norm_act_conv_backward", lossy)
    plain, fused = _pair(kind)
    with pytest.raises(AssertionError):
        _assert_same_training_step(plain, fused, _x(2, torch.float64))


def _unit(momentum, bias: bool, stride: int, cl: bool):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(10, momentum=momentum).double()
    conv = nn.Conv2d(10, 6, 3, stride=stride, padding=1, bias=bias).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    fmt = torch.channels_last if cl else torch.contiguous_format
    xs = [torch.randn(4, c, 6, 6, dtype=torch.float64).to(memory_format=fmt) for c in (3, 5, 2)]
    return bn, conv, xs


@pytest.mark.parametrize("momentum,bias,stride,cl,act", [(0.1, False, 1, False, "relu"), (None, True, 2, False, "relu"),
                                                         (0.3, True, 1, True, "relu"), (0.1, True, 2, False, "silu"),
                                                         (None, False, 1, True, "silu")])
def test_unit_matches_plain_ops_with_any_inputs_needing_grad(momentum, bias, stride, cl, act):
    bn, conv, xs = _unit(momentum, bias, stride, cl)
    ref_bn, ref_conv, _ = _unit(momentum, bias, stride, cl)
    xs[1].requires_grad_(True)  # only some producers need a gradient
    ref_xs = [t.detach().clone().requires_grad_(t.requires_grad) for t in xs]
    fused = ConcatNormActConv(("cat", "bn", act, "conv"), act)
    for _ in range(2):
        z = fused(bn, conv, *xs)
        ref = ref_conv(getattr(F, act)(ref_bn(torch.cat(ref_xs, 1))))
        w = torch.randn_like(ref)
        (z * w).sum().backward()
        (ref * w).sum().backward()
        torch.testing.assert_close(z, ref, rtol=1e-10, atol=1e-10)
    assert xs[0].grad is None and xs[2].grad is None
    torch.testing.assert_close(xs[1].grad, ref_xs[1].grad, rtol=1e-10, atol=1e-10)
    for m, r in ((bn, ref_bn), (conv, ref_conv)):
        for (name, p), q in zip(m.named_parameters(), r.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-10, msg=lambda s: f"{name}: {s}")
        for a, b in zip(m.buffers(), r.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_channels_last_gives_the_same_numbers():
    plain, fused = _pair("bc", torch.float32)
    fused_cl = _lean(archspec.network(SMALL["bc"][0], **SMALL["bc"][1]))
    fused_cl.load_state_dict(fused.state_dict())
    fused_cl = fused_cl.to(memory_format=torch.channels_last)
    x = _x(2)
    y, y_cl = fused(x), fused_cl(x.to(memory_format=torch.channels_last))
    y.square().sum().backward(), y_cl.square().sum().backward()
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(fused.named_parameters(), fused_cl.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_bf16_autocast_trains_like_plain():
    plain, fused = _pair("bc", torch.float32)
    x, t = _x(4), torch.randint(0, 10, (4,))
    for m in (plain, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(m(x).float(), t)
        loss.backward()
    for (name, p), q in zip(plain.named_parameters(), fused.parameters()):
        assert q.grad.dtype == torch.float32
        assert (q.grad - p.grad).norm() <= 2e-2 * p.grad.norm() + 1e-6, name


@pytest.mark.parametrize("spec", [_small(SPECS / "densenet_bc100_k12.arch"), SILU_BC], ids=["relu", "silu"])
def test_memory_held_for_backward_grows_linearly(spec):
    """DenseNet-BC with 4, 8 and 16 layers per block: every further layer costs the lean module the same,
    the plain one more and more (it holds a fresh copy of every concatenation). The growth rate scales
    both alike, so a small one keeps this quick."""
    held = {}
    torch.manual_seed(0)
    x, y = _x(2), torch.randint(0, 10, (2,))
    for depth in (28, 52, 100):
        net = archspec.network(spec, depth=depth, k=4)
        held[depth] = [saved_bytes(m, x, y) for m in (to_module(net, init=False), _lean(net))]
    for i, name in enumerate(("plain", "lean")):
        first = (held[52][i] - held[28][i]) / 4  # per added layer per block, going from 4 to 8
        second = (held[100][i] - held[52][i]) / 8  # and from 8 to 16
        growth = second / first
        if name == "lean":
            assert 0.95 < growth < 1.05, (held, growth)
        else:
            assert growth > 1.3, (held, growth)
    assert held[100][1] < 0.35 * held[100][0], held  # the goal: 0.75 GiB of 2.1


def test_eval_no_grad_and_export_see_plain_ops():
    plain, fused = _pair("bc", torch.float32)
    x = _x(4)
    with torch.no_grad():  # training mode without grad: batch statistics, running averages updated
        torch.testing.assert_close(fused(x), plain(x))
    for a, b in zip(plain.buffers(), fused.buffers()):
        torch.testing.assert_close(b, a)
    assert int(fused.block1.layer2.bn1.num_batches_tracked) == 1
    plain.eval(), fused.eval()
    torch.testing.assert_close(fused(x), plain(x))
    ep = torch.export.export(fused, (x,))
    torch.testing.assert_close(ep.module()(x), plain(x))
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"aten.cat.default", "aten.conv2d.default"} <= ops
    assert not any("ConcatNormActConv" in op or "higher_order" in op for op in ops)


def test_weights_and_state_dict_match_the_plain_module():
    plain, fused = _pair("bc", torch.float32)
    sp, sf = plain.state_dict(), fused.state_dict()
    assert list(sp) == list(sf)
    for k in sp:
        assert torch.equal(sp[k], sf[k]), k
    other = to_module(archspec.network(SMALL["bc"][0], **SMALL["bc"][1]), init=False)
    other.load_state_dict(fused.state_dict())
    fused.load_state_dict(other.state_dict())
    assert len(_fused(fused)) == 5  # 1 layer per block past the first, 2 transitions
    assert _plain_paths(fused) == [n for n, _ in plain.named_modules()]
    other.eval(), fused.eval()
    x = _x(2)
    torch.testing.assert_close(other(x), fused(x))  # a plain module with the same weights is the same net


def test_fused_nodes_carry_the_meta_of_the_nodes_they_replace():
    net = archspec.network(SMALL["gunn"][0], **SMALL["gunn"][1])
    plain, fused = to_module(net, init=False), _lean(net)
    by_name = {n.name: n for n in plain.graph.nodes}
    made = [n for n in fused.graph.nodes
            if n.op == "call_module" and isinstance(fused.get_submodule(n.target), ConcatConv)]
    assert made
    for node in made:
        first = by_name[fused.get_submodule(node.target).names[2]]
        assert node.meta["layer"] == first.meta["layer"] and node.meta["spec_path"] == first.meta["spec_path"]
    for node in fused.graph.nodes:  # every node but the ones reading a module by reference: spec meta
        if node.op not in ("get_attr", "output"):
            assert {"spec_path", "op", "shape", "layer"} <= set(node.meta), node.name
        if node.name in by_name and node.op == "call_function":
            assert node.meta["shape"] == by_name[node.name].meta["shape"], node.name


def test_other_patterns_are_left_alone():
    net = archspec.network(_small(SPECS / "preresnet164.arch"))
    assert _lean(net).code == to_module(net, init=False).code
    net = archspec.network(_small(SPECS / "delugenet146.arch"), n=2)  # only its merges' moments are shared
    fused = _lean(net)
    assert "moments" in fused.code and "torch.cat" not in fused.code and not _fused(fused)
    assert _plain_paths(fused) == [n for n, _ in to_module(net, init=False).named_modules()]
    # the lean pass alone shares nothing: the policy composes it with normalise_once
    assert lean.apply(to_module(net, init=False)).code == to_module(net, init=False).code


@pytest.mark.parametrize("kind", ["gunn", "gunn_nores", "seqconv", "seqconv_dense"])
def test_concat_conv_training_step_equals_plain_in_float64(kind):
    plain, fused = _pair(kind)
    found = [m for m in fused.modules() if isinstance(m, ConcatConv)]
    cats_left = [n for n in fused.graph.nodes if n.op == "call_function" and n.target is torch.cat
                 and all(u.op == "call_module" and isinstance(fused.get_submodule(u.target), nn.Conv2d)
                         for u in n.users)]
    assert found and not cats_left
    if kind.startswith("gunn"):  # unit and projection shortcut share one fused module
        assert sum(len(m.names) == 4 for m in found) == 2 + 3 + 4 - 3  # every join but each block's first
    else:
        assert any(m.names[1] is not None for m in found)  # dropout fused too
    torch.manual_seed(1)
    x = _x(3, torch.float64)
    _assert_same_training_step(plain, fused, x)
    _assert_same_training_step(plain, fused, x)
    plain.eval(), fused.eval()
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-12, atol=1e-12)


def test_a_wrong_concat_conv_backward_is_caught(monkeypatch):
    backward = fused_ops.concat_conv_backward

    def lossy(*args):
        gx, *rest = backward(*args)
        return [gx * 0.5, *rest]  # loses half the gradient of every producer

    monkeypatch.setattr(fused_ops, "concat_conv_backward", lossy)
    plain, fused = _pair("gunn")
    with pytest.raises(AssertionError):
        _assert_same_training_step(plain, fused, _x(2, torch.float64))


@pytest.mark.parametrize("p,bias,stride,groups,cl", [(0.0, False, 1, 1, False), (0.4, True, 2, 2, False),
                                                     (0.2, False, 1, 1, True), (1.0, True, 1, 1, False)])
def test_concat_conv_unit_matches_plain_ops(p, bias, stride, groups, cl):
    def unit():
        torch.manual_seed(0)
        drop = nn.Dropout2d(p) if p else None
        convs = (nn.Conv2d(10, 6, 3, stride=stride, padding=1, groups=groups, bias=bias).double(),
                 nn.Conv2d(10, 4, 1, bias=not bias).double())
        fmt = torch.channels_last if cl else torch.contiguous_format
        xs = [torch.randn(4, c, 6, 6, dtype=torch.float64).to(memory_format=fmt) for c in (4, 4, 2)]
        xs[1].requires_grad_(True)  # only some producers need a gradient
        return drop, convs, xs

    (drop, convs, xs), (ref_drop, ref_convs, ref_xs) = unit(), unit()
    fused = ConcatConv(("cat", "drop" if p else None, "conv_a", "conv_b"))
    torch.manual_seed(3)
    zs = fused(drop, convs, *xs)
    torch.manual_seed(3)
    x = torch.cat(ref_xs, 1)
    x = x if ref_drop is None else ref_drop(x)
    refs = [c(x) for c in ref_convs]
    w = [torch.randn_like(r) for r in refs]
    sum((z * wk).sum() for z, wk in zip(zs, w)).backward()
    sum((r * wk).sum() for r, wk in zip(refs, w)).backward()
    for z, r in zip(zs, refs):
        torch.testing.assert_close(z, r, rtol=1e-12, atol=1e-12)
    assert xs[0].grad is None and xs[2].grad is None
    torch.testing.assert_close(xs[1].grad, ref_xs[1].grad, rtol=1e-12, atol=1e-12)
    for c, r in zip(convs, ref_convs):
        for (name, a), b in zip(c.named_parameters(), r.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10, msg=lambda s: f"{name}: {s}")


def test_gunn_holds_no_more_than_sunn():
    """GUNN's Algorithm 1 goal: updating segments one after another costs no memory beyond the
    simultaneous update of the same weights; plain autograd keeps every unit's fresh input (about 2.4×)."""
    x, y = _x(2), torch.randint(0, 10, (2,))
    small = {"widths": [24, 36, 48], "segments": [12, 18, 24]}
    held = {}
    for spec in ("gunn15", "sunn15"):
        net = archspec.network(_small(SPECS / f"{spec}.arch"), **small)
        held[spec] = [saved_bytes(m, x, y) for m in (to_module(net, init=False), _lean(net))]
    assert held["gunn15"][1] <= 1.05 * held["sunn15"][1], held
    assert held["gunn15"][0] > 1.5 * held["sunn15"][0], held


@pytest.mark.slow
def test_seqconv_memory_grows_linearly_with_groups():
    """A dense SeqConv layer of g groups: the plain graph holds every group's fresh concatenation
    (quadratic in g), the lean one only the groups' outputs. At 32×32: at 8×8 per-channel terms blur the
    lean module's linear growth."""
    x, y = _x(2, size=32), torch.randint(0, 10, (2,))
    held = {}
    for r in (1, 2, 4):  # 4r groups of 4 channels in every layer
        net = archspec.network(SPECS / "seqconv_s2.arch", r=r, k=4, blocks=[1, 1, 1])
        held[r] = [saved_bytes(m, x, y) for m in (to_module(net, init=False), _lean(net))]
    for i, name in enumerate(("plain", "lean")):
        growth = (held[4][i] - held[2][i]) / (held[2][i] - held[1][i]) / 2
        assert (0.8 < growth < 1.2) if name == "lean" else growth > 1.3, (name, held, growth)


@pytest.mark.parametrize("kind", ["gunn", "seqconv"])
def test_concat_conv_state_dict_and_export(kind):
    plain, fused = _pair(kind, torch.float32)
    x = _x(2)
    plain.eval(), fused.eval()
    ep = torch.export.export(fused, (x,))
    torch.testing.assert_close(ep.module()(x), plain(x))
    assert not any("higher_order" in str(n.target) for n in ep.graph.nodes)
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert _plain_paths(fused) == [n for n, _ in plain.named_modules()]
