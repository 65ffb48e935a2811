"""What every word of the language (an op, a connection pattern, a merge) shares: its spelling and the
names other frameworks and papers give it."""

from __future__ import annotations

from typing import ClassVar, Mapping


class Word:
    """A word a spec can write. `aliases` are other names for it (lowercase, no '_'), used only to suggest
    the right word when a spec writes one of them."""

    aliases: ClassVar[tuple[str, ...]] = ()


def aliases(registry: Mapping[str, type[Word]]) -> dict[str, str]:
    """alias → word, over every word of `registry`."""
    return {a: word for word, w in registry.items() for a in w.aliases}
