"""The shipped spec library (`specs/*.arch`, installed as the package data `archspec.specs`): models
found by name from any folder, and a catalogue of them computed from their graphs, without torch. The
catalogue's rows are cached per user (`$XDG_CACHE_HOME/archspec`, else `~/.cache/archspec`), each under
a key made of archspec's version, the spec file's bytes and the bytes of the library's `lib/` files, so
a row is computed once per version of its spec."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__
from .compiler.costs import summarize
from .graph.elaborate import elaborate
from .errors import RunError, SpecError, did_you_mean
from .files import read_bounded, write_atomic
from .language.loader import MAX_FILE_BYTES, Spec, load_file

_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a model's name, not a path and not spec text
CACHE_FILE = "summaries.json"
CACHE_FORMAT = 1  # the layout of the cache file; a file of another layout is ignored and rewritten
MAX_CACHE_BYTES = 4 * 1024 * 1024  # the cache holds a few hundred short rows
_MAX_DIMS = 8  # an input or output shape in a cached row has at most this many dimensions


def folder() -> Path:
    """The library's folder. Installed packages are unpacked on disk, so it is a real path, which `use`
    lines need to find `lib/`."""
    return Path(str(resources.files("archspec.specs")))


def names() -> list[str]:
    """The shipped models, sorted."""
    return sorted(p.stem for p in folder().glob("*.arch"))


def is_path(source: str) -> bool:
    """Whether `source` is written as a path rather than a model's name: it has a folder separator
    (`./resnet18`, `specs/x.arch`), ends in `.arch`, or is not a name at all."""
    seps = {os.sep, os.altsep or os.sep, "/"}
    return any(s in source for s in seps) or source.endswith(".arch") or not _BARE.fullmatch(source)


def find(source: str) -> Path:
    """The file `source` names. A path (see `is_path`) is itself, so that a missing one is reported as a
    path. A bare name is the shipped model of that name before anything in the working folder (a folder
    `resnet18/` does not hide the model), except a regular file of exactly that name, which is read as
    the spec it holds; write `./NAME` to mean the working folder's entry. An unknown bare name that names
    nothing in the working folder is an error that names the closest models."""
    path = Path(source)
    if is_path(source) or path.is_file():
        return path
    model = folder() / f"{source}.arch"
    if model.is_file():
        return model
    if path.exists():  # not a model: the folder (or other entry) is reported as what it is
        return path
    hint = did_you_mean(source, names())
    raise SpecError(f"no spec file or shipped model named '{source}'", None,
                    f"{hint + ' ' if hint else ''}`archspec list` shows the shipped models")


def family(spec: Spec) -> str:
    """The library file (`lib/NAME.arch`) a spec is built from, or '' for a self-contained one."""
    uses = [Path(u.path) for u in spec.files[spec.file].uses]
    return next((p.stem for p in uses if p.parent.name == "lib"), "")


@dataclass(frozen=True)
class Entry:
    """One shipped model at its defaults: its name, family (see `family`), parameters, MACs, and the
    shapes of one input and one output, without the batch."""
    name: str
    family: str
    params: int
    macs: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "params": self.params, "macs": self.macs,
                "input_shape": list(self.input_shape), "output_shape": list(self.output_shape)}


def cache_folder() -> Path:
    """The per-user cache folder: `$XDG_CACHE_HOME/archspec` where that is an absolute path (the XDG
    rule), else `~/.cache/archspec`."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "archspec"


def summaries(pattern: str | None = None) -> list[Entry]:
    """The shipped models whose names match the shell wildcard `pattern` (`resnet*`, `*net1?`, case
    ignored; None: all), sorted by name. Rows are read from the cache where their key still matches and
    computed from the graph otherwise; new rows are written back, and a cache that cannot be written
    is left as it is (the rows are still returned)."""
    chosen = [n for n in names() if pattern is None or fnmatchcase(n.lower(), pattern.lower())]
    if not chosen:
        return []
    lib = _library_digest()
    cached = _read_cache()
    rows, fresh = [], {}
    for name in chosen:
        key = _key(name, lib)
        row = cached.get(name)
        if key is None or row is None or row[0] != key:
            entry, cacheable = _compute(name)
            if key is not None and cacheable:
                fresh[name] = (key, entry)
        else:
            entry = row[1]
        rows.append(entry)
    if fresh:
        _write_cache({**cached, **fresh})
    return rows


def catalogue() -> list[Entry]:
    """Every shipped model at its defaults: parameters and MACs from the graph, no weights built."""
    return summaries()


def _compute(name: str) -> tuple[Entry, bool]:
    """The row of one model from its graph, and whether it may be cached: only when the spec reads no
    file but itself and the library's `lib/` files, which the key covers."""
    spec = load_file(folder() / f"{name}.arch")
    s = summarize(elaborate(spec, {}))
    lib = (folder() / "lib").resolve()
    main = Path(spec.file).resolve()
    cacheable = all(Path(label).resolve() == main or Path(label).resolve().is_relative_to(lib)
                    for label in spec.sources if not label.startswith("<"))
    entry = Entry(name, family(spec), s.params, s.macs, tuple(s.input_shape), tuple(s.output_shape))
    return entry, cacheable


def _library_digest() -> bytes:
    """A digest of every file under the library's `lib/` folder, names and bytes."""
    h = hashlib.sha256()
    lib = folder() / "lib"
    for p in sorted(lib.rglob("*.arch")):
        data = _spec_bytes(p)
        if data is None:
            return b""  # unreadable: nothing may be trusted, so nothing is cached (see `_key`)
        h.update(p.relative_to(lib).as_posix().encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.digest()


def _spec_bytes(path: Path) -> bytes | None:
    try:
        return read_bounded(path, MAX_FILE_BYTES, "spec")
    except (OSError, RunError):
        return None


def _key(name: str, lib: bytes) -> str | None:
    """The cache key of a model's row (None where its files cannot be read, so it is never cached)."""
    data = _spec_bytes(folder() / f"{name}.arch")
    if data is None or not lib:
        return None
    h = hashlib.sha256(f"archspec {__version__}\0{CACHE_FORMAT}\0{name}\0".encode())
    h.update(lib + data)
    return h.hexdigest()


def _read_cache() -> dict[str, tuple[str, Entry]]:
    """The cached rows by name with their keys; {} for a missing, unreadable or damaged cache. Each row
    is checked field by field and a malformed one is left out, to be computed again."""
    try:
        doc = json.loads(read_bounded(cache_folder() / CACHE_FILE, MAX_CACHE_BYTES, "cache file"))
    except (OSError, RunError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or not isinstance(doc.get("rows"), dict):
        return {}
    rows = {}
    for name, row in doc["rows"].items():
        entry = _entry_of(name, row)
        if entry is not None:
            rows[name] = entry
    return rows


def _count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _shape(v: Any) -> bool:
    return isinstance(v, list) and 0 < len(v) <= _MAX_DIMS and all(type(d) is int and d > 0 for d in v)


def _entry_of(name: Any, row: Any) -> tuple[str, Entry] | None:
    fields = {"key", "family", "params", "macs", "input_shape", "output_shape"}
    if not (isinstance(name, str) and _BARE.fullmatch(name) and isinstance(row, dict) and set(row) == fields):
        return None
    key, fam = row["key"], row["family"]
    if not (isinstance(key, str) and re.fullmatch(r"[0-9a-f]{64}", key) and isinstance(fam, str)
            and (fam == "" or _BARE.fullmatch(fam)) and _count(row["params"]) and _count(row["macs"])
            and _shape(row["input_shape"]) and _shape(row["output_shape"])):
        return None
    return key, Entry(name, fam, row["params"], row["macs"], tuple(row["input_shape"]), tuple(row["output_shape"]))


def _write_cache(rows: dict[str, tuple[str, Entry]]) -> None:
    """Write the rows of the models shipped now (rows of removed models are dropped); a failure to write
    leaves the cache as it was and is not an error."""
    shipped = set(names())
    doc = {"format": CACHE_FORMAT, "version": __version__,
           "rows": {name: {"key": key, **{k: v for k, v in e.to_json().items() if k != "name"}}
                    for name, (key, e) in sorted(rows.items()) if name in shipped}}
    try:
        write_atomic(cache_folder() / CACHE_FILE, json.dumps(doc, indent=1) + "\n")
    except RunError:
        pass
