"""The words of the language, in one place: the registries of ops (`OPS`, and `PRIMITIVES`, those a spec
may call), connection patterns (`PATTERNS`) and merges (`MERGES`), the reserved words (keywords, types,
functions, `shortcut`, `input`), and how a word is added from outside: `register_op`, after `check_op`,
and the ops of installed packages.

A package adds words by declaring entry points in the group `archspec.ops`, each naming a module
(importing it registers its ops with `register_op`) or one Op subclass (registered as it is loaded).
They are loaded once, the first time the op catalogue is read, so a spec never decides what is
imported: only packages the user installed run, and a spec that names an op no package provides gets
the usual unknown-word error.

A plugin that fails to load (its import raises, a kind is taken, the entry point names something else,
it calls `sys.exit` or raises any other `BaseException` but `KeyboardInterrupt`) is reported as a
PluginError with the entry point and its distribution, and leaves no op of its own registered. The
rules and hooks an op registered through `register_op` defines itself (`shape`, `params`, `macs`,
`lower`, `source`, `initialise`) run inside the same guard: what they raise, other than the errors
archspec's callers expect of an op (`ShapeError`, `SpecError`, `NotImplementedError`), is a PluginError
naming the op, its class and the plugin it came from, never an internal error of archspec."""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import re
from types import ModuleType
from typing import Any, Iterator, Mapping

from ..errors import RunError, SpecError
from ..language.evaluate import FUNCTIONS
from ..language.grammar import KEYWORDS, TYPES
from .merges import MERGES, Merge
from .ops import BUILTIN, OPS, Op, OpArgs, ShapeError, register, unregister
from .patterns import PATTERNS, Pattern

GROUP = "archspec.words"  # entry points of installed packages that add ops, patterns and merges
OLD_GROUPS = ("archspec.ops",)  # the group's earlier name, still read

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SPEC_WORDS = ("shortcut", "input", "apply", "merge")  # words a spec's bodies give a meaning of their own

# Words an op may not take, and what each already is.
RESERVED: tuple[tuple[tuple[str, ...] | Mapping[str, Any], str], ...] = (
    (KEYWORDS + TYPES, "a keyword of the language"), (PATTERNS, "a connection pattern"), (MERGES, "a merge"),
    (FUNCTIONS, "a function"), (SPEC_WORDS, "a built-in word"))

__all__ = ["BUILTIN", "FUNCTIONS", "GROUP", "MERGES", "OPS", "PATTERNS", "PRIMITIVES", "RESERVED", "PluginError",
           "check_op", "guard_hooks", "load_plugins", "loaded_plugins", "register_merge", "register_op",
           "register_pattern", "reset_plugins", "unregister_merge", "unregister_op", "unregister_pattern"]

BUILTIN_PATTERNS = frozenset(PATTERNS)
BUILTIN_MERGES = frozenset(MERGES)


class PluginError(RunError):
    """An installed plugin that cannot be loaded, or an op that cannot be a word of the language."""


_loaded: dict[str, tuple[str, ...]] = {}  # entry point → the words it registered
_words: dict[str, set[tuple[str, str]]] = {}  # entry point → (registry, word) of each word it registered
_done = False
_loading = False
_current: tuple[str, str] | None = None  # the entry point being loaded, and how to fix it: ops registered now are its

# An op's own code that runs guarded, and what it may raise for archspec to handle: a shape its inputs
# cannot take, a located spec error, a hook it does not have. Running out of memory or stack is reported
# where it is caught, as for archspec's own ops.
HOOKS = ("shape", "params", "macs", "lower", "source", "initialise")
_PASSED = (ShapeError, SpecError, NotImplementedError, KeyboardInterrupt, MemoryError, RecursionError)


def check_op(op: Any) -> None:
    """Refuse, with the reason, a class that cannot be a word of the language: not an Op subclass, a
    kind a spec cannot write as a call (not a name, a keyword, or a word that already means something
    else: a pattern, a merge, a function, `shortcut`), or arguments that are not an OpArgs model."""
    if not (isinstance(op, type) and issubclass(op, Op)):
        raise PluginError(f"{op!r} is not an op: an op is a subclass of archspec.plugins.Op")
    kind = op.__dict__.get("kind")
    if not isinstance(kind, str):
        raise PluginError(f"op class {op.__qualname__} sets no `kind` of its own",
                          "`kind` is the word a spec calls it by, as in kind = \"swish_beta\"")
    if not _NAME.fullmatch(kind):
        raise PluginError(f"op kind {kind!r} is not a name a spec can write",
                          "a kind is letters, digits and '_', not starting with a digit")
    for words, what in RESERVED:
        if kind in words:
            raise PluginError(f"op kind '{kind}' is {what}; an op needs a word of its own")
    if not (isinstance(op.Args, type) and issubclass(op.Args, OpArgs)):
        raise PluginError(f"op '{kind}': Args must be a subclass of archspec.plugins.OpArgs, not {op.Args!r}")
    lo, hi = op.arity
    if not (isinstance(lo, int) and lo >= 1 and (hi is None or (isinstance(hi, int) and hi >= lo))):
        raise PluginError(f"op '{kind}': arity must be (min, max) inputs with 1 <= min <= max, not {op.arity!r}")


