"""Learned merges, one module each: the reference formula (the definition), every implementation of
it, named, and one `choose` that names which implementation runs where and why. A merge registers an
`Implementations` table here; the conformance test (tests/compiler/test_merge_conformance.py) checks
every registered implementation against its merge's reference, so a new one is covered by registering."""

from .registry import REGISTRY, Choice, Implementation, Implementations, register
from . import crossdepthwise  # registers its implementations

__all__ = ["REGISTRY", "Choice", "Implementation", "Implementations", "register", "crossdepthwise"]
