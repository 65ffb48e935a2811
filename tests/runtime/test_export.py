"""Export and inference benchmarks on the CPU (the inference form itself: test_fold_bn.py): each network
family exports to a torch.export program and to ONNX that match eager at both ends of a dynamic batch
range; a program loads with torch alone; checkpoints export with their trained weights; ONNX falls back
to the TorchScript-based exporter, whose graph is then optimised (by onnxscript, or by removing Identity
nodes where it is missing); bad options exit 2; the tensorrt extra pins the torch-tensorrt of this torch;
TensorRT is real code, run only where torch-tensorrt and CUDA are."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.errors import RunError
from archspec.runtime.bench.infer import run_bench_infer
from archspec.runtime.export import (BatchRange, ExportOptions, _verify, export_model, parse_dynamic_batch,
                                     tensorrt_requirement)
from archspec.runtime.train import TrainConfig, load_trained, model_from_source, train
from conftest import SPECS
from families import FAMILIES, _close, _family, _inputs, _perturbed

HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()
TINY = str(SPECS / "tiny_delugenet.arch")
TINY_SETS = ["--set", "n=1", "--set", "w=4"]

@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


# ---- pt2 and ONNX per family -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_exports_match_eager_over_a_dynamic_batch(family, tmp_path):
    import onnxruntime as ort

    net, model = _family(family)
    quiet = Console(quiet=True)
    pt2 = export_model(net, model, ExportOptions("pt2", tmp_path / "m.pt2", dynamic_batch="1:2:3"), quiet)
    onnx = export_model(net, model, ExportOptions("onnx", tmp_path / "m.onnx", dynamic_batch="1:2:3", verify=True),
                        quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt2"]  # no temporary left
    program = torch.export.load(str(pt2)).module()
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        x = _inputs(net, b, seed=b)
        with torch.no_grad():
            want = model(x)
            _close(program(x), want, 1e-5)
        _close(torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]), want, 1e-4)
    with pytest.raises(Exception, match="size"):  # the range is part of the program
        program(_inputs(net, 4))


@pytest.mark.slow
def test_pt2_loads_with_torch_alone(tmp_path):
    net, model = model_from_source(TINY, {"n": 1, "w": 4}, seed=0)  # CrossDepthwise merges
    model = _perturbed(model)
    export_model(net, model, ExportOptions("pt2", tmp_path / "tiny.pt2", dynamic_batch="1:4:8"), Console(quiet=True))
    x = _inputs(net, 5)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent("""
        import sys
        sys.modules["archspec"] = None  # whatever the installation, archspec cannot be imported here
        try:
            import archspec
        except ImportError:
            pass
        else:
            sys.exit(3)
        import torch
        program = torch.export.load("tiny.pt2").module()
        torch.save(program(torch.load("x.pt")), "y.pt")
        print(sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] == "archspec"))
    """)
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    with torch.no_grad():
        _close(torch.load(tmp_path / "y.pt"), model(x), 1e-5)


def test_pt2_half_precision_is_verified(tmp_path):
    net, model = _family("gunn")
    console = Console(record=True, width=200)
    export_model(net, model, ExportOptions("pt2", tmp_path / "g.pt2", batch=2, precision="fp16", verify=True), console)
    text = console.export_text()
    assert "max rel error" in text and "pt2 fp16 allows 0.01" in text
    program = torch.export.load(str(tmp_path / "g.pt2")).module()
    x = _inputs(net, 2)
    got = program(x.half())
    assert got.dtype == torch.float16
    with torch.no_grad():
        _close(got.float(), model(x), 1e-2)


def test_verify_fails_on_a_wrong_artefact(tmp_path):
    net, model = model_from_source(TINY, {"n": 1, "w": 4}, seed=0)
    model = _perturbed(model)
    wrong = lambda x: model(x) * (1 + 1e-3)  # noqa: E731
    with pytest.raises(RunError, match="above the 0.0001 allowed for onnx fp32"):
        _verify(wrong, model, tuple(net.shape(net.input)), BatchRange(1, 2, 3), torch.float32, torch.device("cpu"),
                "onnx", "fp32", tmp_path / "m.onnx", Console(quiet=True))
    rows = _verify(model, model, tuple(net.shape(net.input)), BatchRange(2, 2, 2), torch.float32,
                   torch.device("cpu"), "onnx", "fp32", tmp_path / "m.onnx", Console(quiet=True))
    assert [r["batch"] for r in rows] == [2] and rows[0]["max_abs_error"] == 0


# ---- options -----------------------------------------------------------------------------------------


def test_parse_dynamic_batch():
    assert parse_dynamic_batch("1:8:64") == BatchRange(1, 8, 64)
    r = parse_dynamic_batch(" 2 : 2 : 3 ")
    assert r.dynamic and r.checked == (2, 3) and r.example == 2
    assert BatchRange(1, 1, 8).example == 2 and BatchRange(4, 4, 4).example == 4
    for bad in ("8", "1:8", "a:b:c", "0:1:2", "4:2:8", "1:9:8", "4:4:4", "1:2:3:4", "1.5:2:3"):
        with pytest.raises(RunError):
            parse_dynamic_batch(bad)
    assert ExportOptions("pt2").batches == BatchRange(1, 1, 1)
    assert ExportOptions("pt2", batch=5, dynamic_batch="1:2:8").batches == BatchRange(1, 2, 8)


@pytest.mark.parametrize("args, words", [
    (["--format", "onx"], ["unknown export format 'onx'", "did you mean 'onnx'", "pt2, onnx, tensorrt"]),
    (["--format", "pt2", "--dynamic-batch", "8:4:2"], ["--dynamic-batch '8:4:2'", "MIN:OPT:MAX"]),
    (["--format", "pt2", "--dynamic-batch", "a:b:c"], ["whole numbers"]),
    (["--format", "pt2", "--dynamic-batch", "4:4:4"], ["not dynamic", "--batch 4"]),
    (["--format", "pt2", "--precision", "fp8"], ["unknown precision 'fp8'", "fp32, fp16, bf16"]),
    (["--format", "onnx", "--precision", "fp16"], ["onnx export is fp32", "tensorrt"]),
])
def test_cli_bad_options_exit_2(cli, tmp_path, args, words):
    result = cli("export", TINY, *TINY_SETS, "-o", tmp_path / "out.bin", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output, (w, result.output)
    assert list(tmp_path.iterdir()) == []


# ---- checkpoints -------------------------------------------------------------------------------------


def test_export_from_checkpoint(cli, tmp_path, monkeypatch):
    cfg = TrainConfig(spec=TINY, sets={"n": 1, "w": 4}, out=tmp_path / "run", epochs=1, batch_size=128,
                      progress=False, device="cpu")
    train(cfg, log=lambda m: None)
    ckpt = tmp_path / "run" / "last.safetensors"
    net, trained, _ = load_trained(ckpt)
    trained.eval()
    monkeypatch.chdir(tmp_path)
    result = cli("export", ckpt, "--format", "pt2", "--dynamic-batch", "1:2:4", "--verify")
    assert result.exit_code == 0, result.output
    assert "wrote tiny_delugenet.pt2" in result.output and "max rel error" in result.output
    x = _inputs(net, 4)
    fresh = archspec.build(net).eval()
    with torch.no_grad():
        want = trained(x)
        assert not torch.allclose(fresh(x), want)  # the trained weights are what distinguishes the export
        _close(torch.export.load("tiny_delugenet.pt2").module()(x), want, 1e-5)
    result = cli("export", ckpt, "--format", "pt2", "--set", "n=2")
    assert result.exit_code == 2 and "checkpoint carries its own parameters" in result.output


# ---- TensorRT ----------------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_TRT, reason="torch-tensorrt is installed: the missing-package message cannot show")
def test_cli_tensorrt_missing_exits_2(cli, tmp_path):
    result = cli("export", TINY, *TINY_SETS, "--format", "tensorrt", "-o", tmp_path / "t.ep")
    assert result.exit_code == 2, result.output
    assert "TensorRT export needs torch-tensorrt, which is not installed" in result.output
    assert f"pip install '{tensorrt_requirement()}'" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written in its place


def test_a_torch_tensorrt_for_another_torch_is_refused_with_the_one_to_install(cli, tmp_path, monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    other = f"{major}.{minor - 1}.1"
    monkeypatch.setattr(importlib.metadata, "version", lambda name: other if name == "torch-tensorrt" else real(name))
    result = cli("export", TINY, *TINY_SETS, "--format", "tensorrt", "-o", tmp_path / "t.ep")
    assert result.exit_code == 2, result.output
    assert f"torch-tensorrt {other} is installed, built for another torch" in result.output
    assert f"pip install 'torch-tensorrt>={major}.{minor},<{major}.{minor + 1}'" in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_tensorrt_extra_pins_the_torch_tensorrt_of_this_torch():
    """The extra names the torch-tensorrt releases built for the installed torch's minor version (each
    release requires one torch minor version); a newer torch needs the pin moved with it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on

    from conftest import ROOT

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert config["tensorrt"] == [tensorrt_requirement()]
    assert tensorrt_requirement("2.9.1+cu126") == "torch-tensorrt>=2.9,<2.10"


