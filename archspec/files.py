"""Files replaced whole: `write_atomic` writes through a temporary file beside the target and renames it
over the target, so a crash or a failed write leaves the previous file (or none), never half a file.

One rule for the mode: what is written is a new file, and gets the mode an ordinary new file gets, 0666
less the umask (0644 or 0640 usually), so the user's group can read what archspec writes; the
temporary's private 0600 never reaches the target (and a file an earlier writer left at 0600 gets the
umask's mode when it is next written). Only a regular
file or a new path is written: a directory, a device (/dev/null), a FIFO or a socket is refused before
anything is written, since replacing it with a file would break what it stood for. A symbolic link is
written through, not replaced."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Union

from .errors import RunError

# What to write: text (UTF-8, newlines as given), bytes, or a function that writes the file at a path
# it is given (a library that saves only by file name, such as safetensors' `save_file`).
Data = Union[str, bytes, Callable[[Path], None]]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def new_file_mode() -> int:
    """The mode `open()` would give a new file: 0666 less the process umask. Linux reports the umask in
    /proc; elsewhere it is read by setting it, for an instant another thread could see."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def output_target(path: str | os.PathLike) -> Path:
    """Where writing `path` lands (through a symbolic link); a RunError for anything but a regular file or
    a new path."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = target.stat()
    except FileNotFoundError:
        return target
    except OSError as err:
        raise RunError(f"cannot write {path}: {_reason(err)}") from None
    if stat.S_ISREG(st.st_mode):
        return target
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
    raise RunError(f"cannot write {path}: it is {kind}", "give the path of a regular file, or a new one")


def write_atomic(path: str | os.PathLike, data: Data, *, check: Callable[[Path], None] | None = None,
                 hint: str | None = None) -> Path:
    """Replace `path` with `data` in one step, durably (the file and its folder synced to disk), at the
    umask's mode; returns the path written (the link's target for a symbolic link). `check(tmp)` may
    read the written temporary back and raise before it replaces the target. The temporary is named
    `.NAME.XXXXXXXX.tmp` beside the target and is removed on any failure; an OSError (or any error of a
    `data` function or `check`) is a RunError naming `path`, with `hint`."""
    target = output_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise RunError(f"cannot write {path}: {_reason(err)}", hint) from None
    tmp = Path(name)
    try:
        if callable(data):  # the function may replace the file at `tmp` (safetensors writes through its own)
            os.close(fd)
            data(tmp)
            fd = os.open(tmp, os.O_RDONLY)
        try:
            if not callable(data):
                _write_all(fd, data)
            os.fsync(fd)
            os.fchmod(fd, new_file_mode())
        finally:
            os.close(fd)
        if check is not None:
            check(tmp)
        output_target(path)  # still a regular file or nothing: never replace what appeared meanwhile
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, RunError):
            raise
        if isinstance(err, Exception):
            raise RunError(f"cannot write {path}: {_reason(err)}", hint) from None
        raise
    try:
        _sync_folder(target.parent)
    except OSError as err:
        raise RunError(f"cannot write {path}: the folder could not be synced to disk ({_reason(err)})") from None
    return target


def _write_all(fd: int, data: str | bytes) -> None:
    view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
    while view:
        view = view[os.write(fd, view):]


def _sync_folder(folder: Path) -> None:
    """Make the rename durable: sync the folder's entry list (a no-op where folders cannot be opened)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return f"{type(err).__name__}: {err}".splitlines()[0]
