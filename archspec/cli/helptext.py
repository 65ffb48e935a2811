"""Help that renders as written. Typer's rich help reads square brackets in a help text as markup (a
`[default: ...]` written in the text vanished) and shows a `<type>` beside every parameter, flags
included. The command and group classes here escape the brackets of every help text, show no type for
a flag (it takes no value) or an argument (its name column already shows its metavar), and name the
value of an option that takes one: its declared metavar, else N (a whole number), X (a number), PATH
or TEXT."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_UNESCAPED_BRACKET = re.compile(r"(?<!\\)\[")


def escape_brackets(text: str) -> str:
    """`text` with every `[` that is not already escaped (`\\[`) escaped, so that rich shows it as a
    bracket instead of reading a markup tag; applying it twice changes nothing."""
    return _UNESCAPED_BRACKET.sub(r"\\[", text)


def unescape_brackets(text: str) -> str:
    """The text rich shows for a help text escaped by `escape_brackets`."""
    return text.replace("\\[", "[")


def _value_type(option: TyperOption) -> Any:
    """The Python type of one value of `option` (of one item where it repeats), where typer records it."""
    descriptor = getattr(option, "type_descriptor", None)
    if descriptor is None:
        return None
    annotation = descriptor.annotation
    if descriptor.is_list and get_args(annotation):
        annotation = get_args(annotation)[0]
    return annotation


def value_name(option: TyperOption) -> str:
    """What the help shows for the value `option` takes: its metavar where declared, else a name for
    its type (N, X, PATH, TEXT)."""
    if option.metavar:
        return option.metavar
    kind = _value_type(option)
    if isinstance(kind, type):
        if issubclass(kind, bool):
            return "BOOL"
        if issubclass(kind, int):
            return "N"
        if issubclass(kind, float):
            return "X"
        if issubclass(kind, PurePath):
            return "PATH"
    return "TEXT"


class _Option(TyperOption):
    def display_type_rich(self, ctx) -> str | None:
        if self.is_flag or getattr(self, "count", False):
            return None
        return value_name(self) + ("..." if self.nargs != 1 else "")


class _Argument(TyperArgument):
    def display_type_rich(self, ctx) -> str | None:
        return None


def tidy(params: list) -> list:
    """`params` (a command's, its help option included) set to render as written: brackets in help
    texts escaped, typer's options and arguments given the display above. Idempotent."""
    for p in params:
        if getattr(p, "help", None):
            p.help = escape_brackets(p.help)
        if type(p) is TyperOption:
            p.__class__ = _Option
        elif type(p) is TyperArgument:
            p.__class__ = _Argument
    return params


class Command(TyperCommand):
    """A command whose help renders as written (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = escape_brackets(self.help) if self.help else self.help
        tidy(self.params)

    def get_params(self, ctx) -> list:
        return tidy(super().get_params(ctx))  # the help option is made here


class Group(TyperGroup):
    """A command group whose own help renders as written (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = escape_brackets(self.help) if self.help else self.help
        tidy(self.params)

    def get_params(self, ctx) -> list:
        return tidy(super().get_params(ctx))


class App(typer.Typer):
    """A typer application whose commands are `Command`s and whose groups are `Group`s."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=kwargs.pop("cls", Group), **kwargs)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any):
        return super().command(name, cls=cls or Command, **kwargs)
