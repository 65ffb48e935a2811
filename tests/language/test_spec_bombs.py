"""Specs from strangers: every one that would exhaust memory or time, block, read the host's files or
steer the terminal is refused with a located error (exit 2 from the CLI), quickly and in bounded memory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

import archspec
from archspec import SpecError
from archspec.cli import app
from archspec.language import evaluate, loader
from conftest import ROOT, SPECS

QUICK = 10.0  # seconds any refusal may take
MEMORY = 1 << 30  # bytes of address space the language and graph layers get in `bounded`


def net(body: str, before: str = "") -> str:
    """A network whose body starts on line 3 (after `before`)."""
    return f"{before}network n() {{\n  input(3, 8, 8)\n{body}\n}}\n"


@contextmanager
def quick(seconds: float = QUICK):
    """Fail (rather than hang) when the block takes longer than `seconds`."""
    def expired(*_):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def error(text: str, **kw) -> SpecError:
    with quick(), pytest.raises(SpecError) as e:
        archspec.network(text, **kw)
    return e.value


def cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


_BOUNDED = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from archspec.graph.elaborate import elaborate
from archspec.errors import SpecError
from archspec.language.loader import load
t = time.monotonic()
try:
    elaborate(load(sys.stdin.read()), {{}})
    out = {{"error": None}}
except SpecError as e:
    out = {{"error": e.message, "line": e.loc.line if e.loc else None, "render": e.render()}}
out["seconds"] = time.monotonic() - t
print(json.dumps(out))
"""


