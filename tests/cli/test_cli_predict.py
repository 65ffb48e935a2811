"""`archspec predict` on the command line: the top classes per image as lines or as JSON, a note where the
preprocessing is assumed, and exit code 2 with one line for what it cannot read."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from archspec.cli import app
from archspec.compiler.codegen import to_module
from archspec.graph.elaborate import elaborate
from archspec.runtime import data as D
from archspec.runtime.train import checkpoint as ckpt
from archspec.runtime.train.specfiles import read_spec, spec_files
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny digits network saved as a run's checkpoint, twice: once trained on the digits, once on
    a folder elsewhere (its path recorded, never followed); and three digit images."""
    root = tmp_path_factory.mktemp("cli-predict")
    net = elaborate(read_spec(TINY), {"n": 1, "w": 4})
    torch.manual_seed(0)
    model = to_module(net).eval()
    files, main = spec_files(read_spec(TINY))
    base = {"network": net.name, "params": net.params, "files": files, "main": main, "seed": 0}
    for name, meta in (("digits", {"data": "digits", "data_source": None}),
                       ("elsewhere", {"data": "folder:/nowhere/data", "data_source": "/nowhere/data"})):
        ckpt.save(root / f"{name}.safetensors", ckpt.Checkpoint(model=model.state_dict(), optimizer=None,
                                                               scheduler=None, epoch=1, rng={}, meta={**base, **meta}))
    ds = D.load(None)
    (root / "images").mkdir()
    for i in range(3):
        Image.fromarray(ds.test_x[i, 0].numpy(), "L").save(root / "images" / f"{i}.png")
    return root


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_lines_and_json(run):
    r = _invoke("predict", run / "digits.safetensors", run / "images", "--topk", "3")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert [line for line in lines if not line.startswith("  ")] == [str(run / "images" / f"{i}.png") for i in range(3)]
    rows = [line.split() for line in lines if line.startswith("  ")]
    assert len(rows) == 9 and all(0 <= float(p) <= 1 and c in {str(d) for d in range(10)} for p, c in rows)
    assert "records no preprocessing" not in r.output  # the digits' own statistics, recomputed
    r = _invoke("predict", run / "digits.safetensors", run / "images" / "2.png", run / "images" / "0.png", "--json")
    assert r.exit_code == 0, r.output
    results = json.loads(r.output)
    assert [x["image"] for x in results] == [str(run / "images" / "2.png"), str(run / "images" / "0.png")]
    assert all(len(x["top"]) == 5 for x in results)
    every = json.loads(_invoke("predict", run / "digits.safetensors", run / "images" / "1.png", "--json", "--topk",
                               "99").output)[0]["top"]  # at most every class
    assert len(every) == 10 and sum(t["probability"] for t in every) == pytest.approx(1)


def test_assumed_preprocessing_is_said(run):
    r = _invoke("predict", run / "elsewhere.safetensors", run / "images", "--topk", "1")
    assert r.exit_code == 0, r.output
    assert "records no preprocessing: assuming mean" in r.output and "/nowhere" not in r.output


@pytest.mark.parametrize("args, words", [
    (["{run}/digits.safetensors", "{run}/missing.png"], "no image or folder at"),
    (["{run}/model.pth", "{run}/images"], "predict reads a checkpoint (.safetensors)"),
    (["{run}/missing.safetensors", "{run}/images"], "missing.safetensors"),
    (["{run}/digits.safetensors", "{run}/images", "--topk", "0"], "--topk"),
    (["{run}/images/0.png", "{run}/images"], "predict reads a checkpoint"),
])
def test_what_it_cannot_read_exits_2(run, args, words):
    r = _invoke("predict", *[a.format(run=run) for a in args])
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output


def test_an_exported_checkpoint_predicts_as_the_checkpoint(run, tmp_path):
    """`archspec export` writes the checkpoint's class names and preprocessing into the program, so
    predict on the program needs nothing else and agrees with the checkpoint."""
    r = _invoke("export", run / "digits.safetensors", "--format", "pt2", "--dynamic-batch", "1:2:4",
                "-o", tmp_path / "m.pt2")
    assert r.exit_code == 0, r.output
    want, got = (json.loads(_invoke("predict", f, run / "images", "--json", "--topk", "10").output)
                 for f in (run / "digits.safetensors", tmp_path / "m.pt2"))
    assert [x["image"] for x in got] == [x["image"] for x in want]
    for a, b in zip(got, want):
        probs = {t["index"]: t["probability"] for t in b["top"]}
        assert all(abs(t["probability"] - probs[t["index"]]) <= 1e-5 for t in a["top"]) and len(a["top"]) == 10