def register_op(op: type[Op]) -> type[Op]:
    """Make `op` a word of the language under its `kind`, after `check_op`; usable as a decorator. The
    hooks the class defines itself run guarded from then on (`guard_hooks`)."""
    check_op(op)
    if op.kind in OPS:
        raise PluginError(f"op '{op.kind}' is registered twice: by {OPS[op.kind].__module__} and by {op.__module__}")
    origin, fix = _current or (f"module {op.__module__}", "fix or remove the op")
    guard_hooks(op, origin, fix)
    return register(op)


def guard_hooks(op: type[Op], origin: str, fix: str = "fix or remove the op") -> None:
    """Wrap each of `HOOKS` that `op` (or a base outside archspec) defines, in place, so that an error of
    its own is a PluginError naming the op and `origin` (the entry point or the module it came from), with
    `fix` as its hint. Hooks archspec's own classes define are left as they are; a class is wrapped once."""
    for name in HOOKS:
        owner = next((c for c in op.__mro__ if name in c.__dict__), None)
        if owner is None or _is_archspec(owner):
            continue
        raw = owner.__dict__[name]
        if getattr(raw, "__func__", None) is not None and getattr(raw.__func__, "_archspec_guarded", False):
            continue
        what, where = f"plugin op '{op.kind}'", f"{op.__module__}.{op.__qualname__}.{name}"
        if isinstance(raw, classmethod):
            op_method = classmethod(_guarded(raw.__func__, what, where, origin, fix))
        elif isinstance(raw, staticmethod):
            op_method = staticmethod(_guarded(raw.__func__, what, where, origin, fix))
        else:
            continue  # not a rule archspec calls on the class
        setattr(op, name, op_method)


def _is_archspec(cls: type) -> bool:
    module = cls.__module__
    return module == "archspec" or module.startswith("archspec.")


def _guarded(fn: Any, what: str, where: str, origin: str, fix: str) -> Any:
    """`fn`, a plugin's own code, with what it raises (other than the errors archspec's callers expect)
    turned into a PluginError naming `what` (`plugin op 'x'`), `where` (its qualified name) and `origin`."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _PASSED:
            raise
        except BaseException as e:
            raise PluginError(f"{what} ({where}, from {origin}) failed: {_why(e)}",
                              f"the error is in the plugin's code, not in archspec or the spec: {fix}") from e

    run._archspec_guarded = True  # type: ignore[attr-defined]
    return run


def _why(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"it called sys.exit({repr(e.code)[:80]})"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def _check_word(cls: Any, base: type, what: str) -> str:
    """The word `cls` declares, once it is a subclass of `base` whose word a spec can write and that means
    nothing else yet."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{cls!r} is not a {what}: a {what} is a subclass of archspec.plugins.{base.__name__}")
    word = cls.__dict__.get("word")
    if not isinstance(word, str) or not _NAME.fullmatch(word):
        raise PluginError(f"{what} class {cls.__qualname__} sets no `word` a spec can write",
                          "`word` is letters, digits and '_', not starting with a digit, as in word = \"harmonic\"")
    for words, meaning in ((KEYWORDS + TYPES, "a keyword of the language"), (PATTERNS, "a connection pattern"),
                           (MERGES, "a merge"), (OPS, "an op"), (FUNCTIONS, "a function"),
                           (SPEC_WORDS, "a built-in word")):
        if word in words:
            raise PluginError(f"{what} '{word}' is already {meaning}; a {what} needs a word of its own")
    if not (isinstance(cls.Args, type) and issubclass(cls.Args, OpArgs)):
        raise PluginError(f"{what} '{word}': Args must be a subclass of archspec.plugins.OpArgs, not {cls.Args!r}")
    return word


