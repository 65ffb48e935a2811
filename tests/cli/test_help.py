"""Every command's `--help` as a user sees it (typer's rich panels, 200 columns): each parameter's help
text and default in its own row, brackets in help texts shown rather than read as markup, no `<type>`
beside a flag; the shell completion of SPEC arguments; and the progress bar of a run, in a real
terminal (a pty), leaving each line printed during it on a line of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from archspec import library
from archspec.cli import app
from conftest import cli_commands
from archspec.cli.completion import complete_spec
from archspec.cli.helptext import escape_brackets, unescape_brackets

ROOT = typer.main.get_command(app)
WIDTH = 200


COMMANDS = cli_commands(groups=True)


def _help(path: tuple[str, ...]) -> str:
    r = CliRunner().invoke(app, [*path, "--help"], terminal_width=WIDTH, env={"COLUMNS": str(WIDTH)})
    assert r.exit_code == 0, r.output
    return r.output


def _rows(output: str) -> list[str]:
    """The rows of the help's panels, each row's lines joined with the borders and wrapping removed."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        inner = line.strip("│").rstrip()
        lead = len(inner) - len(inner.lstrip(" "))
        if inner.lstrip().startswith("*") or lead <= 4:
            rows.append([inner])
        elif rows:
            rows[-1].append(inner)
    return [re.sub(r"\s+", " ", " ".join(r)).strip() for r in rows]


def _row_of(param, rows: list[str]) -> str:
    """The row that shows `param`: the one whose first cell names its first option (or the argument)."""
    names = list(param.opts) if param.param_type_name == "option" else [param.metavar or param.name.upper()]
    for row in rows:
        head = re.split(r"[\s,]+", row.lstrip("* "))
        if names[0] in head[:4]:
            return row
    raise AssertionError(f"no row shows {names[0]}:\n" + "\n".join(rows))


def _default_shown(param) -> str | None:
    """The default the help should show for `param`, worked out from its declaration as typer shows
    defaults: a text given as `show_default` in parentheses; a flag pair by the name of its default
    side; a plain flag's False and an absent default (None) not at all."""
    if isinstance(param.show_default, str):
        return f"({param.show_default})"
    if param.show_default is False or param.default is None or getattr(param, "required", False):
        return None
    if param.param_type_name == "option" and param.is_flag:
        if param.secondary_opts:
            side = param.opts[0] if param.default else param.secondary_opts[0]
            return side.lstrip("-")
        return None
    if isinstance(param.default, (list, tuple)):
        return ", ".join(map(str, param.default)) or None
    return str(param.default)


def _params(path):
    ctx = COMMANDS[path].make_context(" ".join(("archspec",) + path), [], resilient_parsing=True)
    return [p for p in COMMANDS[path].get_params(ctx) if not getattr(p, "hidden", False)], ctx


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "archspec")
def test_help_text_and_default_in_each_row(path):
    rows = _rows(_help(path))
    params, _ = _params(path)
    assert params
    for p in params:
        row = _row_of(p, rows)
        if p.help:
            text = re.sub(r"\s+", " ", unescape_brackets(p.help)).strip()
            assert text in row, (p.opts, text, row)
        default = _default_shown(p)
        if default is not None:
            assert f"[default: {default}]" in row, (p.opts, default, row)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "archspec")
def test_no_type_noise_and_flags_take_no_value(path):
    output = _help(path)
    assert not re.search(r"<[a-z][a-z ]*>", output), output  # typer's <bool>, <str>, <int range>, <path>
    rows = _rows(output)
    params, _ = _params(path)
    for p in params:
        row = _row_of(p, rows)
        if p.param_type_name == "option" and p.is_flag:
            opts = [*p.opts, *p.secondary_opts]
            rest = row.lstrip("* ")
            for o in sorted(opts, key=len, reverse=True):
                rest = rest.replace(o, "")
            rest = re.sub(r"^[\s,]+", "", rest)
            assert rest.startswith(unescape_brackets(p.help or "")[:20]), (p.opts, row)  # nothing between
        elif p.param_type_name == "option":
            assert p.metavar or re.search(r"\b(N|X|PATH|TEXT)\b", row), (p.opts, row)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "archspec")
def test_every_parameter_has_help(path):
    params, _ = _params(path)
    missing = {p.name for p in params if not (p.help or "").strip()}
    assert not missing, sorted(missing)


@pytest.mark.parametrize("cores", [1, 3, 20])
def test_workers_default_is_the_one_the_help_shows(monkeypatch, cores):
    """`--workers`' default, as the help of `train` and `bench data` words it, is what the loader uses."""
    from archspec.runtime.data import folders

    said = "one per usable core, at most 8"
    for path in (("train",), ("bench", "data")):
        assert said in _row_of(next(p for p in _params(path)[0] if p.name == "workers"), _rows(_help(path)))
    monkeypatch.setattr(folders, "usable_cores", lambda: cores)
    assert folders.default_workers() == min(cores, 8)


