"""The garbage collector paused while a network is built: elaboration and code generation make some 10^5
objects that live as long as the network, and the collector's passes over them, triggered by the count
of objects made, took a quarter of building a large network. Reference counting still frees everything
at once; the collector runs again, as usual, after the build."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def paused() -> Iterator[None]:
    """The collector off inside the `with` (left off where a caller had turned it off)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
