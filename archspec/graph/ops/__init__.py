"""The op catalogue: one module per op (or tight family), each declaring everything about it in one
class registered with `@register`. Every module of this package is imported here, so a new op is one
new file and nothing else. Ops of installed plugins (the `archspec.ops` entry points) join the catalogue
through `archspec.graph.vocabulary`, which owns every registry of words."""

from __future__ import annotations

import importlib
import pkgutil

from .base import OPS, Build, Call, NoArgs, Op, OpArgs, Saves, Shape, ShapeError, fmt_shape, register, unregister

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")

from .conv import ConvArgs  # noqa: E402
from .dropout import DropoutArgs  # noqa: E402
from .linear import LinearArgs  # noqa: E402
from .norm import BatchNormArgs  # noqa: E402
from .pools import PoolArgs  # noqa: E402
from .structural import InputArgs, SliceArgs  # noqa: E402

BUILTIN: frozenset[str] = frozenset(OPS)  # archspec's own kinds, which no plugin may replace or remove

__all__ = ["BUILTIN", "OPS", "Build", "Call", "Op", "OpArgs", "NoArgs", "Saves", "Shape", "ShapeError", "fmt_shape",
           "register", "unregister", "BatchNormArgs", "ConvArgs", "DropoutArgs", "InputArgs", "LinearArgs", "PoolArgs",
           "SliceArgs"]
