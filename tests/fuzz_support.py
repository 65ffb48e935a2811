"""The fuzz suite's harness: a long-lived worker process that loads, elaborates and costs one spec at a
time and reports what happened, how long it took and how much memory it reached; and the mutations
applied to shipped specs.

The worker runs the same steps as `archspec.network` and `archspec.summary` (load, elaborate, summarise)
but imports no torch, so that its memory high-water mark is the spec's own. It is a separate process so
that a spec which hangs in C code or exhausts memory costs one restart, not the test run, and so that
its resident high-water mark (`VmHWM`, which never falls) measures one process the test run does not
share. Not `ru_maxrss`: Linux carries the parent's resident size at fork into it across exec."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

CPU_LIMIT = 10.0  # seconds of CPU one case may take (CPU, not wall time: the test machine is shared)
MEMORY_LIMIT = 1 << 30  # bytes above the worker's baseline one case may reach


def campaign(config) -> tuple[int, int]:
    """(cases, seed) of a long campaign: ARCHSPEC_FUZZ_CASES cases (10,000 under `-m fuzz`) from
    ARCHSPEC_FUZZ_SEED (the clock's otherwise); (0, seed) where neither asks for one."""
    wanted = os.environ.get("ARCHSPEC_FUZZ_CASES")
    seed = int(os.environ.get("ARCHSPEC_FUZZ_SEED", time.time_ns() % 2**32))
    if not wanted and "fuzz" not in (config.getoption("markexpr") or ""):
        return 0, seed
    return int(wanted or 10_000), seed
_HARD_WALL = 90.0  # a case still running after this is a hang: the worker is killed and restarted
_ADDRESS_SPACE = 4 << 30  # the worker's cap, so that a memory bomb cannot take the shared machine down

# ---- the worker (runs in its own process) --------------------------------------------------------------


def _one(request: dict, folder: Path) -> dict:
    from archspec.compiler import activation_memory
    from archspec.compiler.costs import summarize
    from archspec.graph.elaborate import elaborate
    from archspec.errors import SpecError
    from archspec.language.loader import load, load_file

    out: dict = {"outcome": "ok"}
    try:
        if "bytes" in request:
            path = folder / "case.arch"
            path.write_bytes(base64.b64decode(request["bytes"]))
            spec = load_file(path)
        else:
            spec = load(request["text"], file="fuzz.arch", base_dir=folder)
        net = elaborate(spec, {})
        s = summarize(net)
        activation_memory.estimate(net, batch=1, training=True)
        out.update(network=s.network, params=s.params, nodes=net.graph.number_of_nodes())
    except SpecError as e:
        rendered = e.render()
        out.update(outcome="error", message=e.message,
                   loc=None if e.loc is None else [e.loc.file, e.loc.line, e.loc.column],
                   escaped=not any(c in rendered for c in "\x1b\x07\x9b\u202e"))
    except BaseException as e:  # noqa: BLE001 - what the suite looks for
        import traceback

        out.update(outcome="crash", type=type(e).__name__, message=str(e)[:500],
                   traceback="".join(traceback.format_exception(e))[-4000:])
    return out


def high_water() -> int:
    """This process's resident high-water mark in bytes (Linux's VmHWM, counted from its exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def serve() -> None:
    """Answer one JSON request per line on stdin with one JSON line on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE, _ADDRESS_SPACE))
    folder = Path(tempfile.mkdtemp(prefix="archspec-fuzz-"))
    shutil.copytree(SPECS / "lib", folder / "lib")
    _one({"text": (SPECS / "tiny_delugenet.arch").read_text()}, folder)  # imports and caches warm
    base = high_water()
    try:
        for line in sys.stdin:
            wall, cpu = time.monotonic(), time.process_time()
            out = _one(json.loads(line), folder)
            out["cpu"] = time.process_time() - cpu
            out["wall"] = time.monotonic() - wall
            out["peak"] = high_water() - base
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- the client (runs in the test process) -------------------------------------------------------------


