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
