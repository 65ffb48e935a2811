"""Syntax tree → graph. Runs the spec's control flow (lets, loops, conditions, templates) and asks the
connection patterns to wire each block; every node gets validated arguments, a shape, a hierarchical
name and the location of the text that made it."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import networkx as nx
from pydantic import ValidationError

from . import tree as T
from .errors import Loc, SpecError, did_you_mean
from .evaluate import Value, coerce, evaluate, render
from .ir import Edge, Network, Node
from .loader import Spec
from .merges import MERGES
from .ops import OPS, PRIMITIVES, OpArgs, ShapeError, Shape
from .patterns import PATTERNS, BlockContext

MAX_NODES = 500_000
MAX_TEMPLATE_DEPTH = 64


class Scope:
    """A hierarchical name prefix with per-kind counters (`conv1`, `conv2`, `block1`, ...)."""

    def __init__(self, path: str = ""):
        self.path = path
        self.counts: dict[str, int] = {}
        self.children: dict[str, Scope] = {}

    def name(self, base: str, numbered: bool = True) -> str:
        if numbered:
            self.counts[base] = self.counts.get(base, 0) + 1
            base = f"{base}{self.counts[base]}"
        return f"{self.path}.{base}" if self.path else base

    def child(self, base: str, numbered: bool = False) -> "Scope":
        name = self.name(base, numbered)
        if name not in self.children:
            self.children[name] = Scope(name)
        return self.children[name]


def _arg_error(kind: str, err: ValidationError, Args: type[OpArgs], loc: Loc) -> SpecError:
    e = err.errors()[0]
    field = str(e["loc"][0]) if e["loc"] else ""
    if e["type"] == "extra_forbidden":
        return SpecError(f"{kind} has no argument '{field}'", loc, did_you_mean(field, Args.model_fields))
    if e["type"] == "missing":
        return SpecError(f"{kind} needs argument '{field}'", loc)
    got = e.get("input")
    got = render(list(got) if isinstance(got, tuple) else got) if isinstance(got, (int, float, str, bool, list, tuple)) else got
    return SpecError(f"{kind}: argument '{field}' {e['msg'][0].lower()}{e['msg'][1:]} (got {got})", loc)


def make_args(kind: str, Args: type[OpArgs], pos: Sequence[Value], kw: Mapping[str, Value], loc: Loc) -> OpArgs:
    """Validate a call's arguments against an op's (or pattern's) argument model."""
    fields = list(Args.model_fields)
    if len(pos) > len(fields):
        raise SpecError(f"{kind} takes at most {len(fields)} positional arguments "
                        f"({', '.join(fields) or 'none'}), got {len(pos)}", loc)
    data = dict(zip(fields, pos))
    for k, v in kw.items():
        if k in data:
            raise SpecError(f"{kind}: argument '{k}' given twice", loc)
        data[k] = v
    try:
        return Args.model_validate({k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except ValidationError as err:
        raise _arg_error(kind, err, Args, loc) from None


class Builder:
    """Adds nodes to the graph, validating arguments and inferring shapes as it goes."""

    def __init__(self) -> None:
        self.g = nx.DiGraph()

    def shape(self, name: str) -> Shape:
        return self.g.nodes[name]["node"].shape

    def add(self, op: str, args: dict | OpArgs, inputs: list[str], scope: Scope, base: str, loc: Loc,
            pattern: str = "chain", role: str = "op", numbered: bool = True) -> str:
        spec = OPS[op]
        lo, hi = spec.arity
        if len(inputs) < lo or (hi is not None and len(inputs) > hi):
            raise SpecError(f"{op} takes {lo}" + ("" if hi == lo else f" to {hi or 'any number of'}")
                            + f" inputs, got {len(inputs)}", loc)
        if len(set(inputs)) != len(inputs):
            raise SpecError(f"{op} reads the same tensor twice", loc)
        a = args if isinstance(args, OpArgs) else make_args(op, spec.Args, (), args, loc)
        try:
            shape = spec.shape([self.shape(i) for i in inputs], a)
        except ShapeError as err:
            raise SpecError(f"shapes cannot meet: {err}", loc) from None
        if len(self.g) >= MAX_NODES:
            raise SpecError(f"the network has more than {MAX_NODES} ops", loc)
        name = scope.name(base, numbered)
        if name in self.g:
            name = scope.name(base, True)
        self.g.add_node(name, node=Node(name=name, op=op, args=a, shape=shape, loc=loc, pattern=pattern, role=role))
        for slot, i in enumerate(inputs):
            self.g.add_edge(i, name, edge=Edge(slot=slot, pattern=pattern))
        return name


class Elaborator:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.b = Builder()
        self.depth = 0

    # ---- network parameters -----------------------------------------------------------
    def signature(self, name: str, loc: Loc | None) -> tuple[T.NetworkDef, dict[str, tuple[T.Param, Callable]]]:
        """The network definition behind `name` (following aliases) and, per parameter, its declaration
        and a function giving its default value from the parameters before it."""
        d = self.spec.networks.get(name)
        if d is None:
            raise SpecError(f"unknown network '{name}'", loc, did_you_mean(name, self.spec.networks))
        if isinstance(d, T.NetworkDef):
            return d, {p.name: (p, (lambda env, p=p: evaluate(p.default, env) if p.default else None)) for p in d.params}
        base, params = self.signature(d.base, d.loc)
        names = list(params)
        if len(d.args) > len(names):
            raise SpecError(f"network '{d.base}' takes {len(names)} parameters, got {len(d.args)}", d.loc)
        given = dict(zip(names, d.args))
        for k, e in d.kwargs:
            if k not in params:
                raise SpecError(f"network '{d.base}' has no parameter '{k}'", e.loc, did_you_mean(k, params))
            given[k] = e
        for k, e in given.items():
            params[k] = (params[k][0], lambda env, e=e: evaluate(e, env))
        return base, params

    def bind_network(self, overrides: Mapping[str, Value]) -> tuple[T.NetworkDef, dict[str, Value]]:
        d, params = self.signature(self.spec.main, None)
        for k in overrides:
            if k not in params:
                raise SpecError(f"network '{self.spec.main}' has no parameter '{k}'", None,
                                did_you_mean(k, params) or f"its parameters: {', '.join(params) or 'none'}")
        env: dict[str, Value] = {}
        for k, (p, default) in params.items():
            if k in overrides:
                env[k] = coerce(overrides[k], p.type, p.loc, f"--set {k}")
                continue
            v = default(env)
            if v is None:
                raise SpecError(f"parameter '{k}' has no default and was not set", p.loc)
            env[k] = coerce(v, p.type, p.loc, f"parameter '{k}'")
        return d, env

    # ---- statements -------------------------------------------------------------------
    def run_body(self, stmts: Sequence[T.Stmt], env: dict[str, Value], x: str, scope: Scope) -> str:
        """Run statements in sequence, each transforming the current tensor `x`."""
        env = dict(env)
        for s in stmts:
            x = self.run_stmt(s, env, x, scope)
        return x

    def run_stmt(self, s: T.Stmt, env: dict[str, Value], x: str, scope: Scope) -> str:
        dyn = self.dynamic(x)
        if isinstance(s, T.Let):
            env[s.name] = evaluate(s.value, env, dyn)
        elif isinstance(s, T.Call):
            x = self.call(s, env, x, scope, own_scope=None)
        elif isinstance(s, T.Scope):
            x = self.run_body(s.body, env, x, scope.child(s.kind, numbered=s.kind == "transition"))
        elif isinstance(s, T.Block):
            x = self.block(s, env, x, scope)
        else:
            for body, benv in self.control(s, env, dyn):
                x = self.run_body(body, benv, x, scope)
        return x

    def control(self, s: T.Stmt, env: dict[str, Value], dyn) -> list[tuple[Sequence[T.Stmt], dict[str, Value]]]:
        """Unrolls `repeat`, `for` and `if` into (body, environment) pairs."""
        if isinstance(s, T.Repeat):
            n = evaluate(s.count, env, dyn)
            if type(n) is not int or n < 0:
                raise SpecError(f"repeat needs a non-negative int, got {render(n)}", s.count.loc)
            return [(s.body, env)] * n
        if isinstance(s, T.For):
            items = evaluate(s.iterable, env, dyn)
            if not isinstance(items, list):
                raise SpecError(f"for needs a list (e.g. range(3)), got {render(items)}", s.iterable.loc)
            return [(s.body, {**env, s.var: v}) for v in items]
        if isinstance(s, T.If):
            from .evaluate import truth
            return [(s.then if truth(evaluate(s.cond, env, dyn), s.cond.loc) else s.orelse, env)]
        raise SpecError(f"unexpected {type(s).__name__} here", getattr(s, "loc", None))

    def dynamic(self, x: str) -> dict[str, Callable[[], Value]]:
        shape = lambda: self.b.shape(x)  # noqa: E731
        return {
            "channels": lambda: shape()[0],
            "height": lambda: shape()[1] if len(shape()) == 3 else 1,
            "width": lambda: shape()[2] if len(shape()) == 3 else 1,
        }

    def call(self, c: T.Call, env: Mapping[str, Value], x: str, scope: Scope, own_scope: Scope | None) -> str:
        """Apply a primitive op or a layer template to `x`. `own_scope` names a template's ops (a block's
        layer scope); otherwise a template gets a numbered child scope."""
        dyn = self.dynamic(x)
        pos = [evaluate(a, env, dyn) for a in c.args]
        kw = {k: evaluate(v, env, dyn) for k, v in c.kwargs}
        if c.name in PRIMITIVES:
            op = PRIMITIVES[c.name]
            return self.b.add(c.name, make_args(c.name, op.Args, pos, kw, c.loc), [x], own_scope or scope,
                              c.name, c.loc)
        layer = self.spec.layers.get(c.name)
        if layer is None:
            if c.name == "input":
                raise SpecError("input(...) can only be the first statement of a network", c.loc)
            raise SpecError(f"unknown layer or op '{c.name}'", c.loc,
                            did_you_mean(c.name, list(PRIMITIVES) + list(self.spec.layers)))
        names = [p.name for p in layer.params]
        if len(pos) > len(names):
            raise SpecError(f"layer '{c.name}' takes {len(names)} arguments, got {len(pos)}", c.loc)
        given = dict(zip(names, pos))
        for k, v in kw.items():
            if k not in names:
                raise SpecError(f"layer '{c.name}' has no parameter '{k}'", c.loc, did_you_mean(k, names))
            if k in given:
                raise SpecError(f"layer '{c.name}': argument '{k}' given twice", c.loc)
            given[k] = v
        lenv: dict[str, Value] = {}
        for p in layer.params:
            if p.name in given:
                lenv[p.name] = coerce(given[p.name], p.type, c.loc, f"argument '{p.name}' of '{c.name}'")
            elif p.default is not None:
                lenv[p.name] = coerce(evaluate(p.default, lenv, dyn), p.type, p.loc, f"parameter '{p.name}'")
            else:
                raise SpecError(f"layer '{c.name}' needs argument '{p.name}'", c.loc)
        self.depth += 1
        if self.depth > MAX_TEMPLATE_DEPTH:
            raise SpecError(f"layer '{c.name}' calls itself without end", c.loc)
        try:
            return self.run_body(layer.body, lenv, x, own_scope or scope.child(c.name, numbered=True))
        finally:
            self.depth -= 1

    def block(self, s: T.Block, env: dict[str, Value], x: str, scope: Scope) -> str:
        word = s.pattern
        pattern = PATTERNS.get(word.name)
        if pattern is None:
            raise SpecError(f"unknown connection pattern '{word.name}'", word.loc,
                            did_you_mean(word.name, PATTERNS) or f"patterns: {', '.join(PATTERNS)}")
        pargs = self.word_args(word, pattern.Args, env, x)
        merge, margs = None, None
        merge_word = s.merge.name if s.merge else pattern.default_merge
        if merge_word is not None:
            if pattern.default_merge is None:
                raise SpecError(f"pattern '{pattern.word}' takes no merge word", s.merge.loc)
            merge = MERGES.get(merge_word)
            if merge is None:
                raise SpecError(f"unknown merge '{merge_word}'", s.merge.loc,
                                did_you_mean(merge_word, MERGES) or f"merges: {', '.join(MERGES)}")
            margs = self.word_args(s.merge, merge.Args, env, x) if s.merge else merge.Args()
        bscope = scope.child("block", numbered=True)
        layers = self.layers(s.body, dict(env), x)
        ctx = BlockContext(self.b, bscope, pattern.word, merge, margs, s.loc)
        return pattern.build(ctx, x, layers, pargs)

    def word_args(self, w: T.Word, Args: type[OpArgs], env: Mapping[str, Value], x: str) -> OpArgs:
        dyn = self.dynamic(x)
        return make_args(w.name, Args, [evaluate(a, env, dyn) for a in w.args],
                         {k: evaluate(v, env, dyn) for k, v in w.kwargs}, w.loc)

    def layers(self, stmts: Sequence[T.Stmt], env: dict[str, Value], x: str) -> list:
        """A block body's layers: each call (after unrolling control flow) is one layer."""
        out: list = []
        for s in stmts:
            if isinstance(s, T.Let):
                env[s.name] = evaluate(s.value, env, self.dynamic(x))
            elif isinstance(s, T.Call):
                out.append(lambda inp, sc, s=s, env=dict(env): self.call(s, env, inp, sc, own_scope=sc))
            elif isinstance(s, (T.Block, T.Scope)):
                raise SpecError("a block holds layers; put a nested block inside a layer template", s.loc)
            else:
                for body, benv in self.control(s, env, self.dynamic(x)):
                    out.extend(self.layers(body, dict(benv), x))
        return out

    # ---- the network ------------------------------------------------------------------
    def network(self, overrides: Mapping[str, Value]) -> Network:
        d, env = self.bind_network(overrides)
        body = d.body
        if not body or not (isinstance(body[0], T.Call) and body[0].name == "input"):
            raise SpecError(f"network '{d.name}' must start with input(C, H, W)", body[0].loc if body else d.loc)
        first = body[0]
        dims = [evaluate(a, env) for a in first.args]
        if len(dims) == 1 and isinstance(dims[0], list):
            dims = dims[0]
        if first.kwargs or not dims or not all(type(v) is int and v > 0 for v in dims):
            raise SpecError(f"input needs positive int dimensions, got {render(dims)}", first.loc)
        root = Scope()
        x = self.b.add("input", {"shape": tuple(dims)}, [], root, "input", first.loc, role="input", numbered=False)
        out = self.run_body(body[1:], env, x, root)
        return Network(name=self.spec.main, graph=self.b.g, input=x, output=out, params=env,
                       sources=dict(self.spec.sources), main_file=self.spec.file)


def elaborate(spec: Spec, overrides: Mapping[str, Any] | None = None) -> Network:
    """Build the graph of `spec`'s main network with parameters set by `overrides`."""
    return Elaborator(spec).network(dict(overrides or {}))