@dataclass
class Stats:
    cases: int = 0
    ok: int = 0
    errors: int = 0
    slowest_cpu: float = 0.0
    slowest_wall: float = 0.0
    slowest_case: str = ""
    peak: int = 0  # bytes above the worker's baseline, the most any case reached
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        return (f"{self.cases} cases ({self.ok} compiled, {self.errors} located errors) in "
                f"{time.monotonic() - self.started:.0f} s; slowest {self.slowest_cpu:.2f} s CPU "
                f"({self.slowest_wall:.2f} s wall); peak {self.peak / 2**20:.0f} MiB above the worker's baseline; "
                f"{self.restarts} worker restarts")


class Worker:
    """A `serve()` process and the statistics of the cases sent to it."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONHASHSEED="0")
        return subprocess.Popen([sys.executable, __file__, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT, start_new_session=True)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, text: str | None = None, data: bytes | None = None) -> dict:
        """What the worker reports for spec `text` (or file bytes `data`); a hang is reported, not waited out."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.stats.restarts += 1
            self.proc = self._start()
        request = {"text": text} if data is None else {"bytes": base64.b64encode(data).decode()}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], _HARD_WALL + 30)  # + the worker's start
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            died = self.proc.poll()
            self.close()
            self.stats.restarts += 1
            out = {"outcome": "crash", "type": "Hang" if died is None else "WorkerDied",
                   "message": f"no answer (worker exit status {died})", "cpu": _HARD_WALL, "wall": _HARD_WALL,
                   "peak": 0}
        else:
            out = json.loads(line)
        self._count(out, text if data is None else repr(data[:200]))
        return out

    def _count(self, out: dict, case: str) -> None:
        s = self.stats
        s.cases += 1
        s.ok += out["outcome"] == "ok"
        s.errors += out["outcome"] == "error"
        if out["cpu"] > s.slowest_cpu:
            s.slowest_cpu, s.slowest_wall, s.slowest_case = out["cpu"], out["wall"], case[:300]
        s.peak = max(s.peak, out["peak"])


# Refusals of the spec file as a whole carry no Loc: the message names the file, which is as located as
# they can be. (A bad byte is located at its line and column.)
_WHOLE_FILE = re.compile(r"too large to be a spec|is not a regular file")


def problem(out: dict, cpu_limit: float = CPU_LIMIT) -> str | None:
    """Why an outcome breaks the suite's property, or None: every spec either compiles or is refused with
    a located error whose rendering is escaped, within `cpu_limit` seconds of CPU and MEMORY_LIMIT."""
    if out["outcome"] == "crash":
        return f"{out['type']}: {out['message']}\n{out.get('traceback', '')}"
    if out["outcome"] == "error":
        if (out["loc"] is None and not _WHOLE_FILE.search(out["message"])) or (out["loc"] and out["loc"][1] < 1):
            return f"an error without a location: {out['message']}"
        if not out["escaped"]:
            return f"an error whose rendering carries raw control characters: {out['message']!r}"
        if out["message"].startswith("out of memory"):
            return "ran out of the worker's memory: " + out["message"]
    if out["cpu"] > cpu_limit:
        return f"took {out['cpu']:.1f} s of CPU ({out['wall']:.1f} s wall), more than {cpu_limit:g} s"
    if out["peak"] > MEMORY_LIMIT:
        return f"reached {out['peak'] / 2**20:.0f} MiB above the baseline, more than {MEMORY_LIMIT >> 20} MiB"
    return None


# ---- mutations of shipped specs ------------------------------------------------------------------------

SHIPPED = sorted(p for p in SPECS.rglob("*.arch"))
_TOKENS = re.compile(r'\s+|#[^\n]*|"[^"\n]*"|[A-Za-z_][A-Za-z0-9_]*|\d+\.\d*(?:[eE][-+]?\d+)?|\d+|\S')
_NUMBER = re.compile(r"\d")

NUMBERS = ["0", "-1", "1", "2", "1000000", "100000000", "9223372036854775807", "9223372036854775808",
           "-9223372036854775808", "99999999999999999999999999", "1e308", "1e309", "0.0", "1e-320", "3.5",
           "200000", "50001", "65"]
