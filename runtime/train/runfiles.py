"""Small files of a run folder (metrics, their CSV, the resolved configuration), each replaced whole and
atomically, so a crash leaves the previous version, never half a file. They get the permissions any
file this user creates gets (the umask decides; 0644 or 0640 usually), so the user's group can read a
run: a temporary file alone would be private (0600)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def new_file_mode() -> int:
    """The mode `open()` would give a new file here: 0666 less the process umask. Linux reports the
    umask in /proc; elsewhere it is read by setting it, for an instant another thread could see."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def file_mode(path: Path) -> int:
    """An existing file keeps its mode (its owner may have changed it); a new one gets `new_file_mode`."""
    try:
        return Path(path).stat().st_mode & 0o7777
    except OSError:
        return new_file_mode()


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step, durably, with the mode of a freshly created file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