def bounded(text: str) -> dict:
    """Load and elaborate `text` in a fresh process limited to MEMORY bytes of address space (the
    language and graph layers import no torch, so that is room for the interpreter and the spec)."""
    r = subprocess.run([sys.executable, "-c", _BOUNDED.format(limit=MEMORY)], input=text, text=True,
                       capture_output=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


# ---- files that are not spec files ---------------------------------------------------------------------

@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_without_reading_it(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    e = error(net("  relu", f'use "{device}"\n'), allow_paths=["/dev"])  # /dev is never read, even allowed
    assert "never reads files under /proc, /sys or /dev" in e.message and (e.loc.line, e.loc.column) == (1, 1)
    with quick(), pytest.raises(SpecError, match="not a regular file"):
        archspec.parse(device)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.arch")
    main = tmp_path / "main.arch"
    main.write_text(net("  relu", 'use "pipe.arch"\n'))
    with quick(), pytest.raises(SpecError) as e:
        archspec.parse(main)
    assert "not a regular file" in e.value.message and e.value.loc.line == 1
    code, out = cli("check", tmp_path / "pipe.arch")
    assert code == 2 and "not a regular file" in out and "Traceback" not in out


def test_a_file_is_read_up_to_the_limit_whatever_size_it_claims(tmp_path):
    proc = Path("/proc/self/maps")  # a regular file whose stat size is 0
    if not proc.is_file() or proc.stat().st_size != 0:
        pytest.skip("no /proc file that claims to be empty")
    with pytest.raises(SpecError, match="larger than 100 bytes"):
        loader.read_text(proc, limit=100)
    small = tmp_path / "s.arch"
    small.write_text("x" * 100)
    assert loader.read_text(small, limit=100) == "x" * 100
    with pytest.raises(SpecError, match="larger than 99 bytes"):
        loader.read_text(small, limit=99)


def test_a_huge_file_is_refused_before_parsing(tmp_path):
    big = tmp_path / "big.arch"
    big.write_text(net("  relu\n" * (7 * 1024 * 1024 // 7)))
    t = time.monotonic()
    code, out = cli("check", big)
    assert code == 2 and "too large to be a spec" in out and "Traceback" not in out
    assert time.monotonic() - t < QUICK
    main = tmp_path / "main.arch"
    main.write_text(net("  relu", 'use "big.arch"\n'))
    code, out = cli("check", main)
    assert code == 2 and f"{main}:1:1: error:" in out and "too large to be a spec" in out


def test_too_many_tokens_are_refused_before_parsing_where_they_go_over():
    text = net("  let a = [" + "0," * 100_000 + "0]")  # under the byte limit, but slow to parse
    assert len(text) < loader.MAX_FILE_BYTES
    t = time.monotonic()
    e = error(text)
    assert time.monotonic() - t < 2
    assert f"more than {loader.MAX_TOKENS:,} tokens" in e.message and e.loc.line == 3


def test_too_many_files_are_refused_at_the_use(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "MAX_FILES", 2)
    (tmp_path / "a.arch").write_text('use "b.arch"\n')
    (tmp_path / "b.arch").write_text("# nothing\n")
    main = tmp_path / "main.arch"
    main.write_text(net("  relu", 'use "a.arch"\n'))
    with pytest.raises(SpecError, match="more than 2 files") as e:
        archspec.parse(main)
    assert e.value.loc.file.endswith("a.arch") and e.value.loc.line == 1


def test_real_specs_are_far_below_the_file_limits():
    files = list(SPECS.rglob("*.arch"))
    assert files and max(f.stat().st_size for f in files) * 10 < loader.MAX_FILE_BYTES
    tokens = max(len(loader._TOKEN.findall(f.read_text())) for f in files)
    assert tokens * 10 < loader.MAX_TOKENS


# ---- memory and time -----------------------------------------------------------------------------------

def test_many_large_lists_are_refused_by_a_total_in_bounded_memory():
    text = net("".join(f"  let a{i} = range(1000000)\n" for i in range(300)))
    r = bounded(text)
    assert r["error"] and "values in all" in r["error"], r
    assert r["line"] == 3 + evaluate.MAX_VALUES // 1_000_000 and r["seconds"] < QUICK


def test_a_loop_that_builds_a_large_list_each_time_is_refused_at_once():
    r = bounded(net("  for i in range(1000000) { let a = range(1000000) }"))
    assert r["error"] and "values in all" in r["error"] and r["line"] == 3 and r["seconds"] < QUICK, r


def test_a_block_loop_that_keeps_many_names_per_layer_is_refused_in_bounded_memory():
    """A layer sees the names around its block live, not copied: 3,000 layers under 2,000 names (6 million
    copied names, past the budget, if each layer copied them) elaborate at once."""
    lets = "".join(f"  let v{i} = {i}\n" for i in range(2000))
    r = bounded(net(lets + "  block chain { for i in range(3000) { relu } }"))
    assert r["error"] is None and r["seconds"] < QUICK, r


def test_a_block_loop_that_binds_many_names_per_layer_is_refused_in_bounded_memory():
    """The names a block body binds are copied for each layer written after them: charged to the budget."""
    lets = "".join(f"    let v{i} = {i}\n" for i in range(2000))
    r = bounded(net("  block chain {\n" + lets + "    for i in range(100000) { relu }\n  }"))
    assert r["error"] and "values in all" in r["error"] and r["seconds"] < QUICK, r


def test_comparing_lists_that_share_parts_is_bounded():
    doubling = "".join("  let a = [a, a]\n  let b = [b, b]\n" for _ in range(60))
    e = error(net("  let a = [0]\n  let b = [0]\n" + doubling + "  assert a == b, \"same\""))
    assert "comparing these lists" in e.message and e.loc.line == 3 + 2 + 120
    ok = net("  let a = [[1, 2], [3]]\n  let b = [[1, 2], [3.0]]\n  assert a == b and a != [[1, 2], [4]], \"x\"\n"
             "  relu")
    assert archspec.network(ok).name == "n"


def test_a_slow_elaboration_is_stopped_by_the_clock(monkeypatch):
    text = net("  repeat 150000 { let x = 1 }\n  relu")
    assert archspec.network(text).name == "n"  # within every budget at the defaults
    monkeypatch.setattr(evaluate, "MAX_SECONDS", 0.05)
    e = error(text)
    assert "seconds to elaborate" in e.message and e.loc.line == 3


def test_out_of_memory_is_reported_at_the_statement(monkeypatch, tmp_path):
    def exhausted(loc, *args):
        raise MemoryError

    monkeypatch.setitem(evaluate.FUNCTIONS, "range", evaluate.FUNCTIONS["range"]._replace(compute=exhausted))
    text = net("  relu\n  let a = range(10)\n  relu")
    e = error(text)
    assert "out of memory" in e.message and (e.loc.line, e.loc.column) == (4, 3)
    spec = tmp_path / "m.arch"
    spec.write_text(text)
    code, out = cli("check", spec)
    assert code == 2 and f"{spec}:4:3: error: out of memory" in out and "let a = range(10)" in out


def test_the_cli_refuses_a_list_bomb_with_a_located_error(tmp_path):
    spec = tmp_path / "bomb.arch"
    spec.write_text(net("".join(f"  let a{i} = range(1000000)\n" for i in range(300))))
    t = time.monotonic()
    code, out = cli("compile", spec)
    assert code == 2 and f"{spec}:{3 + evaluate.MAX_VALUES // 1_000_000}:" in out and "values in all" in out
    assert time.monotonic() - t < QUICK


# ---- `use` is confined ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/etc/passwd", "../../../../../../../../etc/hostname"])
def test_use_outside_the_spec_folder_is_refused_without_reading(tmp_path, path):
    main = tmp_path / "main.arch"
    main.write_text(net("  relu", f'use "{path}"\n'))
    with quick(), pytest.raises(SpecError) as e:
        archspec.parse(main)
    assert "outside the spec's folder" in e.value.message and e.value.loc.line == 1
    target = (tmp_path / path).resolve()
    if target.is_file():
        first = target.read_text(errors="replace").splitlines()[0]
        assert first not in e.value.render()
    code, out = cli("check", main)
    assert code == 2 and f"{main}:1:1: error: `use` may not read" in out


def test_a_symlink_out_of_the_spec_folder_is_refused_and_says_nothing_of_its_target(tmp_path):
    outside, inside = tmp_path / "outside", tmp_path / "project"
    outside.mkdir(), inside.mkdir()
    (outside / "secret.arch").write_text("SECRET-LINE-1\n")
    (inside / "lib.arch").symlink_to(outside / "secret.arch")
    (inside / "dir").symlink_to(outside, target_is_directory=True)
    for used in ("lib.arch", "dir/secret.arch", "dir/missing.arch"):
        main = inside / "main.arch"
        main.write_text(net("  relu", f'use "{used}"\n'))
        with pytest.raises(SpecError) as e:
            archspec.parse(main)
        assert "outside the spec's folder" in e.value.message and "SECRET" not in e.value.render()


def test_allowed_folders_may_be_used(tmp_path):
    outside, inside = tmp_path / "shared", tmp_path / "project"
    outside.mkdir(), inside.mkdir()
    (outside / "unit.arch").write_text("layer unit() { conv(4, 1) }\n")
    main = inside / "main.arch"
    main.write_text(net("  unit()", f'use "{outside}/unit.arch"\n'))
    with pytest.raises(SpecError, match="outside the spec's folder"):
        archspec.parse(main)
    assert archspec.summary(main, allow_paths=[outside]).params == 12
    assert archspec.summary(main.read_text(), allow_paths=[outside]).params == 12
    code, out = cli("check", main, "--allow-path", outside)
    assert code == 0 and "ok: n: 12 params" in out, out
    code, out = cli("compile", main)
    assert code == 2 and "--allow-path" in out
    picture = tmp_path / "main.dot"
    code, out = cli("graph", main, "-o", picture)
    assert code == 2 and "--allow-path" in out and not picture.exists()
    code, out = cli("graph", main, "-o", picture, "--allow-path", outside)
    assert code == 0 and picture.is_file(), out


def test_a_nested_folder_and_the_shipped_library_stay_usable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts/unit.arch").write_text("layer unit() { conv(4, 1) }\n")
    main = tmp_path / "main.arch"
    main.write_text(net("  unit()\n  seqconv(16, 8)", 'use "parts/unit.arch"\n'
                                                     f'use "{SPECS}/lib/seqconv.arch"\n'))
    assert archspec.network(main).name == "n"
    assert archspec.summary("delugenet146").params > 0  # its own `use "lib/..."`, from another folder


def test_the_library_root_is_the_installed_package_data():
    from archspec import library

    assert loader.library_folder() == library.folder().resolve()


def test_a_copied_library_keeps_working_where_it_lies(tmp_path):
    """An installed (not editable) library is a copy of `specs/`: its relative `use` lines stay inside it."""
    shutil.copytree(SPECS, tmp_path / "specs")
    want = archspec.summary(SPECS / "delugenet146.arch").params
    assert archspec.summary(tmp_path / "specs" / "delugenet146.arch").params == want


# ---- escapes -------------------------------------------------------------------------------------------

def test_escape_sequences_from_a_spec_are_shown_escaped(tmp_path):
    text = net('  assert false, "\x1b[2J\x1b]0;owned\x07 \u202egnp.exe \x9b31m"')
    e = error(text)
    shown = e.render()
    for raw in ("\x1b", "\x07", "\u202e", "\x9b"):
        assert raw not in shown and raw not in str(e)
    assert "\\x1b[2J" in shown and "\\u202e" in shown
    assert shown.splitlines()[1].startswith('      assert false, "\ufffd[2J')  # the line keeps its columns
    odd = tmp_path / "a\x1bb.arch"
    odd.write_text(net("  conv(0, 1)"))
    code, out = cli("check", odd)
    assert code == 2 and "\x1b" not in out and "a\\x1bb.arch:3:8: error:" in out
