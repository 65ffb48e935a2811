"""Plugins are contained (finding M10): an entry point that calls `sys.exit` or raises any `BaseException`
while it loads is a PluginError naming it (exit 2, never a silent exit 0 or a traceback), and leaves no
op registered; `KeyboardInterrupt` still interrupts. An error raised inside a plugin op's own rules or
hooks names the op and the plugin, not archspec; the errors archspec expects of an op (a ShapeError) keep
their meaning."""

from __future__ import annotations

import sys

import pytest
import typer
from typer.testing import CliRunner

import archspec
from archspec.cli import app, guarded
from archspec.errors import SpecError
from archspec.graph.vocabulary import OPS, PRIMITIVES
from archspec.plugins import Op, PluginError, register_op
from test_plugins import OPS_MODULE, PKG, clean_registry, install  # noqa: F401  (a fixture)

BASE = "class Stop(BaseException):\n    pass\n"


@pytest.mark.parametrize("code, words", [
    ("import sys\nsys.exit(0)\n", "it called sys.exit(0)"),
    ("import sys\nsys.exit('bye')\n", "it called sys.exit('bye')"),
    (BASE + "raise Stop('halt')\n", "Stop: halt"),
    ("raise GeneratorExit\n", "GeneratorExit"),
])
def test_m10_a_plugin_that_exits_or_raises_a_base_exception_while_loading_is_named(
        tmp_path, monkeypatch, clean_registry, code, words):
    install(tmp_path, monkeypatch, {"quit": f"{PKG}.quit"}, {"quit.py": OPS_MODULE + code})
    with pytest.raises(PluginError) as e:
        "conv" in PRIMITIVES
    assert f"quit = {PKG}.quit" in e.value.message and words in e.value.message
    assert "swish_beta" not in OPS  # what it registered before exiting is rolled back


def test_m10_keyboard_interrupt_while_loading_still_interrupts(tmp_path, monkeypatch, clean_registry):
    install(tmp_path, monkeypatch, {"int": f"{PKG}.interrupt"},
            {"interrupt.py": OPS_MODULE + "raise KeyboardInterrupt\n"})
    with pytest.raises(KeyboardInterrupt):
        "conv" in PRIMITIVES
    assert "swish_beta" not in OPS


@pytest.mark.parametrize("command", ["check", "compile"])
def test_m10_cli_with_a_plugin_that_calls_sys_exit_0_exits_2(tmp_path, monkeypatch, clean_registry, command):
    install(tmp_path, monkeypatch, {"quit": f"{PKG}.quit"}, {"quit.py": "import sys\nsys.exit(0)\n"})
    spec = tmp_path / "net.arch"
    spec.write_text("network n() { input(3, 8, 8) stem { conv(4, 3) } head { gap linear(2) } }\n")
    done = CliRunner().invoke(app, [command, str(spec)])
    assert done.exit_code == 2, done.output
    assert f"quit = {PKG}.quit" in done.output and "sys.exit(0)" in done.output
    assert "Traceback" not in done.output and "internal error" not in done.output


# A plugin op whose rules fail when its argument `mode` says so: each hook can be made to raise.
FAULTY = '''
import sys
from archspec.plugins import Op, OpArgs, ShapeError, register_op


class FaultyArgs(OpArgs):
    mode: str = "ok"


def fail(a, hook):
    if a.mode == hook + ":zero":
        return 1 // 0
    if a.mode == hook + ":exit":
        sys.exit(3)
    if a.mode == hook + ":shape":
        raise ShapeError("faulty takes no such input")


@register_op
class Faulty(Op):
    kind = "faulty"
    Args = FaultyArgs

    @classmethod
    def shape(cls, ins, a):
        fail(a, "shape")
        return ins[0]

    @classmethod
    def params(cls, ins, a):
        fail(a, "params")
        return 0

    @classmethod
    def lower(cls, args, ins):
        fail(args, "lower")
        return None
'''


def _net(mode: str) -> str:
    return (f'network n() {{\n  input(3, 8, 8)\n  stem {{ conv(4, 3) faulty(mode="{mode}") }}\n'
            "  head { gap linear(2) }\n}\n")


@pytest.fixture
def faulty(tmp_path, monkeypatch, clean_registry):
    install(tmp_path, monkeypatch, {"faulty": f"{PKG}.faulty"}, {"faulty.py": FAULTY})
    return tmp_path


@pytest.mark.parametrize("mode, why", [("shape:zero", "ZeroDivisionError"), ("shape:exit", "sys.exit(3)"),
                                       ("params:zero", "ZeroDivisionError"), ("lower:zero", "ZeroDivisionError"),
                                       ("lower:exit", "sys.exit(3)")])
def test_m10_an_error_inside_a_plugin_op_names_the_plugin(faulty, mode, why):
    hook = mode.split(":")[0]
    with pytest.raises(PluginError) as e:
        archspec.summary(_net(mode)) if hook != "lower" else archspec.build(_net(mode))
    msg = e.value.message
    assert "plugin op 'faulty'" in msg and f"Faulty.{hook}" in msg and why in msg
    assert f"faulty = {PKG}.faulty ({PKG} 0.1)" in msg  # the entry point and its distribution
    assert f"pip uninstall {PKG}" in e.value.hint and "not in archspec" in e.value.hint


def test_m10_cli_reports_a_failing_plugin_op_with_exit_2_not_as_a_bug_in_archspec(faulty):
    spec = faulty / "net.arch"
    spec.write_text(_net("shape:zero"))
    done = CliRunner().invoke(app, ["check", str(spec)])
    assert done.exit_code == 2, done.output
    assert "plugin op 'faulty'" in done.output and "internal error" not in done.output
    assert "bug in archspec" not in done.output and "Traceback" not in done.output


def test_m10_a_shape_error_of_a_plugin_op_stays_a_located_spec_error(faulty):
    with pytest.raises(SpecError) as e:
        archspec.network(_net("shape:shape"))
    assert not isinstance(e.value, PluginError)
    assert "faulty takes no such input" in e.value.message and e.value.loc is not None and e.value.loc.line == 3


def test_m10_a_working_plugin_op_is_unchanged_by_the_guard(faulty):
    s = archspec.summary(_net("ok"))
    assert s.ops["faulty"] == 1
    assert OPS["faulty"].shape([(4, 6, 6)], OPS["faulty"].Args()) == (4, 6, 6)


def test_m10_an_op_registered_in_process_is_guarded_and_named_by_its_module(clean_registry):
    class Broken(Op):
        kind = "broken_in_process"

        @classmethod
        def params(cls, ins, a):
            raise KeyError("weights")

    assert register_op(Broken) is Broken  # the same class, its hooks wrapped in place
    with pytest.raises(PluginError, match=rf"broken_in_process.*module {__name__}.*KeyError"):
        archspec.summary("network n() { input(3, 4, 4) broken_in_process }")


def test_m10_guarded_turns_a_stray_sys_exit_into_exit_2(capsys):
    with pytest.raises(typer.Exit) as e:
        guarded(lambda: sys.exit(0))
    assert e.value.exit_code == 2
    assert "sys.exit(0)" in capsys.readouterr().err

    class Stop(BaseException):
        pass

    def stop():
        raise Stop("halt")

    with pytest.raises(typer.Exit) as e:
        guarded(stop)
    assert e.value.exit_code == 2
    assert "Stop: halt" in capsys.readouterr().err
