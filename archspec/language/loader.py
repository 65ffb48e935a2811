"""Reading spec files: `use` resolution (relative to the using file), cycles, duplicate definitions."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

from . import tree as T
from .. import files
from ..errors import Ident, Loc, SpecError, loc_of
from .syntax import parse_text

# Bounds that refuse a file before it costs memory or time. A real spec is a few kilobytes and a few
# thousand tokens (the largest shipped one, 5 KB); parsing costs up to ~0.1 ms a token.
MAX_FILE_BYTES = 256 * 1024  # one file
MAX_TOKENS = 50_000  # the spec and every file it uses, together
MAX_FILES = 256  # files read for one spec
_TOKEN = re.compile(r'#[^\n]*|"[^"\n]*"|[A-Za-z0-9_.]+|\S')  # about the parser's tokens (comments count)


@dataclass
class Spec:
    """A parsed spec with everything it `use`s: the definitions in scope and the main network."""

    main: str  # name of the network the spec builds: the last one in its own file
    file: str
    layers: dict[str, T.LayerDef] = field(default_factory=dict)
    patterns: dict[str, T.PatternDef] = field(default_factory=dict)
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


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _bad_byte(data: bytes, offset: int, shown: str, used_at: Loc | None, message: str, expected: str) -> SpecError:
    """An error located at the byte that makes `data` no spec text: its line, and its column counted in
    characters as the rest of the line decodes, so the caret lands under it."""
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[start:offset].decode("utf-8", errors="replace")) + 1
    hint = f"expected {expected}" + (f"; the file is used at {used_at}" if used_at is not None else "")
    return SpecError(message, Loc(shown, line, column, column + 1), hint,
                     {shown: data.decode("utf-8", errors="replace")})


def read_text(path: Path, loc: Loc | None = None, limit: int = MAX_FILE_BYTES, follow: bool = True) -> str:
    """The text of a spec file. Problems are reported at `loc` (the `use` line that named the file).

    Only a regular file is read, and at most `limit` bytes of it: a device (`/dev/zero`), a pipe or a
    socket is refused without reading, and opening does not wait for a pipe's writer. With
    `follow=False` a symbolic link in the last component is refused (the caller resolved the path)."""
    shown = str(path)
    try:
        if follow:
            _refuse_special(os.stat(path).st_mode, shown, loc)  # before opening: a device is not opened
        with files.open_nonblocking(path, follow=follow) as f:
            st = os.fstat(f.fileno())
            _refuse_special(st.st_mode, shown, loc)
            if st.st_size > limit:
                raise SpecError(f"{shown} is larger than {limit:,} bytes: too large to be a spec", loc)
            data = files.read_at_most(f, limit)
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
    except ValueError:  # a NUL byte in the path
        raise SpecError(f"cannot read {shown!r}: not a path", loc) from None
    if data is None:
        raise SpecError(f"{shown} is larger than {limit:,} bytes: too large to be a spec", loc)
    if b"\x00" in data:
        raise _bad_byte(data, data.index(b"\x00"), shown, loc,
                        f"{shown} is a binary file, not a spec: it holds a NUL byte", "text: a spec holds no NUL bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _bad_byte(data, err.start, shown, loc, f"{shown} is not UTF-8 text: byte 0x{data[err.start]:02x}",
                        "UTF-8 text (save the file as UTF-8)") from None
    return text[1:] if text.startswith("\ufeff") else text


def _refuse_special(mode: int, shown: str, loc: Loc | None) -> None:
    kind = files.kind_of(mode)
    if kind == "a directory":
        raise SpecError(f"{shown} is a directory, not a spec file", loc)
    if kind is not None:
        raise SpecError(f"{shown} is not a regular file ({kind}), so not a spec", loc)


def library_folder() -> Path | None:
    """The shipped spec library's folder (package data `archspec.specs`), which `use` may always read."""
    try:
        return Path(str(resources.files("archspec.specs"))).resolve()
    except (ModuleNotFoundError, TypeError, OSError):
        return None


# Never read through `use`, whatever the roots: the kernel's and devices' files (the environment, memory
# maps, devices that never end), and names starting with a dot (`.env`, `.git/`, `.ssh/`) below a root.
NEVER_READ = (Path("/proc"), Path("/sys"), Path("/dev"))