def register_pattern(cls: type[Pattern]) -> type[Pattern]:
    """Make `cls` (a `Pattern` subclass with its `word`, `Args`, `default_merge` and `build`) a connection
    pattern of the language; usable as a decorator. Its `build` runs guarded: an error of its own is a
    PluginError naming the pattern and where it came from."""
    word = _check_word(cls, Pattern, "pattern")
    if cls.default_merge is not None and not isinstance(cls.default_merge, str):
        raise PluginError(f"pattern '{word}': default_merge must be a merge's word, not {cls.default_merge!r}")
    if "build" not in cls.__dict__ and cls.build is Pattern.build:
        raise PluginError(f"pattern '{word}' defines no `build`", "build(ctx, x, layers, args) wires the block")
    origin, fix = _current or (f"module {cls.__module__}", "fix or remove the pattern")
    raw = cls.__dict__.get("build")
    if isinstance(raw, classmethod) and not getattr(raw.__func__, "_archspec_guarded", False):
        cls.build = classmethod(_guarded(raw.__func__, f"plugin pattern '{word}'",
                                              f"{cls.__module__}.{cls.__qualname__}.build", origin, fix))
    PATTERNS[word] = cls
    return cls


def register_merge(cls: type[Merge]) -> type[Merge]:
    """Make `cls` (a `Merge` subclass with its `word` and either `op`, an op already registered, or the
    op's own rules: `shape`, `params`, `macs`, `lower`, `source`) a merge of the language; usable as a
    decorator. Without `op`, an op of the same word is registered for it (not callable from a spec as
    an op: the spec writes `word(a, b)` or `block PATTERN word { ... }`)."""
    word = _check_word(cls, Merge, "merge")
    op = cls.__dict__.get("op")
    if op is None:
        rules = {name: cls.__dict__[name] for name in ("shape", "params", "macs", "lower", "source", "initialise")
                 if name in cls.__dict__}
        if "lower" not in rules:
            raise PluginError(f"merge '{word}' names no `op` and defines no `lower`",
                              "lower(args, ins) gives its torch form, as an op's does: Call(...) or Build(...)")
        made = type(f"{cls.__name__}Op", (Op,), {
            "kind": word, "Args": cls.Args, "arity": (1, None), "user": False,
            "gather": cls.__dict__.get("gather", "list"), "__module__": cls.__module__,
            "__qualname__": f"{cls.__qualname__}.op", **rules})
        register_op(made)
        cls.op = word
    elif OPS.get(op) is None:
        raise PluginError(f"merge '{word}': op '{op}' is not registered")
    else:
        cls.Args = OPS[op].Args
    MERGES[word] = cls
    return cls


def unregister_pattern(word: str) -> type[Pattern]:
    """Remove a pattern `register_pattern` added; archspec's own stay."""
    if word in BUILTIN_PATTERNS or word not in PATTERNS:
        raise PluginError(f"no plugin pattern '{word}' is registered")
    return PATTERNS.pop(word)


def unregister_merge(word: str) -> type[Merge]:
    """Remove a merge `register_merge` added (and the op made for it); archspec's own stay."""
    if word in BUILTIN_MERGES or word not in MERGES:
        raise PluginError(f"no plugin merge '{word}' is registered")
    cls = MERGES.pop(word)
    if cls.op == word and word in OPS and word not in BUILTIN:
        unregister(word)
    return cls


def _registered() -> set[tuple[str, str]]:
    """Every word of every registry, as (registry, word)."""
    return {("op", k) for k in OPS} | {("pattern", k) for k in PATTERNS} | {("merge", k) for k in MERGES}


def _forget(words: set[tuple[str, str]]) -> None:
    """Unregister plugin words: merges first (each may take its op along), then patterns and ops."""
    for what, word in sorted(words, key=lambda w: ("merge", "pattern", "op").index(w[0])):
        if what == "merge" and word in MERGES and word not in BUILTIN_MERGES:
            unregister_merge(word)
        elif what == "pattern" and word in PATTERNS and word not in BUILTIN_PATTERNS:
            unregister_pattern(word)
        elif what == "op" and word in OPS and word not in BUILTIN:
            unregister(word)


def unregister_op(kind: str) -> type[Op]:
    """Remove an op `register_op` added; archspec's own ops stay."""
    if kind in BUILTIN:
        raise PluginError(f"op '{kind}' is one of archspec's own and cannot be unregistered")
    if kind not in OPS:
        raise PluginError(f"no op '{kind}' is registered")
    return unregister(kind)


def load_plugins() -> None:
    """Load every installed `archspec.ops` entry point not loaded yet; cheap once all are."""
    global _done, _loading
    if _done or _loading:  # a plugin that reads the catalogue while it loads sees what is there so far
        return
    _loading = True
    try:
        for ep in _entry_points():
            key = _describe(ep)
            if key not in _loaded:
                _loaded[key] = _load(ep, key)
        _done = True
    finally:
        _loading = False


