"""A run folder read later: metrics as JSON lines, CSV and TensorBoard events that agree, the resolved
configuration in config.json, top-5 accuracy where there are more than 5 classes, files the user's
group can read, `best` chosen on held-out training images (never on the test split) and stored as
plain weights that `load_state_dict` takes as they are."""

from __future__ import annotations

import csv
import json
import os
import stat
import sys

import pytest
import torch
from safetensors.torch import load_file

import archspec
from archspec.errors import RunError
from archspec.runtime import data as D
from archspec.runtime.train import TrainConfig, Trainer, evaluate_checkpoint, train
from archspec.runtime.train import checkpoint as ckpt
from archspec.runtime.train.board import tag
from archspec.runtime.train.feed import Feed
from archspec.runtime.train.metrics import write_metrics
from archspec.runtime.train.progress import RunClock, clock
from archspec.runtime.train.scores import Tally
from archspec.runtime.train.split import holdout, parse_val_split, val_count

# one convolution and a classifier: an epoch of the digits takes a fraction of a second
MICRO = """network micro(classes: int = 10, channels: int = 1, size: int = 8) {
  input(channels, size, size)
  stem { conv(4, 3, padding=1) }
  head { bn relu gap linear(classes) }
}
"""
DIGITS_TRAIN = 1437


def _cfg(spec, out, **kw) -> TrainConfig:
    base = dict(spec=str(spec), out=out, epochs=2, batch_size=64, progress=False, device="cpu", val_split=0.2)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "micro.arch"
    path.write_text(MICRO)
    return path


@pytest.fixture(scope="module")
def run(spec, tmp_path_factory):
    """A two-epoch run with a fifth of the training images held out, made under umask 027."""
    out = tmp_path_factory.mktemp("runs") / "micro"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mask = os.umask(0o027)
    try:
        rows = train(_cfg(spec, out), log=lambda m: None)
    finally:
        os.umask(mask)
        torch.set_num_threads(threads)
    return out, rows


def _jsonl(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_csv_matches_the_json_lines(run):
    out, rows = run
    assert _jsonl(out) == rows and len(rows) == 2
    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == list(rows[0])  # the header: every column, in the rows' order
    assert [[float(c) for c in line] for line in table[1:]] == [[float(v) for v in r.values()] for r in rows]


def test_top5_is_logged_for_every_split_with_more_than_5_classes(run):
    out, rows = run
    for r in rows:
        for part in ("train", "val", "test"):
            assert r[f"{part}_acc"] <= r[f"{part}_top5"] <= 1, (part, r)
    report = evaluate_checkpoint(out / "last.safetensors", device="cpu")
    assert report["test_top5"] == pytest.approx(rows[-1]["test_top5"])
    assert report["test_acc"] == pytest.approx(rows[-1]["test_acc"])


def test_tally_counts_top5_only_above_5_classes():
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4, 0], [0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]])
    y = torch.tensor([4, 0, 0])  # 5th choice, last choice, first choice
    t = Tally(torch.device("cpu"), classes=7)
    t.add(logits, y, torch.tensor(3.0))
    got = t.totals()
    assert got["acc"] == pytest.approx(1 / 3) and got["top5"] == pytest.approx(2 / 3) and got["images"] == 3
    five = Tally(torch.device("cpu"), classes=5)
    five.add(logits[:, :5], torch.tensor([4, 0, 0]), torch.tensor(3.0))
    assert "top5" not in five.totals()


def test_config_json_says_what_ran(run, spec):
    out, rows = run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["network"] == "micro" and cfg["spec"] == str(spec) and cfg["overrides"] == {}
    assert cfg["params"] == {"classes": 10, "channels": 1, "size": 8}
    assert cfg["recipe"]["name"] == "quick" and cfg["recipe"]["epochs"] == 2 and cfg["recipe"]["batch_size"] == 64
    assert cfg["seed"] == 0 and cfg["val_split"] == 0.2 and cfg["device"] == "cpu"
    assert cfg["versions"]["archspec"] == archspec.__version__ and cfg["versions"]["torch"] == torch.__version__
    assert cfg["versions"]["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    data = cfg["data"]
    assert data["name"] == "digits" and data["classes"] == 10 and data["test_images"] == 360
    assert data["val_images"] == round(0.2 * DIGITS_TRAIN) and data["train_images"] + data["val_images"] == DIGITS_TRAIN


def test_tensorboard_events_hold_the_metrics(run):
    out, rows = run
    events = list(out.glob("events.out.tfevents.*"))
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        pytest.skip("tensorboard is not installed: no event file is expected")
    assert len(events) == 1
    acc = EventAccumulator(str(out))
    acc.Reload()
    for key in ("train_loss", "train_top5", "val_acc", "test_acc", "test_top5", "lr"):
        scalars = acc.Scalars(tag(key))
        assert [s.step for s in scalars] == [1, 2], key
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6), key


