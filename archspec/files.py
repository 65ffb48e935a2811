"""Files read within bounds and files replaced whole.

Reading: `regular_file`, `open_bounded` and `read_bounded` accept only a regular file (a FIFO, a device, a
directory or a socket is refused before it is opened, and again by `fstat` once open, so a path swapped
meanwhile is caught), open it non-blocking (opening never waits for a pipe's writer), refuse it when its
size is above the limit the caller gives for that kind of file before reading, and read at most one byte
past the limit (a file that grows while read is refused too).

Writing: `write_atomic` writes through a temporary file beside the target and renames it
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
from typing import BinaryIO, Callable, Union

from .errors import RunError

# What to write: text (UTF-8, newlines as given), bytes, or a function that writes the file at a path
# it is given (a library that saves only by file name, such as safetensors' `save_file`).
Data = Union[str, bytes, Callable[[Path], None]]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))
_CHUNK = 1 << 20


def kind_of(mode: int) -> str | None:
    """What a file of this `st_mode` is, in words ("a FIFO", "a directory"), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _check_regular(st: os.stat_result, path, limit: int | None, what: str) -> os.stat_result:
    kind = kind_of(st.st_mode)
    if kind is not None:
        raise RunError(f"cannot read {what} {path}: it is {kind}, not a regular file",
                       f"give the path of a regular file holding the {what}")
    if limit is not None and st.st_size > limit:
        raise RunError(f"cannot read {what} {path}: it is {st.st_size:,} bytes, over the {limit:,}-byte limit",
                       f"give the path of a real {what}")
    return st


def _read_error(err: OSError, path, what: str) -> RunError:
    if isinstance(err, FileNotFoundError):
        return RunError(f"cannot read {what} {path}: no such file")
    return RunError(f"cannot read {what} {path}: {_reason(err)}")


def open_nonblocking(path: str | os.PathLike, *, follow: bool = True) -> BinaryIO:
    """`path` opened for binary reading without waiting (a FIFO with no writer opens at once), or the
    OSError; with `follow=False` a symbolic link in the last component is refused (ELOOP). The caller
    checks what it opened (`os.fstat`, `kind_of`) before reading."""
    flags = _READ_FLAGS | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_file(path: str | os.PathLike, limit: int | None, what: str) -> os.stat_result:
    """The `stat` of `path` (through symbolic links) when it is a regular file of at most `limit` bytes
    (no bound for None); otherwise a RunError naming `what` and the path. Nothing is opened."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as err:
        raise _read_error(err if isinstance(err, OSError) else OSError(str(err)), path, what) from None
    return _check_regular(st, path, limit, what)


def open_bounded(path: str | os.PathLike, limit: int | None, what: str, *, follow: bool = True) -> BinaryIO:
    """`path` opened for binary reading once it is known to be a regular file of at most `limit` bytes
    (checked before opening and again on the open file; opened non-blocking). With `follow=False` a
    symbolic link in the last component is refused. The caller reads what it needs and closes it."""
    if follow:
        regular_file(path, limit, what)
    else:
        try:
            st = os.lstat(path)
        except (OSError, ValueError) as err:
            raise _read_error(err if isinstance(err, OSError) else OSError(str(err)), path, what) from None
        if stat.S_ISLNK(st.st_mode):
            raise RunError(f"cannot read {what} {path}: it is a symbolic link")
        _check_regular(st, path, limit, what)
    try:
        f = open_nonblocking(path, follow=follow)
    except (OSError, ValueError) as err:
        if isinstance(err, OSError) and err.errno == errno.ELOOP and not follow:
            raise RunError(f"cannot read {what} {path}: it is a symbolic link") from None
        raise _read_error(err if isinstance(err, OSError) else OSError(str(err)), path, what) from None
    try:
        _check_regular(os.fstat(f.fileno()), path, limit, what)
    except BaseException:
        f.close()
        raise
    return f


def read_bounded(path: str | os.PathLike, limit: int, what: str, *, follow: bool = True) -> bytes:
    """All the bytes of the regular file at `path`, when it holds at most `limit` bytes; otherwise a
    RunError naming `what` and the path. At most `limit + 1` bytes are read, whatever size the file
    claims."""
    with open_bounded(path, limit, what, follow=follow) as f:
        try:
            data = read_at_most(f, limit)
        except OSError as err:
            raise _read_error(err, path, what) from None
    if data is None:
        raise RunError(f"cannot read {what} {path}: it holds more than the {limit:,}-byte limit",
                       f"give the path of a real {what}")
    return data


def read_at_most(f: BinaryIO, limit: int) -> bytes | None:
    """The rest of `f` when it is at most `limit` bytes, else None (reading at most `limit + 1`)."""
    chunks, size = [], 0
    while True:
        chunk = f.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


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
    raise RunError(f"cannot write {path}: it is {kind_of(st.st_mode)}", "give the path of a regular file, or a new one")


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
