"""The generated module under torch.compile (whole and regional), channels_last and bf16 autocast, in
training: compiled and eager agree on outputs, gradients and batch-norm statistics; regional compilation
compiles one graph per layer structure, however deep the network."""

import copy
import functools

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch._dynamo.utils import counters

import archspec
from archspec.compiler.codegen import to_module
from archspec.compiler.passes import memory as memory_policy
from archspec.compiler.passes.regional import compile_regions, region_kinds
from conftest import SPECS, assert_same_steps

# small members of the three families the lean pass treats differently: cross-layer depthwise merges,
# concatenation → BN → ReLU → conv, and gradual updates reading concatenations through 1×1 convolutions
TINY = {
    "delugenet": ("tiny_delugenet", {"n": 2, "w": 4}),
    "densenet_bc": ("densenet_bc100_k12", {"depth": 16, "k": 4}),
    "gunn": ("gunn15", {"widths": [8, 12, 16], "segments": [2, 3, 4]}),
}


@functools.cache
def _built(family: str, dtype, memory: str, more: tuple):
    spec, overrides = TINY[family]
    net = archspec.network(SPECS / f"{spec}.arch", **{**overrides, **dict(more)})
    torch.manual_seed(0)
    return net, memory_policy.apply(to_module(net), memory).train().to(dtype)


def tiny(family: str, dtype=torch.float64, memory: str = "lean", **more):
    """A tiny member of `family` under the `memory` policy (lean unless told: its fused ops are the case
    a compiler could get wrong), in float64 unless told: these networks are small and their batch-norm
    statistics come from few values, so float32 rounding alone moves some gradients by 1e-3 (channels
    last, being summed in another order, is then not comparable); in float64 any difference is a bug.
    Each is built once for the module; a test gets its own copy."""
    net, gm = _built(family, dtype, memory, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in more.items()))
    return net, copy.deepcopy(gm)


def batch(net, n: int = 4, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *net.shape(net.input), generator=g).to(dtype)