@dataclass
class _Reading:
    """What one load may read: the folders `use` is confined to, and the size read so far. `from_text`
    when the spec is text given from Python, whose roots are only the shipped library and `allow_paths`."""

    roots: list[Path]
    tokens: int = 0
    files: int = 0
    from_text: bool = False

    def refusal(self, target: Path) -> str | None:
        """Why `use` may not read the resolved path `target`, or None when it may; decided on the path
        alone, so the answer tells nothing of the file."""
        if any(target == p or target.is_relative_to(p) for p in NEVER_READ):
            return "archspec never reads files under /proc, /sys or /dev"
        inside = [r for r in self.roots if target == r or target.is_relative_to(r)]
        if not inside:
            if self.from_text:
                return ("spec text given from Python may use only the shipped library and the folders in "
                        "allow_paths")
            return "it lies outside the spec's folder and the shipped library"
        if all(any(part.startswith(".") for part in target.relative_to(r).parts) for r in inside):
            return "a file or folder whose name starts with a dot is never read"
        return None

    def count(self, text: str, file: str, loc: Loc | None) -> None:
        """Refuse a spec whose files together hold more than MAX_TOKENS tokens or MAX_FILES files,
        before parsing (parsing costs time per token)."""
        self.files += 1
        if self.files > MAX_FILES:
            raise SpecError(f"the spec uses more than {MAX_FILES} files", loc)
        if len(text) > MAX_FILE_BYTES:
            raise SpecError(f"{file} is larger than {MAX_FILE_BYTES:,} bytes: too large to be a spec",
                            Loc(file, 1, 1))
        n = self.tokens
        for m in _TOKEN.finditer(text):
            n += 1
            if n > MAX_TOKENS:
                line, col = _line_col(text, m.start())
                raise SpecError(f"the spec has more than {MAX_TOKENS:,} tokens: too large to be a spec",
                                Loc(file, line, col), "a real spec is a few thousand tokens; loops and "
                                "templates write long networks briefly")
        self.tokens = n


def check_size(texts: Mapping[str, str]) -> None:
    """Refuse spec texts given from memory (a checkpoint's) that together exceed what one load may read:
    files, bytes per file, tokens. Before parsing, since parsing costs time per token."""
    reading = _Reading(roots=[], from_text=True)
    for file, text in texts.items():
        reading.count(text, file, None)


def _roots(base_dir: Path | None, allow_paths: Iterable[str | os.PathLike] | None) -> list[Path]:
    roots = [base_dir.resolve()] if base_dir is not None else []
    lib = library_folder()
    if lib is not None:
        roots.append(lib)
    for p in allow_paths or ():
        roots.append(Path(p).expanduser().resolve())
    return roots


def load(text: str, file: str = "<spec>", base_dir: Path | None = None, key: str | None = None,
         allow_paths: Iterable[str | os.PathLike] | None = None) -> Spec:
    """Parse `text` and everything it uses. `use` paths are relative to `base_dir` (the file's folder,
    the working folder for text). `key` identifies the file for cycle detection (its resolved path, when
    it is a file).

    `use` reads only files inside `base_dir`'s tree, the shipped library and the folders in
    `allow_paths`, after following symbolic links: a spec from elsewhere cannot read the host's files.
    Text with no `base_dir` (spec text from Python) reads only the shipped library and `allow_paths`
    (relative paths still start at the working folder). Nothing under /proc, /sys or /dev and no
    dotfile is ever read, and a used file that is refused or does not parse is named with its line and
    column in errors, never shown."""
    reading = _Reading(_roots(base_dir, allow_paths), from_text=base_dir is None)
    base_dir = base_dir or Path.cwd()
    spec = Spec(main="", file=file)
    try:
        if not text.strip():
            raise SpecError("the spec is empty: expected `network NAME(...) { ... }`", Loc(file, 1, 1), None,
                            {file: text})
        _load_into(spec, text, file, base_dir, stack=[], key=key, reading=reading)
        own = spec.files[file].networks
        if not own:
            raise SpecError("the spec defines no network (expected `network NAME(...) { ... }`)",
                            Loc(file, 1, 1))
        spec.main = str(own[-1].name)
    except SpecError as e:
        raise e.with_sources(spec.sources) from None
    return spec


def load_file(path: str | os.PathLike, allow_paths: Iterable[str | os.PathLike] | None = None) -> Spec:
    """Parse the spec file at `path` (which the caller chose) and the files it uses, confined to its
    folder's tree, the shipped library and `allow_paths`."""
    if str(path) == "":  # parse("") is empty spec text, not the current folder
        return load("")
    p = Path(path)
    return load(read_text(p), str(path), p.resolve().parent, key=str(p.resolve()), allow_paths=allow_paths)