def test_files_are_group_readable(run):
    out, _ = run
    names = ["metrics.jsonl", "metrics.csv", "config.json", "last.safetensors", "best.safetensors"]
    names += [p.name for p in out.glob("events.out.tfevents.*")]
    for name in names:
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == 0o640, (name, oct(mode))  # 0666 less the umask 027 the run was made under
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_metrics_of_an_older_private_run_become_group_readable(tmp_path):
    """A run folder from before holds a 0600 metrics.jsonl: the next write gives it the umask's mode."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n')
    path.chmod(0o600)
    mask = os.umask(0o022)
    try:
        write_metrics(path, [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.75, "test_top5": 1.0}])
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "metrics.csv").stat().st_mode) == 0o644
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,test_acc,test_top5", "1,0.5,", "2,0.75,1.0"]  # a column a row lacks stays empty


def test_best_is_the_best_validation_epoch_and_loads_as_plain_weights(run):
    out, rows = run
    best = ckpt.load(out / "best.safetensors")
    want = max(rows, key=lambda r: r["val_acc"])
    assert best.epoch == best.meta["best_epoch"] == want["epoch"]
    assert best.meta["best_val_acc"] == want["val_acc"] and best.meta["val_images"] == round(0.2 * DIGITS_TRAIN)
    model = archspec.build(archspec.network(MICRO))
    model.load_state_dict(load_file(out / "best.safetensors"))  # two lines, strict: nothing but the weights
    assert all(torch.equal(v, best.model[k]) for k, v in model.state_dict().items())
    last = load_file(out / "last.safetensors")  # the resume state is there too, under its own prefixes
    weights = {k: v for k, v in last.items() if k in model.state_dict()}
    assert weights.keys() == model.state_dict().keys()
    assert all(k.split("/")[0] in ("optimizer", "scheduler", "rng") for k in last.keys() - weights.keys())
    model.load_state_dict(weights)


def test_best_follows_validation_even_where_test_disagrees(spec, tmp_path, monkeypatch, one_thread):
    """Validation and test orders differ: `best` is the validation's epoch, the test split only reported."""
    val_acc, test_acc = iter([0.5, 0.9, 0.7]), iter([0.9, 0.2, 0.95])

    def scripted(self, part="test"):
        acc = next(val_acc if part == "val" else test_acc)
        return {"loss": 1.0, "acc": acc, "top5": 1.0, "images": 10}

    monkeypatch.setattr(Trainer, "evaluate", scripted)
    rows = train(_cfg(spec, tmp_path / "run", epochs=3), log=lambda m: None)
    assert [r["val_acc"] for r in rows] == [0.5, 0.9, 0.7] and [r["test_acc"] for r in rows] == [0.9, 0.2, 0.95]
    best = ckpt.load(tmp_path / "run/best.safetensors")
    assert best.epoch == 2 and best.meta["best_val_acc"] == 0.9 and best.optimizer is None


def test_no_validation_split_writes_no_best(spec, tmp_path, one_thread):
    lines: list[str] = []
    rows = train(_cfg(spec, tmp_path / "run", epochs=1, val_split=0), log=lines.append)
    assert not (tmp_path / "run/best.safetensors").exists() and (tmp_path / "run/last.safetensors").exists()
    assert not any(k.startswith("val_") for k in rows[0]) and "test_top5" in rows[0]
    assert any("best.safetensors is not written" in line for line in lines)
    assert json.loads((tmp_path / "run/config.json").read_text())["data"]["train_images"] == DIGITS_TRAIN