def step(model, x, bf16: bool = False):
    """One forward and backward (gradients left in the parameters); the output, in `x`'s dtype."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x).to(x.dtype)
    F.cross_entropy(out, torch.arange(len(x)) % out.shape[1]).backward()
    return out


def grads(gm):
    return {n: p.grad for n, p in gm.named_parameters()}


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("family", TINY)
def test_whole_model_compiles_without_graph_breaks(family):
    net, gm = tiny(family)
    explained = torch._dynamo.explain(gm)(batch(net))
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.slow
@pytest.mark.parametrize("family", TINY)
def test_whole_model_compile_trains_like_eager(family):
    net, gm = tiny(family)
    ref = copy.deepcopy(gm)
    gm.compile(backend="aot_eager", fullgraph=True)  # in place: the same parameter names as `ref`
    assert_same_steps(ref, gm, batch(net), 1, rtol=1e-7, atol=1e-9)


@pytest.mark.slow
def test_whole_compile_traces_the_merges_the_fast_policy_dispatches():
    """Under whole-model compile the fast policy buffers no merge; each runs the implementation its
    `choose` names, traced in one graph."""
    spec, overrides = TINY["delugenet"]
    net = archspec.network(SPECS / f"{spec}.arch", **overrides)
    torch.manual_seed(0)
    gm = memory_policy.training(to_module(net), "fast", "whole").train().double()
    ref = copy.deepcopy(gm)
    explained = torch._dynamo.explain(copy.deepcopy(gm))(batch(net))
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    gm.compile(backend="aot_eager", fullgraph=True)
    assert_same_steps(ref, gm, batch(net), 2, rtol=1e-7, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["fast", "lean"])
@pytest.mark.parametrize("family", TINY)
def test_regional_compile_trains_like_eager_and_keeps_the_state_dict(family, memory):
    net, gm = tiny(family, memory=memory)
    ref = copy.deepcopy(gm)
    rm = compile_regions(gm, backend="aot_eager")
    assert list(rm.state_dict()) == list(ref.state_dict())
    ours = gm.state_dict()
    assert all(t.data_ptr() == ours[k].data_ptr() for k, t in rm.state_dict().items())  # shared, not copied
    x = batch(net)
    assert_same_steps(ref, rm, x, 1, rtol=1e-7, atol=1e-9)
    rm.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(rm(x), ref(x), rtol=1e-7, atol=1e-9)
    assert sum(counters["graph_break"].values()) == 0


@pytest.mark.slow
def test_regional_compile_count_does_not_grow_with_depth():
    compiled = {}
    for n in (2, 4):
        net, gm = tiny("delugenet", n=n)
        torch._dynamo.reset()
        counters.clear()
        rm = compile_regions(gm, backend="aot_eager")
        step(rm, batch(net))
        step(rm, batch(net))  # a second step compiles nothing new
        kinds = region_kinds(rm)
        compiled[n] = counters["stats"]["unique_graphs"], counters["aot_autograd"]["total"], len(kinds)
        assert sum(map(len, kinds.values())) == 2 * n + 3  # every layer, the stem, transition and head
    assert compiled[2] == compiled[4] and compiled[2][0] == compiled[2][2]


def test_region_input_gradients_come_back_in_the_inputs_layout():
    """Inductor hands a compiled region's input gradient back channels last on CPU; eager batch-norm
    backward runs several times slower on a gradient laid out unlike its input, so regions' inputs pass
    through `grad_in_layout`."""
    from archspec.compiler.passes.regional import grad_in_layout

    leaf = torch.randn(2, 3, 4, 4, requires_grad=True)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = (leaf * 1).contiguous(memory_format=fmt)
        seen = []
        x.register_hook(lambda g: seen.append(g.is_contiguous(memory_format=fmt)))
        y = grad_in_layout(x)
        g = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last if fmt is torch.contiguous_format
                                               else torch.contiguous_format)
        y.backward(g)
        assert seen == [True]
    assert grad_in_layout(leaf) is leaf  # autograd lays a leaf's gradient out like the leaf already


@pytest.mark.slow
@pytest.mark.parametrize("family", TINY)
@pytest.mark.parametrize("mode", ["eager", "whole", "regional"])
def test_channels_last_matches_contiguous(family, mode):
    net, gm = tiny(family)
    ref = copy.deepcopy(gm)
    gm = gm.to(memory_format=torch.channels_last)
    if mode == "whole":
        gm.compile(backend="aot_eager")  # in place: the same parameter names as `ref`
    model = compile_regions(gm, backend="aot_eager") if mode == "regional" else gm
    assert_same_steps(ref, model, batch(net).contiguous(memory_format=torch.channels_last), 1, rtol=1e-7, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("family", TINY)
@pytest.mark.parametrize("mode", ["whole", "regional"])
def test_bf16_autocast_trains_like_eager(family, mode):
    net, gm = tiny(family, torch.float32)
    eager_bf16, fp32 = copy.deepcopy(gm), copy.deepcopy(gm)
    model = torch.compile(gm, backend="aot_eager") if mode == "whole" else compile_regions(gm, backend="aot_eager")
    x = batch(net, dtype=torch.float32)
    got, want, exact = step(model, x, bf16=True), step(eager_bf16, x, bf16=True), step(fp32, x)
    assert torch.isfinite(got).all() and all(torch.isfinite(g).all() for g in grads(gm).values())
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    flat = lambda m: torch.cat([g.flatten() for g in grads(m).values()])
    assert rel(flat(gm), flat(eager_bf16)) < 5e-2
    # against fp32: bf16 moves these tiny networks' gradients by 15–40 % (eager alike), their outputs by 1 %
    assert rel(got, exact) < 5e-2 and rel(flat(gm), flat(fp32)) < 0.5


def test_bench_compile_modes():
    from archspec.errors import RunError
    from archspec.runtime.bench.train import _modes

    assert _modes(False) == ["none"] and _modes(True) == ["whole"]  # the old boolean flag
    assert _modes("regional") == ["regional"] and _modes("all") == ["none", "regional", "whole", "cudagraph",
                                                                      "regional+cudagraph"]
    assert _modes("none, cudagraph,none") == ["none", "cudagraph"]  # a list, each mode once
    with pytest.raises(RunError, match="unknown compile mode 'partial'"):
        _modes("none,partial")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["densenet_bc", "gunn"])
def test_whole_compile_keeps_the_lean_memory(family):
    """The fused ops are opaque to the compiler, so it cannot merge backward's rebuilt concatenation
    with forward's and save it again: a compiled lean module holds what the eager one holds."""
    from archspec.runtime.bench.train import saved_bytes

    wider = {"densenet_bc": {"depth": 40}, "gunn": {"widths": [24, 36, 48], "segments": [6, 6, 6]}}[family]
    net, gm = tiny(family, torch.float32, **wider)
    x, y = batch(net, dtype=torch.float32), torch.zeros(4, dtype=torch.long)
    plain = to_module(net)
    torch._dynamo.reset()
    compiled = torch.compile(copy.deepcopy(gm), backend="aot_eager")
    held = [saved_bytes(m, x, y) for m in (plain, gm, compiled)]
    assert held[1] < 0.85 * held[0], held
    assert held[2] <= 1.01 * held[1], held
