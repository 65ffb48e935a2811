"""The shipped spec library (`specs/*.arch`, installed as the package data `archspec.specs`): models
found by name from any folder, and a catalogue of them computed from their graphs, without torch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .compiler.costs import summarize
from .graph.elaborate import elaborate
from .errors import SpecError, did_you_mean
from .language.loader import Spec, load_file

_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a model's name, not a path and not spec text


def folder() -> Path:
    """The library's folder. Installed packages are unpacked on disk, so it is a real path, which `use`
    lines need to find `lib/`."""
    return Path(str(resources.files("archspec.specs")))


def names() -> list[str]:
    """The shipped models, sorted."""
    return sorted(p.stem for p in folder().glob("*.arch"))


def find(source: str) -> Path:
    """The file `source` names: itself when it exists or is not a bare name (so that a missing path is
    reported as one), else the shipped model of that name. An unknown bare name is an error that names
    the closest models."""
    path = Path(source)
    if path.exists() or not _BARE.fullmatch(source) or path.suffix == ".arch":
        return path
    model = folder() / f"{source}.arch"
    if model.is_file():
        return model
    hint = did_you_mean(source, names())
    raise SpecError(f"no spec file or shipped model named '{source}'", None,
                    f"{hint + ' ' if hint else ''}`archspec list` shows the shipped models")


def family(spec: Spec) -> str:
    """The library file (`lib/NAME.arch`) a spec is built from, or '' for a self-contained one."""
    uses = [Path(u.path) for u in spec.files[spec.file].uses]
    return next((p.stem for p in uses if p.parent.name == "lib"), "")


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    params: int
    macs: int
    input_shape: tuple[int, ...]


def catalogue() -> list[Entry]:
    """Every shipped model at its defaults: parameters and MACs from the graph, no weights built."""
    rows = []
    for name in names():
        spec = load_file(folder() / f"{name}.arch")
        s = summarize(elaborate(spec, {}))
        rows.append(Entry(name, family(spec), s.params, s.macs, tuple(s.input_shape)))
    return rows
