"""Named tensors, merges of named tensors and patterns written in a spec: the part of elaboration that
wires tensors the spec names. `Wiring` holds the methods the `Elaborator` runs for `-> a`, `from a`, a
merge call (`concat(a, b)`, `merge(...)`), `apply(k)` and a block of a spec-written pattern; `Closure` is
what a block's layer sees of the names around it."""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, MutableMapping

from ..errors import Loc, SpecError, did_you_mean, loc_of
from ..language import tree as T
from ..language.evaluate import FUNCTIONS, Env, Tensor, Value, describe, evaluate
from .args import arg_locs, make_args, plural
from .builder import Builder, Scope
from .merges import Merge
from .ops import NoArgs, OpArgs
from .patterns import BlockContext, Layer
from .vocabulary import MERGES
from .words import aliases

if TYPE_CHECKING:
    from ..language.loader import Spec


class Closure(ChainMap):
    """The names a block's layer sees: the names the block body bound before it (loop variables and lets,
    as they were when the layer was written), then the live names of the code around the block, so that a
    tensor named in one layer (`-> a`) is read by the layers after it."""

    @property
    def outside(self) -> Mapping[str, Value]:
        return getattr(self.maps[-1], "outside", {})

    @property
    def where(self) -> str:
        return getattr(self.maps[-1], "where", "")


def _live(env: MutableMapping[str, Value]) -> MutableMapping[str, Value]:
    """Where a tensor named in `env` is kept: the enclosing template's (or network's) own names."""
    return env.maps[-1] if isinstance(env, ChainMap) else env


@dataclass(frozen=True)
class TemplateMerge:
    """A layer template of the spec used as a merge word: `layer weighted(xs: list) { ... }` merges the
    inflows of `block dense weighted { ... }`, called with them as its one argument, a list of tensors."""

    word: str
    run: Callable[[list[str], Scope], str]  # (inflows, scope) → the merged tensor
    equal_shapes: bool = False
    Args: type[OpArgs] = NoArgs

    def combine(self, ctx: BlockContext, inputs: list[str], where: Scope, args: OpArgs) -> str:
        return inputs[0] if len(inputs) == 1 else self.run(inputs, where)


@dataclass
class PatternRun:
    """A spec-written pattern wiring one block: its layers, merge, scope, and which layers it has applied."""

    name: str
    layers: list[Layer]
    merge: type[Merge] | TemplateMerge | None
    merge_args: OpArgs | None
    scope: Scope
    loc: Loc
    applied: dict[int, Loc] = field(default_factory=dict)



