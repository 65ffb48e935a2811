"""What a graph pass needs and what it leaves, declared and checked. A `Pass` names the passes that must
have run before it (`requires`), those whose form it cannot read (`forbids`) and those whose changes it
reverts (`undoes`); calling it checks the graph module's record of applied passes (`applied`) against
that, runs the transform and records itself. A pass never calls another: a policy (`memory.py`) lists
the passes it composes, in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.fx as fx

_KEY = "archspec_passes"  # in GraphModule.meta: the names of the passes applied, in order


class PassOrderError(ValueError):
    """A pass called on a graph module that does not meet its declared preconditions."""


def applied(gm: fx.GraphModule) -> tuple[str, ...]:
    """The passes applied to `gm` (and not undone since), in order."""
    return tuple(getattr(gm, "meta", {}).get(_KEY, ()))


@dataclass(frozen=True)
class Pass:
    """A graph pass `transform(gm, **options) -> gm` with its declared contract."""

    name: str
    transform: Callable[..., fx.GraphModule]
    requires: tuple[str, ...] = ()
    forbids: tuple[str, ...] = ()
    undoes: tuple[str, ...] = ()

    def check(self, gm: fx.GraphModule) -> None:
        """Raise PassOrderError where `gm` does not meet this pass's preconditions."""
        done = applied(gm)
        missing = [p for p in self.requires if p not in done]
        clash = [p for p in self.forbids if p in done]
        if missing or clash:
            raise PassOrderError(
                f"pass '{self.name}' " + "; ".join(filter(None, (
                    f"needs {', '.join(missing)} first" if missing else "",
                    f"cannot run after {', '.join(clash)}" if clash else ""))) +
                f" (applied: {', '.join(done) or 'none'})")

    def __call__(self, gm: fx.GraphModule, **options) -> fx.GraphModule:
        self.check(gm)
        done = applied(gm)
        out = self.transform(gm, **options)
        out.meta[_KEY] = tuple(p for p in done if p not in self.undoes) + (self.name,)
        return out