@pytest.mark.skipif(not HAS_TRT or HAS_CUDA, reason="needs torch-tensorrt installed on a machine without CUDA")
def test_cli_tensorrt_without_gpu_exits_2(cli, tmp_path):
    result = cli("export", TINY, *TINY_SETS, "--format", "tensorrt", "-o", tmp_path / "t.ep")
    assert result.exit_code == 2 and "needs a CUDA GPU" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason="needs torch-tensorrt and a CUDA GPU")
@pytest.mark.parametrize("precision, rel", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_tensorrt_export_matches_eager(tmp_path, precision, rel):
    net, model = _family("gunn")
    console = Console(record=True, width=200)
    opts = ExportOptions("tensorrt", tmp_path / "g.ep", dynamic_batch="1:2:4", precision=precision, verify=True)
    export_model(net, model, opts, console)
    assert (tmp_path / "g.engine").stat().st_size > 0
    assert "max rel error" in console.export_text()
    program = torch.export.load(str(tmp_path / "g.ep")).module()
    eager = model.cuda()
    for b in (1, 4):
        x = _inputs(net, b).cuda()
        with torch.no_grad():
            _close(program(x.to(opts.dtype)).float(), eager(x), rel)


@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason="needs torch-tensorrt and a CUDA GPU")
def test_bench_infer_tensorrt_runs():
    net = archspec.network(TINY, n=1, w=4)
    rows = run_bench_infer(net, ["tensorrt"], [1, 2], "cuda", 3, Console(quiet=True))
    assert [r["batch"] for r in rows] == [1, 2] and all(r["median_ms"] > 0 for r in rows)


