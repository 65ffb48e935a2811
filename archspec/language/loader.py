"""Reading spec files: `use` resolution (relative to the using file), cycles, duplicate definitions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import tree as T
from .errors import Loc, SpecError, loc_of
from .syntax import parse_text

MAX_FILE_BYTES = 16 * 1024 * 1024  # a spec is a few kilobytes; anything this large is not one


@dataclass
class Spec:
    """A parsed spec with everything it `use`s: the definitions in scope and the main network."""

    main: str  # name of the network the spec builds: the last one in its own file
    file: str
    layers: dict[str, T.LayerDef] = field(default_factory=dict)
    networks: dict[str, T.NetworkDef | T.NetworkAlias] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    files: dict[str, T.File] = field(default_factory=dict, repr=False)
    keys: set[str] = field(default_factory=set, repr=False)  # resolved paths of the files read


def _label(path: Path) -> str:
    """How a used file is named in messages: relative to the working folder when it is inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def read_text(path: Path, loc: Loc | None = None) -> str:
    """The text of a spec file. Problems are reported at `loc` (the `use` line that named the file)."""
    shown = str(path)
    try:
        if path.is_dir():
            raise SpecError(f"{shown} is a directory, not a spec file", loc)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(f"{shown} is {size:,} bytes: too large to be a spec", loc)
        data = path.read_bytes()
    except SpecError:
        raise
    except FileNotFoundError:
        raise SpecError(f"no such spec file: {shown}", loc) from None
    except IsADirectoryError:
        raise SpecError(f"{shown} is a directory, not a spec file", loc) from None
    except PermissionError:
        raise SpecError(f"cannot read {shown}: permission denied", loc) from None
    except OSError as err:
        raise SpecError(f"cannot read {shown}: {err.strerror or err}", loc) from None
    if b"\x00" in data:
        line, col = _line_col(data, data.index(b"\x00"))
        raise SpecError(f"{shown} is a binary file, not a spec (a NUL byte at line {line}, column {col})", loc)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line, col = _line_col(data, err.start)
        raise SpecError(f"{shown} is not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}, column {col})",
                        loc) from None
    return text[1:] if text.startswith("\ufeff") else text


def load(text: str, file: str = "<spec>", base_dir: Path | None = None, key: str | None = None) -> Spec:
    """Parse `text` and everything it uses. `use` paths are relative to `base_dir` (the file's folder).
    `key` identifies the file for cycle detection (its resolved path, when it is a file)."""
    spec = Spec(main="", file=file)
    try:
        if not text.strip():
            raise SpecError("the spec is empty: expected `network NAME(...) { ... }`", Loc(file, 1, 1), None,
                            {file: text})
        _load_into(spec, text, file, base_dir or Path.cwd(), stack=[], key=key)
        own = spec.files[file].networks
        if not own:
            raise SpecError("the spec defines no network (expected `network NAME(...) { ... }`)",
                            Loc(file, 1, 1))
        spec.main = str(own[-1].name)
    except SpecError as e:
        raise e.with_sources(spec.sources) from None
    return spec


def load_file(path: str | os.PathLike) -> Spec:
    if str(path) == "":  # parse("") is empty spec text, not the current folder
        return load("")
    p = Path(path)
    return load(read_text(p), str(path), p.resolve().parent, key=str(p.resolve()))


def _load_into(spec: Spec, text: str, file: str, base_dir: Path, stack: list[str], loc: Loc | None = None,
               key: str | None = None) -> None:
    key = key or file
    if file in spec.files or key in spec.keys:
        return
    spec.keys.add(key)
    spec.sources[file] = text
    parsed = parse_text(text, file)
    stack = stack + [key]
    for use in parsed.uses:
        if not use.path.strip():
            raise SpecError("`use` needs a file name", use.loc)
        target = (base_dir / use.path).resolve()
        if str(target) in stack:
            chain = " → ".join(Path(s).name for s in stack[stack.index(str(target)):] + [str(target)])
            raise SpecError(f"`use` cycle: {chain}", use.loc,
                            "a file cannot use itself, directly or through other files")
        if str(target) in spec.keys:
            continue
        if not target.exists():
            raise SpecError(f"no such spec file: {use.path!r}", use.loc, f"looked for {target}")
        _load_into(spec, read_text(target, use.loc), _label(target), target.parent, stack, use.loc,
                   key=str(target))
    spec.files[file] = parsed
    for d in parsed.layers:
        _define(spec, spec.layers, d, "layer")
    for d in parsed.networks:
        _define(spec, spec.networks, d, "network")


def _define(spec: Spec, table: dict, d, what: str) -> None:
    name = str(d.name)
    where = loc_of(d.name, d.loc)
    old = table.get(name)
    if old is not None and old is not d:
        raise SpecError(f"{what} '{name}' is defined twice", where, f"first defined at {loc_of(old.name, old.loc)}")
    other = spec.networks if what == "layer" else spec.layers
    if name in other:
        raise SpecError(f"'{name}' is already a {'network' if what == 'layer' else 'layer'}", where,
                        f"defined at {loc_of(other[name].name, other[name].loc)}")
    table[name] = d
