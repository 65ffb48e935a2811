"""The generated GraphModule: readable code named after the spec, analytic costs that agree with the
built module and torch's FlopCounterMode, torch.compile, and the standalone file."""

import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archspec
from archspec.compiler.standalone import standalone_source
from conftest import SPECS

SMALL = {"n": 2}  # DelugeNet with 2/4/6 composite layers: the same wiring, quick to run


def test_code_is_straight_line_and_named_after_the_spec():
    gm = archspec.build(SPECS / "delugenet146.arch", **SMALL)
    code = gm.code
    assert "self.block2.layer3.merge(" in code
    assert "self.transition1.conv1(" in code and "self.head.linear1(" in code
    assert "for " not in code and "while " not in code
    names = {n for n, _ in gm.named_modules()}
    assert {"stem.conv1", "block1.layer1.conv2", "block3.merge", "head.bn1"} <= names


@pytest.mark.parametrize("spec,overrides", [("delugenet146", SMALL), ("resnetlike146", SMALL),
                                            ("delugenet143", {"layers": [1, 2, 2, 1], "size": 64})])
def test_macs_agree_with_flop_counter(spec, overrides):
    net = archspec.network(SPECS / f"{spec}.arch", **overrides)
    s = archspec.summary(net)
    gm = archspec.build(net).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        gm(torch.randn(1, *s.input_shape))
    assert fc.get_total_flops() == 2 * s.macs
    assert sum(p.numel() for p in gm.parameters()) == s.params


@pytest.mark.slow
def test_forward_and_backward_under_torch_compile_aot_eager():
    gm = archspec.build(SPECS / "delugenet146.arch", **SMALL).train()
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    compiled = torch.compile(gm, backend="aot_eager")
    y = compiled(x)
    y.sum().backward()
    grads = [p.grad.clone() for p in gm.parameters()]
    gm.zero_grad()
    ref = gm(x)
    ref.sum().backward()
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    for g, p in zip(grads, gm.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-3, atol=1e-4)


def test_standalone_file_needs_only_torch(tmp_path):
    gm = archspec.build(SPECS / "delugenet146.arch", **SMALL).eval()
    src = standalone_source(gm, "delugenet146")
    assert "archspec" not in src.split('"""', 2)[2]
    (tmp_path / "model.py").write_text(src)
    torch.save(gm.state_dict(), tmp_path / "weights.pt")
    x = torch.randn(2, 3, 32, 32)
    torch.save({"x": x, "y": gm(x)}, tmp_path / "io.pt")
    script = f"""
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("model", r"{tmp_path / 'model.py'}")
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
net = mod.{type(gm).__name__}().eval()
net.load_state_dict(torch.load(r"{tmp_path / 'weights.pt'}", weights_only=True))
io = torch.load(r"{tmp_path / 'io.pt'}", weights_only=True)
torch.testing.assert_close(net(io["x"]), io["y"])
assert not any(m.startswith("archspec") for m in sys.modules), "archspec was imported"
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
