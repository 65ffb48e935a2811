"""User ops without editing archspec: a package installed on the path (a `*.dist-info` with entry points
in the group `archspec.ops`) adds words a spec can use, and they compile, count, train and export like
archspec's own; `register_op` does the same in one process. Broken plugins are named in a clear error
and leave nothing registered; a spec never makes anything be imported."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from pydantic import Field
from rich.console import Console
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.graph.vocabulary import OPS, PRIMITIVES, reset_plugins
from archspec.errors import SpecError
from archspec.plugins import GROUP, Op, OpArgs, PluginError, loaded_plugins, register_op, unregister_op
from archspec.runtime.export import ExportOptions, export_model

PKG = "archspec_testops"

OPS_MODULE = '''
"""Test plugin: swish with a learned β per channel."""
from pydantic import Field

from archspec.plugins import Op, OpArgs, register_op


class SwishBetaArgs(OpArgs):
    beta: float = Field(1.0, gt=0)


@register_op
class SwishBeta(Op):
    kind = "swish_beta"
    Args = SwishBetaArgs

    @classmethod
    def params(cls, ins, a):
        return ins[0][0]

    @classmethod
    def macs(cls, ins, out, a):
        n = 1
        for d in ins[0]:
            n *= d
        return n

    @classmethod
    def lower(cls, args, ins):
        from .modules import SwishBeta as Module

        return Module(ins[0][0], args.beta)

    @classmethod
    def source(cls, m):
        return f"SwishBeta({m.beta.numel()}, 1.0)"

    @classmethod
    def initialise(cls, m, a):
        m.beta.fill_(a.beta)
'''

MODULES = '''
import torch
from torch import nn


class SwishBeta(nn.Module):
    def __init__(self, channels, beta):
        super().__init__()
        self.beta = nn.Parameter(torch.full((channels,), float(beta)))

    def forward(self, x):
        b = self.beta.view(1, -1, *([1] * (x.dim() - 2)))
        return x * torch.sigmoid(b * x)
'''

SCALE_MODULE = '''
"""Test plugin: an op class the entry point names directly (no decorator)."""
from archspec.plugins import Op, OpArgs


class ScaleArgs(OpArgs):
    value: float


class Scale(Op):
    kind = "amplify"
    Args = ScaleArgs

    @classmethod
    def lower(cls, args, ins):
        import torch

        return torch.mul, (args.value,), {}
'''

GOOD = {"swish": f"{PKG}.ops", "scale": f"{PKG}.scale:Scale"}

SPEC = """
layer unit(c: int) { conv(c, 3, padding=1) bn swish_beta amplify(0.5) }
network plugged(classes: int = 3) {
  input(3, 8, 8)
  stem { conv(8, 3, padding=1) bn swish_beta(beta=2.0) }
  block residual { unit(8) }
  head { gap linear(classes) }
}
"""


@pytest.fixture
def clean_registry():
    """Whatever a test registers or loads is gone after it: the op table as it was, no plugin loaded,
    the test package's modules unimported."""
    before = dict(OPS)
    reset_plugins()
    yield
    reset_plugins()
    OPS.clear()
    OPS.update(before)
    for name in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
        del sys.modules[name]


def install(root, monkeypatch, entry_points: dict[str, str], files: dict[str, str] | None = None) -> None:
    """A package `archspec_testops` on the path, as pip would leave it: its modules and a dist-info whose
    entry_points.txt declares `entry_points` in the archspec.ops group."""
    files = {"__init__.py": "", "ops.py": OPS_MODULE, "modules.py": MODULES, "scale.py": SCALE_MODULE,
             **(files or {})}
    pkg = root / PKG
    pkg.mkdir()
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    dist = root / f"{PKG}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PKG}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(root))
    reset_plugins()  # scan again, now with this package installed


@pytest.fixture
def plugged(tmp_path, monkeypatch, clean_registry):
    install(tmp_path, monkeypatch, GOOD)
    return tmp_path