PIECES = ["{", "}", "(", ")", "[", "]", ",", "=", "\n", "repeat 100000 {", "for i in range(1000000) {",
          "block dense concat {", "block residual(embedded=true) {", "block gradual(1000) {", "block seq {",
          "block window(1) sum {", "block sparse {", "let x = x", "assert false, \"x\"", 'use "lib/densenet.arch"',
          'use "fuzz.arch"', 'use "/dev/zero"', 'use "../../../etc/passwd"', "shortcut", "identity",
          "channels", "height", "width", "conv(100000, 3)", "input(3, 100000, 100000)", "gap", "linear(1)",
          "[0] * 1000000", "range(1000000)", "not", "and", "-", "*", "//", "%", "0", "true", '"s"', "#",
          "layer", "network", "network n2 = n()", "if", "else", "stem", "head", "transition"]
WORDS = ["conv", "bn", "relu", "silu", "avgpool", "maxpool", "gap", "linear", "dropout", "dropout2d", "identity",
         "shortcut", "chain", "residual", "dense", "seq", "window", "sparse", "gradual", "concat", "sum",
         "crossdepthwise", "range", "round", "len", "min", "max", "channels", "height", "width", "n", "k", "i",
         "classes", "padding", "stride", "groups", "out", "kernel", "bias", "init", "p", "x", "undefined_name"]
BYTES = ["\x00", "\x1b[2J", "\x07", "\x7f", "\u202e", "\r", "\t", "\x0c", "\ufeff", "\u2028", "\x9b", "é", "\U0001f600",
         '"', "\\"]
KINDS = ("delete", "duplicate", "swap", "number", "insert", "word", "char", "truncate", "invalid_utf8")


def mutate(text: str, edits: list[tuple[str, int, int]]) -> str | bytes:
    """`text` with `edits` applied in order: each (kind, where, what), `where` and `what` taken modulo
    the token count and the choices. `invalid_utf8` makes the case bytes (read from a file)."""
    tokens = _TOKENS.findall(text)
    raw_tail = b""
    for kind, where, what in edits:
        if not tokens:
            tokens = [""]
        i, j = where % len(tokens), what % len(tokens)
        if kind == "delete":
            del tokens[i]
        elif kind == "duplicate":
            tokens.insert(i, tokens[i])
        elif kind == "swap":
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == "number":
            numbers = [k for k, t in enumerate(tokens) if _NUMBER.match(t)] or [i]
            tokens[numbers[where % len(numbers)]] = NUMBERS[what % len(NUMBERS)]
        elif kind == "insert":
            tokens.insert(i, " " + PIECES[what % len(PIECES)] + " ")
        elif kind == "word":
            words = [k for k, t in enumerate(tokens) if t[:1].isalpha()] or [i]
            tokens[words[where % len(words)]] = WORDS[what % len(WORDS)]
        elif kind == "char":
            tokens.insert(i, BYTES[what % len(BYTES)])
        elif kind == "truncate":
            tokens = tokens[:i]
        elif kind == "invalid_utf8":
            raw_tail = bytes([0x80 + what % 0x80])
    out = "".join(tokens)
    if raw_tail:
        cut = len(out) and where % len(out)
        encoded = out.encode("utf-8", "surrogatepass")
        return encoded[:cut] + raw_tail + encoded[cut:]
    return out


def random_edits(rng: random.Random, n: int) -> list[tuple[str, int, int]]:
    return [(rng.choice(KINDS), rng.randrange(1 << 20), rng.randrange(1 << 20)) for _ in range(n)]


# ---- specs from the grammar, depth-bounded -------------------------------------------------------------

_OPERATORS = {"COMP_OP": ["==", "!=", "<=", ">=", "<", ">"], "ADD_OP": ["+", "-"], "MUL_OP": ["//", "*", "/", "%"],
              "TYPE": ["int", "float", "bool", "str", "list", "shape"], "SCOPE": ["stem", "transition", "head"],
              "FLOAT": ["0.5", "1.0", "2.", "1e3", "2.5e-3", "1e309", "0.0"],
              "STRING": ['"x"', '""', '"concat"', '"sum"', '"he_uniform"', '"zeros"', '"simultaneous"',
                         '"lib/densenet.arch"', '"fuzz.arch"', '"/dev/zero"', '"\x1b[2J"', '"\u202e"'],
              "COMMENT": ["# note\n"], "WS": [" ", "\n"], "__IGNORE_2": [";"]}
