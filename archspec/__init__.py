"""archspec: a compiler from short architecture specs to PyTorch modules."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import Loc, RunError, SpecError

# name → the module (relative to this package) that defines it
_LAZY = {
    **dict.fromkeys(("build", "load", "network", "parse", "state_dict", "summary"), ".api"),
    **dict.fromkeys(("FeatureInfo", "feature_info", "features_only", "forward_intermediates", "get_classifier",
                     "reset_classifier"), ".compiler.features"),
    "predict": ".runtime.predict",
    **dict.fromkeys(("register_op", "register_pattern", "register_merge"), ".plugins"),  # the registries: no torch
    "transfer_weights": ".compiler.transfer",
}

__all__ = [*_LAZY, "Loc", "RunError", "SpecError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the API loads torch: imported on first use, so that `archspec.language` and `archspec.graph` (and the
    # CLI's start) stay free of it
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'archspec' has no attribute {name!r}")
