"""Reading spec files: `use` resolution (relative to the using file), cycles, duplicate definitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import tree as T
from .errors import Loc, SpecError
from .syntax import parse_text


@dataclass
class Spec:
    """A parsed spec with everything it `use`s: the definitions in scope and the main network."""

    main: str  # name of the network the spec builds: the last one in its own file
    file: str
    layers: dict[str, T.LayerDef] = field(default_factory=dict)
    networks: dict[str, T.NetworkDef | T.NetworkAlias] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    files: dict[str, T.File] = field(default_factory=dict, repr=False)


def read_text(path: Path, loc: Loc | None = None) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"no such spec file: {path}", loc) from None
    except IsADirectoryError:
        raise SpecError(f"{path} is a directory, not a spec file", loc) from None
    except OSError as err:
        raise SpecError(f"cannot read {path}: {err.strerror}", loc) from None
    if b"\x00" in data:
        raise SpecError(f"{path} is a binary file, not a spec", loc)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{path} is not UTF-8 text (bad byte at offset {err.start})", loc) from None


def load(text: str, file: str = "<spec>", base_dir: Path | None = None) -> Spec:
    """Parse `text` and everything it uses. `use` paths are relative to `base_dir` (the file's folder)."""
    spec = Spec(main="", file=file)
    _load_into(spec, text, file, base_dir or Path.cwd(), stack=[])
    own = spec.files[file].networks
    if not own:
        raise SpecError("the spec defines no network (expected `network NAME(...) { ... }`)",
                        Loc(file, 1, 1))
    spec.main = own[-1].name
    return spec


def load_file(path: str | Path) -> Spec:
    p = Path(path)
    return load(read_text(p), str(path), p.resolve().parent)


def _load_into(spec: Spec, text: str, file: str, base_dir: Path, stack: list[str], loc: Loc | None = None) -> None:
    key = file
    if key in stack:
        chain = " → ".join(Path(s).name for s in stack[stack.index(key):] + [key])
        raise SpecError(f"`use` cycle: {chain}", loc)
    if key in spec.files:
        return
    parsed = parse_text(text, file)
    spec.sources[file] = text
    stack = stack + [key]
    for use in parsed.uses:
        target = (base_dir / use.path).resolve()
        _load_into(spec, read_text(target, use.loc), str(target), target.parent, stack, use.loc)
    spec.files[key] = parsed
    for d in parsed.layers:
        _define(spec.layers, d, "layer")
    for d in parsed.networks:
        _define(spec.networks, d, "network")
        if d.name in spec.layers:
            raise SpecError(f"'{d.name}' is already a layer", d.loc)


def _define(table: dict, d, what: str) -> None:
    old = table.get(d.name)
    if old is not None and old is not d:
        raise SpecError(f"{what} '{d.name}' is defined twice (first at {old.loc})", d.loc)
    table[d.name] = d
