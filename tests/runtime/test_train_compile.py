"""`archspec train --compile MODE`: modes the device cannot run are refused before any work; regional
compilation trains like eager."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from archspec.cli import app
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")
SMALL = ["--set", "n=1", "--set", "w=4", "--epochs", "1", "--batch-size", "256", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize("mode, message", [
    ("cudagraph", "--compile cudagraph needs a CUDA device"),
    ("regional+cudagraph", "--compile regional+cudagraph needs a CUDA device"),
    ("regionl", "unknown compile mode 'regionl'"),
])
def test_modes_the_device_cannot_run_are_refused(tmp_path, mode, message):
    r = CliRunner().invoke(app, ["train", TINY, *SMALL, "--compile", mode, "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "run" / "last.safetensors").exists()


@pytest.mark.slow
def test_regional_compile_trains_as_eager(tmp_path):
    losses = {}
    for mode in ("none", "regional"):
        r = CliRunner().invoke(app, ["train", TINY, *SMALL, "--no-amp", "--compile", mode, "--out", str(tmp_path / mode)])
        assert r.exit_code == 0, r.output
        losses[mode] = json.loads((tmp_path / mode / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]
    assert losses["regional"] == pytest.approx(losses["none"], rel=1e-3)


@pytest.mark.slow
def test_a_partial_batch_runs_the_same_weights_uncompiled(tmp_path):
    """A partial batch (the test set's last) is not worth compiling every region again for its shape: it
    runs the uncompiled module, which holds the same weights. One epoch then compiles each region
    structure once for training and once for evaluation (no grad), nothing more."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from archspec.compiler.passes.regional import region_kinds
    from archspec.runtime.train import TrainConfig, Trainer

    torch._dynamo.reset()
    counters.clear()
    t = Trainer(TrainConfig(spec=TINY, sets={"n": 1, "w": 4}, out=tmp_path / "run", epochs=1, batch_size=256,
                            progress=False, device="cpu", compile="regional"), log=lambda m: None)
    assert t.feed.size("test") % 256  # the test set ends on a partial batch
    t.fit()
    kinds = len(region_kinds(t.run))
    assert kinds >= 3 and counters["stats"]["unique_graphs"] == 2 * kinds
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert 0 <= row["test_acc"] <= 1 and row["test_loss"] > 0
    torch._dynamo.reset()
