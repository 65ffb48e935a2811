"""The conformance table of the training step: every (memory policy × compile mode) a step can run, each
covered once and on purpose against the plain eager module. On the CPU the assembled module (`assemble`:
memory pass, compiled regions or the whole network compiled) takes the same forward, backward and
buffer updates as plain codegen in float64; the captured modes replay the whole step (`Step`) on a GPU
against plain eager steps, a partial batch and a learning-rate change among them. `auto` is not a row:
it resolves to one of the two policies (test_train_memory.py)."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch._dynamo

from archspec.compiler.codegen import to_module
from archspec.graph.elaborate import elaborate
from archspec.language.loader import load_file
from archspec.runtime.train.step import Step, StepConfig, assemble, sgd
from conftest import SPECS, assert_same_steps

NET = elaborate(load_file(SPECS / "tiny_delugenet.arch"), {"n": 1, "w": 4})  # 1×8×8 images, 10 classes
TIGHT = dict(rtol=1e-9, atol=1e-10)
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
INDUCTOR = [pytest.mark.slow,  # inductor compiles a forward and a backward per graph: seconds each on a CPU
            pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                               reason="inductor's CPU backend needs a C++ compiler (g++, c++ or clang++)")]

TABLE = [
    ("fast", "none"), ("lean", "none"),
    pytest.param("fast", "regional", marks=INDUCTOR), pytest.param("lean", "regional", marks=INDUCTOR),
    pytest.param("fast", "whole", marks=INDUCTOR), pytest.param("lean", "whole", marks=INDUCTOR),
    pytest.param("fast", "cudagraph", marks=CUDA), pytest.param("lean", "cudagraph", marks=CUDA),
    pytest.param("fast", "regional+cudagraph", marks=CUDA), pytest.param("lean", "regional+cudagraph", marks=CUDA),
]


def _plain(device: str = "cpu", dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    return to_module(NET).to(device, dtype).train()


def _assembled(policy: str, mode: str, device: str = "cpu", dtype: torch.dtype = torch.float64):
    cfg = StepConfig(torch.device(device), policy, mode, amp=False, channels_last=False)
    torch.manual_seed(0)
    model, run = assemble(NET, cfg, cfg.memory_for(NET, 8))
    model.to(dtype)  # in place: the compiled forms share its parameters and buffers
    return cfg, model, run.train()


@pytest.mark.parametrize("policy, mode", TABLE)
def test_every_policy_and_compile_mode_steps_as_plain_eager(policy, mode):
    torch._dynamo.reset()
    if "cudagraph" in mode:
        _replays_match_eager_steps(policy, mode)
        return
    _, model, run = _assembled(policy, mode)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_same_steps(_plain(), _Through(model, run), x, **TIGHT)
    torch._dynamo.reset()


class _Through:
    """`model` (its parameters and buffers under their own names) whose forward runs through `run`: a
    whole-compiled module names them under `_orig_mod.`."""

    def __init__(self, model: torch.nn.Module, run: torch.nn.Module):
        self.model, self.run = model, run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def _batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g, device="cuda"), torch.randint(0, 10, (n,), generator=g, device="cuda")


def _replays_match_eager_steps(policy: str, mode: str) -> None:
    """A captured step's replays against the plain module's eager steps: logits, losses and at the end
    every weight and buffer, through a partial batch (eager, on the same weights) and an lr change."""
    torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32 = True, False
    torch.backends.cudnn.allow_tf32 = False
    try:
        ref = _plain("cuda", torch.float32)
        cfg, model, run = _assembled(policy, mode, "cuda", torch.float32)
        plain_cfg = StepConfig(torch.device("cuda"), amp=False, channels_last=False)
        hyper = dict(momentum=0.9, nesterov=True, weight_decay=1e-4)
        ref_opt, opt = sgd(ref.parameters(), cfg, 0.1, **hyper), sgd(model.parameters(), cfg, 0.1, **hyper)
        ref_sched = torch.optim.lr_scheduler.MultiStepLR(ref_opt, [3], gamma=0.1)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [3], gamma=0.1)
        ref_step, step = Step(ref, ref, ref_opt, plain_cfg, 16), Step(model, run, opt, cfg, 16)
        batches = [_batch(16, i) for i in range(3)] + [_batch(5, 3)] + [_batch(16, i) for i in (4, 5)]
        tol = dict(rtol=1e-4, atol=1e-5) if mode == "cudagraph" and policy == "fast" else dict(rtol=1e-3, atol=1e-4)
        for x, y in batches:
            want = ref_step(x, y)
            got = step(x, y)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, **tol)
            ref_sched.step(), sched.step()
        assert step.captured is not None
        assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.01)
        got, want = model.state_dict(), ref.state_dict()
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], **tol, msg=lambda m: f"{k}: {m}")
    finally:
        torch.backends.cudnn.deterministic = False


def test_a_step_configuration_is_resolved_when_made():
    """Defaults follow the device (bf16 autocast and channels_last on CUDA only); the old boolean
    `--compile` means regional; the policy resolves to fast on the CPU."""
    cfg = StepConfig(torch.device("cpu"), "auto", True)
    assert (cfg.compile, cfg.amp, cfg.channels_last, cfg.dtype, cfg.captures) == ("regional", False, False, None, False)
    assert cfg.memory_for(NET, 8) == "fast"
    assert StepConfig(torch.device("cpu"), amp=True).dtype == torch.bfloat16


def test_a_partial_batch_takes_the_same_weights_uncompiled():
    """The Step knows the batch its compiled module is for: another size runs the module that holds the
    weights, not a second compilation; uncompiled, every batch runs the same module."""
    model = to_module(NET)
    compiled = StepConfig(torch.device("cpu"), compile="regional")
    step = Step(model, torch.nn.Identity(), torch.optim.SGD(model.parameters(), lr=0.1), compiled, 8)
    assert step.module_for(8) is step.run and step.module_for(5) is model
    plain = Step(model, model, step.opt, StepConfig(torch.device("cpu")), 8)
    assert plain.module_for(8) is plain.module_for(5) is model
