"""`use` reads only what it was allowed to, and never shows what it refused or could not parse: spec text
given from Python reads nothing but the shipped library and `allow_paths`; /proc, /sys, /dev and
dotfiles are never read; a used file that is refused or unparsable is named by path, line and column."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

import archspec
from archspec import SpecError
from archspec.cli import app
from conftest import SPECS

SECRET = "SECRET-7f3a-TOKEN"


def net(body: str, before: str = "") -> str:
    return f"{before}network n() {{\n  input(3, 8, 8)\n{body}\n}}\n"


def refused(source, **kw) -> SpecError:
    with pytest.raises(SpecError) as e:
        archspec.parse(source, **kw)
    return e.value


def cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


def test_h1_use_of_proc_is_refused_silently(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHSPEC_TEST_SECRET", SECRET)
    for allow in (None, ["/"], ["/proc"]):
        e = refused(net("  relu", 'use "/proc/self/environ"\n'), allow_paths=allow)
        assert "never reads files under /proc, /sys or /dev" in e.message and (e.loc.line, e.loc.column) == (1, 1)
        assert SECRET not in e.render() and SECRET not in str(e)
    # through a link inside an allowed folder, and from a spec file, too
    (tmp_path / "env.arch").symlink_to("/proc/self/environ")
    main = tmp_path / "main.arch"
    main.write_text(net("  relu", 'use "env.arch"\n'))
    e = refused(main)
    assert "never reads" in e.message and SECRET not in e.render()
    code, out = cli("check", main)
    assert code == 2 and SECRET not in out and f"{main}:1:1:" in out


@pytest.mark.parametrize("place", ["/sys/kernel/hostname", "/dev/stdin", "/dev/zero"])
def test_h1_sys_and_dev_are_never_read_even_when_allowed(place):
    e = refused(net("  relu", f'use "{place}"\n'), allow_paths=["/"])
    assert "never reads files under /proc, /sys or /dev" in e.message


def test_h1_spec_text_reads_nothing_outside_allow_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "unit.arch").write_text("layer unit() { conv(4, 1) }\n")
    (tmp_path / "notes.txt").write_text(f"{SECRET}\n")
    text = net("  unit()", 'use "unit.arch"\n')
    e = refused(text)
    assert "may use only the shipped library and the folders in allow_paths" in e.message
    assert "allow_paths" in e.hint and e.loc.line == 1
    e = refused(net("  relu", 'use "notes.txt"\n'))
    assert SECRET not in e.render()
    # allowed by name, relative to the working folder; the same text from a file in the folder reads it
    assert archspec.summary(text, allow_paths=[tmp_path]).params == 12
    (tmp_path / "main.arch").write_text(text)
    assert archspec.summary(tmp_path / "main.arch").params == 12


def test_h1_spec_text_may_use_the_shipped_library():
    text = net("  seqconv(16, 8)", f'use "{SPECS}/lib/seqconv.arch"\n')
    assert archspec.parse(text).main == "n"
    assert archspec.summary("delugenet146").params > 0


@pytest.mark.parametrize("used", [".env", ".secrets/unit.arch", "parts/../.env"])
def test_h1_dotfiles_are_never_read(tmp_path, used):
    (tmp_path / ".env").write_text(f"TOKEN={SECRET}\n")
    (tmp_path / ".secrets").mkdir()
    (tmp_path / ".secrets/unit.arch").write_text(f"# {SECRET}\nlayer unit() {{ conv(4, 1) }}\n")
    (tmp_path / "parts").mkdir()
    main = tmp_path / "main.arch"
    main.write_text(net("  relu", f'use "{used}"\n'))
    for allow in (None, [tmp_path]):
        e = refused(main, allow_paths=allow)
        assert "starts with a dot is never read" in e.message and SECRET not in e.render()
    code, out = cli("check", main)
    assert code == 2 and SECRET not in out and "starts with a dot" in out


def test_h1_a_project_inside_a_dot_folder_still_uses_its_files(tmp_path):
    root = tmp_path / ".config" / "project"
    root.mkdir(parents=True)
    (root / "unit.arch").write_text("layer unit() { conv(4, 1) }\n")
    (root / "main.arch").write_text(net("  unit()", 'use "unit.arch"\n'))
    assert archspec.summary(root / "main.arch").params == 12


@pytest.mark.parametrize("content", [f"{SECRET} = 1\n", f"layer a() {{\n  relu\n}}\n{SECRET}!\n",
                                     f"{SECRET}\x00\n".encode(), f"{SECRET}\xff\n".encode("latin-1")])
def test_h1_an_unparsable_used_file_is_named_not_shown(tmp_path, content):
    lib = tmp_path / "lib.arch"
    lib.write_bytes(content if isinstance(content, bytes) else content.encode())
    main = tmp_path / "main.arch"
    main.write_text(net("  relu", 'use "lib.arch"\n'))
    e = refused(main)
    assert os.path.samefile(e.loc.file, lib) and e.loc.line >= 1 and e.loc.column >= 1
    assert SECRET not in e.render() and SECRET not in str(e)
    code, out = cli("check", main)
    assert code == 2 and SECRET not in out and "Traceback" not in out
    assert f":{e.loc.line}:{e.loc.column}: error:" in out


def test_h1_a_used_file_that_parses_is_still_shown_at_its_error(tmp_path):
    (tmp_path / "lib.arch").write_text("layer unit(c: int) {\n  conv(c, 3, paddin=1)\n}\n")
    main = tmp_path / "main.arch"
    main.write_text(net("  unit(4)", 'use "lib.arch"\n'))
    with pytest.raises(SpecError) as e:
        archspec.network(main)
    assert "conv(c, 3, paddin=1)" in e.value.render()


def test_h1_the_spec_itself_is_still_shown_at_a_syntax_error():
    e = refused(net("  relu(3, 4 4)", ""))
    assert e.loc.line == 3 and "relu(3, 4 4)" in e.render()


def test_h1_a_very_long_use_path_is_refused_with_exit_2(tmp_path):
    main = tmp_path / "main.arch"
    main.write_text(net("  relu", f'use "{"a" * 5000}.arch"\n'))
    e = refused(main)
    assert e.loc.line == 1 and len(e.message) < 400
    code, out = cli("check", main)
    assert code == 2 and "Traceback" not in out
