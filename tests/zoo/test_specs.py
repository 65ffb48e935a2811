"""Every shipped spec, by name: the reference's parameter counts and MACs from the graph alone; a built
module that holds exactly those parameters, runs, and costs the MACs torch's flop counter counts; and a
standalone file (`archspec compile -o`) with the same weights as `archspec.build`, for one spec of each
library file, which together use every op of the shipped specs."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

import archspec
import archspec.compiler.modules
from archspec import library
from archspec.cli import app
from conftest import SPECS, built, network_of
from reference_counts import BY_NAME, REFERENCE, Reference, Variant

# Real builds above this many parameters are left to the full run (`slow`): the quick loop keeps the
# smaller members of the families, and the round trip of every library file (below).
QUICK_UP_TO = 10_000_000

# One spec of each library file, the cheapest to build, and mobilenet_v2 (the only relu6): at the overrides
# given here (narrower members of the same family) or else the spec's quick ones (`Reference.small`).
ROUND_TRIP = {
    "alexnet": dict(widths=[8, 16, 16, 16, 16], hidden=32, size=64),
    "convnext_tiny": dict(depths=[1, 1, 2, 1], widths=[16, 32, 64, 128], size=64),
    "densenet121": dict(size=64), "densenet40_k12": {}, "efficientnet_b0": dict(size=64),
    "googlenet": dict(size=64), "gunn15": dict(widths=[8, 8, 8], segments=[2, 2, 2]),
    "inception_v3": dict(size=75), "mnasnet0_5": dict(size=64), "mobilenet_v2": dict(size=64),
    "mobilenet_v3_small": dict(size=64), "regnet_y_400mf": dict(size=64), "resnet18": dict(size=64),
    "resnetlike146": {}, "seqresnetb_k16r7": {}, "shufflenet_v2_x1_0": dict(size=64),
    "squeezenet1_1": dict(size=64), "tiny_delugenet": {},
    "vgg11": dict(widths=[8, 8, 16, 16, 16], hidden=32, size=32),
    # the cross-layer zoo
    "hardnet39ds": dict(size=64),
    "vovnet57a": dict(stem_widths=[8, 8, 16], mids=[8, 8, 8, 8], outs=[16, 16, 16, 16], blocks=[1, 2, 1, 1], layers=2,
                      size=64),
    "selecsls60": dict(mids=[8, 16, 16], outs=[[8, 16], [16, 16, 16], [16, 16]], top=[[16, 3, 2], [16, 1, 1]], size=64),
    "res2next50": dict(blocks=[1, 2, 1, 1], widths=[16, 32, 32, 64], size=32),
    "cspresnext50": dict(depths=[1, 1, 1, 1], widths=[64, 128, 128, 256], groups=8, size=32),
    "fractalnet40": dict(columns=3, width=4),
    "dla60": dict(widths=[8, 8, 16, 16, 32, 32], size=32),
    "dpn92": dict(depths=[1, 2, 1, 1], incs=[4, 4, 4, 8], widths=[16, 16, 32, 32], k_r=8, groups=4, stem_width=8, size=32),
    "hrnet_w18_small_v2": dict(widths=[4, 8, 8, 16], incre=[4, 4, 8, 8], features=32, stage1_width=8, stage1_blocks=1,
                               blocks=1, modules=[1, 1, 1], size=32),
}


def _macs_match(macs: int, want: int | str) -> bool:
    """Exact MACs, or the reference's rounding of a giga-MAC to its own decimals."""
    if isinstance(want, int):
        return macs == want
    decimals = len(want.removesuffix("G").partition(".")[2])
    return f"{macs / 1e9:.{decimals}f}G" == want


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
    s = archspec.summary(network_of(ref.spec))
    assert s.network == ref.spec
    assert (s.params, s.input_shape, s.output_shape) == (ref.params, ref.input, (ref.classes,))
    if ref.macs is not None:
        assert _macs_match(s.macs, ref.macs), s.macs


