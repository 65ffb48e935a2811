"""The CUDA-graph training step: the warm-up it needs before capture leaves no trace (CPU-checkable), and
on a GPU replayed steps — a partial batch and a learning-rate change among them — give the eager run's
weights, buffers and losses."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

import archspec
from archspec.runtime.train.graphed import GraphedStep, _restore, _snapshot, eager_step, graph_optimizer
from conftest import SPECS

TINY = SPECS / "tiny_delugenet.arch"


def _tiny(device: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return archspec.build(str(TINY), n=2, w=4, channels=3, size=16).to(device).train()


def _batch(device: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    return (torch.randn(n, 3, 16, 16, generator=g, device=device),
            torch.randint(0, 10, (n,), generator=g, device=device))


def _regional(model: torch.nn.Module, **compile_kwargs) -> torch.nn.Module:
    """`model` as `--compile regional+cudagraph` trains it: buffered merges between compiled layers."""
    from archspec.compiler.passes import memory
    from archspec.compiler.passes.regional import compile_regions

    return compile_regions(memory.training(model, "fast", "regional+cudagraph"), **compile_kwargs)


def _state(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]


@pytest.mark.parametrize("form", ["plain", "regional"])
def test_warm_up_is_undone_exactly(form):
    """Snapshot, three steps, restore: the next step equals a fresh model's first step, bit for bit, for the
    plain module and for compiled regions with buffered merges (whose buffers live only within a step)."""
    ref, model = _tiny("cpu"), _tiny("cpu")
    if form == "regional":
        torch._dynamo.reset()
        ref, model = _regional(ref, backend="aot_eager"), _regional(model, backend="aot_eager")
    ref_opt = torch.optim.SGD(ref.parameters(), lr=torch.tensor(0.1), momentum=0.9, nesterov=True, weight_decay=1e-4)
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.1), momentum=0.9, nesterov=True, weight_decay=1e-4)
    x, y = _batch("cpu", 8, 0)
    saved = _snapshot(model, opt)
    for _ in range(3):
        eager_step(model, opt, x, y, None)
    assert any(not torch.equal(a, b) for a, b in zip(_state(model), saved["model"]))
    _restore(model, opt, saved)
    for _ in range(2):
        eager_step(ref, ref_opt, x, y, None)
        eager_step(model, opt, x, y, None)
    for a, b in zip(_state(model), _state(ref)):
        assert torch.equal(a, b)


def test_a_graph_step_needs_cuda_and_a_tensor_lr():
    model = _tiny("cpu")
    x, y = _batch("cpu", 4, 0)
    with pytest.raises(ValueError, match="CUDA"):
        GraphedStep(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y)




@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("form", ["plain", "regional"])
def test_replayed_steps_match_eager_steps(form):
    """Replays of the plain module's step, and of the regionally compiled one with buffered merges (its
    compiled kernels captured too), against the plain module's eager steps."""
    torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32 = True, False
    torch.backends.cudnn.allow_tf32 = False
    ref, model = _tiny("cuda"), _tiny("cuda")
    if form == "regional":
        torch._dynamo.reset()
        model = _regional(model)
    hyper = dict(momentum=0.9, nesterov=True, weight_decay=1e-4)
    ref_opt, opt = graph_optimizer(ref.parameters(), torch.device("cuda"), 0.1, **hyper), graph_optimizer(
        model.parameters(), torch.device("cuda"), 0.1, **hyper)
    ref_sched = torch.optim.lr_scheduler.MultiStepLR(ref_opt, [3], gamma=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [3], gamma=0.1)
    batches = [_batch("cuda", 16, i) for i in range(3)] + [_batch("cuda", 5, 3)] + [_batch("cuda", 16, i) for i in (4, 5)]
    step = GraphedStep(model, opt, *batches[0])
    tol = dict(rtol=1e-4, atol=1e-5) if form == "plain" else dict(rtol=1e-3, atol=1e-4)  # fused sums round apart
    for x, y in batches:
        want = eager_step(ref, ref_opt, x, y, None)
        got = step(x, y)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol)
        ref_sched.step(), sched.step()
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.01)
    for a, b in zip(_state(model), _state(ref), strict=True):
        torch.testing.assert_close(a, b, **tol)
    torch.backends.cudnn.deterministic = False


def test_optimizer_state_takes_its_parameters_layout():
    """A resumed momentum buffer loads contiguous; a channels_last parameter needs it channels_last."""
    from archspec.runtime.train.graphed import _state_like_params

    p = torch.nn.Parameter(torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last))
    opt = torch.optim.SGD([p], lr=torch.tensor(0.1), momentum=0.9)
    buf = torch.randn(4, 3, 5, 5)
    opt.state[p]["momentum_buffer"] = buf
    _state_like_params(opt)
    got = opt.state[p]["momentum_buffer"]
    assert got.stride() == p.stride() and torch.equal(got, buf)
