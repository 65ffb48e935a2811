"""The command line: results on real specs, `--help` everywhere, and for every kind of bad input a
located message with a caret, exit code 2 and no traceback. Most runs are in-process (CliRunner); a few
run the installed `archspec` console script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archspec.cli import app
from conftest import ROOT, SPECS
from reference_counts import BY_NAME

DELUGENET146 = str(SPECS / "delugenet146.arch")
LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: ", re.M)


@pytest.fixture
def cli():
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return run


def assert_located(result, file: str | Path | None = None, line: int | None = None, col: int | None = None,
                   *words: str) -> re.Match:
    """Exit code 2, `file:line:col: error: ...`, the offending line and a caret under the column."""
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    m = LOCATED.search(text)
    assert m, text
    if file is not None:
        assert Path(m["file"]).resolve() == Path(file).resolve(), text
    if line is not None:
        assert int(m["line"]) == line, text
    if col is not None:
        assert int(m["col"]) == col, text
    lines = text[m.start():].splitlines()
    caret = lines[2]
    assert caret.strip() and set(caret.strip()) == {"^"}, text
    assert caret.index("^") == 4 + int(m["col"]) - 1, text
    for w in words:
        assert w in text, (w, text)
    return m


# ---- results ---------------------------------------------------------------------------------------


def test_version(cli):
    import archspec

    r = cli("--version")
    assert r.exit_code == 0 and r.output.strip() == f"archspec {archspec.__version__}", r.output


def test_set_help_shows_the_list_form(cli):
    r = cli("compile", "--help")
    assert r.exit_code == 0 and "[list]" in r.output, r.output


def test_compile_json(cli):
    r = cli("compile", DELUGENET146, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["params"] == 6_686_250 and data["network"] == "delugenet146"
    assert data["output_shape"] == [10]


def test_compile_table(cli):
    ref = BY_NAME["delugenet146"]
    r = cli("compile", DELUGENET146)
    assert r.exit_code == 0, r.output
    for word in ("delugenet146", "input 3×32×32", "group", "params", "MACs", "stem", "block1", "block3",
                 "transition2", "head", "total", f"{ref.params:,}", f"{ref.macs / 1e6:.3f}M"):
        assert word in r.stdout, (word, r.stdout)
    assert "depth 148" in r.stdout and f"MACs {ref.macs:,}" in r.stdout  # the summary line is not wrapped


def test_check(cli):
    r = cli("check", DELUGENET146)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"ok: delugenet146: {BY_NAME['delugenet146'].params:,} params")


def test_set(cli):
    r = cli("compile", DELUGENET146, "--set", "classes=100", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["params"] == BY_NAME["delugenet146"].variants[0].params and data["output_shape"] == [100]
    r = cli("check", SPECS / "resnetlike146.arch", "--set", "shortcut=1", "--set", "classes=10")
    assert r.exit_code == 0 and f"{BY_NAME['resnetlike146'].variants[1].params:,} params" in r.stdout


def test_output_file(cli, tmp_path):
    out = tmp_path / "sub" / "model.py"
    r = cli("compile", DELUGENET146, "-o", out)
    assert r.exit_code == 0, r.output
    assert out.is_file() and f"wrote {out}" in r.stdout
    source = out.read_text()
    compile(source, str(out), "exec")  # valid Python
    assert "import torch" in source and "class " in source
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_output_to_a_directory_is_an_error(cli, tmp_path):
    r = cli("compile", DELUGENET146, "-o", tmp_path)
    assert r.exit_code == 2 and "is a directory" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("args", [(), ("compile",), ("check",), ("list",), ("bench",), ("bench", "compile")])
def test_help(cli, args):
    r = cli(*args, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.stdout
    if args and args[-1] in ("compile", "check"):
        assert "--set" in r.stdout
    if args[:1] == ("compile",):
        assert "--max-params" in r.stdout and "--json" in r.stdout and "--output" in r.stdout


def test_usage_errors_exit_2(cli):
    assert cli("compile").exit_code == 2  # no spec
    assert cli("compile", DELUGENET146, "--bogus").exit_code == 2
    r = cli("compile", DELUGENET146, "--max-params", "lots")
    assert r.exit_code == 2 and "not a number" in r.output


# ---- the shipped models, by name --------------------------------------------------------------------


def test_models_by_name_from_any_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("compile", "delugenet146", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["params"] == BY_NAME["delugenet146"].params
    r = cli("check", "resnetlike146", "--set", "shortcut=1", "--set", "classes=10")
    assert r.exit_code == 0, r.output
    assert f"{BY_NAME['resnetlike146'].variants[1].params:,} params" in r.stdout
    r = cli("compile", "gunn15", "-o", "gunn15.py")
    assert r.exit_code == 0 and (tmp_path / "gunn15.py").is_file(), r.output


def test_a_file_named_like_a_model_is_read_as_the_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "delugenet146").write_text(net("conv(8, 3)"))
    r = cli("check", "delugenet146")
    assert r.exit_code == 0 and r.stdout.startswith("ok: n: "), r.output


@pytest.mark.parametrize("command", ["compile", "check"])
def test_unknown_model_name_suggests_the_closest(cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    r = cli(command, "delugenet14")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.startswith("error: no spec file or shipped model named 'delugenet14'")
    assert "did you mean 'delugenet146'" in r.output and "archspec list" in r.output


@pytest.mark.slow
def test_list_json(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("list", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert sorted(rows) == sorted(p.stem for p in SPECS.glob("*.arch")) == sorted(BY_NAME)
    for name, row in rows.items():
        ref = BY_NAME[name]
        assert (row["params"], tuple(row["input_shape"])) == (ref.params, ref.input), name
        if isinstance(ref.macs, int):
            assert row["macs"] == ref.macs, name
    used = {name: re.search(r'use "lib/(\w+)\.arch"', (SPECS / f"{name}.arch").read_text()) for name in rows}
    assert {n: row["family"] for n, row in rows.items()} == {n: m[1] if m else "" for n, m in used.items()}
    assert rows["wrn28_10"]["family"] == "resnet" and rows["sunn18"]["family"] == "gunn"


@pytest.mark.slow
def test_list_table(cli):
    r = cli("list")
    assert r.exit_code == 0, r.output
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("│")}
    assert set(lines) == set(BY_NAME)
    for word in ("delugenet", "6,686,250", "691.899M", "3×32×32"):
        assert word in lines["delugenet146"], lines["delugenet146"]
    assert "3×224×224" in lines["gunn18"]


# ---- the parameter limit ---------------------------------------------------------------------------


def test_max_params_refuses(cli, tmp_path):
    out = tmp_path / "model.py"
    r = cli("compile", DELUGENET146, "--max-params", "1000", "-o", out)
    assert_located(r, DELUGENET146, 4, 9, "6,686,250 parameters, above the limit of 1,000", "--max-params")
    assert not out.exists()
    r = cli("check", DELUGENET146, "--max-params", "1e3")
    assert_located(r, DELUGENET146, 4, 9, "above the limit of 1,000")
    assert cli("compile", DELUGENET146, "--max-params", "7e6", "--json").exit_code == 0


def test_default_limit_refuses_huge_networks(cli, tmp_path):
    spec = tmp_path / "huge.arch"
    spec.write_text("network huge() {\n  input(3, 8, 8)\n  conv(100000, 3) conv(100000, 3)\n}\n")
    assert_located(cli("compile", spec), spec, 1, 9, "above the limit of 2,000,000,000")


# ---- bad input -------------------------------------------------------------------------------------


def net(body: str, params: str = "", layers: str = "") -> str:
    return f"{layers}network n({params}) {{\n  input(3, 8, 8)\n  {body}\n}}\n"


# (name, spec text, extra CLI args, line, column, words in the output)
BAD = [
    ("syntax", net("conv(8 3)"), [], 3, 10, ["a ',' is missing between arguments", "expected"]),
    ("unexpected character", net("conv(8, 3) $"), [], 3, 14, ["unexpected character '$'"]),
    ("end of file", "network n() {\n  input(3, 8, 8)\n  conv(8, 3", [], 3, 12, ["unexpected end of file"]),
    ("unterminated string", net('conv("8, 3)'), [], 3, 8, ["string is not closed"]),
    ("parameter type", "network n(a: integer = 1) {\n  input(3, 8, 8)\n}\n", [], 1, 14,
     ["parameter type", "did you mean 'int'"]),
    ("unknown name", net("conv(widht, 1)", params="width: int = 8"), [], 3, 8,
     ["unknown name 'widht'", "did you mean 'width'"]),
    ("unknown op", net("cnov(8, 3)"), [], 3, 3, ["unknown layer or op 'cnov'", "did you mean 'conv'"]),
    ("unknown pattern", net("block dens { conv(8, 1) }"), [], 3, 9, ["did you mean 'dense'"]),
    ("unknown merge", net("block dense concta { conv(8, 1) }"), [], 3, 15, ["did you mean 'concat'"]),
    ("unknown argument", net("conv(8, 3, paddng=1)"), [], 3, 14, ["no argument 'paddng'", "'padding'"]),
    ("type mismatch", net("conv(2.5, 3)"), [], 3, 8, ["must be an int, got float 2.5"]),
    ("non-positive size", net("conv(0, 3)"), [], 3, 8, ["must be positive"]),
    ("layer arguments", net("u(1, 2)", layers="layer u(c: int) { conv(c, 1) }\n"), [], 4, 8,
     ["layer 'u' takes 1 argument"]),
    ("no default", net("conv(c, 1)", params="c: int"), [], 1, 11, ["has no default", "--set c="]),
    ("groups", net("conv(8, 3, groups=2)"), [], 3, 3, ["shapes cannot meet", "groups=2"]),
    ("shapes", net("conv(8, 11)"), [], 3, 3, ["shapes cannot meet", "kernel 11"]),
    ("negative repeat", net("repeat -1 { relu }"), [], 3, 10, ["non-negative"]),
    ("recursion", net("r", layers="layer r() { r }\n"), [], 1, 13, ["calls itself without end"]),
    ("defined twice", "layer l() { relu }\nlayer l() { bn }\n" + net("l"), [], 2, 7, ["defined twice"]),
    ("set unknown", net("relu", params="classes: int = 10"), ["--set", "clases=5"], 1, 9,
     ["no parameter 'clases'", "did you mean 'classes'"]),
    ("set wrong type", net("relu", params="classes: int = 10"), ["--set", "classes=2.5"], 1, 11,
     ["must be an int, got float 2.5"]),
    ("empty", "", [], 1, 1, ["empty"]),
    ("only comments", "# nothing here\n", [], 1, 1, ["defines no network"]),
]


@pytest.mark.parametrize("name,text,args,line,col,words", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("command", ["compile", "check"])
def test_bad_spec(cli, tmp_path, command, name, text, args, line, col, words):
    spec = tmp_path / "bad.arch"
    spec.write_text(text)
    assert_located(cli(command, spec, *args), spec, line, col, *words)


def test_use_cycle(cli, tmp_path):
    (tmp_path / "a.arch").write_text('use "b.arch"\n')
    (tmp_path / "b.arch").write_text('\nuse "a.arch"\n')
    spec = tmp_path / "main.arch"
    spec.write_text('use "a.arch"\n' + net("relu"))
    assert_located(cli("compile", spec), tmp_path / "b.arch", 2, 1, "`use` cycle: a.arch → b.arch → a.arch")


def test_missing_used_file(cli, tmp_path):
    spec = tmp_path / "main.arch"
    spec.write_text('use "lib/nope.arch"\n' + net("relu"))
    assert_located(cli("check", spec), spec, 1, 1, "no such spec file: 'lib/nope.arch'")


def test_set_value_that_cannot_be_read(cli):
    r = cli("check", DELUGENET146, "--set", "classes=1 +")
    assert r.exit_code == 2 and "cannot read the value" in r.output and "Traceback" not in r.output
    r = cli("check", DELUGENET146, "--set", "classes=ten")
    assert r.exit_code == 2 and "a value is a literal, not a name" in r.output
    assert "    classes=ten\n            ^^^" in r.output  # the value is pointed at
    r = cli("check", DELUGENET146, "--set", "classes")
    assert r.exit_code == 2 and "--set needs NAME=VALUE" in r.output


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "latin-1"])
def test_unreadable_spec_files(cli, tmp_path, kind):
    spec = tmp_path / "x.arch"
    if kind == "directory":
        spec.mkdir()
    elif kind == "binary":
        spec.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    elif kind == "latin-1":
        spec.write_bytes(b"network caf\xe9() {}\n")
    r = cli("compile", spec)
    assert r.exit_code == 2 and "Traceback" not in r.output
    located = kind in ("binary", "latin-1")  # at the bad byte: file:line:column, the line, a caret
    assert r.output.startswith(f"{spec}:1:" if located else "error: ") and str(spec) in r.output
    assert {"missing": "no such spec file", "directory": "is a directory", "binary": "binary file",
            "latin-1": "not UTF-8"}[kind] in r.output


def test_bench_compile_refuses_bad_specs_before_timing(cli, tmp_path):
    spec = tmp_path / "bad.arch"
    spec.write_text(net("conv(0, 3)"))
    assert_located(cli("bench", "compile", spec, "--repeat", "1"), spec, 3, 8, "must be positive")
    assert_located(cli("bench", "compile", DELUGENET146, "--max-params", "10"), DELUGENET146, 4, 9)


# ---- the installed console script ------------------------------------------------------------------


def _script() -> list[str]:
    exe = shutil.which("archspec")
    return [exe] if exe else [sys.executable, "-m", "archspec"]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(_script() + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_console_script_compile_json():
    p = _run("compile", "specs/delugenet146.arch", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["params"] == 6_686_250


@pytest.mark.slow
def test_console_script_by_name_from_another_folder(tmp_path):
    p = _run("compile", "delugenet146", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["params"] == 6_686_250
    p = _run("check", "delugenet14", cwd=tmp_path)
    assert p.returncode == 2 and "did you mean 'delugenet146'" in p.stderr and "Traceback" not in p.stderr


def test_console_script_error(tmp_path):
    spec = tmp_path / "bad.arch"
    spec.write_text(net("block dense concat { conv(8, 3, paddng=1) }"))
    p = _run("compile", spec)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr + p.stdout
    line = "  block dense concat { conv(8, 3, paddng=1) }"
    col = line.index("paddng") + 1
    assert p.stderr.splitlines() == [
        f"{spec}:3:{col}: error: conv has no argument 'paddng'",
        "    " + line,
        "    " + " " * (col - 1) + "^" * len("paddng=1"),
        "  did you mean 'padding'?",
    ]


def test_console_script_max_params_and_help():
    p = _run("compile", "specs/delugenet146.arch", "--max-params", "1000")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("specs/delugenet146.arch:4:9: error: network 'delugenet146' has 6,686,250 parameters")
    p = _run("bench", "compile", "--help")
    assert p.returncode == 0 and "Usage:" in p.stdout


def test_a_bug_in_archspec_is_reported_briefly(cli, monkeypatch):
    import archspec.api

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(archspec.api, "summary", broken)
    monkeypatch.delenv("ARCHSPEC_TRACEBACK", raising=False)
    r = cli("check", DELUGENET146)
    assert r.exit_code == 1  # not 2: the spec is fine
    assert "internal error: RuntimeError: boom" in r.output and "Traceback" not in r.output


def test_broken_library_precondition_is_located(cli):
    """`--set k=6` leaves SeqConv layers that are not whole groups: the library's assert reports where
    the network calls the layer, with the values it saw."""
    r = cli("compile", SPECS / "seqresnet_k8r4.arch", "--set", "k=6")
    assert_located(r, SPECS / "lib/seqconv.arch", None, None, "whole number of groups", "out = 64, k = 6",
                   "inside 'seqconv'")


def test_standalone_file_of_a_densenet(cli, tmp_path):
    """Concatenating blocks train through fused modules; the standalone file carries the plain ops."""
    out_file = tmp_path / "densenet.py"
    r = cli("compile", SPECS / "densenet_bc100_k12.arch", "--set", "depth=16", "-o", out_file)
    assert r.exit_code == 0, r.output
    assert "ConcatNormActConv" not in out_file.read_text() and "torch.cat" in out_file.read_text()