def loaded_plugins() -> dict[str, tuple[str, ...]]:
    """Each loaded entry point (`name = value (distribution version)`) and the words (ops, patterns,
    merges) it registered."""
    return dict(_loaded)


def reset_plugins() -> None:
    """Unregister every word the entry points added and forget them, so that the next read of the
    catalogue scans the installed packages again. Their modules stay imported. For tests that install a
    plugin."""
    global _done
    _forget({w for words in _words.values() for w in words})
    _loaded.clear()
    _words.clear()
    _done = False


def _entry_points() -> list[metadata.EntryPoint]:
    eps = [ep for group in (GROUP,) + OLD_GROUPS for ep in metadata.entry_points(group=group)]
    return sorted(eps, key=lambda ep: (_dist(ep), ep.name, ep.value))


def _dist(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def _describe(ep: metadata.EntryPoint) -> str:
    return f"{ep.name} = {ep.value} ({_dist(ep)})"


def _load(ep: metadata.EntryPoint, key: str) -> tuple[str, ...]:
    """Load one entry point; on any failure (any BaseException but KeyboardInterrupt: `sys.exit` too),
    unregister what it registered and raise a PluginError naming the entry point."""
    global _current
    before = _registered()
    dist = getattr(getattr(ep, "dist", None), "name", None)
    fix = f"fix or uninstall {dist} (pip uninstall {dist})" if dist else "fix or uninstall the package"
    _current = (f"plugin entry point '{key}'", fix)
    try:
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, Op) and OPS.get(obj.__dict__.get("kind")) is not obj:
            register_op(obj)
        elif isinstance(obj, type) and issubclass(obj, Pattern) and PATTERNS.get(obj.__dict__.get("word")) is not obj:
            register_pattern(obj)
        elif isinstance(obj, type) and issubclass(obj, Merge) and MERGES.get(obj.__dict__.get("word")) is not obj:
            register_merge(obj)
        new = _registered() - before
        if isinstance(obj, ModuleType):
            new = new or _words_of(obj)
            if not new:
                raise PluginError(f"module '{obj.__name__}' registers no op, pattern or merge",
                                  "decorate its classes with @archspec.plugins.register_op, register_pattern "
                                  "or register_merge")
        elif not (isinstance(obj, type) and issubclass(obj, (Op, Pattern, Merge))):
            raise PluginError(f"it names {_what(obj)}, not a module or an Op, Pattern or Merge subclass")
        else:
            new = new or _words_of(obj)
        _words[key] = new
        return tuple(sorted(w for _, w in new))
    except KeyboardInterrupt:
        _forget(_registered() - before)
        raise
    except BaseException as e:  # whatever the plugin's own code raises: the user must know which plugin
        _forget(_registered() - before)
        why = e.message if isinstance(e, PluginError) else _why(e)
        hint = e.hint if isinstance(e, PluginError) and e.hint else None
        raise PluginError(f"plugin entry point '{key}' cannot be loaded: {why}",
                          f"{hint}; {fix}" if hint else fix) from e
    finally:
        _current = None


def _words_of(obj: Any) -> set[tuple[str, str]]:
    """The words registered by `obj` (a class) or by classes of a module or its submodules (a module
    imported before)."""
    if isinstance(obj, type):
        name = obj.__module__
        match = lambda c: c is obj  # noqa: E731
    else:
        name = obj.__name__
        match = lambda c: c.__module__ == name or c.__module__.startswith(name + ".")  # noqa: E731
    return ({("op", k) for k, c in OPS.items() if match(c)} | {("pattern", k) for k, c in PATTERNS.items() if match(c)}
            | {("merge", k) for k, c in MERGES.items() if match(c)})


def _what(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    return f"a {type(obj).__name__}"


class Primitives(Mapping[str, type[Op]]):
    """The ops a spec may call by name: every registered op but `input` and those only patterns and
    merges add. A live view of `OPS`, so that an op registered later (`archspec.register_op`) is a word at
    once; the first read loads the installed plugins, so that whether a word exists never depends on
    what ran before in the process."""

    @staticmethod
    def _callable(kind: str, op: type[Op] | None) -> bool:
        return op is not None and op.user and kind != "input"

    def get(self, kind: str, default: type[Op] | None = None) -> type[Op] | None:  # type: ignore[override]
        load_plugins()
        op = OPS.get(kind)
        return op if self._callable(kind, op) else default

    def __getitem__(self, kind: str) -> type[Op]:
        op = self.get(kind)
        if op is None:
            raise KeyError(kind)
        return op

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and self.get(kind) is not None

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter([k for k, op in OPS.items() if self._callable(k, op)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Primitives({', '.join(self)})"


PRIMITIVES: Mapping[str, type[Op]] = Primitives()