def test_installed_plugin_ops_are_words(plugged):
    assert "swish_beta" in PRIMITIVES and "amplify" in PRIMITIVES  # the first read loads the entry points
    assert {k: set(v) for k, v in loaded_plugins().items()} == {
        f"scale = {PKG}.scale:Scale ({PKG} 0.1)": {"amplify"}, f"swish = {PKG}.ops ({PKG} 0.1)": {"swish_beta"}}


def test_plugin_op_compiles_counts_and_initialises(plugged, one_thread):
    s = archspec.summary(SPEC)
    torch.manual_seed(0)
    gm = archspec.build(SPEC)
    assert s.params == sum(p.numel() for p in gm.parameters())
    assert s.ops["swish_beta"] == 2 and s.ops["amplify"] == 1
    assert s.macs >= 2 * 8 * 8 * 8  # the plugin's MAC rule is counted
    betas = {n.split(".")[0]: p for n, p in gm.named_parameters() if n.endswith("beta")}
    assert sorted(betas) == ["block1", "stem"]
    assert torch.equal(betas["stem"], torch.full((8,), 2.0))  # the op's initialise ran
    assert torch.equal(betas["block1"], torch.ones(8))
    ops = [n.meta["op"] for n in gm.graph.nodes if n.op in ("call_module", "call_function")]
    assert "swish_beta" in ops and "amplify" in ops


def test_plugin_op_trains_one_step(plugged, one_thread):
    torch.manual_seed(0)
    gm = archspec.build(SPEC)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(gm.parameters(), lr=0.5)
    before = {n: p.detach().clone() for n, p in gm.named_parameters()}
    loss = torch.nn.functional.cross_entropy(gm(x), y)
    loss.backward()
    name, beta = next((n, p) for n, p in gm.named_parameters() if n.startswith("block1") and n.endswith("beta"))
    assert beta.grad is not None and beta.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(beta.detach(), before[name])
    assert torch.nn.functional.cross_entropy(gm(x), y) < loss  # a step downhill on the same batch


def test_plugin_op_exports_to_pt2(plugged, tmp_path, one_thread):
    net = archspec.network(SPEC)
    torch.manual_seed(0)
    gm = archspec.build(net)
    with torch.no_grad():
        for p in gm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = export_model(net, gm, ExportOptions("pt2", tmp_path / "plugged.pt2", batch=2), Console(quiet=True))
    program = torch.export.load(str(out)).module()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(program(x), gm.eval()(x), rtol=1e-5, atol=1e-5)


def test_unknown_word_suggests_the_plugin_op(plugged):
    with pytest.raises(SpecError) as e:
        archspec.network(SPEC.replace("swish_beta amplify", "swish_betta amplify"))
    assert e.value.message == "unknown layer or op 'swish_betta'"
    assert "swish_beta" in e.value.hint
    assert e.value.loc is not None and e.value.loc.line == 2


def test_a_spec_never_imports_a_package_that_is_not_installed_as_a_plugin(tmp_path, monkeypatch, clean_registry):
    install(tmp_path, monkeypatch, {"scale": f"{PKG}.scale:Scale"})  # ops.py is on the path, not declared
    with pytest.raises(SpecError, match="unknown layer or op 'swish_beta'"):
        archspec.network(SPEC)
    assert f"{PKG}.ops" not in sys.modules and "swish_beta" not in OPS


def test_cli_compiles_with_a_plugin(plugged):
    spec = plugged / "plugged.arch"
    spec.write_text(SPEC)
    done = CliRunner().invoke(app, ["compile", str(spec)])
    assert done.exit_code == 0, done.output
    assert "plugged" in done.output