def _load_into(spec: Spec, text: str, file: str, base_dir: Path, stack: list[str], reading: _Reading,
               loc: Loc | None = None, key: str | None = None) -> None:
    key = key or file
    if file in spec.files or key in spec.keys:
        return
    spec.keys.add(key)
    if loc is None:  # the spec itself: its own lines are shown in errors
        spec.sources[file] = text
    try:
        reading.count(text, file, loc)
        parsed = parse_text(text, file)
    except SpecError as e:
        raise (_unshown(e, file) if loc is not None else e) from None
    spec.sources[file] = text
    stack = stack + [key]
    for use in parsed.uses:
        if not use.path.strip():
            raise SpecError("`use` needs a file name", use.loc)
        try:
            target = (base_dir / use.path).resolve()
        except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte, a name too long
            raise SpecError(f"cannot follow the path {_short(use.path)!r}", use.loc) from None
        why = reading.refusal(target)  # before looking at it: the refusal tells nothing about the file
        if why is not None:
            if reading.from_text:
                hint = "pass the folders it may use: allow_paths=[...]"
            else:
                hint = (f"the spec's folder is {reading.roots[0]}; to allow another folder, pass "
                        "--allow-path DIR (allow_paths=[...] from Python)")
            raise SpecError(f"`use` may not read {_short(use.path)!r}: {why}", use.loc, hint)
        if str(target) in stack:
            chain = " → ".join(Path(s).name for s in stack[stack.index(str(target)):] + [str(target)])
            raise SpecError(f"`use` cycle: {chain}", use.loc,
                            "a file cannot use itself, directly or through other files")
        if str(target) in spec.keys:
            continue
        try:
            found = target.exists()
        except (OSError, ValueError):
            found = False
        if not found:
            raise SpecError(f"no such spec file: {_short(use.path)!r}", use.loc, f"looked for {_short(str(target))}")
        label = _label(target)
        try:
            used = read_text(target, use.loc, follow=False)
        except SpecError as e:
            raise _unshown(e, str(target), label) from None
        _load_into(spec, used, label, target.parent, stack, reading, use.loc, key=str(target))
    spec.files[file] = parsed
    define_all(spec, parsed)


def define_all(spec: Spec, parsed: T.File) -> None:
    """Enter a parsed file's layer templates, patterns and networks into the spec's tables."""
    for d in parsed.layers:
        define(spec, spec.layers, d, "layer")
    for d in parsed.patterns:
        define(spec, spec.patterns, d, "pattern")
    for d in parsed.networks:
        define(spec, spec.networks, d, "network")


def _unshown(e: SpecError, *names: str) -> SpecError:
    """`e` with the text of the used file it is located in withheld: a used file that is refused or does
    not parse may be anything (a secret, a device's output), so its lines are never shown, only its
    path, line and column. (None as its source tells a renderer the text is not to be read again.)"""
    if e.loc is not None and e.loc.file in names:
        e.sources[e.loc.file] = None  # type: ignore[assignment]
    return e


def _short(text: str, most: int = 200) -> str:
    """`text` cut to `most` characters for a message (a path may be thousands long)."""
    return text if len(text) <= most else text[:most] + "…"


def define(spec: Spec, table: dict, d, what: str) -> None:
    """Enter a parsed layer, pattern or network definition into the spec's table, refusing duplicates and
    a name that is already another kind of definition."""
    name = str(d.name)
    where = loc_of(d.name, d.loc)
    old = table.get(name)
    if old is not None and old is not d:
        raise SpecError(f"{what} '{name}' is defined twice", where, f"first defined at {loc_of(old.name, old.loc)}")
    for kind, other in (("layer", spec.layers), ("pattern", spec.patterns), ("network", spec.networks)):
        if kind != what and name in other:
            raise SpecError(f"'{name}' is already a {kind}", where,
                            f"defined at {loc_of(other[name].name, other[name].loc)}")
    table[name] = d


def declared_recipe(spec: Spec) -> Ident | None:
    """The training recipe the spec's main network declares (`recipe "name"`): its own, or for
    `network b = a(...)` the nearest one along the networks it names; None where none does."""
    name, seen = spec.main, set()
    while name in spec.networks and name not in seen:
        seen.add(name)
        d = spec.networks[name]
        if d.recipe is not None:
            return d.recipe
        if not isinstance(d, T.NetworkAlias):
            return None
        name = str(d.base)
    return None
