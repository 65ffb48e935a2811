"""Training on a CUDA GPU: an epoch, an evaluation and a resume through the CLI; one DDP rank under
torchrun (NCCL); the lean memory mode and the fast policy's buffered merges against plain ops in float64
and under bf16 autocast; and a
pt2 export verified on the GPU. Each is small: the whole file takes well under a few minutes."""

import io
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

import archspec
from archspec.compiler.codegen import to_module
from archspec.compiler.passes import memory
from archspec.runtime.export import ExportOptions, export_model
from archspec.runtime.train import checkpoint as ckpt
from archspec.runtime.train import model_from_source
from conftest import ROOT, SPECS

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY = str(SPECS / "tiny_delugenet.arch")
TINY_SETS = ["--set", "n=1", "--set", "w=4"]
# Small members of each family the lean pass rewrites (or, for DelugeNet, leaves but for shared moments)
SMALL = {
    "densenet_bc": (SPECS / "densenet_bc100_k12.arch", {"depth": 16, "k": 4}),
    "delugenet": (SPECS / "delugenet146.arch", {"n": 2}),
    "gunn": (SPECS / "gunn15.arch", {"widths": [8, 12, 16], "segments": [2, 3, 4]}),
    "seqresnet": (SPECS / "seqresnet_k8r4.arch", {"r": 1, "k": 4, "drop": 0.3}),  # dropout masks must agree too
}


