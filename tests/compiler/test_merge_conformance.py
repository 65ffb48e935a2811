"""Every registered implementation of every learned merge against that merge's reference formula: the
output, the gradients of the inputs, weight and bias, the running statistics and num_batches_tracked after
each of two training steps, and the eval output from running statistics; in float64 on the CPU, and in
bf16 on CUDA. An implementation is covered by being registered (`archspec.compiler.merges.REGISTRY`)."""

from __future__ import annotations

import copy

import pytest
import torch

import archspec
from archspec.compiler.codegen import to_module
from archspec.compiler.merges import REGISTRY, crossdepthwise
from archspec.compiler.passes import memory
from archspec.compiler.modules import CrossDepthwise

WIDTHS = {"equal": [8, 8, 8, 8], "one": [8], "wider first": [16, 8, 8, 8], "mixed": [8, 8, 4, 4, 8]}


def _crossdepthwise(widths: list[int], momentum: float | None, dtype, device, channels_last: bool, seed: int):
    """A merge with random parameters and running statistics, and two batches of inputs (with gradients)
    and output gradients. Inputs are `dtype`; the module's state is too, but at least fp32 (as mixed
    precision keeps it)."""
    g = torch.Generator().manual_seed(seed)
    m = CrossDepthwise(widths, momentum=momentum).to(device=device, dtype=torch.promote_types(dtype, torch.float32))
    with torch.no_grad():
        for t in (m.weight, m.bias, m.running_mean):
            t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64) * 2 - 1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
    batches = []
    for _ in range(2):
        xs = [(torch.randn(4, c, 5, 6, generator=g, dtype=torch.float64) * (i + 1) + i).to(device=device, dtype=dtype)
              for i, c in enumerate(widths)]
        if channels_last:
            xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
        batches.append((xs, torch.randn(4, max(widths), 5, 6, generator=g, dtype=torch.float64).to(device, dtype)))
    return m, batches


CASES = {"crossdepthwise": _crossdepthwise}  # a merge op → its example: (module, [(inputs, output gradient)] × 2)



def _cases(device: str) -> list:
    """(op, implementation, widths) for every registered implementation that runs on `device`, with every
    example width it takes."""
    out = []
    for op, table in REGISTRY.items():
        for name, impl in table.others.items():
            for label, widths in WIDTHS.items():
                if device in impl.devices and impl.accepts(CASES[op](widths, 0.1, torch.float64, "cpu", False, 0)[0]):
                    out.append(pytest.param(op, name, widths, id=f"{op}-{name}-{label}"))
    return out


def test_every_registered_merge_has_an_example():
    assert set(REGISTRY) == set(CASES)
    assert all(REGISTRY[op].module is CrossDepthwise for op in ("crossdepthwise",))


def _steps(run, m, batches, training: bool):
    """(output, gradients of the inputs, weight and bias, running statistics) after each batch; a gradient
    is None where none reaches that tensor."""
    m.train(training)
    out = []
    for xs, g in batches:
        xs = [x.detach().clone().requires_grad_() for x in xs]
        y = run(m, *xs)
        wanted = [*xs, m.weight, m.bias]
        grads = torch.autograd.grad(y, wanted, g, allow_unused=True)
        out.append((y.detach(), grads, m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)))
    return out


def _conform(op: str, name: str, *, dtype, device, channels_last: bool, widths, momentum, tol: dict, seed: int = 0):
    table = REGISTRY[op]
    impl, ref = table.all()[name], table.reference
    if not impl.available():
        pytest.skip(f"{name} needs what does not import here")
    m, batches = CASES[op](widths, momentum, dtype, device, channels_last, seed)
    for mode in impl.modes:
        got_m, want_m = copy.deepcopy(m), copy.deepcopy(m)
        got = _steps(impl.run, got_m, batches, mode == "train")
        want = _steps(ref.run, want_m, batches, mode == "train")
        for step, ((y, grads, rm, rv, n), (y0, grads0, rm0, rv0, n0)) in enumerate(zip(got, want), 1):
            torch.testing.assert_close(y.double(), y0.double(), **tol)
            assert y.shape == y0.shape
            assert y.dtype == y0.dtype or not impl.learns  # an inference form's fp32 constants may promote bf16
            k = len(widths)
            for a, b in zip(grads[:k], grads0[:k]):
                torch.testing.assert_close(a, b, **tol)
            if impl.learns:
                for a, b in zip(grads[k:], grads0[k:]):
                    torch.testing.assert_close(a, b, **tol)
            else:  # an inference form holds its parameters as constants
                assert grads[k:] == (None, None) and all(b is not None for b in grads0[k:])
            torch.testing.assert_close(rm, rm0, **tol)
            torch.testing.assert_close(rv, rv0, **tol)
            assert n == n0 == (step if mode == "train" else 0)


@pytest.mark.parametrize("op,name,widths", _cases("cpu"))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "average"])
def test_float64_on_the_cpu(op, name, widths, channels_last, momentum):
    """(CUDA-only implementations: below, and their kernels in test_merge_buffer.py under Triton's interpreter.)"""
    _conform(op, name, dtype=torch.float64, device="cpu", channels_last=channels_last, widths=widths,
             momentum=momentum, tol=dict(rtol=1e-10, atol=1e-10))


@pytest.mark.cuda
@pytest.mark.parametrize("op,name,widths", _cases("cuda"))
def test_bf16_on_cuda(op, name, widths):
    _conform(op, name, dtype=torch.bfloat16, device="cuda", channels_last=True, widths=widths, momentum=0.1,
             tol=dict(rtol=5e-2, atol=5e-2))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("policy,compile_mode,buffer,moments,numel", [
    ("fast", "none", True, False, 10), ("fast", "whole", True, False, 10), ("fast", "none", False, False, 10),
    ("lean", "none", False, True, 10), ("fast", "none", False, False, crossdepthwise.CONCAT_BELOW + 1),
    ("inference", "none", False, False, 10)])
def test_choose_names_a_registered_implementation_that_serves_the_mode(training, policy, compile_mode, buffer,
                                                                       moments, numel):
    c = crossdepthwise.choose(training=training, policy=policy, compile_mode=compile_mode, buffer=buffer,
                              moments=moments, numel=numel)
    impl = REGISTRY["crossdepthwise"].all()[c.name]
    assert c.reason and (("train" if training else "eval") in impl.modes or policy == "inference")
    if policy == "fast" and compile_mode != "whole" and buffer:
        assert c.name == "buffered"  # on the CPU: torch sums
    elif training and moments:
        assert c.name == "from_moments"
    elif training and policy != "inference":
        assert c.name == ("reference" if numel > crossdepthwise.CONCAT_BELOW else "concatenated")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_dispatched_merge_runs_on_the_meta_device(training):
    """Shape-only builds run on the meta device, which has no autocast: the merges' full-precision
    sections must not ask it for one."""
    net = archspec.network("tiny_delugenet", n=1, w=4)
    with torch.device("meta"):
        gm = memory.apply(to_module(net, init=False), "fast").train(training)
    out = gm(torch.empty(2, *net.shape(net.input), device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (2, *net.shape(net.output))
