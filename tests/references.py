"""Reference implementations from other libraries, imported for comparison tests: timm's and torchvision's
model definitions. Their compiled operators need a torch build of their own, but the model code does not:
an empty `torchvision._meta_registrations` lets the definitions import on any torch. A test that needs a
library it cannot import is skipped with the reason."""

from __future__ import annotations

import sys
import types
from types import ModuleType

import pytest

_STUB = "torchvision._meta_registrations"


def _import(name: str) -> ModuleType:
    sys.modules.setdefault(_STUB, types.ModuleType(_STUB))
    try:
        return __import__(name)
    except Exception as err:  # a missing package, or one built for another torch
        pytest.skip(f"{name} does not import here: {type(err).__name__}: {err}")


def timm() -> ModuleType:
    """timm, or a skip of the calling test."""
    return _import("timm")


def torchvision() -> ModuleType:
    """torchvision (with `torchvision.models`), or a skip of the calling test."""
    tv = _import("torchvision")
    __import__("torchvision.models")
    return tv


def timm_model(name: str, **kw):
    """timm's `name`, built without pretrained weights, in evaluation mode."""
    return timm().create_model(name, pretrained=False, **kw).eval()
