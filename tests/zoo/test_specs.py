"""Every shipped spec, by name: the reference's parameter counts and MACs from the graph alone, a built
module that holds exactly those parameters and runs, and a standalone file (`archspec compile -o`) with
the same weights as `archspec.build`."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

import archspec
import archspec.compiler.modules
from archspec import library
from archspec.cli import app
from conftest import SPECS
from reference_counts import BY_NAME, REFERENCE, Reference, Variant

pytestmark = pytest.mark.usefixtures("one_thread")

# round trips of 3 s or more of CPU (over 5 s on a busy 2-core machine), and of every model over 60M parameters:
# left out by `-m "not slow"`
SLOW_ROUND_TRIP = {"delugenet143", "delugenet152", "densenet_bc190_k40", "gunn18", "gunn24", "sunn18", "sunn24",
                   "wide_gunn18", "seqresnetb42", "seqresnetb_k32r12n3", "seqresnext24", "resnet101", "wide_resnet50_2",
                   "vgg11_bn", "vgg16_bn", "densenet121", "densenet161", "densenet169", "densenet201", "convnext_small",
                   "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2", "alexnet", "vgg11", "vgg13",
                   "vgg13_bn", "vgg16", "vgg19", "vgg19_bn", "convnext_base", "efficientnet_v2_m"}


def _macs_match(macs: int, want: int | str) -> bool:
    """Exact MACs, or the reference's rounding to three decimals of a giga-MAC."""
    return macs == want if isinstance(want, int) else f"{macs / 1e9:.3f}G" == want


def test_every_shipped_spec_has_a_reference():
    shipped = sorted(p.stem for p in SPECS.glob("*.arch"))
    assert shipped == library.names()
    assert shipped == sorted(r.spec for r in REFERENCE)


def test_models_by_name_from_any_folder(tmp_path, monkeypatch):
    """A name reads the installed library; a path and spec text still work, and a file in the working
    folder is read as the file even when a model has its name."""
    monkeypatch.chdir(tmp_path)
    want = BY_NAME["delugenet146"].params
    assert archspec.summary("delugenet146").params == want
    net = archspec.network("delugenet146", classes=100)
    assert archspec.summary(net).params == BY_NAME["delugenet146"].variants[0].params
    assert sum(p.numel() for p in archspec.build("tiny_delugenet").parameters()) == BY_NAME["tiny_delugenet"].params
    assert archspec.summary(SPECS / "delugenet146.arch").params == want
    assert archspec.summary(str(SPECS / "delugenet146.arch")).params == want
    assert archspec.parse(f'use "{SPECS}/lib/delugenet.arch"\nnetwork d = delugenet_cifar(n=8)').main == "d"
    (tmp_path / "gunn15").write_text("network mine() {\n  input(3, 8, 8)\n  conv(4, 1)\n}\n")
    assert archspec.summary("gunn15").params == 12


@pytest.mark.parametrize("name,closest", [("delugenet14", "delugenet146"), ("Gunn-15", "gunn15"),
                                          ("wrn28", "wrn28_10")])
def test_unknown_model_name_suggests_the_closest(name, closest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(archspec.SpecError) as e:
        archspec.network(name)
    assert e.value.message == f"no spec file or shipped model named '{name}'"
    assert f"'{closest}'" in e.value.hint and "archspec list" in e.value.hint


def test_a_missing_path_is_reported_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in ("specs/delugenet146.arch", "delugenet146.arch", "lib/x"):
        with pytest.raises(archspec.SpecError) as e:
            archspec.network(path)
        assert e.value.message == f"no such spec file: {path}"


@pytest.mark.parametrize("ref", REFERENCE, ids=[r.spec for r in REFERENCE])
def test_reference_count(ref: Reference):
    s = archspec.summary(ref.spec)
    assert s.network == ref.spec
    assert (s.params, s.input_shape, s.output_shape) == (ref.params, ref.input, (ref.classes,))
    if ref.macs is not None:
        assert _macs_match(s.macs, ref.macs), s.macs


VARIANTS = [(r.spec, v) for r in REFERENCE for v in r.variants]


@pytest.mark.parametrize("spec,variant", VARIANTS, ids=[f"{s}-{v.overrides}" for s, v in VARIANTS])
def test_reference_count_of_variant(spec: str, variant: Variant):
    s = archspec.summary(spec, **variant.overrides)
    assert s.params == variant.params
    assert s.output_shape == (variant.overrides.get("classes", BY_NAME[spec].classes),)
    if variant.macs is not None:
        assert _macs_match(s.macs, variant.macs), s.macs


@pytest.mark.parametrize("ref", REFERENCE, ids=[r.spec for r in REFERENCE])
def test_built_module_holds_the_count_and_runs(ref: Reference):
    """ImageNet specs build at 64×64: global pooling keeps every weight, and the MACs follow the input."""
    net = archspec.network(ref.spec, **ref.small)
    s = archspec.summary(net)
    gm = archspec.build(net).eval()
    assert sum(p.numel() for p in gm.parameters()) == s.params == ref.params
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        y = gm(torch.randn(1, *s.input_shape))
    assert y.shape == (1, ref.classes) and torch.isfinite(y).all()
    assert fc.get_total_flops() == 2 * s.macs


def _import(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("ref", [pytest.param(r, id=r.spec, marks=[pytest.mark.slow] * (r.spec in SLOW_ROUND_TRIP))
                                 for r in REFERENCE])
def test_standalone_file_round_trip(ref: Reference, tmp_path, monkeypatch):
    """`archspec compile NAME -o model.py` from another folder: the file's module has the parameters and
    buffers of `archspec.build`, by name and shape, and computes the same function with its weights."""
    monkeypatch.chdir(tmp_path)
    sets = [a for k, v in ref.small.items() for a in ("--set", f"{k}={v}")]
    r = CliRunner().invoke(app, ["compile", ref.spec, *sets, "-o", "model.py"])
    assert r.exit_code == 0, r.output
    module = _import(tmp_path / "model.py")
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == module.__name__ and not hasattr(archspec.compiler.modules, v.__name__)]
    assert len(classes) == 1  # the network's own class; the others are compiler.modules' carried along
    net = archspec.network(ref.spec, **ref.small)
    standalone, gm = classes[0]().eval(), archspec.build(net).eval()
    assert ({k: v.shape for k, v in standalone.state_dict().items()}
            == {k: v.shape for k, v in gm.state_dict().items()})
    standalone.load_state_dict(gm.state_dict())
    x = torch.randn(1, *archspec.summary(net).input_shape)
    with torch.no_grad():
        torch.testing.assert_close(standalone(x), gm(x))