def test_standalone_file_of_a_plugin_op_builds(plugged, tmp_path):
    """`compile -o` writes a file that imports the plugin's own module class (it carried only archspec's,
    and building the file raised NameError); the file builds, loads the weights and computes the same."""
    import os
    import subprocess

    spec = plugged / "plugged.arch"
    spec.write_text(SPEC)
    out = tmp_path / "model.py"
    done = CliRunner().invoke(app, ["compile", str(spec), "-o", str(out)])
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert f"from {PKG}.modules import SwishBeta" in text and f"Needs torch and {PKG}." in text
    torch.manual_seed(0)
    gm = archspec.build(SPEC).eval()
    x = torch.randn(2, 3, 8, 8)
    torch.save({"state": gm.state_dict(), "x": x, "y": gm(x)}, tmp_path / "io.pt")
    script = f"""
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("model", r"{out}")
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
net = mod.{type(gm).__name__}().eval()
io = torch.load(r"{tmp_path / 'io.pt'}", weights_only=True)
net.load_state_dict(io["state"])
torch.testing.assert_close(net(io["x"]), io["y"])
print(sorted(m for m in sys.modules if m.startswith("archspec")))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugged), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[-2] == f"['{PKG}', '{PKG}.modules']"  # the plugin's module, not archspec


def test_a_plugin_lowers_by_dotted_path(plugged):
    """The documented form: `lower` names the module class (`Build`) or function (`Call`) by path, and the
    op's own module never imports torch."""
    from archspec.plugins import Build, Call

    class Swish2(Op):
        kind = "swish_by_path"

        @classmethod
        def params(cls, ins, a):
            return ins[0][0]

        @classmethod
        def lower(cls, args, ins):
            return Build(f"{PKG}.modules.SwishBeta", (ins[0][0], 2.0))

    class Halve(Op):
        kind = "halve_by_path"

        @classmethod
        def lower(cls, args, ins):
            return Call("torch.mul", (0.5,))

    register_op(Swish2)
    register_op(Halve)
    text = ("network n() { input(3, 4, 4) stem { conv(4, 3, padding=1) swish_by_path halve_by_path } "
            "head { gap linear(2) } }")
    gm = archspec.build(text)
    assert type(gm.get_submodule("stem.swish_by_path1")).__name__ == "SwishBeta"
    halve = next(n for n in gm.graph.nodes if n.meta.get("op") == "halve_by_path")
    assert halve.target is torch.mul and halve.args[1:] == (0.5,)
    x = torch.randn(2, 3, 4, 4)
    conv = gm.get_submodule("stem.conv1")
    y = conv(x)
    torch.testing.assert_close(gm.get_submodule("stem.swish_by_path1")(y) * 0.5,
                               0.5 * y * torch.sigmoid(2.0 * y))
    assert archspec.summary(text).params == sum(p.numel() for p in gm.parameters())


@pytest.mark.parametrize("entry, files, words", [
    ("broken = archspec_testops.missing", {}, ["broken = archspec_testops.missing", "ModuleNotFoundError"]),
    ("boom = archspec_testops.boom", {"boom.py": "raise RuntimeError('no GPU here')"},
     ["boom = archspec_testops.boom", "RuntimeError: no GPU here"]),
    ("dup = archspec_testops.dup", {"dup.py": "from archspec.plugins import Op, register_op\n"
                                              "@register_op\nclass R(Op):\n    kind = 'relu'\n"},
     ["dup = archspec_testops.dup", "op 'relu' is registered twice"]),
    ("notop = archspec_testops.ops:SwishBetaArgs", {}, ["notop", "not a module or an Op, Pattern or Merge subclass"]),
    ("empty = archspec_testops.modules", {}, ["empty", "registers no op, pattern or merge"]),
    ("word = archspec_testops.word:Dense", {"word.py": "from archspec.plugins import Op\n"
                                                       "class Dense(Op):\n    kind = 'dense'\n"},
     ["word", "'dense' is a connection pattern"]),
])
def test_a_broken_plugin_is_named_and_leaves_nothing_registered(tmp_path, monkeypatch, clean_registry,
                                                                entry, files, words):
    name, value = (s.strip() for s in entry.split("="))
    install(tmp_path, monkeypatch, {name: value, "swish": f"{PKG}.ops"}, files)
    with pytest.raises(PluginError) as e:
        archspec.network(SPEC)
    for w in words:
        assert w in e.value.message
    assert PKG in e.value.hint  # which distribution to fix or uninstall
    kinds = set(OPS)
    with pytest.raises(PluginError):  # still broken: reported again, not half-loaded
        "conv" in PRIMITIVES
    assert set(OPS) == kinds


