"""archspec: a compiler from short architecture specs to PyTorch modules."""

from __future__ import annotations

import importlib
from typing import Any

from .language.errors import Loc, SpecError

__all__ = ["build", "network", "parse", "summary", "Loc", "SpecError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the API loads torch: imported on first use, so that `archspec.language` and `archspec.graph` (and the
    # CLI's start) stay free of it
    if name in ("build", "network", "parse", "summary"):
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'archspec' has no attribute {name!r}")
