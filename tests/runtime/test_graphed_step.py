"""The captured training step (`Step` under a capture mode, `capture.Captured`): the warm-up it needs
before capture leaves no trace, what capture refuses, and the optimizer state's layout (all CPU-checkable).
On a GPU, replayed steps against eager ones are rows of the conformance table (test_step.py)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import archspec
from archspec.compiler.passes import memory
from archspec.compiler.passes.regional import compile_regions
from archspec.errors import RunError
from archspec.runtime.train.capture import Captured, Snapshot
from archspec.runtime.train.step import Step, StepConfig
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
    return compile_regions(memory.training(model, "fast", "regional+cudagraph"), **compile_kwargs)


def _eager(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: int = 8) -> Step:
    """Plain steps of `model` on the CPU (float32, contiguous)."""
    return Step(model, model, opt, StepConfig(torch.device("cpu"), amp=False, channels_last=False), batch)


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
    saved = Snapshot(model, opt)
    ref_step, step = _eager(ref, ref_opt), _eager(model, opt)
    for _ in range(3):
        step(x, y)
    assert any(not torch.equal(a, b) for a, b in zip(_state(model), saved.tensors))
    saved.restore()
    for _ in range(2):
        ref_step(x, y)
        step(x, y)
    for a, b in zip(_state(model), _state(ref)):
        assert torch.equal(a, b)


def test_a_graph_needs_cuda_and_a_captured_step_a_tensor_lr():
    model = _tiny("cpu")
    x, y = _batch("cpu", 4, 0)
    with pytest.raises(ValueError, match="CUDA"):
        Captured(model, (x,))
    with pytest.raises(ValueError, match="lr must be a tensor"):
        _eager(model, torch.optim.SGD(model.parameters(), lr=0.1)).capture(x, y)
    with pytest.raises(RunError, match="needs a CUDA device"):  # the configuration refuses it first
        StepConfig(torch.device("cpu"), compile="cudagraph")


def test_optimizer_state_takes_its_parameters_layout():
    """A resumed momentum buffer loads contiguous; a channels_last parameter needs it channels_last."""
    from archspec.runtime.train.step import _state_like_params

    p = torch.nn.Parameter(torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last))
    opt = torch.optim.SGD([p], lr=torch.tensor(0.1), momentum=0.9)
    buf = torch.randn(4, 3, 5, 5)
    opt.state[p]["momentum_buffer"] = buf
    _state_like_params(opt)
    got = opt.state[p]["momentum_buffer"]
    assert got.stride() == p.stride() and torch.equal(got, buf)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
def test_warm_up_leaves_the_optimizer_state_as_it_found_it(kind, resumed):
    """A capture's warm-up on a resumed run puts the optimizer's state (momenta, moments, step counts) back
    as it was, and state it created is as the optimizer's first step makes it: the steps after the restore
    equal those of a run that never warmed up, bit for bit."""
    def make(m):
        if kind == "sgd":
            return torch.optim.SGD(m.parameters(), lr=torch.tensor(0.1), momentum=0.9, nesterov=True)
        return torch.optim.AdamW(m.parameters(), lr=torch.tensor(0.01), foreach=False)

    ref, model = _tiny("cpu"), _tiny("cpu")
    ref_opt, opt = make(ref), make(model)
    ref_step, step = _eager(ref, ref_opt), _eager(model, opt)
    x, y = _batch("cpu", 8, 0)
    if resumed:
        ref_step(x, y)
        step(x, y)
    saved = Snapshot(model, opt)
    for _ in range(3):
        step(x, y)
    saved.restore()
    for _ in range(2):
        ref_step(x, y)
        step(x, y)
    for a, b in zip(_state(model), _state(ref)):
        assert torch.equal(a, b)
    for p, q in zip(model.parameters(), ref.parameters()):
        for k, v in opt.state[p].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(ref_opt.state[q][k])), k