def test_a_plugin_that_registers_then_fails_is_rolled_back(tmp_path, monkeypatch, clean_registry):
    half = OPS_MODULE + "\nraise ImportError('half done')\n"
    install(tmp_path, monkeypatch, {"half": f"{PKG}.half"}, {"half.py": half})
    with pytest.raises(PluginError, match="half done"):
        "conv" in PRIMITIVES
    assert "swish_beta" not in OPS


def test_cli_reports_a_broken_plugin_with_exit_2(tmp_path, monkeypatch, clean_registry):
    install(tmp_path, monkeypatch, {"broken": f"{PKG}.missing"})
    spec = tmp_path / "plugged.arch"
    spec.write_text(SPEC)
    done = CliRunner().invoke(app, ["check", str(spec)])
    assert done.exit_code == 2
    assert "broken = archspec_testops.missing" in done.output and "Traceback" not in done.output


class ShiftArgs(OpArgs):
    by: float = Field(0.0)


def test_register_op_in_process_and_unregister(clean_registry):
    spec = "network n() {\n  input(2, 4, 4)\n  shift_by(1.5)\n}\n"

    @register_op
    class Shift(Op):
        kind = "shift_by"
        Args = ShiftArgs

        @classmethod
        def lower(cls, args, ins):
            return torch.add, (args.by,), {}

    gm = archspec.build(spec)
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(gm(x), x + 1.5)
    with pytest.raises(PluginError, match="registered twice"):
        register_op(Shift)
    assert unregister_op("shift_by") is Shift
    with pytest.raises(SpecError, match="unknown layer or op 'shift_by'"):
        archspec.network(spec)
    with pytest.raises(PluginError, match="archspec's own"):
        unregister_op("conv")


@pytest.mark.parametrize("kind, words", [("let", "keyword"), ("residual", "connection pattern"),
                                          ("concat", "merge"), ("max", "function"), ("shortcut", "built-in"),
                                          ("two words", "not a name"), ("1x", "not a name")])
def test_register_op_refuses_a_kind_a_spec_cannot_call(kind, words, clean_registry):
    bad = type("Bad", (Op,), {"kind": kind})
    with pytest.raises(PluginError, match=words):
        register_op(bad)
    assert OPS.get(kind) is not bad


def test_register_op_refuses_what_is_not_an_op(clean_registry):
    with pytest.raises(PluginError, match="not an op"):
        register_op(int)
    with pytest.raises(PluginError, match="no `kind`"):
        register_op(type("NoKind", (Op,), {}))
    with pytest.raises(PluginError, match="OpArgs"):
        register_op(type("BadArgs", (Op,), {"kind": "bad_args", "Args": dict}))
    assert "bad_args" not in OPS


def test_loading_plugins_and_elaborating_with_them_never_loads_torch(plugged):
    import os
    import subprocess

    code = ("import sys\nfrom archspec.graph.elaborate import elaborate\nfrom archspec.language.loader import load\n"
            f"net = elaborate(load({SPEC!r}))\n"
            "print(sorted(n.op for n in net.nodes() if n.op in ('swish_beta', 'amplify')), 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugged), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['amplify', 'swish_beta', 'swish_beta'] False"


def test_register_op_is_public_and_torch_free():
    import subprocess
    code = "import sys; from archspec import register_op; print(register_op.__module__, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["archspec.graph.vocabulary", "False"], done.stderr
    import archspec
    from archspec.compiler.transfer import transfer_weights
    assert archspec.transfer_weights is transfer_weights