_SMALL = ["0", "1", "2", "3", "4", "8", "16", "32", "64"]


def leading_word(regex: str) -> str | None:
    """The word a keyword-like regex terminal matches (`if` for `if\\b(?=...)`), or None."""
    m = re.match(r"\(?\??:?([A-Za-z_]+)\\b", regex)
    return m.group(1) if m else None


class Grammar:
    """Random sentences of the project's lark grammar, read from its compiled rules: below `depth` any
    expansion may be chosen, beyond it the one that ends soonest, so every sentence is small. Terminals
    come from the language's own words (ops, patterns, parameters) more often than from noise. Past
    `budget` output pieces every choice is one that ends soonest, too."""

    def __init__(self, words: list[str], depth: int = 6, budget: int = 120) -> None:
        from archspec.language.grammar import KEYWORDS, parser

        terminals, rules, self.ignore = parser().grammar.compile(["start"], ())
        self.literal = {t.name: t.pattern.value for t in terminals if t.pattern.type == "str"}
        self.literal.update({t.name: w for t in terminals if t.name not in _OPERATORS and t.name not in self.literal
                             and (w := leading_word(t.pattern.value))})
        unknown = {t.name for t in terminals} - set(self.literal) - set(_OPERATORS) - {"NAME", "INT"}
        if unknown:
            raise KeyError(f"no generator for the grammar's terminals {sorted(unknown)}")
        self.rules: dict[str, list[tuple]] = {}
        for r in rules:
            self.rules.setdefault(r.origin.name, []).append(tuple(x.name for x in r.expansion))
        self.words, self.keywords, self.depth, self.budget = words, set(KEYWORDS), depth, budget
        self.height = self._heights()

    def _heights(self) -> dict[str, int]:
        h: dict[str, int] = {}
        changed = True
        while changed:
            changed = False
            for name, options in self.rules.items():
                best = min((1 + max((h.get(x, 0 if x not in self.rules else 10**9) for x in o), default=0)
                            for o in options), default=1)
                if best < h.get(name, 10**9):
                    h[name], changed = best, True
        return h

    def sentence(self, rng: random.Random, start: str = "start") -> str:
        out: list[str] = []
        self._expand(start, rng, 0, out)
        return "".join(out)

    def _expand(self, symbol: str, rng: random.Random, depth: int, out: list[str]) -> None:
        if symbol not in self.rules:
            out.append(self._terminal(symbol, rng))
            out.append(rng.choice(_OPERATORS[rng.choice(self.ignore)]) if rng.random() < 0.1 else " ")
            return
        options = self.rules[symbol]
        if len(out) > self.budget:  # the shortest way out
            options = [min(options, key=lambda o: (self._cost(o), len(o)))]
        elif depth >= self.depth:  # the ways out, and their neighbours (an atom as well as a call)
            low = min(self._cost(o) for o in options)
            options = [o for o in options if self._cost(o) <= low + 1]
        chosen = rng.choice(options)
        for x in chosen:  # a rule that only renames another (expr → or_expr → ...) is no deeper
            self._expand(x, rng, depth + (len(chosen) > 1), out)

    def _cost(self, option: tuple) -> int:
        return max((self.height.get(x, 0) for x in option), default=0)

    def _terminal(self, name: str, rng: random.Random) -> str:
        if name in self.literal:
            return self.literal[name]
        if name == "NAME":
            if rng.random() < 0.85:
                return rng.choice(self.words)
            while True:
                word = rng.choice("abcdefghijklmnopqrstuvwxyz_") + "".join(
                    rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_") for _ in range(rng.randrange(6)))
                if word not in self.keywords:
                    return word
        if name == "INT":
            return rng.choice(_SMALL) if rng.random() < 0.9 else rng.choice(NUMBERS).lstrip("-").split(".")[0].split(
                "e")[0]
        if name == "COMMENT":
            return "# note\n"
        return rng.choice(_OPERATORS[name])


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C in the test run stops the client, which kills this
    serve()
