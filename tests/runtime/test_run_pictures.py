"""Pictures of a run: `curves.png` rewritten with the metrics at the end of every epoch, at the size its
figure says, drawing only the finite numbers a row holds; and the confusion matrix of an evaluation,
whose counts are those of the predictions counted one by one."""

from __future__ import annotations

import json
import math
import struct
from collections import Counter

import pytest
import torch

from archspec.errors import RunError
from archspec.runtime import data as D
from archspec.runtime.train import TrainConfig, evaluate_checkpoint, load_trained, train
from archspec.runtime.train.feed import Feed
from archspec.runtime.train.metrics import write_metrics
from archspec.runtime.train.scores import MAX_CONFUSION_CLASSES, Tally
from archspec.runtime.viz import confusion as C
from archspec.runtime.viz import curves

# one convolution and a classifier: an epoch of a few synthetic images takes a fraction of a second
MICRO = """network micro(classes: int = 10, channels: int = 1, size: int = 8) {
  input(channels, size, size)
  stem { conv(4, 3, padding=1) }
  head { bn relu gap linear(classes) }
}
"""
DATA = "synthetic-cifar10:200"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch run of the quick recipe on 200 synthetic images, a fifth of the training ones held out."""
    root = tmp_path_factory.mktemp("pictures")
    (root / "micro.arch").write_text(MICRO)
    cfg = TrainConfig(spec=str(root / "micro.arch"), out=root / "run", data=DATA, recipe="quick", epochs=1,
                      batch_size=32, progress=False, device="cpu", val_split=0.2, tensorboard=False)
    rows = train(cfg, log=lambda m: None)
    return root / "run", rows


def test_each_epoch_writes_curves_at_the_figures_size(run):
    folder, rows = run
    assert png_size((folder / "curves.png").read_bytes()) == curves.figure_size(1)
    # the metrics writer redraws them with the rows: a second epoch's row changes the picture
    before = (folder / "curves.png").read_bytes()
    write_metrics(folder / "metrics.jsonl", rows + [{**rows[0], "epoch": 2, "test_acc": 0.9}])
    after = (folder / "curves.png").read_bytes()
    assert after != before and png_size(after) == curves.figure_size(1)
    write_metrics(folder / "metrics.jsonl", rows)


def test_overlaid_curves_grow_a_legend_line_per_six_entries(tmp_path):
    rows = [{"epoch": e, "train_loss": 1.0 / e, "test_acc": 0.1 * e} for e in (1, 2)]
    path = curves.write_curves(tmp_path / "four.png", [(f"run{i}", rows) for i in range(4)])
    assert png_size(path.read_bytes()) == curves.figure_size(4)
    width, height = curves.figure_size(1)
    for runs in (2, 8, 14):
        lines = math.ceil((len(curves.PARTS) + runs) / curves.LEGEND_COLUMNS)
        assert curves.legend_lines(runs) == lines
        assert curves.figure_size(runs) == (width, height + round((lines - 1) * curves.LEGEND_LINE * curves.DPI))


def test_only_numbers_of_a_plausible_size_are_drawn(tmp_path):
    """A row from another writer may hold anything: only numbers within `curves.LIMIT` are drawn (values
    near the largest float leave matplotlib unable to tick its axes), the rest leave gaps."""
    big = curves.LIMIT * 10
    rows = [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": float("nan")}, {"epoch": 3, "test_acc": "x"},
            {"epoch": 4, "test_acc": True}, {"epoch": 5}, {"epoch": 6, "test_acc": 0.75, "lr": -1.0},
            {"epoch": 7, "test_acc": 1e308, "seconds": -1e308, "images_per_s": big, "lr": 5e-324},
            {"epoch": 10**15, "test_acc": 0.25}]
    assert curves.series(rows, "test_acc") == ([1, 6], [0.5, 0.75])
    path = curves.write_curves(tmp_path / "c.png", [("", rows)])  # lr below 1/LIMIT: a linear axis
    assert png_size(path.read_bytes()) == curves.figure_size(1)


def test_confusion_counts_equal_the_predictions_counted_one_by_one(run, tmp_path):
    folder, _ = run
    report = evaluate_checkpoint(folder / "last.safetensors", data=DATA, device="cpu", batch_size=16, confusion=True)
    counts = report["confusion"]
    net, model, ck = load_trained(folder / "last.safetensors")
    model.eval()
    ds = D.load(DATA, seed=int(ck.meta["seed"]))
    pairs = Counter()
    with torch.no_grad():
        for x, y in Feed(ds, 16, torch.device("cpu")).batches("test")[0]:
            pred = model(x).argmax(1)
            pairs.update(zip(y.tolist(), pred.tolist()))
    k = ds.classes
    assert counts == [[pairs[(i, j)] for j in range(k)] for i in range(k)]
    assert sum(map(sum, counts)) == report["images"]
    assert sum(counts[i][i] for i in range(k)) / report["images"] == pytest.approx(report["test_acc"])
    png = C.write_confusion(tmp_path, counts)
    assert json.loads((tmp_path / "confusion.json").read_text())["counts"] == counts
    side = round(C.figure_inches(k) * C.DPI)
    assert png_size(png.read_bytes()) == (side, side)


def test_tally_counts_pairs_only_where_asked_and_few_classes():
    logits = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0], [5.0, 0, 0]])
    y = torch.tensor([0, 2, 2, 1])
    t = Tally(torch.device("cpu"), 3, confusion=True)
    t.add(logits, y, torch.zeros(()))
    t.add(logits[:1], y[:1], torch.zeros(()))
    assert t.matrix() == [[2, 0, 0], [1, 0, 0], [0, 1, 1]]
    doubled = t.matrix(lambda counts: counts.mul_(2))  # what a sum over two equal ranks gives
    assert doubled == [[2 * c for c in row] for row in t.matrix()]
    assert Tally(torch.device("cpu"), 3).matrix() is None
    assert Tally(torch.device("cpu"), MAX_CONFUSION_CLASSES + 1, confusion=True).matrix() is None


def test_write_confusion_refuses_what_it_cannot_draw(tmp_path):
    k = C.MAX_CLASSES + 1
    with pytest.raises(RunError, match="at most"):
        C.write_confusion(tmp_path, [[0] * k for _ in range(k)])
    with pytest.raises(RunError, match="as many columns"):
        C.write_confusion(tmp_path, [[1, 2], [3]])
    assert not any(tmp_path.iterdir())