def test_a_resume_keeps_the_split_and_refuses_another(spec, tmp_path, one_thread):
    out = tmp_path / "run"
    train(_cfg(spec, out, epochs=1, val_split=100), log=lambda m: None)
    with pytest.raises(RunError, match="trained with --val-split 100, not 0.1"):
        Trainer(_cfg(spec, out, epochs=2, resume=True, val_split=0.1), log=lambda m: None)
    again = Trainer(_cfg(spec, out, epochs=2, resume=True, val_split=None), log=lambda m: None)
    assert again.feed.size("val") == 100 and again.start_epoch == 1
    rows = again.fit()
    assert [r["epoch"] for r in rows] == [1, 2] and all("val_acc" in r for r in rows)
    with open(out / "metrics.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    assert json.loads((out / "config.json").read_text())["resumed_after_epoch"] == 1


# -- the split itself

def test_the_split_is_seeded_disjoint_and_complete():
    keep, held = holdout(50, 7, seed=3)
    assert len(held) == 7 and len(keep) == 43
    assert sorted(torch.cat([keep, held]).tolist()) == list(range(50))
    again = holdout(50, 7, seed=3)
    assert torch.equal(again[0], keep) and torch.equal(again[1], held)
    assert not torch.equal(holdout(50, 7, seed=4)[1], held)


@pytest.mark.parametrize("value,count", [(0, 0), (100, 100), (0.1, 144), (0.5, 719)])
def test_val_count(value, count):
    assert val_count(DIGITS_TRAIN, value) == count


@pytest.mark.parametrize("text,words", [("1437", "leaving none"), ("0.0001", "holds out no image"),
                                        ("1.5", "not a fraction"), ("-3", "negative"), ("ten", "neither")])
def test_bad_splits_are_clear_errors(text, words):
    with pytest.raises(RunError, match=words):
        val_count(DIGITS_TRAIN, parse_val_split(text))


def test_parse_val_split_types():
    assert parse_val_split("5000") == 5000 and isinstance(parse_val_split("5000"), int)
    assert parse_val_split("0.1") == 0.1 and parse_val_split("0") == 0


def test_image_folders_refuse_a_split(tmp_path):
    ds = D.Dataset("folder:x", None, None, None, None, 3, (0.5,), (0.5,), "none", 0, folder=tmp_path)
    with pytest.raises(RunError, match="in-memory data sets only"):
        Feed(ds, 8, torch.device("cpu"), val=10)


# -- the run's time left

def test_run_clock_counts_epochs_left_and_the_time_between_them():
    c = RunClock(epochs_left=3)
    t0 = c.started
    assert c.remaining(0.0, now=t0) is None
    assert c.remaining(0.25, now=t0 + 10) == pytest.approx(30 + 2 * 40)  # 40 s an epoch, so far
    c.finished.append((40.0, 50.0))  # an epoch: 40 s of training, 10 s evaluating and saving
    c.epochs_left = 2
    c.started = t0 + 50
    assert c.remaining(0.5, now=t0 + 70) == pytest.approx(20 + 10 + 50)
    assert c.between() == pytest.approx(2 * 50)
    c.epochs_left = 0
    assert c.between() == 0.0


def test_clock():
    assert clock(None) == "-:--" and clock(59.6) == "1:00" and clock(3 * 3600 + 62) == "3:01:02"


def test_the_bar_shows_the_run_eta(spec, tmp_path, monkeypatch, one_thread):
    """The run line carries the whole run's estimate, down to 0:00 when the last epoch ends."""
    from io import StringIO

    from rich.console import Console

    from archspec.runtime.train import loop, progress

    made, etas = [], []

    def bar(enabled):
        p = progress.progress_bar(True, Console(file=StringIO(), force_terminal=True, width=200))
        real = p.update

        def update(task, **kw):
            real(task, **kw)
            if "eta" in kw:
                etas.append(kw["eta"])

        p.update = update
        made.append(p)
        return p

    monkeypatch.setattr(loop, "progress_bar", bar)
    train(_cfg(spec, tmp_path / "run", epochs=2, val_split=0), log=lambda m: None)
    assert etas[0] is None and any(e is not None and e > 0 for e in etas) and etas[-1] == 0.0
    table = StringIO()
    Console(file=table, width=200).print(made[0].make_tasks_table(made[0].tasks))
    assert "run" in table.getvalue() and "2/2" in table.getvalue() and "0:00" in table.getvalue()


def test_a_validation_split_makes_every_tensor_on_its_device(spec, tmp_path, one_thread):
    """The held-out split and the top-5 counts follow tests/compiler/test_device_placement.py's rule too."""
    from test_device_placement import HostFactories

    with HostFactories() as watch:
        train(_cfg(spec, tmp_path / "run", epochs=1, val_split=0.2), log=lambda m: None)
        evaluate_checkpoint(tmp_path / "run/best.safetensors", device="cpu")
    assert not watch.found, watch.found
