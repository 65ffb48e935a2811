"""What a training run is asked to do: everything `archspec train` takes, as one value; and the same
settings read from a config file (`read_config_file`: JSON, or YAML where PyYAML imports), such as a run
folder's config.json."""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from archspec.errors import Loc, RunError, SpecError, did_you_mean, printable
from archspec.files import read_bounded

from . import recipes

MAX_SEED = 2**63 - 1  # torch's generators take seeds up to 2**64 - 1; derived seeds are reduced mod 2**63


@dataclass
class TrainConfig:
    spec: Any  # a spec file's path, or a parsed `Spec`
    sets: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    recipe: str | dict[str, Any] | None = "quick"  # a recipe's name, or all its fields (a config file's); None:
    # the network's own (`recipes.spec_recipe`)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    tweaks: dict[str, Any] = field(default_factory=dict)  # any other recipe field
    seed: int = 0
    out: Path = Path("runs/last")
    resume: bool = False
    device: str = "auto"
    compile: str | bool = "none"  # step.COMPILE_MODES (True: regional)
    amp: bool | None = None  # None: bf16 autocast on CUDA, off on the CPU
    channels_last: bool | None = None  # None: on for CUDA
    memory: str | None = None  # fast, lean or auto; None: fast, or on --resume the mode the run was trained in
    progress: bool = True
    workers: int | None = None  # image folders only; None: data.default_workers() (one per core, at most 8)
    # training images held out to choose `best` on: a count, or a fraction of the training set; 0: none (the
    # papers' practice: train on every training image, report the test split); None: 0, or on --resume the run's
    val_split: int | float | None = None
    allow_paths: tuple[str, ...] = ()
    max_memory: int | None = None  # bytes a training step may need (estimated first); None: the device's  # folders `use` may read besides the spec's own tree and the library
    tensorboard: bool = True  # event files beside metrics.jsonl, where TensorBoard is installed
    threads: int | None = None  # the CPU threads asked for (`--threads`); None: as set, or on --resume the run's
    image_size: int | None = None  # image folders: the side images are cropped to; None: 224
    crop: float | None = None  # image folders: the evaluation centre crop's share; None: 0.875
    trust_legacy: bool = False  # --resume from a checkpoint without digests
    allow_nonfinite: bool = False  # --resume from a checkpoint holding non-finite weights

    def __post_init__(self) -> None:
        check_seed(self.seed)


def check_seed(seed: Any) -> None:
    """A seed is a whole number in 0..2**63-1: beyond it torch's generators overflow mid-run."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RunError(f"--seed {seed} is not a whole number from 0 to {MAX_SEED}")


def check_out_dir(path: Path) -> None:
    """Refuse an output folder that cannot be created or written, before a spec is read or a step is
    taken, so that no run's work is lost at its first checkpoint. The folders this creates to find
    out are removed again: a refused or failed run leaves nothing behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"--out {path} is a file, not a folder", "give a new folder, or an existing run's")
    created: list[Path] = []
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        created.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise RunError(f"cannot create --out {path}: {p} is a file, not a folder")
    try:
        for d in reversed(created):
            d.mkdir()
        fd, probe = tempfile.mkstemp(dir=path, prefix=".archspec-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunError(f"cannot write to --out {path}: {err.strerror or err}",
                       "give a folder this user may create and write") from None
    finally:
        for d in created:
            try:
                d.rmdir()
            except OSError:
                pass


# -- config files (`archspec train --config FILE`)

MAX_CONFIG_BYTES = 1024 * 1024  # a config is a few kilobytes


class _DataRecord(BaseModel):
    """`data` as a run's config.json records it: the source asked for, and what it turned out to hold."""

    model_config = ConfigDict(extra="forbid", strict=True)
    source: str | None = None
    name: str | None = None
    classes: int | None = None
    shape: list[int] | None = None
    train_images: int | None = None
    val_images: int | None = None
    test_images: int | None = None


