"""Buffered cross-layer merges: the kernels' sums against autograd, the Triton kernels against the torch
ones (under Triton's CPU interpreter here, on the GPU under the `cuda` marker), and a DelugeNet whose
merges read one buffer per block computing what the plain per-inflow graph computes — outputs, every
gradient, running statistics, eval outputs and eval gradients — under the same state_dict keys."""

import copy
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.fx as fx

import archspec
from archspec.compiler import merge_kernels as kernels
from archspec.compiler.codegen import to_module
from archspec.compiler.modules import CrossDepthwise
from archspec.compiler.passes import memory, merge_buffer
from archspec.runtime.bench.train import saved_bytes
from conftest import ROOT, SPECS, assert_same_steps

TIGHT = {"rtol": 1e-10, "atol": 1e-12}
HAS_TRITON = importlib.util.find_spec("triton") is not None

pytestmark = pytest.mark.usefixtures("one_thread")


def _stack(L: int = 3, M: int = 50, C: int = 6, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x, a, b, gy = (torch.randn(shape, generator=g, dtype=torch.float64).to(device)
                   for shape in ((L, M, C), (L, C), (C,), (M, C)))
    return x.to(dtype), a.float() if dtype != torch.float64 else a, b.float() if dtype != torch.float64 else b, gy.to(dtype)


def test_reference_kernels_are_the_sums_autograd_differentiates():
    x, a, b, g = _stack()
    xs, as_, bs = (t.clone().requires_grad_(True) for t in (x, a, b))
    y = (xs * as_[:, None, :]).sum(0) + bs
    y.backward(g)
    torch.testing.assert_close(kernels.forward(x, a, b), y.detach(), **TIGHT)
    ga, gb = kernels.scale_grads(x, g, a.dtype)
    torch.testing.assert_close(ga, as_.grad, **TIGHT)
    torch.testing.assert_close(gb, bs.grad, **TIGHT)
    # inflow 1's gradient from two merges reading it (scales a[0], a[1]), with a moments term s·x + t
    gs, s, t = torch.stack([g, 2 * g]), a[2], b
    want = a[0] * g + a[1] * 2 * g + s * x[1] + t
    torch.testing.assert_close(kernels.inflow_grad(gs, a[:2], x[1], s, t), want, **TIGHT)
    # rows of C, as the Triton kernels write them: a merge's output is channels last, and one layout
    # reaches the layers after it (a compiled region would recompile for another)
    assert kernels.forward(x, a, b).is_contiguous() and kernels.inflow_grad(gs, a[:2], x[1], s, t).is_contiguous()


def test_reference_kernels_run_a_number_of_ops_independent_of_width_and_batch():
    """The torch sums are O(L) ops on whole (M, C) slices: nothing inside them loops over channels or
    rows (an einsum's batched matmul over C copied every slice, making CPU training steps 4× slower).
    The profiler sees the ops that ops call, too."""

    def ops(M: int, C: int) -> int:
        x, a, b, g = _stack(4, M, C, torch.float32)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            kernels.forward(x, a, b)
            kernels.scale_grads(x, g, torch.float32)
            kernels.inflow_grad(torch.stack([g, g]), a[:2], x[1], b, b)
        return len(prof.events())

    assert ops(16, 4) == ops(16, 256) == ops(4096, 4)


_TRITON_CHECK = """
import torch
from archspec.compiler import merge_kernels as k
g = torch.Generator().manual_seed(0)
for L, M, C, dt in [(3, 200, 64, torch.float32), (5, 130, 24, torch.bfloat16), (2, 700, 256, torch.float32)]:
    x = torch.randn(L, M, C, generator=g).to(dt); a = torch.randn(2 * L, C, generator=g); b = torch.randn(C, generator=g)
    gy = torch.randn(L, M, C, generator=g).to(dt)
    tol = dict(rtol=1e-5, atol=1e-4) if dt == torch.float32 else dict(rtol=1e-2, atol=7e-2)
    torch.testing.assert_close(k.forward(x, a[:L], b, triton=True), k.forward(x, a[:L], b, triton=False), **tol)
    for t, r in zip(k.scale_grads(x, gy[0], triton=True), k.scale_grads(x, gy[0], triton=False)):
        torch.testing.assert_close(t, r, rtol=1e-4, atol=1e-3)
    every_other = a[::2]  # scales strided as the buffer's column of one slot is
    torch.testing.assert_close(k.inflow_grad(gy, every_other, x[0], a[1], b, triton=True),
                               k.inflow_grad(gy, every_other, x[0], a[1], b, triton=False), **tol)
print("ok")
"""


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (the GPU machine checks the kernels)")
def test_triton_kernels_match_the_torch_sums_in_the_interpreter():
    r = subprocess.run([sys.executable, "-c", _TRITON_CHECK], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON), reason="needs a CUDA GPU and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L,M,C", [(1, 64, 64), (9, 4096 * 3 + 5, 64), (25, 2048, 256), (4, 300, 24)])
