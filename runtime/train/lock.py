"""One writer per run folder: `RunLock` holds an advisory lock (`fcntl.flock`) on `.archspec.lock` inside
`--out` for the whole of a run, with the holder's process id written in it, so that a second `train`
into the same folder, or a `--resume` while the first still runs, is refused (a RunError, exit 2)
with the folder and the live process named.

The kernel releases a flock when its holder's last descriptor closes, so the lock of a run that was
killed goes with it; what remains is the file, taken over by the next run. A lock still held while
the process id in the file is dead belongs to a process that inherited the descriptor (a data-loader
worker left behind by a killed run): it is stale too, and taken over by replacing the file. Taking,
taking over and releasing happen under a short flock of the folder itself, so two runs that start at
once never both hold the lock. Once it is held, the temporaries a killed writer left in the folder
(`write_atomic`'s `.NAME.XXXXXXXX.tmp`) are removed: no other run can be writing them. The lock file is
removed when the run ends, and so is the folder when the run created it and left nothing else in it.
Advisory: only archspec's own runs honour it."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from archspec.errors import RunError
from archspec.runtime.process import alive

LOCK_NAME = ".archspec.lock"
_PID_BYTES = 32  # what is read of a lock file: a process id and a newline
_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # write_atomic's temporaries (tempfile.mkstemp names)


def _holder(fd: int) -> int | None:
    """The process id written in an open lock file, or None where it holds no number."""
    try:
        text = os.pread(fd, _PID_BYTES, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) < 20 else None


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """A flock on the folder itself, held while the lock file is examined, taken or removed."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:  # removed while this waited (by a run that created it and ended)
            raise FileNotFoundError(errno.ENOENT, "the folder was removed", str(folder))
        yield
    finally:
        os.close(fd)


def clear_temporaries(folder: Path) -> list[str]:
    """Remove the temporaries of atomic writes a killed process left directly in `folder` (regular files
    only; nothing is followed); the names removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except OSError:
                pass
    return removed


class RunLock:
    """The lock of one run folder; `acquire()` takes it or refuses, `release()` gives it back."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Create the folder where missing and take its lock; a RunError naming the folder and the live
        process that holds it, or what stopped the folder from being created or written."""
        for _ in range(3):  # a folder removed under a waiting run is made again
            self._make_folder()
            try:
                with _folder_lock(self.folder):
                    self._fd = self._take()
                clear_temporaries(self.folder)
                return
            except FileNotFoundError:
                continue
            except OSError as err:
                self._remove_created()
                raise RunError(f"cannot lock --out {self.folder}: {err.strerror or err}",
                               "give a folder this user may create and write") from None
            except BaseException:
                self._remove_created()
                raise
        raise RunError(f"cannot lock --out {self.folder}: it was removed while this run started")

    def release(self) -> None:
        """Remove the lock file and give the lock back; the folder goes too where this run created it and
        left it empty."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with _folder_lock(self.folder):
                try:
                    if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                        os.unlink(self.path)
                except OSError:
                    pass
                os.close(fd)
                fd = None
        except OSError:
            pass
        finally:
            if fd is not None:
                os.close(fd)
        self._remove_created()

    def _make_folder(self) -> None:
        p, missing = self.folder, []
        while not p.exists() and not p.is_symlink() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            for d in reversed(missing):
                d.mkdir()
                self._created.append(d)
        except FileExistsError:
            pass  # made meanwhile by another run
        except OSError as err:
            self._remove_created()
            raise RunError(f"cannot create --out {self.folder}: {err.strerror or err}",
                           "give a folder this user may create and write") from None
        if not self.folder.is_dir():
            raise RunError(f"--out {self.folder} is a file, not a folder", "give a new folder, or an existing run's")

    def _take(self) -> int:
        """Open and flock the lock file (under the folder's lock); a stale one is replaced."""
        for _ in range(2):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise RunError(f"cannot lock --out {self.folder}: {LOCK_NAME} there is not a regular file",
                                   f"remove {self.path}")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pid = _holder(fd)
                    if pid is not None and alive(pid):
                        raise RunError(f"--out {self.folder} is in use by a run still going (process {pid})",
                                       "wait for it to end, or give another --out: two runs never write one "
                                       "folder") from None
                    os.unlink(self.path)  # held by a leftover of a dead run: a new file takes its place
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
                return fd
            except BaseException:
                os.close(fd)
                raise
        raise RunError(f"cannot lock --out {self.folder}: its lock file is held and replaced by another process")

    def _remove_created(self) -> None:
        for d in reversed(self._created):  # deepest first
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []
