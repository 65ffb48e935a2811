"""Every tensor that training, evaluation and resume make in archspec's own code names the device it
is made on. A tensor made without `device=` lands on the CPU, which passes every CPU test and then
fails on a GPU ("Expected all tensors to be on the same device"); so the CPU run is watched for
such calls instead.

The rule, precisely: a call to a tensor factory (`FACTORIES`) is reported when
- the function that calls it directly lives in archspec's code (archspec/, compiler/, runtime/),
  so torch's own internals (an optimizer's step counter, `nn.Conv2d`'s parameters) are not judged;
- it names no `device`;
- it is given no `generator`: random draws from a seeded CPU generator are reproducible only on the
  CPU, and are moved to the device on purpose;
- it is not made while an `nn.Module` is being constructed: a module is built on the CPU and moved
  whole with `.to(device)`, parameters and buffers together.
`*_like` and `Tensor.new_*` factories inherit their device and are not watched; `torch.from_numpy`
wraps host memory and has no device to name."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from archspec.runtime.train import TrainConfig, Trainer, evaluate_checkpoint
from conftest import ROOT, SPECS

FACTORIES = {torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.zeros, torch.ones, torch.full, torch.empty,
             torch.empty_strided, torch.arange, torch.linspace, torch.logspace, torch.eye, torch.rand, torch.randn,
             torch.randint, torch.randperm, torch.normal, torch.tril_indices, torch.triu_indices}
OWN = tuple(str(ROOT / d) + "/" for d in ("archspec", "compiler", "runtime"))
TORCH = str(Path(torch.__file__).parent) + "/"


class HostFactories(TorchFunctionMode):
    """Records `file:line` of each factory call that breaks the rule in the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None and kwargs.get("generator") is None:
            caller = sys._getframe(1)
            where = caller.f_code.co_filename
            if where.startswith(OWN) and not where.startswith(TORCH) and not _building_module(caller):
                self.found.setdefault(f"{Path(where).relative_to(ROOT)}:{caller.f_lineno}",
                                      f"torch.{func.__name__}")
        return func(*args, **kwargs)


def _building_module(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__init__" and isinstance(frame.f_locals.get("self"), nn.Module):
            return True
        frame = frame.f_back
    return False


def _cfg(out: Path, **kw) -> TrainConfig:
    base = dict(spec=str(SPECS / "tiny_delugenet.arch"), sets={"n": 1, "w": 4}, out=out, epochs=1, batch_size=256,
                progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_training_evaluation_and_resume_make_every_tensor_on_its_device(tmp_path, one_thread):
    out = tmp_path / "run"
    with HostFactories() as watch:
        Trainer(_cfg(out), log=lambda m: None).fit()  # a training epoch and its evaluation
        evaluate_checkpoint(out / "last.safetensors", device="cpu", batch_size=256)
        resumed = Trainer(_cfg(out, epochs=2, resume=True), log=lambda m: None)
        assert resumed.start_epoch == 1  # the resume really took place
        resumed.fit()
    assert not watch.found, "tensors made without device= (they land on the CPU, whatever the training device):\n" \
        + "\n".join(f"  {where}: {what}" for where, what in sorted(watch.found.items()))


def test_the_watch_reports_a_host_tensor_made_in_archspec_code():
    """The watch itself: a device-less factory called from a runtime module is caught, with its line."""
    from archspec.runtime.train import feed

    with HostFactories() as watch:
        # Readout's CPU buffer names its device: not reported; a bare torch.tensor from the same
        # module's globals, run as if written there, is
        feed.Readout(torch.device("cpu"))
        exec(compile("torch.tensor(1.0)", feed.__file__, "exec"), {"torch": torch})
    assert list(watch.found.values()) == ["torch.tensor"]
    assert next(iter(watch.found)).startswith("runtime/train/feed.py:")