class Wiring:
    """The Elaborator's methods for tensors the spec names (mixed into it: they use its builder `b`, its
    spec, its stack of running templates and patterns, and its statement runners)."""

    b: Builder
    spec: "Spec"
    running: list[PatternRun | Env | None]
    stack: list[str]
    sites: list[Loc]

    def pattern_run(self) -> PatternRun | None:
        """The spec-written pattern whose own body is running now, if any."""
        run = self.running[-1] if self.running else None
        return run if isinstance(run, PatternRun) else None

    def bind(self, s: T.Bind, env: MutableMapping[str, Value], x: str) -> None:
        """`-> a`: name the current tensor, for the code around it (and every later layer of a block)."""
        name = str(s.name)
        if name in FUNCTIONS or name in ("channels", "height", "width"):
            raise SpecError(f"'{name}' is a function of the language; a tensor cannot take its name",
                            loc_of(s.name, s.loc))
        t = Tensor(x, self.b.shape(x))
        for m in (env.maps if isinstance(env, ChainMap) else (env,)):
            if name in m or m is _live(env):
                m[name] = t

    def tensor(self, v: Value, loc: Loc, what: str) -> str:
        """The node behind a tensor value, or an error saying what `what` needed."""
        if not isinstance(v, Tensor):
            raise SpecError(f"{what} needs a tensor, got {describe(v)}", loc,
                            "name a tensor where it is made, as in `conv(64, 3) -> a`, then read it: `from a`")
        return v.node

    def inflows(self, c: T.Call, env: Mapping[str, Value], x: str) -> list[str]:
        """The tensors a merge call names, in the order written: tensors, or lists of them."""
        dyn = self.dynamic(x)
        out: list[str] = []
        for a in c.args:
            v = evaluate(a, env, dyn)
            for item in (v if isinstance(v, list) else [v]):
                out.append(self.tensor(item, a.loc, f"{c.name}(...)"))
        if not out:
            raise SpecError(f"{c.name} needs the tensors it merges", c.loc.span(len(c.name)),
                            f"as in `{c.name}(a, b)` or `{c.name}(outs)`, where `-> a` named a tensor")
        if len(set(out)) != len(out):
            raise SpecError(f"{c.name} reads the same tensor twice", c.loc)
        return out

    def merge_call(self, c: T.Call, env: Mapping[str, Value], x: str, scope: Scope) -> str:
        """`concat(a, b)`: named tensors merged by a merge word (`merge(...)` in a pattern's body: the
        block's merge), in the order written; one tensor is passed on untouched."""
        run = self.pattern_run()
        if c.name == "merge":
            if run is None:
                raise SpecError("merge(...) merges by a block's merge word: only in the body of a `pattern`",
                                c.loc.span(5), f"elsewhere name the merge, as in `concat(a, b)`; merges: "
                                               f"{', '.join(MERGES)}")
            if run.merge is None:
                raise SpecError(f"pattern '{run.name}' has no merge word to merge by", c.loc.span(5),
                                f"name one in the block (`block {run.name} concat {{ ... }}`) or after the "
                                f"pattern's parameters (`pattern {run.name}(...) concat {{ ... }}`)")
            merge, margs = run.merge, run.merge_args
            if c.kwargs:
                k, v = c.kwargs[0]
                raise SpecError("merge(...) takes the block's merge arguments, not its own", loc_of(k, v.loc))
        else:
            merge = MERGES[c.name]
            dyn = self.dynamic(x)
            pos_locs, kw_locs = arg_locs((), c.kwargs)
            margs = make_args(f"merge '{c.name}'", merge.Args, [],
                              {str(k): evaluate(v, env, dyn) for k, v in c.kwargs}, c.loc, pos_locs, kw_locs)
        if not c.args:
            raise SpecError(f"'{c.name}' is a merge: it needs the tensors it merges", c.loc.span(len(c.name)),
                            f"name them where they are made and merge them, as in `-> a ... -> b "
                            f"{c.name}(a, b)`; a block merges its inflows by it as in `block dense {c.name} "
                            "{ ... }`")
        inputs = self.inflows(c, env, x)
        return self.merge_by(merge, margs, inputs, scope, merge.word, c.loc, run.name if run else "chain")

    def merge_by(self, merge: type[Merge] | TemplateMerge, margs: OpArgs, inputs: list[str], scope: Scope, base: str,
                 loc: Loc, pattern: str, numbered: bool = True) -> str:
        """`inputs` merged by `merge` (a merge word's op, or a template of the spec); one passes on."""
        if len(inputs) == 1:
            return inputs[0]
        if isinstance(merge, TemplateMerge):
            return merge.run(inputs, scope)
        return self.b.add(merge.op, margs, inputs, scope, base, loc, pattern=pattern, role="merge", numbered=numbered)

    def template_merge(self, name: str, env: Mapping[str, Value], loc: Loc) -> TemplateMerge:
        """The spec's layer template `name` as a merge word: called on the inflows, as one list."""
        d = self.spec.layers[name]
        if not d.params or d.params[0].type != "list" or any(p.default is None for p in d.params[1:]):
            raise SpecError(f"layer '{name}' cannot merge a block's inflows", loc,
                            f"a template used as a merge takes them as its first parameter, a list, and has "
                            f"defaults for the rest: `layer {name}(xs: list) {{ concat(xs) ... }}`; defined at "
                            f"{loc_of(d.name, d.loc)}")

        def run(inputs: list[str], scope: Scope) -> str:
            tensors = [Tensor(i, self.b.shape(i)) for i in inputs]
            return self.template(name, [tensors], inputs[0], scope.child(name, numbered=True), env, loc)

        return TemplateMerge(name, run)

    def merge_word(self, name: str, loc: Loc, env: Mapping[str, Value]) -> type[Merge] | TemplateMerge | None:
        """The merge a block names: a merge word, or a layer template of the spec; None for neither."""
        if name in MERGES:
            return MERGES[name]
        if name in self.spec.layers:
            return self.template_merge(name, env, loc)
        return None

    def apply(self, c: T.Call, env: Mapping[str, Value], x: str) -> str:
        """`apply(k)` in a pattern's body: the block's layer k (from 1) on the current tensor;
        `apply(k, inflows)` on the block's merge of `inflows` instead. Each layer is applied once."""
        run = self.pattern_run()
        name_loc = c.loc.span(5)
        if run is None:
            raise SpecError("apply(k) runs a block's layer k: only in the body of a `pattern`", name_loc,
                            "define the wiring as `pattern NAME(...) { ... apply(k) ... }` and use it as "
                            "`block NAME { layers }`")
        if c.kwargs or not 1 <= len(c.args) <= 2:
            raise SpecError(f"apply takes the layer's number and, optionally, the tensors it reads: apply(k) or "
                            f"apply(k, inflows), got {len(c.args) + len(c.kwargs)} arguments", c.loc)
        k = evaluate(c.args[0], env, self.dynamic(x))
        n = len(run.layers)
        if type(k) is not int or not 1 <= k <= n:
            raise SpecError(f"apply: the block has {plural(n, 'layer')}, numbered 1 to {n}, not {describe(k)}",
                            c.args[0].loc)
        if k in run.applied:
            raise SpecError(f"apply: layer {k} of the block is applied twice", c.loc,
                            f"first applied at {run.applied[k]}; a layer has one set of weights and runs once")
        run.applied[k] = c.loc
        lscope = run.scope.child(f"layer{k}", kind="layer")
        if len(c.args) == 2:
            inputs = self.inflows(T.Call("apply", c.args[1:], (), c.loc), env, x)
            if len(inputs) > 1 and run.merge is None:
                raise SpecError(f"pattern '{run.name}' has no merge word to merge a layer's inflows by", c.loc,
                                f"name one in the block (`block {run.name} concat {{ ... }}`)")
            x = self.merge_by(run.merge, run.merge_args, inputs, lscope, "merge", c.loc, run.name, numbered=False)
        self.running.append(None)  # the layer's own statements are not the pattern's
        try:
            return run.layers[k - 1](x, lscope)
        finally:
            self.running.pop()

    def user_pattern(self, s: T.Block, d: T.PatternDef, env: MutableMapping[str, Value], x: str,
                     scope: Scope) -> str:
        """A block wired by a pattern the spec wrote: the pattern's body runs once, on the block's input,
        with its parameters, `layers` (how many the block has), `apply` and `merge`."""
        word, name = s.pattern, str(d.name)
        dyn = self.dynamic(x)
        pos = [evaluate(a, env, dyn) for a in word.args]
        kw = {str(k): evaluate(v, env, dyn) for k, v in word.kwargs}
        pos_locs, kw_locs = arg_locs(word.args, word.kwargs)
        penv = self.bind_params(f"pattern '{name}'", d, pos, kw, pos_locs, kw_locs, word.loc, env, dyn)
        merge, margs = None, None
        merge_word = s.merge or d.merge
        if merge_word is not None:
            merge_name = str(merge_word.name if isinstance(merge_word, T.Word) else merge_word)
            where = merge_word.loc if isinstance(merge_word, T.Word) else loc_of(d.merge, d.loc)
            merge = self.merge_word(merge_name, where, env)
            if merge is None:
                raise SpecError(f"unknown merge '{merge_name}'", where.span(len(merge_name)),
                                did_you_mean(merge_name, MERGES, aliases(MERGES)) or f"merges: {', '.join(MERGES)}")
            margs = (self.word_args(s.merge, merge.Args, env, x, f"merge '{merge_name}'") if s.merge
                     else merge.Args())
        layers = self.layers(s.body, env, x)
        penv["layers"] = len(layers)
        bscope = scope.child("block", numbered=True, kind="block")
        self.check_depth(T.Call(name, (), (), word.loc))
        run = PatternRun(name, layers, merge, margs, bscope, s.loc)
        self.stack.append(name)
        self.sites.append(word.loc.span(len(name)))
        self.running.append(run)
        try:
            out = self.run_body(d.body, penv, x, bscope)
        finally:
            self.stack.pop()
            self.sites.pop()
            self.running.pop()
        missing = [k for k in range(1, len(layers) + 1) if k not in run.applied]
        if missing:
            raise SpecError(f"pattern '{name}' never applies layer{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(str, missing[:8]))}{'…' if len(missing) > 8 else ''} of this block "
                            f"(it has {plural(len(layers), 'layer')})", s.loc,
                            f"its body applies each layer with apply(k), k from 1 to `layers`; defined at "
                            f"{loc_of(d.name, d.loc)}")
        return out