def test_triton_kernels_match_the_torch_sums_on_cuda(L, M, C, dtype):
    x, a, b, g = _stack(L, M, C, dtype, "cuda")
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-1)
    torch.testing.assert_close(kernels.forward(x, a, b, triton=True), kernels.forward(x, a, b, triton=False), **tol)
    for t, r in zip(kernels.scale_grads(x, g, triton=True), kernels.scale_grads(x, g, triton=False)):
        torch.testing.assert_close(t, r, rtol=1e-4, atol=1e-2)
    gs = torch.randn_like(x)
    torch.testing.assert_close(kernels.inflow_grad(gs, a, x[0], a[0], b, triton=True),
                               kernels.inflow_grad(gs, a, x[0], a[0], b, triton=False), **tol)


def _pair(n: int = 3, momentum: float | None = 0.1) -> tuple[fx.GraphModule, fx.GraphModule]:
    net = archspec.network(SPECS / "tiny_delugenet.arch", n=n)
    torch.manual_seed(0)
    plain = to_module(net).double()
    with torch.no_grad():  # no weight left at its initial value: every term of the sums shows
        for p in plain.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for m in plain.modules():
        if isinstance(m, CrossDepthwise):
            m.momentum = momentum
    return plain, merge_buffer.apply(copy.deepcopy(plain))