# ---- bench infer -------------------------------------------------------------------------------------


def test_bench_infer_rows():
    net = archspec.network(TINY, n=1, w=4)
    console = Console(record=True, width=200)
    rows = run_bench_infer(net, ["eager", "tensorrt"], [1, 3], "cpu", 4, console)
    assert [(r["backend"], r.get("batch")) for r in rows] == [("eager", 1), ("eager", 3), ("tensorrt", None)]
    for r in rows[:2]:
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1e3 / r["median_ms"])
    reason = ("the tensorrt backend needs torch-tensorrt" if not HAS_TRT else
              "the tensorrt backend needs a CUDA GPU" if not HAS_CUDA else "TensorRT runs on a CUDA device")
    assert reason in rows[2]["skipped"] and f"skipped: {reason}" in console.export_text()


@pytest.mark.slow
def test_cli_bench_infer_all_backends(cli):
    result = cli("bench", "infer", TINY, *TINY_SETS, "--backends", "eager,compile,onnxruntime,tensorrt",
                 "--batch", "1,2", "--repeat", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for backend in ("eager", "compile", "onnxruntime"):
        assert sum(line.startswith(f"│ {backend} ") for line in lines) == 2, result.output
    tensorrt = [line for line in lines if line.startswith("│ tensorrt ")]
    assert len(tensorrt) == 1 and "skipped:" in tensorrt[0], result.output


def test_cli_bench_infer_unknown_backend(cli):
    result = cli("bench", "infer", TINY, "--backends", "eager,onnx", "--repeat", "3")
    assert result.exit_code == 2
    assert "unknown backend 'onnx'" in result.output and "eager, compile, onnxruntime, tensorrt" in result.output


# ---- the ONNX exporters ------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_falls_back_to_the_torchscript_exporter(tmp_path, monkeypatch, one_thread):
    """Where the torch.export-based exporter fails (or this torch lacks it), the TorchScript-based one
    writes the file, a line says so and why, and its graph is optimised as the other's is: no Identity
    node, the metadata, outputs as eager PyTorch's."""
    import onnx

    from archspec.runtime import export as ex

    def broken(*args, **kwargs):
        raise RuntimeError("no translation for this op\nmore detail")

    net, model = model_from_source(TINY, {"n": 1, "w": 4}, seed=0)
    console = Console(record=True, width=300)
    export_model(net, model, ExportOptions("onnx", tmp_path / "a.onnx", verify=True), console)
    assert "torch.export-based exporter" in console.export_text() and "TorchScript" not in console.export_text()
    monkeypatch.setattr(ex, "_onnx_dynamo", broken)
    console = Console(record=True, width=300)
    export_model(net, model, ExportOptions("onnx", tmp_path / "b.onnx", verify=True), console)
    text = console.export_text()
    assert "the torch.export-based ONNX exporter failed on this network, so PyTorch's TorchScript-based" in text
    assert "TorchScript exporter, optimised by onnxscript (the torch.export-based exporter failed: RuntimeError: " \
           "no translation for this op)" in text and "ok" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]
    for name in ("a.onnx", "b.onnx"):
        m = onnx.load(str(tmp_path / name))
        assert not {"Identity", "Constant"} & {n.op_type for n in m.graph.node}
        assert {p.key: p.value for p in m.metadata_props}["archspec.spec"] == "tiny_delugenet"


