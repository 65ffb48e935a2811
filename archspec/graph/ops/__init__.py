"""The op catalogue: one module per op (or tight family), each declaring everything about it in one
class registered with `@register`. Every module of this package is imported here, so a new op is one
new file and nothing else. Ops of installed plugins (the `archspec.ops` entry points, see
`archspec.graph.plugins`) join the catalogue the first time a spec's words are looked up in it."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Iterator, Mapping

from .base import OPS, NoArgs, Op, OpArgs, Saves, Shape, ShapeError, fmt_shape, register, unregister

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")

from .conv import ConvArgs  # noqa: E402
from .dropout import DropoutArgs  # noqa: E402
from .linear import LinearArgs  # noqa: E402
from .norm import BatchNormArgs  # noqa: E402
from .pools import PoolArgs  # noqa: E402
from .structural import InputArgs, SliceArgs  # noqa: E402

BUILTIN: frozenset[str] = frozenset(OPS)  # archspec's own kinds, which no plugin may replace or remove

_load_plugins: Callable[[], None] | None = None


def _plugins_loaded() -> None:
    global _load_plugins
    if _load_plugins is None:
        from ..plugins import load_plugins

        _load_plugins = load_plugins
    _load_plugins()


class Primitives(Mapping[str, type[Op]]):
    """The ops a spec may call by name: every registered op but `input` and those only patterns and
    merges add. A live view of `OPS`, so that an op registered later (`archspec.register_op`) is a word at
    once; the first read loads the installed plugins, so that whether a word exists never depends on
    what ran before in the process."""

    @staticmethod
    def _callable(kind: str, op: type[Op] | None) -> bool:
        return op is not None and op.user and kind != "input"

    def get(self, kind: str, default: type[Op] | None = None) -> type[Op] | None:  # type: ignore[override]
        _plugins_loaded()
        op = OPS.get(kind)
        return op if self._callable(kind, op) else default

    def __getitem__(self, kind: str) -> type[Op]:
        op = self.get(kind)
        if op is None:
            raise KeyError(kind)
        return op

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and self.get(kind) is not None

    def __iter__(self) -> Iterator[str]:
        _plugins_loaded()
        return iter([k for k, op in OPS.items() if self._callable(k, op)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Primitives({', '.join(self)})"


PRIMITIVES: Mapping[str, type[Op]] = Primitives()

__all__ = ["BUILTIN", "OPS", "PRIMITIVES", "Op", "OpArgs", "NoArgs", "Saves", "Shape", "ShapeError", "fmt_shape", "register",
           "unregister", "BatchNormArgs", "ConvArgs", "DropoutArgs", "InputArgs", "LinearArgs", "PoolArgs",
           "SliceArgs"]
