"""A run's spec, carried in its checkpoints: the spec's files go in as text, so a checkpoint can be
rebuilt and evaluated anywhere, after the spec on disk has changed or gone."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from archspec.graph.elaborate import elaborate
from archspec.graph.ir import Network
from archspec.language.errors import RunError
from archspec.language.loader import Spec, load, load_file
from archspec.runtime.data import Dataset

# Spec parameters that follow the data set unless the user sets them.
DATA_PARAMS = ("classes", "channels", "size")


def read_spec(source: str | os.PathLike | Spec) -> Spec:
    """The spec at a path, or one already parsed."""
    return source if isinstance(source, Spec) else load_file(source)


def spec_files(spec: Spec) -> tuple[dict[str, str], str]:
    """The spec's files by resolved path, and the main one: enough to rebuild it anywhere."""
    files = {str(Path(label).resolve()) if not label.startswith("<") else label: text
             for label, text in spec.sources.items()}
    main = str(Path(spec.file).resolve()) if not spec.file.startswith("<") else spec.file
    return files, main


def spec_from_files(files: Mapping[str, str], main: str) -> Spec:
    """Rebuild a spec saved by `spec_files`, in a scratch folder that mirrors the original paths."""
    if main.startswith("<"):
        return load(files[main])
    with tempfile.TemporaryDirectory(prefix="archspec-spec-") as tmp:
        for path, text in files.items():
            target = Path(tmp) / path.lstrip("/\\").replace(":", "")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return load_file(Path(tmp) / main.lstrip("/\\").replace(":", ""))


def fit_network(spec: Spec, sets: Mapping[str, Any], ds: Dataset) -> Network:
    """The spec's network for this data: `classes`, `channels` and `size` follow the data set unless set."""
    net = elaborate(spec, sets)
    follow = {k: v for k, v in zip(DATA_PARAMS, (ds.classes, ds.shape[0], ds.shape[1]))
              if k in net.params and k not in sets and net.params[k] != v}
    if follow:
        net = elaborate(spec, {**sets, **follow})
    want, out = tuple(net.shape(net.input)), tuple(net.shape(net.output))
    if want != ds.shape:
        raise RunError(f"network '{net.name}' takes {'×'.join(map(str, want))} inputs, but the data set "
                       f"'{ds.name}' holds {'×'.join(map(str, ds.shape))} images",
                       "give the spec `channels` and `size` parameters (they follow the data), or --set them")
    if out != (ds.classes,):
        raise RunError(f"network '{net.name}' ends in {'×'.join(map(str, out))} outputs, but the data set "
                       f"'{ds.name}' has {ds.classes} classes",
                       "give the spec a `classes` parameter for its classifier (it follows the data)")
    return net
