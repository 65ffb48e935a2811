"""The normalise-once pass (with the lean policy's dispatch, which runs the merges from the shared
moments): a DelugeNet whose cross-layer depthwise merges share one set of batch moments
per producer computes what the plain per-pair graph computes — outputs, every gradient, running
statistics, eval outputs — while holding no more for backward; state_dict keys do not change and the
moments nodes say, in their meta, which producer they serve."""

import copy

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import archspec
from archspec.compiler.passes import merge_dispatch, normalise_once
from archspec.compiler.codegen import to_module
from archspec.compiler.merges import crossdepthwise
from archspec.compiler.modules import CrossDepthwise, width_runs
from archspec.runtime.bench.train import saved_bytes
from conftest import SPECS, assert_same_steps

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(n: int = 3, dtype=torch.float64) -> tuple[fx.GraphModule, fx.GraphModule]:
    net = archspec.network(SPECS / "tiny_delugenet.arch", n=n)
    torch.manual_seed(0)
    plain = to_module(net).to(dtype)
    return plain, _normalised(copy.deepcopy(plain))


def _normalised(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` as the lean policy leaves its merges: moments once per producer, merges dispatching under lean."""
    return merge_dispatch.apply(normalise_once.apply(gm), policy="lean")


def _input(dtype=torch.float64, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _merge_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(n.target), CrossDepthwise)]


def _moments_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(n.target), normalise_once.BatchMoments)]


def _training_steps(plain: nn.Module, new: nn.Module, x: torch.Tensor, steps: int = 2) -> None:
    plain.train(), new.train()
    assert_same_steps(plain, new, x, steps, **TIGHT)


def test_training_steps_and_eval_equal_plain_in_float64():
    plain, new = _pair()
    assert list(new.state_dict()) == list(plain.state_dict())
    x = _input()
    _training_steps(plain, new, x)
    assert int(new.block2.merge.num_batches_tracked) == 2
    plain.eval(), new.eval()
    with torch.no_grad():
        torch.testing.assert_close(new(x), plain(x), **TIGHT)


def test_the_pass_rewrites_every_merge_and_computes_each_producers_moments_once(monkeypatch):
    plain, new = _pair()
    merges = _merge_nodes(new)
    producers = {a for n in merges for a in n.args}
    moments = _moments_nodes(new)
    assert len(merges) == 5 and len(producers) == 7  # block 1: 3 layers; block 2: transition, 3 layers
    assert len(moments) == len(producers) and {m.args[0] for m in moments} == producers
    assert len({m.target for m in moments}) == len(moments)
    for n in merges:
        m = new.get_submodule(n.target)
        assert type(m) is CrossDepthwise and m.dispatch.keywords["policy"] == "lean"
        assert [m.args[0] for m in n.kwargs["moments"]] == list(n.args)
    assert not list(new.block1.layer1.conv3_moments.state_dict())
    assert crossdepthwise.choose(training=True, policy="lean", moments=True).name == "from_moments"

    calls = {"moments": 0, "batch_norm": 0, "merge_norm": 0}
    var_mean, batch_norm, native = torch.var_mean, F.batch_norm, torch.native_batch_norm

    def count_moments(*args, **kwargs):
        calls["moments"] += 1
        return var_mean(*args, **kwargs)

    def count_batch_norm(*args, **kwargs):
        calls["batch_norm"] += 1
        return batch_norm(*args, **kwargs)

    def count_merge_norm(*args, **kwargs):
        calls["merge_norm"] += 1
        return native(*args, **kwargs)

    monkeypatch.setattr(torch, "var_mean", count_moments)
    monkeypatch.setattr(F, "batch_norm", count_batch_norm)
    monkeypatch.setattr(torch, "native_batch_norm", count_merge_norm)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in new.modules())
    new(_input())
    # merges run no batch norm of their own
    assert calls == {"moments": len(producers), "batch_norm": bns, "merge_norm": 0}
    calls.update(moments=0, batch_norm=0)
    merge_dispatch.apply(plain, policy="fast")(_input())
    # small merges without shared moments (`concatenated`): moments over each run of equal-width inflows,
    # never one per inflow
    runs = sum(len(width_runs(plain.get_submodule(n.target).widths)) for n in merges)
    assert calls == {"moments": runs, "batch_norm": bns, "merge_norm": 0}
    assert runs < sum(len(n.args) for n in merges)
    calls.update(moments=0, batch_norm=0)
    to_module(archspec.network(SPECS / "tiny_delugenet.arch", n=3)).double()(_input())
    # a merge module without a dispatch runs the reference: one batch norm per inflow
    assert calls == {"moments": 0, "batch_norm": bns + sum(len(n.args) for n in merges), "merge_norm": 0}


def test_a_dropped_gradient_is_caught(monkeypatch):
    """The comparison above sees a backward that treats the batch moments as constants (eval-mode batch
    norm backward), losing the gradient through them."""

    def lossy(g, x, weight, mean, invstd, eps, mask):
        var = invstd.pow(-2) - eps
        return torch.ops.aten.native_batch_norm_backward(g, x, weight, mean, var, None, None, False, eps, mask)

    monkeypatch.setattr(crossdepthwise, "_bn_backward", lossy)
    for plain, x in ((_uneven(), _uneven_input()), (_pair(n=2)[0], _input())):
        new = _normalised(copy.deepcopy(plain))
        with pytest.raises(AssertionError):
            _training_steps(plain, new, x, steps=1)


def test_no_grad_training_forward_and_a_plain_module_with_the_same_weights():
    plain, new = _pair(n=2)
    x = _input()
    plain.train(), new.train()
    with torch.no_grad():
        torch.testing.assert_close(new(x), plain(x), **TIGHT)
    for (name, a), (_, b) in zip(plain.named_buffers(), new.named_buffers(), strict=True):
        torch.testing.assert_close(b, a, **TIGHT, msg=lambda m: f"{name}: {m}")

    fresh = to_module(archspec.network(SPECS / "tiny_delugenet.arch", n=2), init=False).double()
    fresh.load_state_dict(new.state_dict())  # the same keys: a plain module takes the weights as they are
    assert not _moments_nodes(fresh) and all(type(fresh.get_submodule(n.target)) is CrossDepthwise
                                             for n in _merge_nodes(fresh))
    for mode in ("train", "eval"):
        getattr(fresh, mode)(), getattr(new, mode)()
        torch.testing.assert_close(new(x), fresh(x), **TIGHT)


def test_moments_nodes_carry_their_producers_meta():
    plain, new = _pair(n=2)
    moments = _moments_nodes(new)
    assert moments
    for node in moments:
        src = node.args[0]
        assert node.meta["op"] == "moments" and node.meta["shape"] == (src.meta["shape"][0],)
        assert node.meta["spec_path"] == src.meta["spec_path"] and node.meta["layer"] == src.meta["layer"]


def _uneven(momentum: float | None = 0.1) -> fx.GraphModule:
    """Producers of 4, 6 and 6 channels and the 3-channel input, read by merges of widths (6, 4) and
    (4, 6, 6, 3): narrower inputs, producers shared, one of them a placeholder. No batch norm follows."""
    root, g = nn.Module(), fx.Graph()
    x = g.placeholder("x")
    for name, c in (("a", 4), ("b", 6), ("c", 6)):
        root.add_module(name, nn.Conv2d(3, c, 3, padding=1))
    root.add_module("m1", CrossDepthwise([6, 4], momentum=momentum))
    root.add_module("m2", CrossDepthwise([4, 6, 6, 3], momentum=momentum))
    a, b, c = (g.call_module(n, (x,)) for n in "abc")
    m1 = g.call_module("m1", (b, a))
    m2 = g.call_module("m2", (a, b, c, x))
    g.output(g.call_function(torch.cat, ([m1, m2], 1)))
    torch.manual_seed(0)
    gm = fx.GraphModule(root, g)
    with torch.no_grad():
        for m in (gm.m1, gm.m2):
            m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    return gm.double()


def _uneven_input() -> torch.Tensor:
    return torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_inputs_of_different_widths_and_channels_last():
    plain = _uneven()
    new = _normalised(copy.deepcopy(plain))
    assert len(_moments_nodes(new)) == 4
    x = _uneven_input()
    _training_steps(plain, new, x)
    plain, new = plain.to(memory_format=torch.channels_last), new.to(memory_format=torch.channels_last)
    _training_steps(plain, new, x.to(memory_format=torch.channels_last), steps=1)


def test_momentum_none_is_a_cumulative_average():
    """As BatchNorm's momentum=None (the plain CrossDepthwise passes None on to F.batch_norm, which rejects it)."""
    gm = _normalised(_uneven(momentum=None))
    x = [torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (4, 5)]
    for xi in x:
        gm(xi)
    with torch.no_grad():
        a = torch.stack([gm.a(xi) for xi in x])  # (2 steps, batch, 4, h, w)
    want = a.transpose(1, 2).flatten(2)  # the producer's running statistics in m2: the mean over steps
    torch.testing.assert_close(gm.m2.running_mean[:4], want.mean(2).mean(0), **TIGHT)
    torch.testing.assert_close(gm.m2.running_var[:4], want.var(2).mean(0), **TIGHT)
    assert int(gm.m2.num_batches_tracked) == 2


def test_holds_no_more_for_backward_than_plain():
    plain, new = _pair(dtype=torch.float32)
    x, y = _input(torch.float32, batch=8), torch.arange(8) % 10
    held_plain, held_new = saved_bytes(plain, x, y), saved_bytes(new, x, y)
    assert 0 < held_new <= held_plain
    assert saved_bytes(new, x, y, torch.bfloat16) <= saved_bytes(plain, x, y, torch.bfloat16)


def test_channels_last_bf16_autocast():
    plain, new = _pair(dtype=torch.float32)
    x = _input(torch.float32, batch=8)
    with torch.no_grad():
        want = plain(x)
    new = new.to(memory_format=torch.channels_last)
    merged = {}
    new.block2.merge.register_forward_hook(lambda m, i, o: merged.update(out=o))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = new(x.to(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16 and merged["out"].dtype == torch.bfloat16
    assert merged["out"].is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), want, rtol=0.05, atol=0.05)
    out.float().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in new.parameters())