class FileConfig(BaseModel):
    """What a config file may hold: `archspec train`'s settings, under the names a run's config.json
    writes them (and `epochs`, `batch_size`, `lr`, `workers`, `tensorboard` besides), and the entries
    config.json records about the run, which are read and not used."""

    model_config = ConfigDict(extra="forbid", strict=True)
    spec: str | None = None
    overrides: dict[str, Any] = {}  # --set
    recipe: str | dict[str, Any] | None = None  # a recipe's name, or its fields
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    val_split: int | float | None = None
    data: str | _DataRecord | None = None
    device: str | None = None
    memory: str | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    compile: str | bool | None = None
    image_size: int | None = None
    crop: float | None = None
    threads: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=0)
    tensorboard: bool | None = None
    # recorded by config.json, not settings
    network: str | None = None
    params: dict[str, Any] | None = None
    processes: int | None = None
    resumed_after_epoch: int | None = None
    versions: dict[str, Any] | None = None
    started: str | None = None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TrainConfig fields a config file sets (only those it gives): JSON, or YAML where PyYAML
    imports; a run folder's config.json replays its run. A key the file may not hold, or a value of the
    wrong type, is a SpecError located in the file (line and column); no line of the file is shown, and a
    key only escaped and cut short."""
    path = Path(path)
    raw = read_bounded(path, MAX_CONFIG_BYTES, "config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RunError(f"config file {path} is not UTF-8 text (byte {e.start:,})") from None
    doc, places = _parse(path, text)
    if not isinstance(doc, dict):
        raise _unshown(path, "a config file holds a mapping of settings (such as `seed: 0`)",
                       Loc(str(path), 1, 1))
    try:
        got = FileConfig.model_validate(doc)
    except ValidationError as e:
        raise _located(path, doc, places, e.errors()) from None
    out: dict[str, Any] = {}
    if got.spec is not None:
        out["spec"] = got.spec
    if got.overrides:
        out["sets"] = dict(got.overrides)
    if got.recipe is not None:
        out["recipe"] = _file_recipe(path, places, got.recipe)
    data = got.data.source if isinstance(got.data, _DataRecord) else got.data
    if "data" in doc:
        out["data"] = data
    for key in ("epochs", "batch_size", "lr", "seed", "val_split", "memory", "amp", "channels_last", "compile",
                "image_size", "crop", "threads", "workers", "tensorboard"):
        value = getattr(got, key)
        if value is not None:
            out[key] = value
    if got.device is not None:  # a run records the device it ran on (cuda:0); asked for, that is cuda
        out["device"] = "cuda" if got.device.startswith("cuda") else got.device
    return out


def _file_recipe(path: Path, places: dict, recipe: str | dict[str, Any]) -> str | dict[str, Any]:
    """A recipe's name; or its fields, as the whole recipe they make of the recipe they name (`quick`
    where they name none), overriding it as --recipe-set does. Checked here, so that a bad name or field
    is located."""
    name = recipe if isinstance(recipe, str) else recipe.get("name", "quick")
    where = ("recipe",) if isinstance(recipe, str) else ("recipe", "name")
    if not isinstance(name, str) or name not in recipes.RECIPES:
        raise _unshown(path, "unknown recipe" if isinstance(name, str) else "a recipe's name is text",
                       _place(path, places, where, value=True),
                       (did_you_mean(name, recipes.RECIPES) if isinstance(name, str) else None)
                       or f"recipes: {', '.join(recipes.RECIPES)}")
    if isinstance(recipe, str):
        return recipe
    known = recipes.Recipe.model_fields
    for key in recipe:
        if key not in known:
            raise _unshown(path, f"a recipe has no field {_shown(key)}",
                           _place(path, places, ("recipe", key), value=False),
                           did_you_mean(str(key), known) or f"fields: {', '.join(known)}")
    try:
        made = recipes.recipe(name, **{k: v for k, v in recipe.items() if k != "name"})
    except RunError as e:
        field = getattr(e, "field", None)
        where = ("recipe", field) if field in recipe else ("recipe",)
        raise _unshown(path, e.message, _place(path, places, where, value=field in recipe), e.hint) from None
    return made.model_dump()


def _unshown(path: Path, message: str, loc: Loc | None, hint: str | None = None) -> SpecError:
    """A SpecError at `loc` in the config file `path` whose line is not shown (no line of the file is)."""
    return SpecError(message, loc, hint, sources={str(path): None})


def _shown(key: Any) -> str:
    """A key read from the file, quoted for a message: control characters escaped, at most 40 characters."""
    text = str(key)
    return f"'{printable(text[:40])}{'...' if len(text) > 40 else ''}'"


def _parse(path: Path, text: str) -> tuple[Any, dict]:
    """The document, and where each key and value of it is written (by key path), as far as is known."""
    yaml, suffix = _yaml(), path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        if yaml is None:
            raise RunError(f"config file {path} is YAML, and PyYAML is not installed to read it",
                           "pip install pyyaml, or give the config as JSON")
        return _parse_yaml(path, text, yaml)
    try:
        doc = json.loads(text)
    except RecursionError:
        raise RunError(f"config file {path} nests too deeply") from None
    except ValueError as e:
        if yaml is None or suffix == ".json":
            line, col = getattr(e, "lineno", 1), getattr(e, "colno", 1)
            raise _unshown(path, f"not JSON: {getattr(e, 'msg', e)}", Loc(str(path), line, col),
                           "a config file is JSON (or YAML, where PyYAML is installed)") from None
        return _parse_yaml(path, text, yaml)
    if yaml is not None:
        try:
            return doc, _places(yaml.compose(text, Loader=_loader(yaml)))
        except (yaml.YAMLError, RecursionError, ValueError):
            pass
    return doc, _json_places(text, doc)


def _yaml():
    """PyYAML, where it imports; else None."""
    try:
        import yaml
    except ImportError:
        return None
    return yaml


@functools.cache
def _loader(yaml):
    """PyYAML's safe loader, reading numbers as YAML 1.2 and JSON do (`1e-3` a number, not text)."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))
    return Loader


