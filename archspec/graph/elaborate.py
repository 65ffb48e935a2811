"""Syntax tree → graph. Runs the spec's control flow (lets, loops, conditions, templates) and asks the
connection patterns to wire each block; every node gets validated arguments, a shape, a hierarchical
name and the location of the text that made it."""

from __future__ import annotations

from collections import ChainMap
from typing import Any, Callable, Iterator, Mapping, MutableMapping, Sequence

from ..language import tree as T
from ..collector import paused
from ..errors import Loc, RunError, SpecError, did_you_mean, loc_of
from ..language.evaluate import (FUNCTIONS, Budget, Env, Tensor, Value, budget, coerce, describe, evaluate, render,
                                  truth)
from ..language.loader import Spec
from .args import arg_locs, make_args, plural
from .builder import Builder, Scope
from .ir import Network
from .ops import OpArgs
from .patterns import BlockContext, Layer
from .streams import Streams
from .vocabulary import MERGES, OPS, PATTERNS, PRIMITIVES
from .wiring import Closure, PatternRun, Wiring
from .words import aliases

# Bounds that turn a runaway spec into an error rather than a hang (the builder bounds the graph's size,
# `evaluate.Budget` the values made and the time taken). The largest real networks run a few thousand
# statements.
MAX_TEMPLATE_DEPTH = 64  # layer templates running inside each other
MAX_STEPS = 200_000  # statements run, loops unrolled
MAX_ALIAS_DEPTH = 200  # `network b = a(...)` definitions followed to reach a body


def _python_value(v: Any) -> Value:
    """A value given from Python (or --set) in the spec's terms: tuples are lists."""
    if isinstance(v, tuple):
        return [_python_value(x) for x in v]
    if isinstance(v, list):
        return [_python_value(x) for x in v]
    return v


UNREAD_HINT = ("merge it where it is meant to go, or remove it; a merge of one tensor passes that tensor on alone, "
               "so `sum(short)` drops the current tensor: name it first, as in `-> y sum(y, short)`")

class Returned(Exception):
    """`return` in a layer template: its value, and where it was written."""

    def __init__(self, value: Value, loc: Loc):
        super().__init__()
        self.value, self.loc = value, loc


