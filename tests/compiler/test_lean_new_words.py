"""The lean policy with the newer words: a DenseNet built with `silu`, and one whose layers hold a
`parallel` block, compute the plain graph's numbers in float64 and hold memory linear in depth."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archspec
from archspec.runtime.bench.train import saved_bytes

LAYERS = {
    "silu": "layer unit(k: int) { bn silu conv(4 * k, 1) bn silu conv(k, 3, padding=1) }",
    "parallel": ("layer unit(k: int) {\n  bn relu conv(4 * k, 1) bn relu\n"
                 "  block parallel concat { conv(k // 2, 1) conv(k // 2, 3, padding=1) }\n}"),
}


def _spec(kind: str, depth: int, k: int = 4) -> str:
    return (LAYERS[kind] + "\nnetwork net(classes: int = 10) {\n  input(3, 8, 8)\n  conv(2 * %d, 3, padding=1)\n"
            "  block dense concat { repeat %d { unit(%d) } }\n  head { bn relu gap linear(classes) }\n}\n") % (k, depth, k)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_lean_computes_the_plain_numbers_in_float64(kind):
    torch.manual_seed(0)
    plain = archspec.build(_spec(kind, 4)).double().train()
    lean = archspec.build(_spec(kind, 4), memory="lean").double().train()
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (3,))
    outs = [m(x) for m in (plain, lean)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    grads = [torch.autograd.grad(F.cross_entropy(o, y), [x, *m.parameters()]) for o, m in zip(outs, (plain, lean))]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)
    for (name, a), b in zip(plain.state_dict().items(), lean.state_dict().values()):
        if "running" in name:
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_lean_memory_grows_linearly_with_depth(kind):
    """Doubling the depth doubles what lean holds for backward (within 15%), where plain codegen's
    concatenations make it grow faster."""
    held = {}
    for memory in ("fast", "lean"):
        for depth in (8, 16):
            torch.manual_seed(0)
            m = archspec.build(_spec(kind, depth), memory=memory).train()
            x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
            held[memory, depth] = saved_bytes(m, x, y)
    assert held["lean", 16] / held["lean", 8] <= 2.3, held
    assert held["fast", 16] / held["fast", 8] > held["lean", 16] / held["lean", 8] + 0.3, held
    assert held["lean", 16] < 0.8 * held["fast", 16], held