def _parse_yaml(path: Path, text: str, yaml) -> tuple[Any, dict]:
    try:
        doc = yaml.load(text, Loader=_loader(yaml))
        places = _places(yaml.compose(text, Loader=_loader(yaml)))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Loc(str(path), mark.line + 1, mark.column + 1) if mark is not None else None
        raise _unshown(path, f"not YAML: {e.problem or e.context}", loc) from None
    except yaml.YAMLError as e:
        raise RunError(f"config file {path} is not YAML: {type(e).__name__}") from None
    except RecursionError:
        raise RunError(f"config file {path} nests too deeply") from None
    except ValueError as e:  # an alias
        raise RunError(f"config file {path}: {e}", "write the value out where it is used") from None
    return doc, places


def _places(root) -> dict[tuple, tuple[Loc, Loc]]:
    """(key's place, value's place) by key path, from a composed YAML node; each node is visited once,
    so an alias (a node reached twice) is refused rather than expanded."""
    places: dict[tuple, tuple] = {}
    seen: set[int] = set()
    todo = [((), root)]
    while todo:
        path, node = todo.pop()
        if node is None:
            continue
        if id(node) in seen:
            raise ValueError("a config file may not repeat a node (YAML aliases)")
        seen.add(id(node))
        if hasattr(node, "value") and isinstance(node.value, list):
            for i, item in enumerate(node.value):
                if isinstance(item, tuple):  # a mapping's (key, value)
                    key, value = item
                    sub = path + (key.value,)
                    places[sub] = (_mark(key), _mark(value))
                    todo.append((sub, value))
                else:
                    todo.append((path + (i,), item))
    return places


def _mark(node) -> tuple[int, int, int | None]:
    start, end = node.start_mark, node.end_mark
    return (start.line + 1, start.column + 1, end.column + 1 if end.line == start.line else None)


def _json_places(text: str, doc: Any) -> dict[tuple, tuple]:
    """Where JSON keys are written, found by their text (each after its parent's): what the json module
    cannot say itself."""
    places: dict[tuple, tuple] = {}
    todo = [((), doc, 0)]
    while todo:
        path, value, start = todo.pop()
        if not isinstance(value, dict):
            continue
        for k, v in value.items():
            at = text.find(json.dumps(k), start)
            if at < 0:
                continue
            line = text.count("\n", 0, at) + 1
            col = at - (text.rfind("\n", 0, at) + 1) + 1
            key = (line, col, col + len(json.dumps(k)))
            places[path + (k,)] = (key, key)
            todo.append((path + (k,), v, at))
    return places


def _place(path: Path, places: dict, keys: tuple, value: bool) -> Loc | None:
    """The place of the deepest of `keys` the file shows: its value's (`value`) or its key's."""
    for n in range(len(keys), 0, -1):
        if keys[:n] in places:
            line, col, end = places[keys[:n]][1 if value and n == len(keys) else 0]
            return Loc(str(path), line, col, end)
    return Loc(str(path), 1, 1)


def _located(path: Path, doc: dict, places: dict, errors: list[dict]) -> SpecError:
    """The first of pydantic's errors as a SpecError at its key (an unknown key) or its value."""
    def in_doc(loc: tuple) -> tuple:
        keys, node = [], doc
        for part in loc:
            if isinstance(node, dict) and part in node:
                keys.append(part)
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                keys.append(part)
                node = node[part]
        return tuple(keys)

    err = max(errors, key=lambda e: len(in_doc(e["loc"])))
    keys = in_doc(err["loc"])
    name = _shown(".".join(map(str, keys))) if keys else "the file"
    if err["type"] == "extra_forbidden":
        known = FileConfig.model_fields if len(keys) == 1 else _DataRecord.model_fields
        return _unshown(path, f"unknown setting {name}", _place(path, places, keys, value=False),
                        did_you_mean(str(keys[-1]), known) or f"settings: {', '.join(known)}")
    msg = err["msg"]
    return _unshown(path, f"{name}: {msg[:1].lower()}{msg[1:]}", _place(path, places, keys, value=True))
