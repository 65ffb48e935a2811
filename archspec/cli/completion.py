"""Shell completion of the arguments that name a spec or a model (`archspec --install-completion`).
A word written as a path gets no suggestion from here, so the shell completes it as a file path itself
(bash's `-o default`, zsh's `_files`, fish's paths), as it does for a word nothing here matches."""

from __future__ import annotations

import os
from pathlib import Path

MAX_ENTRIES = 2000  # entries of the working folder looked at: a tab press stays quick in a huge folder


def model_names(incomplete: str) -> list[str]:
    """The shipped models whose names start with `incomplete` (read from the library's folder: no spec
    is parsed)."""
    from .. import library  # the graph layer's imports: paid for by a tab press, not by every command

    return [n for n in library.names() if n.startswith(incomplete)]


def spec_files(incomplete: str, folder: Path | None = None) -> list[str]:
    """The `.arch` files of the working folder (or `folder`) whose names start with `incomplete`."""
    found = []
    try:
        with os.scandir(folder or ".") as entries:
            for i, entry in enumerate(entries):
                if i >= MAX_ENTRIES:
                    break
                if entry.name.startswith(incomplete) and entry.name.endswith(".arch") and entry.is_file():
                    found.append(entry.name)
    except OSError:
        return []
    return sorted(found)


def complete_spec(incomplete: str) -> list[tuple[str, str]]:
    """Completions of a SPEC argument, each with what it is: for a word written as a name (or no word
    yet), the shipped models and the working folder's spec files that it begins; for a word written as
    a path (`./`, `specs/`, `~/`, `x.arch`), none, so that the shell completes the path."""
    from .. import library

    if incomplete and library.is_path(incomplete):
        return []
    return ([(name, "shipped model") for name in model_names(incomplete)]
            + [(name, "spec file") for name in spec_files(incomplete)])