def test_identity_nodes_are_removed_without_onnxscript(tmp_path, monkeypatch):
    """Without onnxscript the TorchScript-based exporter's Identity nodes (and one in front of the
    graph output) are removed by rewiring: the graph computes what it did."""
    import onnx
    import onnxruntime as ort

    from archspec.runtime.export import _onnx_torchscript, _quiet_onnx, remove_identities, tidy_onnx

    from archspec.compiler.passes.fold_bn import fold

    net, model = model_from_source(TINY, {"n": 1, "w": 4}, seed=0)
    model = fold(model)  # the inference form export writes (its equal fresh weights become Identity nodes)
    path = tmp_path / "m.onnx"
    with _quiet_onnx():
        _onnx_torchscript(model, _inputs(net, 2), BatchRange(2, 2, 2), path)
    m = onnx.load(str(path))
    last = m.graph.output[0].name
    for node in m.graph.node:  # an Identity in front of the output, which renames its producer
        node.output[:] = [f"{o}_pre" if o == last else o for o in node.output]
    m.graph.node.append(onnx.helper.make_node("Identity", [f"{last}_pre"], [last]))
    onnx.save(m, str(path))
    before = sum(n.op_type == "Identity" for n in m.graph.node)
    assert before > 1
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert "onnxscript is not installed" in tidy_onnx(path, {"archspec.spec": "tiny_delugenet"})
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert "Identity" not in {n.op_type for n in m.graph.node} and m.graph.output[0].name == last
    assert [(p.key, p.value) for p in m.metadata_props] == [("archspec.spec", "tiny_delugenet")]
    x = _inputs(net, 2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        _close(torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]), model(x), 1e-5)
    assert remove_identities(m.graph) == 0


def test_onnx_export_leaves_the_thread_count_alone(tmp_path):
    net, model = model_from_source(TINY, {"n": 1, "w": 4}, seed=0)
    before = torch.get_num_threads()
    export_model(net, model, ExportOptions("onnx", tmp_path / "a.onnx"), Console(quiet=True))
    assert torch.get_num_threads() == before


def test_an_export_clears_the_stage_a_killed_export_left(tmp_path, cli):
    """A staging folder beside the target whose process is gone (a killed export) is removed by the next
    export to that target; one of a live process, and anything not a staging folder, is left alone."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # that process has exited
    stale = tmp_path / f".m.pt2.{dead}.abcd1234"
    live = tmp_path / f".m.pt2.{os.getpid()}.efgh5678"
    other = tmp_path / ".m.pt2.notes"
    for d in (stale, live, other):
        d.mkdir()
        (d / "m.pt2").write_bytes(b"partial")
    r = cli("export", TINY, *TINY_SETS, "--format", "pt2", "-o", tmp_path / "m.pt2")
    assert r.exit_code == 0, r.output
    assert not stale.exists() and live.exists() and other.exists() and (tmp_path / "m.pt2").is_file()
