"""The `archspec` command line: one module per command group, each registering its commands on the
application of `common`, whose commands render their help as written (`helptext`) and complete SPEC
arguments with the shipped models' names (`completion`). Every failure the user can cause ends in a
located message and exit code 2, never a traceback. Commands import torch and the runtime inside their
bodies, so `archspec --help` stays fast."""

from __future__ import annotations

import sys

# each registers its commands, in the order `--help` lists them
from . import compile, transfer, train, export, predict, bench, graph, inspect, runs  # noqa: F401  isort:skip
from .common import app, guarded, out, parse_sets, report

__all__ = ["app", "guarded", "main", "out", "parse_sets", "report"]


def main() -> None:
    try:
        app()
    except SystemExit as e:
        sys.exit(e.code)
