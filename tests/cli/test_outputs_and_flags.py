"""Where the command line writes and which flags it takes: `-o` writes only regular files or new paths,
`--out` must be a folder that can be written, and every flag out of range — seeds, batch sizes,
milestones, synthetic set sizes — is refused with one message and exit code 2, before any work."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archspec.cli import app
from archspec.errors import RunError
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")
SMALL = ["--set", "n=1", "--set", "w=4"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(r, *words: str) -> None:
    """Exit code 2, an `error:` line, the words, and neither a traceback nor an internal error."""
    text = r.output
    assert r.exit_code == 2, text
    assert "Traceback" not in text and "internal error" not in text, text
    for w in words:
        assert w in text, (w, text)


# ---- -o ------------------------------------------------------------------------------------------

def test_output_to_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_refused(invoke("compile", TINY, "-o", fifo), f"cannot write {fifo}: it is a FIFO")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file left


def test_output_to_a_directory_is_refused(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "keep.py").write_text("mine\n")
    assert_refused(invoke("compile", TINY, "-o", folder), "is a directory")
    assert folder.is_dir() and [p.name for p in folder.iterdir()] == ["keep.py"]


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_output_to_a_device_is_refused():
    before = os.stat("/dev/null")
    assert_refused(invoke("compile", TINY, "-o", "/dev/null"), "cannot write /dev/null: it is a character device")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert not [p for p in os.listdir("/dev") if p.startswith(".null.")]


def test_output_keeps_links_and_gets_the_umasks_mode(tmp_path):
    """`-o` writes through a link, and what it writes gets the mode of an ordinary new file (the one rule
    of `archspec.files`: a replaced file's 0640 becomes the umask's too, a temporary's 0600 never stays)."""
    real = tmp_path / "real.py"
    real.write_text("old\n")
    real.chmod(0o640)
    link = tmp_path / "model.py"
    link.symlink_to(real)
    fresh = tmp_path / "fresh.py"
    umask = os.umask(0o022)
    try:
        r = invoke("compile", TINY, "-o", link)
        assert r.exit_code == 0, r.output
        assert invoke("compile", TINY, "-o", fresh).exit_code == 0
    finally:
        os.umask(umask)
    assert link.is_symlink() and "import torch" in real.read_text()
    assert stat.S_IMODE(real.stat().st_mode) == 0o644
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # a new file gets the umask's mode, not 0600


# ---- train: --out, --seed, --batch-size, --milestones, --data -----------------------------------

def test_unwritable_out_is_refused_before_training(tmp_path):
    assert_refused(invoke("train", TINY, "--out", "/proc/nope", "--quiet"), "cannot write to --out /proc/nope")
    assert not os.path.exists("/proc/nope")
    file = tmp_path / "file"
    file.write_text("mine\n")
    assert_refused(invoke("train", TINY, "--out", file / "run", "--quiet"), f"{file} is a file, not a folder")
    assert_refused(invoke("train", TINY, "--out", file, "--quiet"), "is a file, not a folder")
    assert file.read_text() == "mine\n"


def test_checking_out_leaves_nothing_behind(tmp_path):
    from archspec.runtime.train.config import check_out_dir

    check_out_dir(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "run").mkdir()
    check_out_dir(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1", str(2**63)])
def test_seed_out_of_range(tmp_path, seed):
    r = invoke("train", TINY, "--seed", seed, "--out", tmp_path / "run", "--quiet")
    assert_refused(r, "--seed")
    assert not (tmp_path / "run").exists()


def test_seed_range_in_the_config():
    from archspec.runtime.train import TrainConfig

    for seed in (-1, 2**63, 1.5, True):
        with pytest.raises(RunError, match="--seed"):
            TrainConfig(spec=TINY, seed=seed)


def test_largest_seed_trains(tmp_path, monkeypatch):
    """`--seed 2**63-1` reaches the run, seeds everything a run seeds (the data order, the weights, the
    per-rank stream) and takes a step, without a training run: the trainer is built as `archspec train`
    builds it, and its fit replaced by one step."""
    from archspec.runtime.train import Trainer

    seen = []

    def one_step(self):
        x, y = next(iter(self.feed.batches("train", 0)[0]))
        logits, loss = self.step(x, y)
        seen.append((self.cfg.seed, bool(loss.isfinite())))
        return []

    monkeypatch.setattr(Trainer, "fit", one_step)
    r = invoke("train", TINY, *SMALL, "--epochs", "1", "--seed", 2**63 - 1, "--out", tmp_path / "run",
               "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    assert seen == [(2**63 - 1, True)]


def test_batch_larger_than_the_data_is_refused(tmp_path):
    r = invoke("train", TINY, *SMALL, "--data", "synthetic-cifar10:40", "--batch-size", "64", "--epochs", "1",
               "--out", tmp_path / "run", "--device", "cpu", "--quiet")
    assert_refused(r, "batch size 64 is larger than the 40 training images", "--batch-size 40 or less")
    assert not (tmp_path / "run").exists() and "done" not in r.output  # no empty folder left behind


@pytest.mark.parametrize("value,words", [
    ("-0.5", "between 0 and 1"),
    ("1.5", "between 0 and 1"),
    ("0", "between 0 and 1"),
    ("nan", "between 0 and 1"),
    ("0.75,0.5", "must increase"),
    ("0.5,0.5", "must increase"),
    ("half", "--milestones needs fractions"),
])
def test_meaningless_milestones(tmp_path, value, words):
    r = invoke("train", TINY, "--milestones", value, "--out", tmp_path / "run", "--quiet")
    assert_refused(r, words)
    assert not (tmp_path / "run").exists()


def test_milestones_replace_a_recipe_s_regular_drops():
    from archspec.runtime.train.recipes import recipe

    assert recipe("imagenet").milestone_epochs() == [30, 60, 90]
    assert recipe("imagenet", milestones=(0.5, 0.75)).milestone_epochs() == [50, 75]
    with pytest.raises(RunError, match="not both"):
        recipe("imagenet", milestones=(0.5,), step_every=10)


def test_huge_synthetic_set_is_refused(tmp_path):
    r = invoke("train", TINY, "--data", "synthetic-cifar10:100000000000", "--out", tmp_path / "run", "--quiet")
    assert_refused(r, "above the limit of 10,000,000")


# ---- bench infer and bench train --batch ---------------------------------------------------------

@pytest.mark.parametrize("value,words", [
    ("abc", "--batch-size: 'abc' is not a number"),
    ("0", "batch sizes must be >= 1"),
    ("1,1e12", "--batch-size 1,000,000,000,000"),
    ("100000", "above the limit"),
])
def test_bench_infer_batches(value, words):
    assert_refused(invoke("bench", "infer", TINY, "--batch-size", value, "--backends", "eager", "--repeat", "3"), words)


@pytest.mark.parametrize("value,words", [
    ("0", "batch sizes must be >= 1"),
    ("1,1e12", "--batch-size 1,000,000,000,000"),
    ("100000", "above the limit"),
])
def test_bench_train_batches(value, words):
    assert_refused(invoke("bench", "train", TINY, "--batch-size", value, "--steps", "2", "--warmup", "0"), words)
