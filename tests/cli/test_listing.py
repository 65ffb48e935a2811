"""The shipped library's catalogue (`library.summaries`): wildcard selection, the per-user cache of its
rows (keyed by version and file contents, validated when read), and model names that resolve to the
library before the working folder."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archspec import library
from archspec.cli import app
from conftest import SPECS

SMALL = "tiny_delugenet"  # a cheap model to elaborate


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Each test its own cache folder."""
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "archspec"


@pytest.fixture
def computed(monkeypatch):
    """The names whose rows are computed from the graph, in order."""
    seen: list[str] = []
    real = library._compute

    def counting(name):
        seen.append(name)
        return real(name)

    monkeypatch.setattr(library, "_compute", counting)
    return seen


def test_pattern_selects_by_shell_wildcard():
    names = library.names()
    for pattern in ("tiny_*", "*delugenet", "Tiny_DelugeNet", "alex?et"):
        got = [e.name for e in library.summaries(pattern)]
        assert got == [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())], pattern
        assert got, pattern
    assert library.summaries("no_such_*") == []


def test_second_call_reads_the_cache(cache_home, computed):
    first = library.summaries(SMALL)
    assert computed == [SMALL] and (cache_home / library.CACHE_FILE).is_file()
    second = library.summaries(SMALL)
    assert second == first and computed == [SMALL]
    e = first[0]
    assert e.params > 0 and e.macs > 0 and len(e.input_shape) == 3 and e.output_shape
    assert e.family == "delugenet"


def test_a_new_version_or_spec_text_recomputes(monkeypatch, tmp_path, computed):
    library.summaries(SMALL)
    monkeypatch.setattr(library, "__version__", "0.0.0-other")
    library.summaries(SMALL)
    assert computed == [SMALL, SMALL]
    # a changed spec file or library file: a copy of the library, edited
    copy = tmp_path / "specs"
    (copy / "lib").mkdir(parents=True)
    shutil.copy(SPECS / f"{SMALL}.arch", copy)
    for lib in (SPECS / "lib").glob("*.arch"):
        shutil.copy(lib, copy / "lib")
    monkeypatch.setattr(library, "folder", lambda: copy)
    library.summaries()
    assert computed == [SMALL] * 2  # the same bytes: the key is the contents, not where they lie
    with open(copy / "lib" / "delugenet.arch", "a") as f:
        f.write("\n# edited\n")
    library.summaries()
    library.summaries()
    assert computed == [SMALL] * 3
    with open(copy / f"{SMALL}.arch", "a") as f:
        f.write("\n# edited\n")
    library.summaries()
    assert computed == [SMALL] * 4


@pytest.mark.parametrize("damage", [
    b"{not json", b"[]", b'{"format": 1, "rows": []}', b"\xff\xfe",
    "params", "macs", "input_shape", "key", "extra",
])
def test_a_damaged_cache_is_ignored_and_rewritten(cache_home, computed, damage):
    truth = library.summaries(SMALL)
    path = cache_home / library.CACHE_FILE
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        doc = json.loads(path.read_text())
        row = doc["rows"][SMALL]
        if damage == "extra":
            row["path"] = "/etc/passwd"
        elif damage == "key":
            row["key"] = "../x"
        elif damage == "input_shape":
            row["input_shape"] = [3, -1, "224"]
        else:
            row[damage] = str(row[damage]) if damage == "params" else -5
        path.write_text(json.dumps(doc))
    assert library.summaries(SMALL) == truth and computed == [SMALL, SMALL]
    assert library.summaries(SMALL) == truth and computed == [SMALL, SMALL]  # rewritten whole


def test_an_unwritable_cache_still_lists(tmp_path, monkeypatch, computed):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the cache folder would be under a file
    assert [e.name for e in library.summaries(SMALL)] == [SMALL]
    assert [e.name for e in library.summaries(SMALL)] == [SMALL] and computed == [SMALL, SMALL]


def test_a_relative_xdg_cache_home_is_not_used(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert library.cache_folder() == tmp_path / ".cache" / "archspec"


# ---- names before the working folder -----------------------------------------------------------------

def test_a_folder_named_like_a_model_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / SMALL).mkdir()
    assert library.find(SMALL) == SPECS / f"{SMALL}.arch"
    r = CliRunner().invoke(app, ["check", SMALL])
    assert r.exit_code == 0 and r.stdout.startswith("ok: "), r.output
    r = CliRunner().invoke(app, ["check", f"./{SMALL}"])  # written as a path: the folder, refused as one
    assert r.exit_code == 2 and "is a directory" in r.output, r.output


@pytest.mark.parametrize("written", [f"./{SMALL}", f"{SMALL}.arch", f"sub/{SMALL}"])
def test_a_path_is_never_a_model_name(tmp_path, monkeypatch, written):
    monkeypatch.chdir(tmp_path)
    (tmp_path / SMALL).mkdir()
    assert library.is_path(written) and library.find(written) == Path(written)
    with pytest.raises(Exception) as e:
        library.load_file(library.find(written))
    assert "shipped model" not in str(e.value)


@pytest.mark.parametrize("written", [f"{SMALL}.arch", f"sub/{SMALL}"])
def test_the_cli_reads_a_path_as_a_path(tmp_path, monkeypatch, written):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["check", written])
    assert r.exit_code == 2 and "Traceback" not in r.output and "shipped model" not in r.output, r.output


def test_a_bare_name_that_is_no_model_is_the_working_folders_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    assert str(library.find("mine")) == "mine"
    with pytest.raises(Exception, match="no spec file or shipped model named 'nothing_here'"):
        library.find("nothing_here")


def test_the_list_command_takes_a_wildcard():
    r = CliRunner().invoke(app, ["list", "resnet1*", "--json"])
    assert r.exit_code == 0, r.output
    names = [row["name"] for row in json.loads(r.stdout)]
    assert names == sorted(n for n in library.names() if n.startswith("resnet1")) and "resnet18" in names
    r = CliRunner().invoke(app, ["list", "no_such_model*"])
    assert r.exit_code == 2 and "no shipped model matches" in r.output
