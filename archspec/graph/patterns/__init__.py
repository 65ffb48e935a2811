"""Connection patterns: each module here defines words of the language (`chain`, `residual`, `dense`,
...) that wire a block's layers together, each class registered with `@register`. Every module of this
package is imported here, so a new pattern is one new file; the parser never changes."""

from __future__ import annotations

import importlib
import pkgutil

from .pattern import PATTERNS, BlockContext, Layer, MergeRule, Pattern, TemplateRunner, Where, register

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")

__all__ = ["PATTERNS", "BlockContext", "Layer", "MergeRule", "Pattern", "TemplateRunner", "Where", "register"]
