"""`archspec runs`: two run folders side by side (one trained for real, one continued by the trainer's
own metrics writer), the numbers shown equal to those computed from the folders' files, their curves
overlaid in one picture, and a folder that is not a run refused with exit 2, naming the file and never
showing its content."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.runtime.train import TrainConfig, train
from archspec.runtime.train.metrics import read_metrics, write_metrics
from archspec.runtime.viz.curves import figure_size

MICRO = """network micro(classes: int = 10, channels: int = 1, size: int = 8) {
  input(channels, size, size)
  stem { conv(4, 3, padding=1) }
  head { bn relu gap linear(classes) }
}
"""
SECRET = "\x1b[31mdo-not-show-me"


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`a`: one epoch of the quick recipe on 200 synthetic images with a validation split; `b`: a copy of
    it with a second epoch's row, written by the trainer's metrics writer."""
    root = tmp_path_factory.mktemp("runs")
    (root / "micro.arch").write_text(MICRO)
    cfg = TrainConfig(spec=str(root / "micro.arch"), out=root / "a", data="synthetic-cifar10:200", recipe="quick",
                      epochs=1, batch_size=32, progress=False, device="cpu", val_split=0.2, tensorboard=False)
    rows = train(cfg, log=lambda m: None)
    shutil.copytree(root / "a", root / "b")
    second = {**rows[0], "epoch": 2, "val_acc": rows[0]["val_acc"] + 0.125, "test_acc": 0.5, "seconds": 2.5}
    write_metrics(root / "b" / "metrics.jsonl", rows + [second])
    return root


def test_json_numbers_come_from_the_folders(runs):
    r = cli("runs", runs / "a", runs / "b", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    net = archspec.network(str(runs / "micro.arch"), channels=3, size=32)  # as the run fitted it to the data
    cost = archspec.summary(net)
    for s, name in zip(got, "ab"):
        rows = read_metrics(runs / name / "metrics.jsonl")
        config = json.loads((runs / name / "config.json").read_text())
        assert s["run"] == str(runs / name) and s["network"] == "micro" == config["network"]
        assert (s["parameters"], s["macs"]) == (cost.params, cost.macs)
        assert s["recipe"] == "quick" and s["epochs"] == len(rows) and s["planned_epochs"] == 1
        assert s["best_on"] == "val" and s["best_acc"] == max(r["val_acc"] for r in rows)
        assert rows[s["best_epoch"] - 1]["val_acc"] == s["best_acc"]
        assert s["last_test_acc"] == rows[-1]["test_acc"]
        assert s["seconds"] == pytest.approx(sum(r["seconds"] for r in rows))
        assert s["images_per_s"] == pytest.approx(sum(r["images_per_s"] for r in rows) / len(rows))
    assert got[1]["best_epoch"] == 2 and got[1]["last_test_acc"] == 0.5


def test_table_and_overlaid_curves(runs, tmp_path):
    png = tmp_path / "both.png"
    r = cli("runs", runs / "a", runs / "b", "--plot", png)
    assert r.exit_code == 0, r.output
    for field in ("spec", "params", "MACs", "recipe", "epochs", "best acc", "last test acc", "time", "images/s"):
        assert field in r.output
    assert "quick" in r.output and "micro" in r.output and "(val, epoch 2)" in r.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == figure_size(2)


@pytest.mark.parametrize("damage", ["config-garbage", "config-list", "config-missing", "metrics-garbage",
                                    "metrics-missing", "not-a-folder"])
def test_a_damaged_folder_exits_2_naming_the_file(runs, tmp_path, damage):
    folder = tmp_path / "run"
    shutil.copytree(runs / "a", folder)
    what, how = damage.split("-", 1)
    target = folder / ("config.json" if what == "config" else "metrics.jsonl")
    if how == "garbage":
        target.write_text(f"{SECRET}\n{{\n")
    elif how == "list":
        target.write_text(json.dumps([SECRET]))
    elif how == "missing":
        target.unlink()
    else:
        folder = tmp_path / "nothing-here"
        target = folder
    r = cli("runs", runs / "a", folder)
    assert r.exit_code == 2, r.output
    assert str(target) in r.output and "do-not-show-me" not in r.output and "Traceback" not in r.output
    assert "┃" not in r.output  # no table for the good run either: every folder is read first


def test_plot_needs_a_png_name(runs, tmp_path):
    r = cli("runs", runs / "a", "--plot", tmp_path / "curves.svg")
    assert r.exit_code == 2 and ".png" in r.output and not (tmp_path / "curves.svg").exists()


def test_a_damaged_checkpoint_leaves_only_the_sizes_out(runs, tmp_path):
    """A run whose config.json does not record its size is measured from its checkpoint; a checkpoint that
    does not load is noted and its sizes shown as —. A folder name is drawn as written (`$` is no math)."""
    folder = tmp_path / "x$^{$"
    shutil.copytree(runs / "a", folder)
    (folder / "last.safetensors").write_bytes(b"\0" * 64)
    r = cli("runs", runs / "a", folder, "--json", "--plot", tmp_path / "c.png")  # two runs: their names drawn
    assert r.exit_code == 0, r.output
    assert "note:" in r.stderr and "last.safetensors" in r.stderr
    got = json.loads(r.stdout)[1]
    assert got["parameters"] is None and got["macs"] is None and got["recipe"] == "quick"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
