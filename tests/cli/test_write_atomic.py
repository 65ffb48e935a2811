"""`archspec.files.write_atomic`, the one writer behind every file archspec replaces (`-o` outputs, run
files, checkpoints, transferred weights): whole or not at all, the mode `open()` would give, never over
a directory, a device or a FIFO."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archspec.cli import app
from archspec.errors import RunError
from archspec.files import new_file_mode, write_atomic
from conftest import SPECS


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_umasks_mode(tmp_path, umask_022):
    assert new_file_mode() == 0o644
    for i, data in enumerate(("text\n", b"\x00bytes", lambda p: p.write_bytes(b"by a function"))):
        path = write_atomic(tmp_path / f"f{i}", data)
        assert mode(path) == 0o644, data  # mkstemp's 0600 never reaches the target
    assert (tmp_path / "f0").read_text() == "text\n"
    assert (tmp_path / "f1").read_bytes() == b"\x00bytes"
    assert (tmp_path / "f2").read_bytes() == b"by a function"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0", "f1", "f2"]


def test_a_replaced_file_gets_the_umasks_mode_too(tmp_path, umask_022):
    """One rule: what is written is a new file (a 0600 an earlier writer leaked does not stay)."""
    path = tmp_path / "private"
    path.write_text("old")
    path.chmod(0o600)
    write_atomic(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o644


def test_a_link_is_written_through(tmp_path):
    real = tmp_path / "real"
    real.write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert write_atomic(link, "new") == real
    assert link.is_symlink() and real.read_text() == "new"


def test_special_targets_are_refused_before_writing(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    calls = []
    for target, kind in ((fifo, "a FIFO"), (folder, "a directory")):
        with pytest.raises(RunError, match=f"cannot write {target}: it is {kind}"):
            write_atomic(target, calls.append)
    assert not calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "pipe"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "f"
    path.write_text("previous")

    def full_disk(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(RunError, match="cannot write .*f: No space left"):
        write_atomic(path, full_disk)

    def refuse(tmp: Path) -> None:
        assert tmp.read_text() == "new" and tmp.name.startswith(".f.") and tmp.name.endswith(".tmp")
        raise OSError(5, "the written file does not read back")

    with pytest.raises(RunError, match="does not read back"):
        write_atomic(path, "new", check=refuse)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_missing_folder_is_made(tmp_path):
    path = write_atomic(tmp_path / "a" / "b" / "f.txt", "x")
    assert path.read_text() == "x"


def test_transfer_output_gets_the_umasks_mode(tmp_path, umask_022):
    """`archspec transfer -o` wrote its weights at mode 0600; now as any new file."""
    from safetensors.torch import load_file

    from archspec.api import build
    from archspec.compiler.transfer import save_state_dict

    spec = SPECS / "tiny_delugenet.arch"
    weights = tmp_path / "weights.safetensors"
    state = build(spec).state_dict()
    save_state_dict(state, weights)
    assert mode(weights) == 0o644
    out = tmp_path / "out.safetensors"
    r = CliRunner().invoke(app, ["transfer", str(weights), str(spec), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert mode(out) == 0o644
    assert set(load_file(out)) == set(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors", "weights.safetensors"]


def test_a_drawing_is_written_atomically_and_never_into_a_fifo(tmp_path, umask_022):
    spec = str(SPECS / "tiny_delugenet.arch")
    fifo = tmp_path / "pipe.svg"
    os.mkfifo(fifo)
    r = CliRunner().invoke(app, ["graph", spec, "-o", str(fifo)])
    assert r.exit_code == 2 and f"cannot write {fifo}: it is a FIFO" in r.output, r.output
    for name in ("net.svg", "net.png", "net.dot"):
        r = CliRunner().invoke(app, ["graph", spec, "-o", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        assert mode(tmp_path / name) == 0o644
    assert (tmp_path / "net.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.dot", "net.png", "net.svg", "pipe.svg"]
