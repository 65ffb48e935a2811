"""The op catalogue: one module per op (or tight family), each declaring everything about it in one
class registered with `@register`. Every module of this package is imported here, so a new op is one
new file and nothing else."""

from __future__ import annotations

import importlib
import pkgutil

from .base import OPS, NoArgs, Op, OpArgs, Shape, ShapeError, fmt_shape, register

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")

from .conv import ConvArgs  # noqa: E402
from .dropout import DropoutArgs  # noqa: E402
from .linear import LinearArgs  # noqa: E402
from .norm import BatchNormArgs  # noqa: E402
from .pools import PoolArgs  # noqa: E402
from .structural import InputArgs, SliceArgs  # noqa: E402

PRIMITIVES: dict[str, type[Op]] = {k: v for k, v in OPS.items() if v.user and k != "input"}

__all__ = ["OPS", "PRIMITIVES", "Op", "OpArgs", "NoArgs", "Shape", "ShapeError", "fmt_shape", "register",
           "BatchNormArgs", "ConvArgs", "DropoutArgs", "InputArgs", "LinearArgs", "PoolArgs", "SliceArgs"]
