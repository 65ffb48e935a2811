"""`archspec train --memory`: the lean module trains to the same weights as the plain one, the mode is
recorded in the run's checkpoints, and a resume keeps it."""

import pytest
import torch
from typer.testing import CliRunner

from archspec.cli import app
from archspec.compiler.passes.fused import ConcatNormActConv
from archspec.runtime.train import TrainConfig, Trainer
from archspec.runtime.train import checkpoint as ckpt
from conftest import SPECS

DENSE = str(SPECS / "densenet_bc100_k12.arch")
SMALL = {"depth": 16, "k": 4}  # two bottleneck layers per block: each block concatenates


def _cfg(out, **kw) -> TrainConfig:
    # 64 synthetic images in batches of 64: an epoch is one SGD step
    base = dict(spec=DENSE, sets=dict(SMALL), data="synthetic-cifar10:64", out=out, epochs=1, batch_size=64,
                progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_lean_takes_the_same_sgd_step_as_fast(tmp_path, one_thread):
    fast = Trainer(_cfg(tmp_path / "fast", memory="fast"), log=lambda m: None)
    lean = Trainer(_cfg(tmp_path / "lean", memory="lean"), log=lambda m: None)
    assert fast.memory == "fast" and lean.memory == "lean"
    assert not any(isinstance(m, ConcatNormActConv) for m in fast.model.modules())
    assert sum(isinstance(m, ConcatNormActConv) for m in lean.model.modules()) >= 3  # the lean pass did apply
    start = {k: v.clone() for k, v in fast.model.state_dict().items()}
    assert all(torch.equal(start[k], v) for k, v in lean.model.state_dict().items())  # the same initial weights
    fast.fit()
    lean.fit()
    a = ckpt.load(tmp_path / "fast/last.safetensors")
    b = ckpt.load(tmp_path / "lean/last.safetensors")
    assert a.epoch == b.epoch == 1 and a.model.keys() == b.model.keys()
    moved = [k for k in a.model if a.model[k].is_floating_point() and not torch.equal(a.model[k], start[k])]
    assert len(moved) > len(a.model) // 2  # the step changed the weights and running statistics
    for k in a.model:
        torch.testing.assert_close(b.model[k], a.model[k], rtol=1e-4, atol=1e-5, msg=k)
    assert a.meta["memory"] == "fast" and b.meta["memory"] == "lean"


def test_a_resume_keeps_the_recorded_mode(tmp_path):
    out = tmp_path / "run"
    Trainer(_cfg(out, memory="lean"), log=lambda m: None).fit()
    again = Trainer(_cfg(out, epochs=2, resume=True), log=lambda m: None)
    assert again.start_epoch == 1 and again.memory == "lean"
    assert any(isinstance(m, ConcatNormActConv) for m in again.model.modules())


def test_auto_on_the_cpu_is_fast(tmp_path):
    assert Trainer(_cfg(tmp_path / "auto", memory="auto"), log=lambda m: None).memory == "fast"


def test_an_unknown_mode_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(app, ["train", DENSE, "--set", "depth=16", "--set", "k=4", "--data", "synthetic-cifar10:64",
                                 "--memory", "leen", "--device", "cpu", "--out", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code != 0
    assert "unknown memory mode 'leen'" in r.output and "lean" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "run" / "last.safetensors").exists()
