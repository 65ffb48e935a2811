"""`archspec eval --ema` scores the moving average a run kept, `--confusion DIR` writes the test images'
confusion matrix, and a run writes its own after each test evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from archspec.cli import app
from archspec.runtime.train import TrainConfig, evaluate_checkpoint, train
from conftest import SPECS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(spec=str(SPECS / "tiny_delugenet.arch"), sets={"n": 1, "w": 4}, out=out, epochs=1,
                          batch_size=256, progress=False, device="cpu", tensorboard=False,
                          tweaks={"ema": True, "ema_decay": 0.5}), log=lambda m: None)
    finally:
        torch.set_num_threads(n)
    return out


def _eval(*args) -> dict:
    r = CliRunner().invoke(app, ["eval", *map(str, args), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_eval_ema_scores_the_average_not_the_weights(run):
    plain, averaged = _eval(run / "last.safetensors"), _eval(run / "last.safetensors", "--ema")
    want = evaluate_checkpoint(run / "last.safetensors", device="cpu", weights="ema")
    assert averaged["test_loss"] == pytest.approx(want["test_loss"], rel=1e-6)
    assert averaged["test_loss"] != plain["test_loss"]


def test_a_run_and_eval_write_the_confusion_matrix(run, tmp_path):
    written = json.loads((run / "confusion.json").read_text())
    _eval(run / "last.safetensors", "--confusion", tmp_path)
    again = json.loads((tmp_path / "confusion.json").read_text())
    assert again == written and (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert sum(map(sum, written["counts"])) == _eval(run / "last.safetensors")["images"]


def test_confusion_into_a_missing_folder_is_exit_2(run, tmp_path):
    r = CliRunner().invoke(app, ["eval", str(run / "last.safetensors"), "--confusion", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such folder" in r.output
