"""One CLI: the same flag for the same thing in every command, and help texts that render."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from archspec.cli import app
from conftest import cli_commands

COMMANDS = cli_commands(groups=False)


def test_every_command_is_seen():
    assert {("compile",), ("train",), ("export",), ("bench", "train"), ("bench", "infer"), ("graph",),
            ("inspect",), ("transfer",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_same_flag_names(path):
    for p in COMMANDS[path].params:
        if getattr(p, "param_type_name", "") != "option":
            continue
        if p.name in ("output", "out_dir", "out"):
            assert {"-o", "--out"} <= set(p.opts), (path, p.opts)
        if p.name in ("batch", "batch_size"):
            assert p.opts[0] == "--batch-size", (path, p.opts)
        if p.name == "compile_":
            assert not p.is_flag and p.metavar != "", (path, "--compile takes a mode")


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_renders(path):
    r = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    text = re.sub(r"[\s│]+", " ", r.output)  # the panel's wrapping and borders
    assert not re.search(r"\[/?(bold|red|green|dim|cyan|yellow|magenta|blue|link)[^\]]*\]", text), text
    assert " or a ." not in text, text  # markup that swallowed a word
    if any(p.name == "set_" for p in COMMANDS[path].params):
        assert "[list]" in text, text


def test_version_and_completion():
    assert CliRunner().invoke(app, ["--version"]).output.startswith("archspec ")
    r = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert "--install-completion" in r.output and "--show-completion" in r.output


def test_models_by_name_and_allow_path_reach_train_and_export(tmp_path):
    """A shipped model's name works where a spec path does, and `use` outside the spec's tree needs
    --allow-path in train and export as in compile."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "parts.arch").write_text("layer unit(w: int) { conv(w, 3, padding=1) bn relu }\n")
    spec = tmp_path / "spec" / "net.arch"
    spec.parent.mkdir()
    spec.write_text(f'use "{outside / "parts.arch"}"\n'
                    "network net(classes: int = 10, channels: int = 1, size: int = 8) {\n"
                    "  input(channels, size, size)\n  unit(4)\n  head { gap linear(classes) }\n}\n")
    runner = CliRunner()
    refused = runner.invoke(app, ["export", str(spec), "--format", "pt2", "-o", str(tmp_path / "a.pt2")])
    assert refused.exit_code == 2 and "--allow-path" in refused.output, refused.output
    done = runner.invoke(app, ["export", str(spec), "--format", "pt2", "-o", str(tmp_path / "a.pt2"),
                               "--allow-path", str(outside)])
    assert done.exit_code == 0, done.output
    refused = runner.invoke(app, ["train", str(spec), "--epochs", "1", "--quiet", "--device", "cpu",
                                  "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2 and "--allow-path" in refused.output, refused.output
    done = runner.invoke(app, ["export", "tiny_delugenet", "--format", "pt2", "-o", str(tmp_path / "b.pt2")])
    assert done.exit_code == 0 and (tmp_path / "b.pt2").is_file(), done.output


def test_export_refuses_a_folder_before_any_work(tmp_path):
    r = CliRunner().invoke(app, ["export", "tiny_delugenet", "--format", "pt2", "-o", str(tmp_path)])
    assert r.exit_code == 2 and ("folder" in r.output or "directory" in r.output), r.output