def _archspec(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *launcher, "-m", "archspec", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"})  # log lines unwrapped
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_train_evaluate_and_resume_on_cuda(tmp_path):
    out = tmp_path / "run"
    first = _archspec("train", TINY, *TINY_SETS, "--epochs", "1", "--batch-size", "128", "--device", "cuda",
                      "--memory", "auto", "--out", str(out), "--quiet")
    assert "device cuda" in first.stdout
    ck = ckpt.load(out / "last.safetensors")
    assert ck.epoch == 1 and ck.meta["memory"] == "fast"  # auto: a tiny network fits any GPU
    report = json.loads(_archspec("eval", str(out / "last.safetensors"), "--device", "cuda", "--json").stdout)
    assert report["epoch"] == 1 and report["images"] == 360 and 0 <= report["test_acc"] <= 1
    assert report["test_acc"] == pytest.approx(json.loads((out / "metrics.jsonl").read_text())["test_acc"], abs=0.02)

    second = _archspec("train", TINY, *TINY_SETS, "--epochs", "2", "--batch-size", "128", "--device", "cuda",
                       "--resume", "--out", str(out), "--quiet")
    assert "resuming" in second.stdout and "memory mode fast" in second.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert ckpt.load(out / "last.safetensors").epoch == 2
    assert all(torch.isfinite(t).all() for t in ckpt.load(out / "last.safetensors").model.values()
               if t.is_floating_point())


def test_cuda_graph_steps_train_as_eager_steps_and_resume(tmp_path):
    """Replayed steps (with the last partial batch run eagerly) follow the eager run's losses; a resume
    captures again from the restored state."""
    common = ("train", TINY, *TINY_SETS, "--batch-size", "128", "--device", "cuda", "--no-amp", "--quiet")
    _archspec(*common, "--epochs", "2", "--out", str(tmp_path / "eager"))
    _archspec(*common, "--epochs", "1", "--compile", "cudagraph", "--out", str(tmp_path / "graph"))
    second = _archspec(*common, "--epochs", "2", "--compile", "cudagraph", "--resume", "--out", str(tmp_path / "graph"))
    assert "compile cudagraph" in second.stdout
    rows = {k: [json.loads(line) for line in (tmp_path / k / "metrics.jsonl").read_text().splitlines()]
            for k in ("eager", "graph")}
    for a, b in zip(rows["graph"], rows["eager"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.02)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.03)


def test_one_ddp_rank_under_torchrun_on_nccl(tmp_path):
    out = tmp_path / "run"
    r = _archspec("train", TINY, *TINY_SETS, "--epochs", "1", "--batch-size", "128", "--device", "cuda",
                  "--out", str(out), "--quiet",
                  launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"))
    assert "(DDP)" in r.stdout and "device cuda:0" in r.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["train_loss"] > 0
    assert set(ckpt.load(out / "last.safetensors").model) == set(to_module(archspec.network(
        TINY, n=1, w=4)).state_dict())  # saved unwrapped: no `module.` prefixes from DDP


# (family, form): each lean family, and DelugeNet's merges buffered as the fast policy trains them
FORMS = [(kind, "lean") for kind in SMALL] + [("delugenet", "buffered")]


def _pair(kind: str, dtype: torch.dtype, form: str = "lean") -> tuple[torch.nn.Module, torch.nn.Module, torch.Size]:
    """The plain module and the lean (or buffered) one, with the same weights (none left at zero), on the GPU."""
    spec, overrides = SMALL[kind]
    net = archspec.network(spec, **overrides)
    torch.manual_seed(0)
    plain = to_module(net)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.1 * torch.randn_like(p))
    lean = (memory.apply(to_module(net, init=False), "lean") if form == "lean"
            else memory.training(to_module(net, init=False), "fast", "none"))
    lean.load_state_dict(plain.state_dict())
    dev = torch.device("cuda")
    return plain.to(dev, dtype).train(), lean.to(dev, dtype).train(), torch.Size(net.shape(net.input))


def _step(model: torch.nn.Module, x: torch.Tensor, w: torch.Tensor, amp: bool) -> tuple[torch.Tensor, list]:
    """One forward and backward from a fixed seed (the same dropout masks): the output and the
    gradients of the input and of every parameter."""
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out = model(x)
    (out.float() * w).sum().backward()
    return out.detach().float(), [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("kind,form", FORMS)
def test_lean_equals_plain_in_float64_on_cuda(kind, form):
    plain, lean, shape = _pair(kind, torch.float64, form)
    if form == "buffered":
        assert any(n.target.__name__ == "merge" for n in lean.graph.nodes if n.op == "call_function")
    elif kind != "delugenet":
        assert any(type(m).__name__ in ("ConcatNormActConv", "ConcatConv") for m in lean.modules())
    x = torch.randn(4, *shape, dtype=torch.float64, device="cuda")
    w = torch.randn(4, 10, dtype=torch.float64, device="cuda")
    out_p, grads_p = _step(plain, x, w, amp=False)
    out_l, grads_l = _step(lean, x, w, amp=False)
    torch.testing.assert_close(out_l, out_p, rtol=1e-9, atol=1e-9)
    names = ["input"] + [n for n, _ in plain.named_parameters()]
    assert names[1:] == [n for n, _ in lean.named_parameters()]
    for name, a, b in zip(names, grads_p, grads_l):
        assert a is not None and b is not None and a.abs().sum() > 0, name
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-9, msg=lambda m: f"{name}: {m}")
    buffers_p, buffers_l = dict(plain.named_buffers()), dict(lean.named_buffers())
    for name, a in buffers_p.items():  # running statistics after the step
        torch.testing.assert_close(buffers_l[name], a, rtol=1e-9, atol=1e-9, msg=lambda m: f"{name}: {m}")


def _distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(torch.cat([(x.float() - y.float()).flatten() for x, y in zip(a, b)]).norm())


@pytest.mark.parametrize("kind,form", FORMS)
def test_lean_under_bf16_autocast_is_as_close_to_fp32_as_plain(kind, form):
    """bf16 rounds differently in the fused modules, so they cannot match the plain bf16 run exactly;
    they must be finite and as far from the fp32 result as the plain bf16 run is, within a small factor."""
    plain, lean, shape = _pair(kind, torch.float32, form)
    x = torch.randn(8, *shape, device="cuda")
    w = torch.randn(8, 10, device="cuda")
    ref_out, ref_grads = _step(plain, x, w, amp=False)
    plain.load_state_dict(lean.state_dict())  # undo the reference step's running statistics
    out_p, grads_p = _step(plain, x, w, amp=True)
    out_l, grads_l = _step(lean, x, w, amp=True)
    assert torch.isfinite(out_l).all() and all(torch.isfinite(g).all() for g in grads_l)
    for got, plain_bf16, ref in (([out_l], [out_p], [ref_out]), (grads_l, grads_p, ref_grads)):
        scale = float(torch.cat([r.flatten() for r in ref]).norm())
        assert _distance(got, ref) <= 3 * _distance(plain_bf16, ref) + 1e-3 * scale


def test_pt2_export_verified_on_cuda(tmp_path):
    net, model = model_from_source(TINY, {"n": 1, "w": 4})
    model = model.to("cuda")
    console = Console(file=io.StringIO(), width=120)
    path = export_model(net, model, ExportOptions(format="pt2", output=tmp_path / "tiny.pt2", verify=True), console)
    assert path.exists() and "ok" in console.file.getvalue()
    program = torch.export.load(str(path)).module()
    x = torch.randn(1, *net.shape(net.input), device="cuda")
    with torch.no_grad():
        got, want = program(x), model(x)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
