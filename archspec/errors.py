"""The errors archspec raises, kept at the top of the package (as lark keeps its `exceptions.py`):
located spec errors (`SpecError`), errors of a run with no location (`RunError`), and the helpers that
render them."""

from __future__ import annotations

import difflib
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class Loc:
    """A position in a spec file (1-based line and column). `end_column`, when known, is one past the
    last character of the text on the same line."""

    file: str
    line: int
    column: int
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def span(self, length: int) -> "Loc":
        """The first `length` characters from this location (e.g. the name at the start of a call)."""
        return Loc(self.file, self.line, self.column, self.column + max(1, length))

    def to(self, other: "Loc | None") -> "Loc":
        """From this location to the end of `other` (when both are on one line)."""
        if other is None or other.file != self.file or other.line != self.line or other.end_column is None:
            return self
        return Loc(self.file, self.line, self.column, max(other.end_column, self.column + 1))


class Ident(str):
    """A name from a spec that remembers where it was written (e.g. the `k` of `k=v`)."""

    loc: Loc | None

    def __new__(cls, value: str, loc: Loc | None = None) -> "Ident":
        self = super().__new__(cls, value)
        self.loc = loc
        return self

    def __reduce__(self):
        return (Ident, (str(self), self.loc))


def loc_of(name: object, fallback: Loc | None) -> Loc | None:
    """Where `name` was written, when it is an `Ident`; otherwise `fallback`."""
    return getattr(name, "loc", None) or fallback


_MAX_SHOWN = 160  # longest source line shown in full; longer ones are cut around the column

# Characters that steer a terminal or reorder text (escape sequences, bidi overrides, line separators):
# text from a spec is shown with them escaped, so a spec cannot rewrite what the user reads.
_UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def _unsafe(ch: str) -> bool:
    return (ch < " " or "\x7f" <= ch) and unicodedata.category(ch) in _UNSAFE


def printable(text: str, keep: str = "\t") -> str:
    """`text` with control and format characters written as escapes (`\\x1b`), except those in `keep`."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii") if ch not in keep and _unsafe(ch) else ch
                   for ch in text)


class SpecError(Exception):
    """A problem in a spec or in the values given for it; carries where it happened.

    `sources` maps file names to their text so that `render()` can show the offending line; the
    loader and the elaborator fill it in, and `render(sources)` may add more."""

    def __init__(self, message: str, loc: Loc | None = None, hint: str | None = None,
                 sources: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint
        self.sources: dict[str, str] = dict(sources or {})

    def with_sources(self, sources: Mapping[str, str]) -> "SpecError":
        """Add texts to show the offending line from (those already known win)."""
        for k, v in sources.items():
            self.sources.setdefault(k, v)
        return self

    def source_line(self, sources: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """The offending line and the caret line under it, or None when the text is not known."""
        if self.loc is None:
            return None
        text = {**self.sources, **(sources or {})}.get(self.loc.file)
        if text is None or self.loc.line < 1:
            return None
        src_lines = text.splitlines()
        if self.loc.line <= len(src_lines):
            src = src_lines[self.loc.line - 1]
        elif self.loc.line == len(src_lines) + 1:  # the end of the file, after a final newline
            src = ""
        else:
            return None
        col = max(1, self.loc.column)
        end = self.loc.end_column if self.loc.end_column and self.loc.end_column > col else col + 1
        # a character counts as one column in locations: show a tab as a space and any other control
        # character as '�', so the caret lines up and the line cannot steer the terminal
        src = "".join((" " if ch == "\t" else "\ufffd") if _unsafe(ch) else ch for ch in src)
        start = 0
        if len(src) > _MAX_SHOWN:  # a very long line: a window around the column
            start = max(0, col - 1 - _MAX_SHOWN // 2)
            shown = src[start:start + _MAX_SHOWN]
            prefix = "…" if start else ""
            suffix = "…" if start + _MAX_SHOWN < len(src) else ""
            src = prefix + shown + suffix
            start -= len(prefix)
        caret_at = col - 1 - start
        width = max(1, min(end - col, len(src) - caret_at))
        return src, " " * caret_at + "^" * width

    def render(self, sources: Mapping[str, str] | None = None) -> str:
        """The error as a user sees it: `file:line:col: error: ...`, the line, a caret, a hint."""
        head = f"{self.loc}: error: {self.message}" if self.loc else f"error: {self.message}"
        lines = [printable(head)]
        shown = self.source_line(sources)
        if shown is not None:
            lines.append(f"    {shown[0]}")
            lines.append(f"    {shown[1]}")
        if self.hint:
            lines.extend(f"  {printable(h)}" for h in self.hint.split("\n"))
        return "\n".join(lines)

    def __str__(self) -> str:
        text = f"{self.loc}: {self.message}" if self.loc else self.message
        return printable(f"{text} ({self.hint})" if self.hint else text, keep="\t\n")


def _norm(word: str) -> str:
    return word.lower().replace("_", "").replace("-", "")


def closest(word: str, choices: Iterable[str], aliases: Mapping[str, str] | None = None, n: int = 3) -> list[str]:
    """The choices `word` was most likely meant to be: a known alias, a match that differs only in
    case or underscores, a unique prefix, then close spellings."""
    pool = sorted({c for c in choices if c and not c.startswith("_")})
    if not pool or not word:
        return []
    key = _norm(word)
    if aliases:
        hit = aliases.get(key)
        if hit is not None and hit in pool:
            return [hit]
    same = [c for c in pool if _norm(c) == key]
    if same:
        return same[:n]
    by_norm: dict[str, list[str]] = {}
    for c in pool:
        by_norm.setdefault(_norm(c), []).append(c)
    found: list[str] = []
    for m in difflib.get_close_matches(key, list(by_norm), n=n, cutoff=0.6):
        found.extend(by_norm[m])
    if not found and len(key) >= 3:  # a word cut short (`dens`) or run on (`convs`)
        found = [c for c in pool if _norm(c).startswith(key) or (len(_norm(c)) >= 3 and key.startswith(_norm(c)))]
    return found[:n]


def did_you_mean(word: str, choices: Iterable[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None when nothing is close."""
    close = closest(word, choices, aliases)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


class RunError(SpecError):
    """A problem outside the spec text — a data set, a checkpoint, an output folder: no location, but a
    message that names what was looked at and what was expected. Exits 2 like a spec error."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, None, hint)
