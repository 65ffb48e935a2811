"""The memory policy: `fast` and `lean` are taken as asked, `auto` goes lean exactly when the plain step's
estimate (the one behind the refusal, `activation_memory.estimate`) exceeds the free memory's headroom;
`build(memory=...)` gives modules with the same weights, state_dict keys and numbers in float64 either way,
and plain ops unless asked; a bad mode is refused with a clear error."""

import math

import pytest
import torch
from torch import nn

import archspec
from archspec.compiler.activation_memory import estimate, refuse_above
from archspec.compiler.codegen import to_module
from archspec.compiler.modules import CrossDepthwise
from archspec.compiler.passes import memory, normalise_once
from archspec.runtime.bench.train import saved_bytes
from archspec.compiler.passes.fused import ConcatConv, ConcatNormActConv
from archspec.errors import RunError, SpecError
from conftest import SPECS

SMALL = {
    "densenet_bc": (SPECS / "densenet_bc100_k12.arch", {"depth": 16, "k": 4}),
    "delugenet": (SPECS / "tiny_delugenet.arch", {"n": 2, "w": 4}),
}
PASS_MADE = (ConcatNormActConv, ConcatConv, normalise_once.BatchMoments)


def _net(kind: str):
    spec, overrides = SMALL[kind]
    return archspec.network(spec, **overrides)


@pytest.mark.parametrize("mode", ["fast", "lean"])
@pytest.mark.parametrize("free", [None, 1, 10**15])
def test_fast_and_lean_are_taken_as_asked(mode, free):
    assert memory.resolve(mode, _net("densenet_bc"), 64, free) == mode


def test_auto_goes_lean_exactly_when_the_estimate_exceeds_the_headroom():
    net = _net("densenet_bc")
    for batch, bpe in ((8, 4), (64, 4), (64, 2)):
        need = estimate(net, batch, training=True, bytes_per_element=bpe).total
        assert memory.step_bytes(net, batch, bpe) == need > 0
        edge = need / memory.HEADROOM  # the free memory at which the step just fits
        assert memory.resolve("auto", net, batch, math.ceil(edge) + 1, bpe) == "fast"
        assert memory.resolve("auto", net, batch, math.floor(edge) - 1, bpe) == "lean"
    assert memory.resolve("auto", net, 64, None) == "fast"  # no free-memory figure: nothing to fit into
    assert memory.step_bytes(net, 64) > memory.step_bytes(net, 8)
    assert memory.step_bytes(net, 8, bytes_per_element=2) < memory.step_bytes(net, 8)


def test_auto_and_the_refusal_read_one_estimate():
    """A step the refusal lets through at a limit L is one `auto` keeps fast with L / HEADROOM free, and
    one it refuses is one `auto` sends lean: the two never disagree about a network."""
    net = _net("delugenet")
    need = refuse_above(net, 16, training=True, limit=10**15).total
    assert need == memory.step_bytes(net, 16)
    refuse_above(net, 16, training=True, limit=need)
    assert memory.resolve("auto", net, 16, math.ceil(need / memory.HEADROOM)) == "fast"
    with pytest.raises(SpecError):
        refuse_above(net, 16, training=True, limit=need - 1)
    assert memory.resolve("auto", net, 16, math.floor((need - 1) / memory.HEADROOM)) == "lean"


def test_the_estimate_grows_with_depth_and_bounds_the_plain_step():
    """The estimate comes from the graph: what it counts for tensors (the input, the saved activations and
    the working space, where the loss's few values fall) must not fall below what a plain step really
    holds, or `auto` would stay fast where the step does not fit."""
    x, y = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    shallow, deep = (archspec.network(SMALL["densenet_bc"][0], depth=d, k=4) for d in (16, 40))
    assert memory.step_bytes(deep, 2) > memory.step_bytes(shallow, 2)
    for net in (shallow, deep):
        e = estimate(net, 2, training=True)
        assert e.input + e.activations + e.workspace >= saved_bytes(to_module(net, init=False), x, y)


@pytest.mark.parametrize("mode", ["bogus", "Lean", "", None])
def test_a_bad_mode_is_refused(mode):
    with pytest.raises(RunError, match="unknown memory mode") as e:
        memory.resolve(mode, _net("densenet_bc"), 64, None)
    assert "fast, lean, auto" in e.value.hint


def test_apply_refuses_an_unresolved_mode():
    with pytest.raises(ValueError, match="resolved memory mode"):
        memory.apply(archspec.build(_net("densenet_bc")), "auto")


def test_build_refuses_a_bad_mode_clearly():
    with pytest.raises(SpecError, match="unknown memory mode 'bogus'") as e:
        archspec.build(_net("densenet_bc"), memory="bogus")
    assert "fast, lean, auto" in str(e.value.hint)


@pytest.mark.parametrize("kind", SMALL)
def test_build_by_default_is_plain_ops(kind):
    gm = archspec.build(_net(kind))
    assert not [m for m in gm.modules() if isinstance(m, PASS_MADE)]
    assert all(type(m) is CrossDepthwise for m in gm.modules() if isinstance(m, CrossDepthwise))
    assert all("moments" not in n.kwargs for n in gm.graph.nodes)


def _step(model: nn.Module, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    (out * w).sum().backward()
    return out, x.grad


@pytest.mark.parametrize("kind", SMALL)
def test_lean_and_fast_builds_agree_in_float64(kind):
    net = _net(kind)
    torch.manual_seed(0)
    fast = archspec.build(net, memory="fast").double()
    torch.manual_seed(0)
    lean = archspec.build(net, memory="lean").double()
    assert [m for m in lean.modules() if isinstance(m, PASS_MADE)]  # the lean pass changed something
    sf, sl = fast.state_dict(), lean.state_dict()
    assert list(sf) == list(sl)
    assert all(torch.equal(sf[k], sl[k]) for k in sf)  # the same seed, the same weights
    x = torch.randn(4, *net.shape(net.input), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.randn(4, *net.shape(net.output), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for _ in range(2):  # running statistics after two steps too
        (out_f, gx_f), (out_l, gx_l) = _step(fast, x, w), _step(lean, x, w)
        torch.testing.assert_close(out_l, out_f, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gx_l, gx_f, rtol=1e-10, atol=1e-12)
        assert gx_f.abs().sum() > 0
    for (name, p), (_, q) in zip(fast.named_parameters(), lean.named_parameters(), strict=True):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")
    for (name, a), (_, b) in zip(fast.named_buffers(), lean.named_buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")
    fast.eval(), lean.eval()
    with torch.no_grad():
        torch.testing.assert_close(lean(x), fast(x), rtol=1e-10, atol=1e-12)
