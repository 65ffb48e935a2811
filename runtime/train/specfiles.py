"""A run's spec, carried in its checkpoints: the spec's files go in as text, so a checkpoint can be
rebuilt and evaluated anywhere, after the spec on disk has changed or gone."""

from __future__ import annotations

import ntpath
import os
import posixpath
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from archspec.graph.elaborate import elaborate
from archspec.graph.ir import Network
from archspec.errors import Loc, RunError, SpecError
from archspec.language.loader import MAX_FILE_BYTES, Spec, check_size, define_all, load_file
from archspec.language.syntax import parse_text
from archspec.runtime.data import Dataset

# Spec parameters that follow the data set unless the user sets them.
DATA_PARAMS = ("classes", "channels", "size")
# Bounds on a checkpoint's embedded spec, checked before it is parsed: a spec is a few small files.
MAX_SPEC_FILES = 256
MAX_SPEC_BYTES = 64 * 1024 * 1024


def read_spec(source: str | os.PathLike | Spec, allow_paths: Iterable[str | os.PathLike] | None = None) -> Spec:
    """The spec at a path (its `use` lines confined to its folder's tree, the shipped library and
    `allow_paths`), or one already parsed."""
    return source if isinstance(source, Spec) else load_file(source, allow_paths)


def spec_files(spec: Spec) -> tuple[dict[str, str], str]:
    """The spec's files by resolved path, and the main one: enough to rebuild it anywhere."""
    files = {str(Path(label).resolve()) if not label.startswith("<") else label: text
             for label, text in spec.sources.items()}
    main = str(Path(spec.file).resolve()) if not spec.file.startswith("<") else spec.file
    return files, main


def spec_from_files(files: Mapping[str, str], main: str) -> Spec:
    """Rebuild a spec saved by `spec_files` from the saved texts alone. A checkpoint may come from a
    stranger, so nothing is written or read on disk: `use` lines resolve among the saved files, and a
    file name that is not a plain, normalised absolute path (`..`, control characters) is refused."""
    _check_files(files, main)
    spec = Spec(main="", file=main)
    try:
        if not files[main].strip():
            raise SpecError("the spec is empty: expected `network NAME(...) { ... }`", Loc(main, 1, 1))
        _load_saved(spec, files, main, [])
        own = spec.files[main].networks
        if not own:
            raise SpecError("the spec defines no network (expected `network NAME(...) { ... }`)", Loc(main, 1, 1))
        spec.main = str(own[-1].name)
    except SpecError as e:
        raise e.with_sources(spec.sources) from None
    return spec


def _check_files(files: Any, main: Any) -> None:
    """The saved files' names and sizes, before any is parsed."""
    if not isinstance(files, Mapping) or not isinstance(main, str):
        raise RunError("the embedded spec is not a map of file names to texts and a main file name")
    if len(files) > MAX_SPEC_FILES:
        raise RunError(f"the embedded spec has {len(files):,} files; a spec has at most {MAX_SPEC_FILES}")
    total = 0
    for name, text in files.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise RunError("the embedded spec is not a map of file names to texts")
        problem = _name_problem(name)
        if problem:
            raise RunError(f"the embedded spec file name {_shown(name)} {problem}",
                           "the checkpoint was altered after archspec wrote it: do not use it")
        if "\x00" in text:
            raise RunError(f"the embedded spec file {_shown(name)} holds a NUL byte: it is not spec text")
        total += len(text)
        if len(text) > MAX_FILE_BYTES or total > MAX_SPEC_BYTES:
            raise RunError(f"the embedded spec is too large at {_shown(name)} (over {len(text):,} characters)")
    if main not in files:
        raise RunError(f"the embedded spec lacks its main file {_shown(main)}")
    check_size(files)


def _name_problem(name: str) -> str | None:
    """Why a saved file name is not one `spec_files` writes: a resolved absolute path, or `<...>`."""
    if not name or len(name) > 4096:
        return "is empty or too long"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds control characters"
    if name.startswith("<") and name.endswith(">"):
        return None
    flavour = _flavour(name)
    if not flavour.isabs(name):
        return "is not an absolute path"
    if ".." in re.split(r"[\\/]", name) or flavour.normpath(name) != name:
        return "is not a normalised path (it holds `..`, `.` or doubled separators)"
    return None


def _flavour(name: str):
    """Path rules for a saved name: a checkpoint written on Windows names its files `C:\\...`."""
    return ntpath if ntpath.splitdrive(name)[0] else posixpath


def _shown(name: str) -> str:
    """A saved name, quoted for a message: escaped, length bounded."""
    return ascii(name if len(name) <= 200 else name[:200] + "...")


def _load_saved(spec: Spec, files: Mapping[str, str], name: str, stack: list[str]) -> None:
    """`loader.load` over the saved texts: a file's uses are defined before it, each file once."""
    spec.keys.add(name)
    spec.sources[name] = text = files[name]
    parsed = parse_text(text[1:] if text.startswith("\ufeff") else text, name)
    stack = stack + [name]
    for use in parsed.uses:
        target = _resolve_use(files, name, use.path, use.loc)
        if target in stack:
            chain = " → ".join(_flavour(s).basename(s) for s in stack[stack.index(target):] + [target])
            raise SpecError(f"`use` cycle: {chain}", use.loc, "a file cannot use itself, directly or through other files")
        if target not in spec.keys:
            _load_saved(spec, files, target, stack)
    spec.files[name] = parsed
    define_all(spec, parsed)


def _resolve_use(files: Mapping[str, str], using: str, path: str, loc: Loc) -> str:
    """The saved file a `use` line names, as the loader resolved it relative to the using file. A spec
    given as text (`<spec>`) has no folder: its relative uses match the one saved file ending so."""
    if not path.strip():
        raise SpecError("`use` needs a file name", loc)
    if using.startswith("<"):
        flavour = _flavour(path)
        want = flavour.normpath(path)
        found = [k for k in files if k == want or (not flavour.isabs(want) and k.endswith(flavour.sep + want))]
    else:
        flavour = _flavour(using)
        want = flavour.normpath(flavour.join(flavour.dirname(using), path))
        found = [want] if want in files else []
    if len(found) != 1:
        raise SpecError(f"the checkpoint does not carry the spec file {path!r}", loc,
                        "it was written by another program, or altered: its spec cannot be rebuilt")
    return found[0]


def fit_network(spec: Spec, sets: Mapping[str, Any], ds: Dataset) -> Network:
    """The spec's network for this data: `classes`, `channels` and `size` follow the data set unless set."""
    net = elaborate(spec, sets)
    follow = {k: v for k, v in zip(DATA_PARAMS, (ds.classes, ds.shape[0], ds.shape[1]))
              if k in net.params and k not in sets and net.params[k] != v}
    if follow:
        net = elaborate(spec, {**sets, **follow})
    want, out = tuple(net.shape(net.input)), tuple(net.shape(net.output))
    if want != ds.shape:
        raise RunError(f"network '{net.name}' takes {'×'.join(map(str, want))} inputs, but the data set "
                       f"'{ds.name}' holds {'×'.join(map(str, ds.shape))} images",
                       "give the spec `channels` and `size` parameters (they follow the data), or --set them")
    if out != (ds.classes,):
        raise RunError(f"network '{net.name}' ends in {'×'.join(map(str, out))} outputs, but the data set "
                       f"'{ds.name}' has {ds.classes} classes",
                       "give the spec a `classes` parameter for its classifier (it follows the data)")
    return net