def _input(batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_buffered_merges_train_as_the_plain_merges(momentum):
    plain, new = _pair(momentum=momentum)
    calls = [n for n in new.graph.nodes if n.op == "call_function"]
    # block 1: layer 3's and the transition's merges; block 2 (which keeps its input): layers 2 and 3, the head's
    assert sum(n.target is merge_buffer.merge for n in calls) == 5
    assert sum(n.target is merge_buffer.open_buffer for n in calls) == 2
    assert not [n for n in new.graph.nodes if n.op == "call_module"
                and isinstance(new.get_submodule(n.target), CrossDepthwise)]
    assert list(new.state_dict()) == list(plain.state_dict())
    plain.train(), new.train()
    assert_same_steps(plain, new, _input(), **TIGHT)


def test_eval_outputs_and_gradients_use_the_running_statistics():
    plain, new = _pair()
    plain.train(), new.train()
    assert_same_steps(plain, new, _input(), 1, **TIGHT)  # running statistics away from their initial values
    plain.eval(), new.eval()
    with torch.no_grad():
        torch.testing.assert_close(new(_input(2)), plain(_input(2)), **TIGHT)
    assert_same_steps(plain, new, _input(3), 1, **TIGHT)  # gradients through eval-mode merges (frozen statistics)


def test_buffered_merges_hold_no_more_for_backward():
    plain, new = _pair(n=4)
    plain.train(), new.train()
    x, y = _input(8), torch.zeros(8, dtype=torch.long)
    assert saved_bytes(new, x, y) <= saved_bytes(plain, x, y)


def test_merges_of_mixed_widths_or_out_of_order_stay_plain():
    root, g = torch.nn.Module(), fx.Graph()
    x = g.placeholder("x")
    for name, c in (("a", 4), ("b", 6), ("c", 6)):
        root.add_module(name, torch.nn.Conv2d(3, c, 3, padding=1))
    root.add_module("mixed", CrossDepthwise([4, 6]))
    root.add_module("reversed", CrossDepthwise([6, 6]))
    a, b, c = (g.call_module(n, (x,)) for n in "abc")
    for node, shape in ((a, (4, 5, 5)), (b, (6, 5, 5)), (c, (6, 5, 5))):
        node.meta["shape"] = shape
    m1 = g.call_module("mixed", (a, b))
    m2 = g.call_module("reversed", (c, b))  # reads its inflows in another order than the graph makes them
    g.output(g.call_function(torch.cat, ([m1, m2], 1)))
    gm = fx.GraphModule(root, g)
    before = gm.code
    assert merge_buffer.apply(gm).code == before


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_merges_and_inflow_gradients_keep_the_inflows_layout(layout):
    """The buffer is channels last; what leaves it (merge outputs forward, inflow gradients backward)
    is laid out as the inflows are, as the plain ops give it: one stride pattern for the layers after."""
    _, new = _pair()
    new = new.to(memory_format=layout)
    outputs, grads = [], []

    class Watch(fx.Interpreter):
        def run_node(self, n):
            if n.op == "call_function" and n.target is merge_buffer.put:
                inflow = self.env[n.args[1]]
                if inflow.requires_grad:
                    inflow.register_hook(grads.append)
            out = super().run_node(n)
            if n.op == "call_function" and n.target is merge_buffer.merge:
                outputs.append(out)
            return out

    x = _input().contiguous(memory_format=layout).requires_grad_(True)
    Watch(new).run(x).sum().backward()
    assert len(outputs) == 5 and all(t.is_contiguous(memory_format=layout) for t in outputs)
    assert len(grads) >= 5 and all(g.is_contiguous(memory_format=layout) for g in grads)


@pytest.mark.slow
def test_regional_compile_leaves_the_buffered_merges_out_of_its_regions():
    """Regions compile the layers; the buffer's calls (a Python object flows through them) run between
    them, and the step is still the plain one."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from archspec.compiler.passes.regional import Region, compile_regions

    plain, new = _pair()
    torch._dynamo.reset()
    counters.clear()
    regional = compile_regions(new, backend="aot_eager")
    outside = {n.target for n in regional.graph.nodes if n.op == "call_function"}
    assert {merge_buffer.open_buffer, merge_buffer.put, merge_buffer.merge} <= outside
    assert any(isinstance(m, Region) for m in regional.modules())
    assert_same_steps(plain.train(), regional.train(), _input(), **TIGHT)
    assert sum(counters["graph_break"].values()) == 0 and counters["stats"]["unique_graphs"] > 0
    torch._dynamo.reset()


def test_the_policy_buffers_merges_for_fast_steps_not_wholly_compiled():
    net = archspec.network(SPECS / "tiny_delugenet.arch", n=2)

    def buffered(mode: str, compile_mode: str) -> bool:
        gm = memory.training(to_module(net), mode, compile_mode)
        return any(n.op == "call_function" and n.target is merge_buffer.merge for n in gm.graph.nodes)

    assert buffered("fast", "none") and buffered("fast", "cudagraph") and buffered("fast", "regional")
    assert not buffered("fast", "whole") and not buffered("lean", "none")
    assert not any(n.op == "call_function" and n.target is merge_buffer.merge
                   for n in archspec.build(SPECS / "tiny_delugenet.arch").graph.nodes)  # build stays plain


def test_a_buffer_refuses_an_inflow_of_another_shape():
    buf = merge_buffer.open_buffer(((0, 1), (0, 1)))
    cdw = CrossDepthwise([3, 3])
    merge_buffer.put(buf, torch.randn(2, 3, 4, 4), 0, (cdw,))
    with pytest.raises(ValueError, match="merge buffer slot 1"):
        merge_buffer.put(buf, torch.randn(2, 3, 5, 5), 1, (cdw,))