def _shown(overrides: dict) -> str:
    return ",".join(f"{k}={f'[{len(v)} rows]' if isinstance(v, list) else v}" for k, v in overrides.items())


VARIANTS = [(r.spec, v) for r in REFERENCE for v in r.variants]


@pytest.mark.parametrize("spec,variant", VARIANTS, ids=[f"{s}-{_shown(v.overrides)}" for s, v in VARIANTS])
def test_reference_count_of_variant(spec: str, variant: Variant):
    s = archspec.summary(spec, **variant.overrides)
    assert s.params == variant.params
    assert s.output_shape == (variant.overrides.get("classes", BY_NAME[spec].classes),)
    if variant.macs is not None:
        assert _macs_match(s.macs, variant.macs), s.macs


def _import(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _round_trip_sets(name: str) -> dict:
    return ROUND_TRIP[name] or BY_NAME[name].small


# before the build test below: its builds of these specs are then the ones `built` keeps
@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_standalone_file_round_trip(name: str, tmp_path, monkeypatch):
    """`archspec compile NAME -o model.py` from another folder: the file's module has the parameters and
    buffers of `archspec.build`, by name and shape, and computes the same function with its weights."""
    monkeypatch.chdir(tmp_path)
    overrides = _round_trip_sets(name)
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    r = CliRunner().invoke(app, ["compile", name, *sets, "-o", "model.py"])
    assert r.exit_code == 0, r.output
    module = _import(tmp_path / "model.py")
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == module.__name__ and not hasattr(archspec.compiler.modules, v.__name__)]
    assert len(classes) == 1  # the network's own class; the others are compiler.modules' carried along
    standalone, gm = classes[0]().eval(), built(name, **overrides)
    assert ({k: v.shape for k, v in standalone.state_dict().items()}
            == {k: v.shape for k, v in gm.state_dict().items()})
    standalone.load_state_dict(gm.state_dict())
    x = torch.randn(2, *archspec.summary(network_of(name, **overrides)).input_shape)
    with torch.no_grad():
        torch.testing.assert_close(standalone(x), gm(x))


def _library_file(name: str) -> str:
    return re.search(r'use "lib/(\w+)\.arch"', (SPECS / f"{name}.arch").read_text()).group(1)


def test_the_round_trips_cover_every_library_file_and_every_op():
    """What a standalone file holds is each op's module, by the op's `source`, and the wiring: the specs
    above cover every library file and every op any shipped spec uses."""
    assert {_library_file(n) for n in ROUND_TRIP} == {_library_file(r.spec) for r in REFERENCE}
    covered = {n.op for name in ROUND_TRIP for n in network_of(name, **_round_trip_sets(name)).nodes()}
    used = {n.op for r in REFERENCE for n in network_of(r.spec, **r.small).nodes()}
    assert used - covered == set()


@pytest.mark.parametrize("ref", [pytest.param(r, id=r.spec, marks=[pytest.mark.slow] * (r.params > QUICK_UP_TO))
                                 for r in REFERENCE])
def test_built_module_holds_the_count_and_runs(ref: Reference):
    """ImageNet specs build at 64×64: global pooling keeps every weight, and the MACs follow the input. A
    batch of 2 runs to finite outputs, and torch's flop counter counts twice the summary's MACs for each.
    The quick loop builds the members up to QUICK_UP_TO parameters (and every library file by its round
    trip, below); the full run builds them all."""
    s = archspec.summary(network_of(ref.spec, **ref.small))
    gm = built(ref.spec, **ref.small)
    assert sum(p.numel() for p in gm.parameters()) == s.params == ref.params
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        y = gm(torch.randn(2, *s.input_shape))
    assert y.shape == (2, ref.classes) and torch.isfinite(y).all()
    assert fc.get_total_flops() == 2 * 2 * s.macs
