"""One writer per run folder (finding M1): a run holds the lock of its `--out` while it lives, so a second
`train` into the same folder, or a `--resume` while the first still runs, is refused with exit 2 naming
the folder and the live process; a lock left by a dead process is taken over; the first run completes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from typer.testing import CliRunner

from archspec.cli import app
from archspec.errors import RunError
from archspec.runtime.train.lock import LOCK_NAME, RunLock
from conftest import ROOT, SPECS

TINY = str(SPECS / "tiny_delugenet.arch")

# A process that takes the lock of argv[1] (loading lock.py alone: no torch), says so, and holds it until
# a line arrives on its stdin. Optionally it then writes another process id into the held file.
HOLDER = textwrap.dedent(f"""
    import importlib.util, os, sys
    spec = importlib.util.spec_from_file_location("runlock", {str(ROOT / "runtime/train/lock.py")!r})
    lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)
    held = lock.RunLock(sys.argv[1]); held.acquire()
    if len(sys.argv) > 2:
        fd = os.open(held.path, os.O_WRONLY)
        os.ftruncate(fd, 0); os.write(fd, (sys.argv[2] + "\\n").encode()); os.close(fd)
    print("held", flush=True)
    sys.stdin.readline()
    held.release()
""")


def _holder(out, *extra: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), *extra], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line == "held\n", p.stderr.read()
    return p


def _end(p: subprocess.Popen) -> None:
    p.communicate("\n", timeout=30)
    assert p.returncode == 0


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def holder(tmp_path):
    out = tmp_path / "run"
    p = _holder(out)
    yield out, p
    if p.poll() is None:
        _end(p)


def test_m1_second_lock_on_a_live_run_is_refused_with_its_pid(holder):
    out, p = holder
    assert (out / LOCK_NAME).read_text().strip() == str(p.pid)
    with pytest.raises(RunError) as e:
        RunLock(out).acquire()
    assert str(out) in e.value.message and f"process {p.pid}" in e.value.message
    _end(p)
    assert not out.exists()  # the holder made the folder, left nothing in it: both gone
    with RunLock(out) as lock:  # free again
        assert lock.path.read_text().strip() == str(os.getpid())
    assert not out.exists()


@pytest.mark.parametrize("resume", [False, True])
def test_m1_cli_train_into_a_live_run_exits_2(holder, resume):
    out, p = holder
    args = ["train", TINY, "--set", "n=1", "--set", "w=4", "--out", str(out), "--device", "cpu", "--quiet"]
    done = CliRunner().invoke(app, args + (["--resume"] if resume else []))
    assert done.exit_code == 2, done.output
    assert f"process {p.pid}" in done.output and str(out) in done.output
    assert "Traceback" not in done.output
    assert sorted(x.name for x in out.iterdir()) == [LOCK_NAME]  # the refused run wrote nothing


def test_m1_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("a run's file")
    (out / LOCK_NAME).write_text(f"{_dead_pid()}\n")  # a run killed with kill -9: the file, no lock
    with RunLock(out) as lock:
        assert lock.path.read_text().strip() == str(os.getpid())
    assert sorted(x.name for x in out.iterdir()) == ["keep.txt"]  # a folder it did not make stays


def test_m1_lock_held_by_a_leftover_of_a_dead_run_is_taken_over(tmp_path):
    """A flock still held (by a worker that inherited the descriptor) while the run's own process is dead."""
    out = tmp_path / "run"
    p = _holder(out, str(_dead_pid()))
    try:
        with RunLock(out) as lock:
            assert lock.path.read_text().strip() == str(os.getpid())
            with pytest.raises(RunError, match=f"process {os.getpid()}"):
                RunLock(out).acquire()  # the new holder is honoured in turn
    finally:
        _end(p)


def test_low_temporaries_of_a_killed_run_are_cleared_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    left = [".metrics.jsonl.a1b2c3d4.tmp", ".last.safetensors.x_9y8z7w.tmp"]
    kept = ["metrics.jsonl", ".notes.tmp", "a.b1c2d3e4.tmp"]
    for name in left + kept:
        (out / name).write_text("x")
    (out / ".dir.abcdefgh.tmp").mkdir()  # not a file: left alone
    with RunLock(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == sorted(kept + [".dir.abcdefgh.tmp"])


def test_m1_a_lock_file_that_is_not_a_file_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / LOCK_NAME)
    with pytest.raises(RunError, match="not a regular file"):
        RunLock(out).acquire()


PAUSED_TRAIN = textwrap.dedent("""
    import sys
    from archspec.runtime.train import loop
    fit = loop.Trainer.fit
    def paused(self):
        print("fitting", flush=True)
        sys.stdin.readline()
        return fit(self)
    loop.Trainer.fit = paused
    from archspec.cli import main
    sys.argv = ["archspec", *sys.argv[1:]]
    main()
""")


def test_m1_two_concurrent_trains_the_second_refused_the_first_completes(tmp_path):
    """A real `archspec train` paused after taking the lock; a second `train` and a `--resume` into its
    folder exit 2; the first then runs to the end and leaves its run, and no lock file."""
    out = tmp_path / "run"
    args = [TINY, "--set", "n=1", "--set", "w=4", "--epochs", "1", "--batch-size", "256", "--out", str(out),
            "--device", "cpu", "--quiet", "--no-tensorboard"]
    first = subprocess.Popen([sys.executable, "-c", PAUSED_TRAIN, "train", *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert first.stdout.readline() == "fitting\n", first.stderr.read()
        for extra in ([], ["--resume"]):
            done = CliRunner().invoke(app, ["train", *args, *extra])
            assert done.exit_code == 2, done.output
            assert f"process {first.pid}" in done.output
        start = time.monotonic()
        stdout, stderr = first.communicate("\n", timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert "done: test accuracy" in stdout and time.monotonic() - start < 300
    assert (out / "last.safetensors").is_file() and not (out / LOCK_NAME).exists()
