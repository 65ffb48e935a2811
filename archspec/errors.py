"""Located errors: every problem in a spec points at the text that caused it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Loc:
    """A position in a spec file (1-based line and column)."""

    file: str
    line: int
    column: int
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SpecError(Exception):
    """A problem in a spec or in the values given for it; carries where it happened."""

    def __init__(self, message: str, loc: Loc | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint

    def render(self, sources: dict[str, str] | None = None) -> str:
        """The error as a user sees it: `file:line:col: error: ...`, the line, a caret, a hint."""
        head = f"{self.loc}: error: {self.message}" if self.loc else f"error: {self.message}"
        lines = [head]
        text = (sources or {}).get(self.loc.file) if self.loc else None
        if text is not None and self.loc.line >= 1:
            src_lines = text.splitlines()
            if self.loc.line <= len(src_lines):
                src = src_lines[self.loc.line - 1].expandtabs(1)
                width = max(1, (self.loc.end_column or self.loc.column + 1) - self.loc.column)
                lines.append(f"    {src}")
                lines.append("    " + " " * (self.loc.column - 1) + "^" * min(width, max(1, len(src) - self.loc.column + 1)))
        if self.hint:
            lines.append(f"  {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc else self.message


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
