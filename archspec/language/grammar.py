"""The grammar (`grammar.lark`, kept as data) compiled into lark's LALR parser, and the words it reserves."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lark import Lark

TYPES = ("int", "float", "bool", "str", "list", "shape", "size", "tensor")
KEYWORDS = ("use", "layer", "pattern", "network", "recipe", "return", "block", "repeat", "for", "in", "if", "else", "let", "assert", "and", "or",
            "not", "true", "false", "stem", "transition", "head", "from")


@lru_cache(maxsize=None)
def parser() -> Lark:
    """The parser, built once: positions kept on every node, absent optional parts as None."""
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)