def test_brackets_in_help_are_text_not_markup():
    for text in ("[default: 4]", "a \\[list]", "[bold]x[/bold] and [red]"):
        once = escape_brackets(text)
        assert escape_brackets(once) == once  # idempotent: an escaped bracket stays one
        assert unescape_brackets(once) == text.replace("\\[", "[")
        from rich.text import Text

        assert Text.from_markup(once).plain == text.replace("\\[", "[")


# completion


def test_spec_completion_offers_models_and_spec_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = library.names()
    prefix = names[0][:3]
    (tmp_path / f"{prefix}_mine.arch").write_text("")
    (tmp_path / f"{prefix}_notes.txt").write_text("")
    (tmp_path / f"{prefix}_folder.arch").mkdir()
    got = complete_spec(prefix)
    assert [v for v, h in got if h == "shipped model"] == [n for n in names if n.startswith(prefix)]
    assert [v for v, h in got if h == "spec file"] == [f"{prefix}_mine.arch"]
    assert {v for v, _ in complete_spec("")} >= set(names)
    assert complete_spec("zz_no_such_model_") == []  # nothing matches: the shell completes files itself


@pytest.mark.parametrize("word", ["./", "specs/", "~/x", "net.arch", "/tmp/"])
def test_spec_completion_leaves_paths_to_the_shell(word):
    assert complete_spec(word) == []


@pytest.mark.parametrize("path", [p for p, c in COMMANDS.items()
                                  if any(getattr(a, "metavar", None) == "SPEC" for a in c.params)],
                         ids=" ".join)
def test_every_spec_argument_completes_model_names(path):
    cmd = COMMANDS[path]
    spec = next(a for a in cmd.params if getattr(a, "metavar", None) == "SPEC")
    ctx = cmd.make_context("archspec", ["x"] if spec.required else [], resilient_parsing=True)
    prefix = library.names()[-1][:4]
    got = [c.value for c in spec.shell_complete(ctx, prefix)]
    assert got and all(v.startswith(prefix) for v in got)
    assert set(got) >= {n for n in library.names() if n.startswith(prefix)}


def test_completion_through_the_shell_protocol():
    """What bash receives for `archspec compile <prefix><TAB>`."""
    prefix = library.names()[0][:3]
    r = CliRunner().invoke(app, [], prog_name="archspec",
                           env={"_ARCHSPEC_COMPLETE": "complete_bash", "COMP_WORDS": f"archspec compile {prefix}",
                                "COMP_CWORD": "2"})
    assert set(r.output.split()) == {n for n in library.names() if n.startswith(prefix)}, r.output


# the progress bar in a terminal

_CHILD = r"""
from archspec.cli.common import out
from archspec.runtime.train.progress import progress_bar

with progress_bar(True) as bar:
    run = bar.add_task("run", total=2, stats="", eta=None)
    for epoch in range(2):
        step = bar.add_task(f"epoch {epoch + 1}/2", total=3, stats="")
        for i in range(3):
            bar.update(step, completed=i + 1, stats=f"{i} img/s")
            bar.refresh()
        bar.remove_task(step)
        bar.update(run, completed=epoch + 1, stats=f"epoch {epoch + 1}/2", eta=1.0)
        bar.refresh()
        out.print(f"epoch {epoch + 1}/2 trained")
out.print("done")
"""

_CSI = re.compile(rb"\x1b\[([0-9;?]*)([A-Za-z])")


def _screen(data: bytes) -> list[str]:
    """The lines a terminal shows after `data`: characters, CR, LF, cursor up (CSI A) and erase line
    (CSI 2K) are followed; other escape sequences (colours, the cursor's visibility) change no text."""
    lines, row, col, i = [[]], 0, 0, 0
    while i < len(data):
        m = _CSI.match(data, i)
        if m:
            arg, op = m.group(1).decode(), m.group(2)
            if op == b"A":
                row = max(row - int(arg or 1), 0)
            elif op == b"K" and arg == "2":
                lines[row] = []
            i = m.end()
            continue
        ch = data[i:i + 1]
        if ch == b"\r":
            col = 0
        elif ch == b"\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append([])
        else:
            line = lines[row]
            line.extend([" "] * (col - len(line) + 1))
            line[col] = ch.decode("latin-1")
            col += 1
        i += 1
    return ["".join(line).rstrip() for line in lines]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pty")
def test_progress_bar_leaves_printed_lines_whole_in_a_terminal():
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    env.pop("NO_COLOR", None)
    env.pop("TERMINAL_WIDTH", None)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    os.close(slave)
    data, deadline = b"", time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, data.decode("utf-8", "replace")
    assert b"\x1b[" in data  # drawn as a live bar, not as plain lines
    screen = [line for line in _screen(data.replace("━".encode(), b"=").replace("╺".encode(), b"-")
                                       .replace("╸".encode(), b"-")) if line]
    assert screen == ["epoch 1/2 trained", "epoch 2/2 trained", "done"], screen