class Elaborator(Wiring):
    def __init__(self, spec: Spec):
        self.spec = spec
        self.b = Builder()
        self.streams = Streams(self.b)
        self.stack: list[str] = []  # the layer templates being run, outermost first
        self.sites: list[Loc] = []  # where each of them was called
        self.steps = 0
        self.budget = Budget()
        self.where: Loc | None = None  # the statement being run, for errors with no better place
        # the spec-written patterns running, innermost last; None where a layer or template runs inside one
        # what each body running is, innermost last: a spec-written pattern's run, a layer template's own
        # names (where `return` may stand), or None for a block's layer that a pattern applies
        self.running: list[PatternRun | Env | None] = []
        for name, d in spec.layers.items():
            if name in PRIMITIVES or name == "input":
                raise SpecError(f"'{name}' is a built-in op; a layer cannot take its name", loc_of(d.name, d.loc))
            if name in MERGES or name in FUNCTIONS or name in ("apply", "merge", "shortcut"):
                what = "a merge" if name in MERGES else "a function" if name in FUNCTIONS else "a word of the language"
                raise SpecError(f"'{name}' is {what}; a layer cannot take its name", loc_of(d.name, d.loc))
        for name, d in spec.patterns.items():
            for p in d.params:
                if str(p.name) == "layers":
                    raise SpecError("a pattern's body is given `layers`, the number of its block's layers: a "
                                    "parameter cannot take that name", loc_of(p.name, p.loc))
            taken = ("a built-in connection pattern" if name in PATTERNS else "a merge" if name in MERGES
                     else "an op" if name in OPS or name == "input" else
                     "a word of spec patterns" if name in ("apply", "merge") else None)
            if taken:
                raise SpecError(f"'{name}' is {taken}; a pattern cannot take its name", loc_of(d.name, d.loc))

    def step(self, loc: Loc | None) -> None:
        self.steps += 1
        self.where = loc
        if self.steps > MAX_STEPS:
            raise SpecError(f"the spec runs more than {MAX_STEPS:,} statements", loc,
                            "is a repeat count or a range far too large?")
        self.budget.clock(loc)

    # ---- network parameters -----------------------------------------------------------
    def signature(self, name: str, loc: Loc | None, seen: tuple[str, ...] = ()
                  ) -> tuple[T.NetworkDef, dict[str, tuple[T.Param, Callable, Loc]]]:
        """The network definition behind `name` (following aliases) and, per parameter, its declaration,
        a function giving its default value from the parameters before it, and where that default is."""
        d = self.spec.networks.get(name)
        if d is None:
            if name in self.spec.layers:
                raise SpecError(f"'{name}' is a layer, not a network", loc,
                                f"defined at {loc_of(self.spec.layers[name].name, self.spec.layers[name].loc)}")
            raise SpecError(f"unknown network '{name}'", loc,
                            did_you_mean(name, self.spec.networks)
                            or f"networks: {', '.join(self.spec.networks) or 'none'}")
        if name in seen:
            raise SpecError(f"network '{name}' is defined in terms of itself: {' → '.join(seen + (name,))}", loc)
        if len(seen) >= MAX_ALIAS_DEPTH:
            raise SpecError(f"network '{seen[0]}' is an alias {MAX_ALIAS_DEPTH:,} networks deep", loc,
                            "define it with a body, or on a network nearer the one with a body")
        if isinstance(d, T.NetworkDef):
            return d, {str(p.name): (p, (lambda env, p=p: evaluate(p.default, env) if p.default else None),
                                     p.default.loc if p.default else loc_of(p.name, p.loc))
                       for p in d.params}
        base, params = self.signature(str(d.base), loc_of(d.base, d.loc), seen + (name,))
        names = list(params)
        if len(d.args) > len(names):
            raise SpecError(f"network '{d.base}' takes {plural(len(names), 'parameter')}"
                            f"{' (' + ', '.join(names) + ')' if names else ''}, got {len(d.args)}",
                            d.args[len(names)].loc)
        given = dict(zip(names, d.args))
        for k, e in d.kwargs:
            if k not in params:
                raise SpecError(f"network '{d.base}' has no parameter '{k}'", loc_of(k, e.loc),
                                did_you_mean(k, params) or f"its parameters: {', '.join(params) or 'none'}")
            if k in given:
                raise SpecError(f"network '{d.base}': parameter '{k}' is given twice", loc_of(k, e.loc))
            given[str(k)] = e
        for k, e in given.items():
            params[k] = (params[k][0], lambda env, e=e: evaluate(e, env), e.loc)
        return base, params

    def bind_network(self, overrides: Mapping[str, Value]) -> tuple[T.NetworkDef, dict[str, Value]]:
        main = self.spec.networks[self.spec.main]
        main_loc = loc_of(main.name, main.loc)
        d, params = self.signature(self.spec.main, main_loc)
        for k in overrides:
            if k not in params:
                raise SpecError(f"network '{self.spec.main}' has no parameter '{k}'", main_loc,
                                did_you_mean(k, params) or f"its parameters: {', '.join(params) or 'none'}")
        env: dict[str, Value] = {}
        for k, (p, default, where) in params.items():
            if k in overrides:
                v = _python_value(overrides[k])
                env[k] = coerce(v, p.type, loc_of(p.name, p.loc), f"the value set for parameter '{k}'")
                continue
            v = default(env)
            if v is None:
                raise SpecError(f"parameter '{k}' has no default and was not set", loc_of(p.name, p.loc),
                                f"give it one, as in `{k}: {p.type} = ...`, or set it (--set {k}=...)")
            env[k] = coerce(v, p.type, where, f"the default of parameter '{k}'")
        return d, env

    # ---- statements -------------------------------------------------------------------
    def run_body(self, stmts: Sequence[T.Stmt], env: MutableMapping[str, Value], x: str, scope: Scope) -> str:
        """Run statements in sequence, each transforming the current tensor `x`. Braces, loops and
        conditions share the names of the code around them (a `let` in a loop carries to the next
        iteration); only a layer template or pattern has names of its own."""
        for s in stmts:
            x = self.run_stmt(s, env, x, scope)
        return x

    def run_stmt(self, s: T.Stmt, env: dict[str, Value], x: str, scope: Scope) -> str:
        self.step(s.loc)
        dyn = self.dynamic(x)
        if isinstance(s, T.Let) and isinstance(s.value, T.Func) and s.value.name in self.spec.layers:
            # `let ys = template(...)`: the template runs on the current tensor and gives its result as a
            # value (what it returns, or its last tensor); the current tensor stays
            f = s.value
            env[str(s.name)] = self.call(T.Call(f.name, f.args, f.kwargs, f.loc), env, x, scope, None, value=True)
        elif isinstance(s, T.Let):
            env[str(s.name)] = evaluate(s.value, env, dyn)
        elif isinstance(s, T.Return):
            if not (self.running and env is self.running[-1]):
                raise SpecError("return ends a layer template: only in one's own body", s.loc,
                                "a network, a pattern or a block's layer gives its last tensor")
            raise Returned(evaluate(s.value, env, dyn), s.value.loc)
        elif isinstance(s, T.Assert):
            self.check(s, env, dyn)
        elif isinstance(s, T.Bind):
            self.bind(s, env, x)
        elif isinstance(s, T.Read):
            x = self.tensor(evaluate(s.value, env, dyn), s.value.loc, "from")
        elif isinstance(s, T.Call):
            x = self.call(s, env, x, scope, own_scope=None)
        elif isinstance(s, T.Scope) and s.kind == "group":  # braces outside a block: a plain sequence
            x = self.run_body(s.body, env, x, scope)
        elif isinstance(s, T.Scope):
            x = self.run_body(s.body, env, x, scope.child(s.kind, numbered=s.kind == "transition"))
        elif isinstance(s, T.Block):
            x = self.block(s, env, x, scope)
        else:
            for body, benv in self.control(s, env, dyn):
                x = self.run_body(body, benv, x, scope)
        return x

    def control(self, s: T.Stmt, env: dict[str, Value], dyn) -> Iterator[tuple[Sequence[T.Stmt], dict[str, Value]]]:
        """Unrolls `repeat`, `for` and `if` into (body, environment) pairs, one at a time: each is run
        (and its steps counted) before the next environment is made."""
        if isinstance(s, T.Repeat):
            n = evaluate(s.count, env, dyn)
            if type(n) is not int or n < 0:
                raise SpecError(f"repeat needs a non-negative int, got {describe(n)}", s.count.loc)
            if n > MAX_STEPS:
                raise SpecError(f"repeat {n:,} is too many times (at most {MAX_STEPS:,})", s.count.loc)
            for _ in range(n):
                yield s.body, env
            return
        if isinstance(s, T.For):
            items = evaluate(s.iterable, env, dyn)
            if not isinstance(items, list):
                raise SpecError(f"for needs a list (e.g. range(3)), got {describe(items)}", s.iterable.loc)
            var = str(s.var)
            for v in items:
                env[var] = v
                yield s.body, env
            return
        if isinstance(s, T.If):
            yield s.then if truth(evaluate(s.cond, env, dyn), s.cond.loc) else s.orelse, env
            return
        raise SpecError(f"unexpected {type(s).__name__} here", getattr(s, "loc", None))

    def check(self, s: T.Assert, env: Mapping[str, Value], dyn) -> None:
        """`assert cond, "message"`: a library's own precondition, reported where the user called it, with
        the values its condition saw."""
        if truth(evaluate(s.cond, env, dyn), s.cond.loc):
            return
        msg = evaluate(s.message, env, dyn) if s.message is not None else "assertion failed"
        if not isinstance(msg, str):
            raise SpecError(f"an assert's message must be a string, got {describe(msg)}", s.message.loc)
        seen = {n: env[n] for n in _names(s.cond) if n in env}
        values = ", ".join(f"{n} = {render(v)}" for n, v in seen.items())
        hint = f"required at {s.cond.loc}" + (f", where {values}" if values else "")
        if self.sites:
            hint += ", inside " + " → ".join(f"'{n}'" for n in self.stack)
        raise SpecError(msg, self.sites[0] if self.sites else s.cond.loc, hint)

    def dynamic(self, x: str) -> dict[str, Callable[[], Value]]:
        shape = lambda: self.b.shape(x)  # noqa: E731
        return {
            "channels": lambda: shape()[0],
            "height": lambda: shape()[1] if len(shape()) == 3 else 1,
            "width": lambda: shape()[2] if len(shape()) == 3 else 1,
        }

    def _not_callable(self, c: T.Call, env: Mapping[str, Value]) -> SpecError:
        """Why `c.name` cannot be applied to a tensor: a precise reason where there is one."""
        name, loc = c.name, c.loc.span(len(c.name))
        if name == "input":
            return SpecError("input(...) can only be the first statement of a network", loc)
        if name in self.spec.networks:
            return SpecError(f"'{name}' is a network; only ops and layer templates can be used in a body", loc,
                             "to reuse its layers, move them into a `layer` template")
        if name in PATTERNS:
            return SpecError(f"'{name}' is a connection pattern, not an op", loc,
                             f"a pattern wires a block: `block {name} {{ ... }}`")
        if name in MERGES:
            return SpecError(f"'{name}' is a merge, not an op", loc,
                             f"a merge names how a block combines inflows: `block dense {name} {{ ... }}`")
        if name in FUNCTIONS:
            return SpecError(f"'{name}' is a function that gives a value, not an op", loc,
                             f"use it in an argument or a `let`, as in `let x = {name}(...)`")
        if name in env:
            return SpecError(f"'{name}' is a value ({describe(env[name])}), not an op or layer", loc)
        choices = list(PRIMITIVES) + ["shortcut"] + list(self.spec.layers)
        hint = did_you_mean(name, choices, aliases(OPS))
        if hint is None:
            hint = f"ops: {', '.join(PRIMITIVES)}, shortcut"
            if self.spec.layers:
                hint += f"; layers: {', '.join(self.spec.layers)}"
        return SpecError(f"unknown layer or op '{name}'", loc, hint)

    def call(self, c: T.Call, env: Mapping[str, Value], x: str, scope: Scope, own_scope: Scope | None,
             value: bool = False) -> Any:
        """Apply a primitive op or a layer template to `x`, or merge named tensors (`concat(a, b)`), or,
        in a pattern's body, apply the block's layers and merge; the result's node. `own_scope` names a
        template's ops (a block's layer scope); otherwise a template gets a numbered child scope. With
        `value` (a template in a `let`), the template's result as a value: what it returns (a tensor or
        a list of them), else its last tensor."""
        dyn = self.dynamic(x)
        op = PRIMITIVES.get(c.name)
        layer = self.spec.layers.get(c.name) if op is None else None
        if op is None and layer is None:
            if c.name == "shortcut":
                return self.shortcut(c, x, own_scope or scope)
            if c.name in MERGES or c.name == "merge":
                return self.merge_call(c, env, x, own_scope or scope)
            if c.name == "apply":
                return self.apply(c, env, x)
            raise self._not_callable(c, env)
        pos = [evaluate(a, env, dyn) for a in c.args]
        kw = {str(k): evaluate(v, env, dyn) for k, v in c.kwargs}
        pos_locs, kw_locs = arg_locs(c.args, c.kwargs)
        if op is not None:
            return self.b.add(c.name, make_args(c.name, op.Args, pos, kw, c.loc, pos_locs, kw_locs), [x],
                              own_scope or scope, c.name, c.loc)
        lenv = self.bind_params(f"layer '{c.name}'", layer, pos, kw, pos_locs, kw_locs, c.loc, env, dyn)
        self.check_depth(c)
        self.stack.append(c.name)
        self.sites.append(c.loc.span(len(c.name)))
        self.running.append(lenv)  # a template's body is not its caller's pattern body
        taps = self.streams.taps_made()
        try:
            out = self.run_body(layer.body, lenv, x, own_scope or scope.child(c.name, numbered=True))
        except Returned as r:
            if value:
                return r.value
            if not isinstance(r.value, Tensor):
                raise SpecError(f"layer '{c.name}' is called as a layer, so it returns a tensor, not "
                                f"{describe(r.value)}", r.loc,
                                f"take another result in a let: `let ys = {c.name}(...)`") from None
            out = r.value.node
        finally:
            self.stack.pop()
            self.sites.pop()
            self.running.pop()
        self.streams.layer_done(out, taps)
        return Tensor(out, self.b.shape(out)) if value else out

    def bind_params(self, what: str, d: T.LayerDef | T.PatternDef, pos: list[Value], kw: dict[str, Value],
                    pos_locs: list[Loc], kw_locs: dict[str, Loc], loc: Loc, env: Mapping[str, Value],
                    dyn) -> Env:
        """The names of a template's or pattern's body: its parameters, from the arguments given and
        their defaults, each checked against its declared type."""
        names = [str(p.name) for p in d.params]
        if len(pos) > len(names):
            takes = f"takes {plural(len(names), 'argument')} ({', '.join(names)})" if names else "takes no arguments"
            raise SpecError(f"{what} {takes}, got {len(pos)}", pos_locs[len(names)],
                            f"defined at {loc_of(d.name, d.loc)}")
        given = dict(zip(names, pos))
        given_at = dict(zip(names, pos_locs))
        for k, v in kw.items():
            if k not in names:
                raise SpecError(f"{what} has no parameter '{k}'", kw_locs[k],
                                did_you_mean(k, names) or (f"its parameters: {', '.join(names)}" if names
                                                           else f"{what} takes no arguments"))
            if k in given:
                raise SpecError(f"{what}: argument '{k}' is given twice (by position and by name)", kw_locs[k])
            given[k] = v
            given_at[k] = kw_locs[k]
        lenv = Env(outside=env, where=what)
        for p in d.params:
            pname = str(p.name)
            if pname in given:
                lenv[pname] = coerce(given[pname], p.type, given_at[pname], f"argument '{pname}' of {what}")
            elif p.default is not None:
                lenv[pname] = coerce(evaluate(p.default, lenv, dyn), p.type, p.default.loc,
                                     f"the default of parameter '{pname}'")
            else:
                raise SpecError(f"{what} needs argument '{pname}'", loc,
                                f"its parameters: {', '.join(f'{q.name}: {q.type}' for q in d.params)}")
        return lenv

    def shortcut(self, c: T.Call, x: str, scope: Scope) -> str:
        """The `shortcut` mark: where a residual stream enters a layer and its raw tensor is tapped. Inside
        `block residual(embedded=true)` it adds the next channels of the block's stream (as many as `x`
        has); elsewhere it adds nothing and only marks `x` as the raw tensor."""
        loc = c.loc.span(len(c.name))
        if c.args or c.kwargs:
            raise SpecError("shortcut takes no arguments", loc,
                            "it adds the next channels of the enclosing residual stream, as many as its input has")
        return self.streams.mark(x, scope, c.loc, loc)

    def check_depth(self, c: T.Call) -> None:
        """An error at `c` when templates and patterns already run `MAX_TEMPLATE_DEPTH` deep."""
        if len(self.stack) >= MAX_TEMPLATE_DEPTH:
            raise self._runaway(c)

    def _runaway(self, c: T.Call) -> SpecError:
        chain = self.stack + [c.name]
        if c.name in self.stack:
            start = len(chain) - 2 - chain[-2::-1].index(c.name)  # the last time it was entered
            cycle = chain[start:]
            what = "calls itself" if len(set(cycle)) == 1 else "calls itself through " + \
                ", ".join(f"'{n}'" for n in dict.fromkeys(cycle[1:-1]))
            kind = "pattern" if c.name in self.spec.patterns else "layer"
            return SpecError(f"{kind} '{c.name}' {what} without end", c.loc.span(len(c.name)),
                             f"layer templates and patterns nest more than {MAX_TEMPLATE_DEPTH} deep: "
                             f"{' → '.join(cycle)}; a template may call itself only under a condition that ends it")
        return SpecError(f"layer templates and patterns nest more than {MAX_TEMPLATE_DEPTH} deep",
                         c.loc.span(len(c.name)))

    def block(self, s: T.Block, env: MutableMapping[str, Value], x: str, scope: Scope) -> str:
        word = s.pattern
        own = self.spec.patterns.get(word.name)
        if own is not None:
            return self.user_pattern(s, own, env, x, scope)
        pattern = PATTERNS.get(word.name)
        if pattern is None:
            loc = word.loc.span(len(word.name))
            if word.name in MERGES:
                raise SpecError(f"'{word.name}' is a merge, not a connection pattern", loc,
                                f"name the pattern first, as in `block dense {word.name} {{ ... }}`")
            if word.name in self.spec.layers:
                raise SpecError(f"'{word.name}' is a layer template, not a connection pattern", loc,
                                "call it as a layer inside the block, or define the wiring as "
                                f"`pattern {word.name}(...) {{ ... apply(k) ... }}`")
            known = list(PATTERNS) + list(self.spec.patterns)
            raise SpecError(f"unknown connection pattern '{word.name}'", loc,
                            did_you_mean(word.name, known, aliases(PATTERNS))
                            or f"patterns: {', '.join(known)}")
        pargs = self.word_args(word, pattern.Args, env, x, f"pattern '{word.name}'")
        merge, margs = None, None
        merge_word = s.merge.name if s.merge else pattern.default_merge
        if merge_word is not None:
            if pattern.default_merge is None:
                raise SpecError(f"pattern '{pattern.word}' takes no merge word", s.merge.loc.span(len(merge_word)),
                                f"'{pattern.word}' has no inflows to merge; patterns with a merge: "
                                + ", ".join(p for p, v in PATTERNS.items() if v.default_merge))
            merge = self.merge_word(merge_word, s.merge.loc if s.merge else s.loc, env)
            if merge is None and s.merge is None:
                raise RunError(f"pattern '{pattern.word}' merges by default with '{merge_word}', which is not a merge",
                               f"merges: {', '.join(MERGES)}; name one in the block, as in `block {word.name} "
                               "concat { ... }`, or fix the pattern's default_merge")
            if merge is None:
                loc = s.merge.loc.span(len(merge_word))
                if merge_word in PATTERNS:
                    raise SpecError(f"'{merge_word}' is a connection pattern, not a merge", loc,
                                    f"a block has one pattern, then optionally a merge: `block {word.name} "
                                    f"{pattern.default_merge} {{ ... }}`")
                raise SpecError(f"unknown merge '{merge_word}'", loc,
                                did_you_mean(merge_word, MERGES, aliases(MERGES)) or f"merges: {', '.join(MERGES)}")
            margs = self.word_args(s.merge, merge.Args, env, x, f"merge '{merge_word}'") if s.merge else merge.Args()
        bscope = scope.child("block", numbered=True, kind="block")
        layers = self.layers(s.body, env, x)
        run_template = lambda name, values, inp, sc, builtin=(): self.template(  # noqa: E731
            name, values, inp, sc, env, s.loc, builtin)
        ctx = BlockContext(self.b, self.streams, bscope, pattern.word, merge, margs, s.loc, run_template)
        return pattern.build(ctx, x, layers, pargs)

    def template(self, name: str, values: Sequence[Value], x: str, scope: Scope, env: Mapping[str, Value],
                 loc: Loc, builtin: Sequence[str] = ()) -> str:
        """Layer template `name` applied to `x` with positional `values`, as a pattern asks (a residual
        projection); its errors point at the block `loc`, naming the pattern's `builtin` choices too."""
        if name not in self.spec.layers:
            what = f"unknown {'projection' if builtin else 'layer template'} '{name}'"
            raise SpecError(what, loc, did_you_mean(name, list(builtin) + list(self.spec.layers))
                            or f"{'built-in: ' + ', '.join(builtin) + '; ' if builtin else ''}layers: "
                               f"{', '.join(self.spec.layers) or 'none are defined'}")
        call = T.Call(name, tuple(T.Const(v, loc) for v in values), (), loc)
        return self.call(call, env, x, scope, own_scope=scope)

    def word_args(self, w: T.Word, Args: type[OpArgs], env: Mapping[str, Value], x: str, kind: str) -> OpArgs:
        dyn = self.dynamic(x)
        pos_locs, kw_locs = arg_locs(w.args, w.kwargs)
        return make_args(kind, Args, [evaluate(a, env, dyn) for a in w.args],
                         {str(k): evaluate(v, env, dyn) for k, v in w.kwargs}, w.loc, pos_locs, kw_locs)

    def layers(self, stmts: Sequence[T.Stmt], env: MutableMapping[str, Value], x: str,
               local: dict[str, Value] | None = None) -> list[Layer]:
        """A block body's layers: each call and each braced group (after unrolling control flow) is one
        layer. The names the body binds (`let`, loop variables) are its own, `local`; each layer sees
        them as they were where it was written, then the live names around the block (`Closure`)."""
        out: list[Layer] = []
        local = {} if local is None else local
        names = Closure(local, *(env.maps if isinstance(env, ChainMap) else (env,)))
        shared = None  # what the calls since the last `let` see: one snapshot for all of them
        for s in stmts:
            self.step(s.loc)
            if isinstance(s, T.Let):
                local[str(s.name)] = evaluate(s.value, names, self.dynamic(x))
                shared = None
            elif isinstance(s, T.Assert):
                self.check(s, names, self.dynamic(x))
            elif isinstance(s, T.Call):
                shared = shared if shared is not None else self.snapshot(local, names, s.loc)
                out.append(Layer(lambda inp, sc, s=s, env=shared: self.call(s, env, inp, sc, own_scope=sc),
                                 s.loc.span(len(s.name)), s.name if s.name in PRIMITIVES else None))
            elif isinstance(s, T.Scope) and s.kind == "group":
                shared = shared if shared is not None else self.snapshot(local, names, s.loc)
                out.append(Layer(lambda inp, sc, s=s, env=shared: self.run_body(s.body, env, inp, sc), s.loc))
            elif isinstance(s, (T.Block, T.Scope, T.Bind, T.Read)):
                what = ("a nested block" if isinstance(s, T.Block) else f"a `{s.kind}` scope"
                        if isinstance(s, T.Scope) else "`-> name`" if isinstance(s, T.Bind) else "`from`")
                raise SpecError(f"a block holds layers: {what} cannot go directly inside one", s.loc,
                                "put it in braces, `{ ... }`, which make one layer, or inside a layer template "
                                "called in the block")
            else:
                for body, _ in self.control(s, names, self.dynamic(x)):
                    out.extend(self.layers(body, env, x, local))
                shared = None
        return out

    def snapshot(self, local: dict[str, Value], names: Closure, loc: Loc) -> Closure:
        """The names a layer written now sees: the block body's own as they are now, then the live ones."""
        self.budget.charge(len(local), loc)
        return Closure(dict(local), *names.maps[1:])

    # ---- the network ------------------------------------------------------------------
    def refuse_unread(self, out: str) -> None:
        """An error at the first op whose result nothing reads (the network's output and taps aside): its
        work and weights would be counted and computed for nothing."""
        g = self.b.g
        for name in g.nodes:
            if g.out_degree(name) == 0 and name != out:
                node = g.nodes[name]["node"]
                if node.op != "tap":
                    raise SpecError(f"the result of this {node.op} ({name}) is never read", node.loc,
                                    UNREAD_HINT)

    def input_shape(self, first: T.Call, env: Mapping[str, Value]) -> tuple[int, ...]:
        if first.kwargs:
            k, v = first.kwargs[0]
            raise SpecError("input takes its dimensions by position, as in input(3, 32, 32)", loc_of(k, v.loc))
        if not first.args:
            raise SpecError("input needs its dimensions, as in input(3, 32, 32)", first.loc)
        dims = [evaluate(a, env) for a in first.args]
        locs = [a.loc for a in first.args]
        if len(dims) == 1 and isinstance(dims[0], list):  # input(shape)
            dims, locs = dims[0], locs * len(dims[0])
            if not dims:
                raise SpecError("input needs at least one dimension", first.args[0].loc)
        for v, loc in zip(dims, locs):
            if type(v) is not int:
                raise SpecError(f"input dimensions must be ints, got {describe(v)}", loc)
            if v <= 0:
                raise SpecError(f"input dimensions must be positive, got {v}", loc)
        return tuple(dims)

    def network(self, overrides: Mapping[str, Value]) -> Network:
        d, env = self.bind_network(overrides)
        body = d.body
        if not body or not (isinstance(body[0], T.Call) and body[0].name == "input"):
            raise SpecError(f"network '{d.name}' must start with input(C, H, W)",
                            body[0].loc if body else loc_of(d.name, d.loc),
                            "the first statement gives the input shape, as in input(3, 32, 32)")
        first = body[0]
        dims = self.input_shape(first, env)
        root = Scope()
        x = self.b.add("input", {"shape": dims}, [], root, "input", first.loc, role="input", numbered=False)
        out = self.run_body(body[1:], dict(env), x, root)  # the body's lets are not parameters
        self.refuse_unread(out)
        return Network(name=self.spec.main, graph=self.b.g, input=x, output=out, params=env,
                       sources=dict(self.spec.sources), main_file=self.spec.file, notes=self.b.notes)


def _names(e: Any) -> list[str]:
    """The names an expression reads, in order, once each."""
    if isinstance(e, T.Name):
        return [e.id]
    parts = e if isinstance(e, tuple) else vars(e).values() if hasattr(e, "__dataclass_fields__") else ()
    out: list[str] = []
    for part in parts:
        out += [n for n in _names(part) if n not in out]
    return out


def elaborate(spec: Spec, overrides: Mapping[str, Any] | None = None) -> Network:
    """Build the graph of `spec`'s main network with parameters set by `overrides`."""
    el = None
    try:
        el = Elaborator(spec)
        with budget(el.budget), paused():
            return el.network(dict(overrides or {}))
    except SpecError as e:
        raise e.with_sources(spec.sources) from None
    except RecursionError:
        raise SpecError("the spec nests too deeply (layer templates, blocks and expressions together)",
                        el and el.where, "flatten it: fewer nested templates, or long expressions split with "
                        "`let`", spec.sources) from None
    except MemoryError:
        where = el and el.where
        el = None  # let the half-built graph go before reporting
        raise SpecError("out of memory while running this statement", where,
                        "is a range, a loop or the network far too large?", spec.sources) from None
