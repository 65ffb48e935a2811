"""Checkpoints from strangers: a tampered file never writes or reads a file of its choosing, malformed
metadata and flipped tensor bytes are clear errors (exit 2, no traceback), a killed writer's leftovers
are cleaned, and the size limit holds for the spec a checkpoint carries."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.errors import RunError, SpecError
from archspec.language.loader import load_file
from archspec.runtime.train import checkpoint as ckpt
from archspec.runtime.train import specfiles
from archspec.runtime.train.checkpoint import Checkpoint
from archspec.runtime.train.evaluation import load_trained
from archspec.runtime.train.specfiles import spec_files, spec_from_files

LIB = "layer unit(k: int) { bn relu conv(k, 3, padding=1) }\n"
MAIN = """use "lib/units.arch"
network small(classes: int = 10) {
  input(1, 8, 8)
  stem { conv(4, 3, padding=1) }
  block dense concat { repeat 2 { unit(2) } }
  head { bn relu gap linear(classes) }
}
"""


def files_on_disk(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture
def good(tmp_path) -> Path:
    """A checkpoint as `archspec train` writes one (a spec of two files, for the digits data set); the
    spec's folder is gone afterwards, so whatever loads must come from the checkpoint."""
    src = tmp_path / "spec"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "units.arch").write_text(LIB)
    (src / "small.arch").write_text(MAIN)
    spec = load_file(src / "small.arch")
    net = archspec.network(spec)
    model = archspec.build(net)
    files, main = spec_files(spec)
    meta = {"network": net.name, "params": net.params, "files": files, "main": main, "data": "digits",
            "data_source": None, "seed": 0, "best_test_acc": 0.5, "memory": "fast"}
    path = tmp_path / "run" / "last.safetensors"
    ckpt.save(path, Checkpoint(model=model.state_dict(), optimizer=None, scheduler=None, epoch=1,
                               rng=ckpt.rng_state(), meta=meta))
    for p in sorted(src.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    src.rmdir()
    return path


def tamper(path: Path, out: Path, *, change=None, drop=(), reseal=True, **entries) -> Path:
    """A copy of the checkpoint at `path` with its metadata changed, as anyone can with safetensors; with
    `reseal`, its header digest recomputed over the changed metadata, as anyone can too (the digests
    catch damage and naive edits; what is read is validated all the same)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if change is not None:
        metadata["meta"] = json.dumps(change(json.loads(metadata["meta"])))
    metadata.update(entries)
    for key in drop:
        del metadata[key]
    if reseal and "header_digest" in metadata:
        metadata["header_digest"] = ckpt.header_digest(metadata)
    save_file(tensors, out, metadata=metadata)
    return out


def cli(*args: str):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    return r


# -- 1. nothing in a checkpoint chooses where a file is written, or which file is read

def test_good_checkpoint_rebuilds_from_memory(good, tmp_path):
    """The spec's files are gone from disk: the checkpoint alone rebuilds and evaluates the network."""
    before = files_on_disk(tmp_path)
    net, model, ck = load_trained(good)
    assert net.name == "small" and ck.epoch == 1
    r = cli("eval", good, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["network"] == "small"
    assert files_on_disk(tmp_path) == before


@pytest.mark.parametrize("command", [["eval"], ["inspect", "--json"], ["export", "--format", "pt2"]])
def test_traversal_in_file_names_writes_nothing(good, tmp_path, command):
    """The reviewed payload: a file name that climbs out of any folder it is written under."""
    escaped = tmp_path / "escaped"
    key = "/a" + "/.." * 40 + str(escaped / "zz.pth")
    bad = tamper(good, tmp_path / "bad.safetensors",
                 change=lambda m: {**m, "files": {**m["files"], key: "import os; os.system('touch pwned')\n"}})
    before = files_on_disk(tmp_path)
    args = [command[0], bad, *command[1:]]
    if command[0] == "export":
        args += ["-o", tmp_path / "out.pt2"]
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert "'/a/../.." in r.output and "normalised" in r.output, r.output
    assert not escaped.exists() and files_on_disk(tmp_path) == before


@pytest.mark.parametrize("key,words", [
    ("/a/../b.arch", "normalised"),
    ("lib/units.arch", "not an absolute path"),
    ("/x/\x1b[31mred.arch", "control characters"),
    ("/x/nul\x00.arch", "control characters"),
    ("", "empty"),
])
def test_unsafe_file_names_are_refused(good, key, words):
    ck = ckpt.load(good)
    files = {**ck.meta["files"], key: LIB}
    with pytest.raises(RunError, match=words) as err:
        spec_from_files(files, ck.meta["main"])
    assert "\x1b" not in err.value.message and "\x00" not in err.value.message


def test_use_lines_never_read_the_disk(good, tmp_path):
    """A `use` of a real file outside the checkpoint is not read, however it is spelled."""
    secret = tmp_path / "secret.arch"
    secret.write_text(LIB)
    ck = ckpt.load(good)
    main = ck.meta["main"]
    for use in (str(secret), os.path.relpath(secret, Path(main).parent), "../" * 30 + str(secret)[1:]):
        files = {main: MAIN.replace("lib/units.arch", use)}
        with pytest.raises(SpecError, match="does not carry the spec file"):
            spec_from_files(files, main)


def test_windows_names_and_text_specs_resolve_in_memory():
    """Names saved on Windows, and a spec given as text whose relative `use` matches one saved file."""
    files = {"C:\\runs\\small.arch": MAIN.replace("lib/units.arch", "lib\\units.arch"),
             "C:\\runs\\lib\\units.arch": LIB}
    assert spec_from_files(files, "C:\\runs\\small.arch").main == "small"
    files = {"<spec>": MAIN, "/home/u/lib/units.arch": LIB}
    assert spec_from_files(files, "<spec>").main == "small"
    with pytest.raises(SpecError, match="does not carry"):
        spec_from_files({**files, "/elsewhere/lib/units.arch": LIB}, "<spec>")  # ambiguous


def test_use_cycles_among_saved_files():
    files = {"/s/a.arch": 'use "b.arch"\n' + MAIN.replace('use "lib/units.arch"', ""),
             "/s/b.arch": 'use "a.arch"\n' + LIB}
    with pytest.raises(SpecError, match="`use` cycle: a.arch → b.arch → a.arch"):
        spec_from_files(files, "/s/a.arch")


def test_embedded_spec_is_bounded(good, monkeypatch):
    ck = ckpt.load(good)
    files, main = ck.meta["files"], ck.meta["main"]
    many = {**files, **{f"/x/{i}.arch": LIB for i in range(specfiles.MAX_SPEC_FILES)}}
    with pytest.raises(RunError, match="files; a spec has at most"):
        spec_from_files(many, main)
    monkeypatch.setattr(specfiles, "MAX_SPEC_BYTES", len(MAIN) + 10)
    with pytest.raises(RunError, match="too large"):
        spec_from_files(files, main)


# -- 2. malformed metadata

@pytest.mark.parametrize("change,words", [
    (lambda m: {**m, "files": None}, "'files' is wrong"),
    (lambda m: {**m, "main": 3}, "'main' is wrong"),
    (lambda m: {**m, "params": [1, 2]}, "'params' is wrong"),
    (lambda m: {**m, "seed": "abc"}, "'seed' is wrong"),
    (lambda m: {**m, "seed": True}, "'seed' is wrong"),
    (lambda m: {**m, "seed": 2**70}, "'seed' is wrong"),
    (lambda m: {**m, "best_test_acc": "high"}, "'best_test_acc' is wrong"),
    (lambda m: {**m, "files": {**m["files"], m["main"]: 7}}, "'files."),
    (lambda m: {k: v for k, v in m.items() if k != "files"}, "no 'files' in its metadata"),
])
def test_malformed_meta_is_exit_2(good, tmp_path, change, words):
    bad = tamper(good, tmp_path / "bad.safetensors", change=change)
    with pytest.raises(RunError, match=words):
        load_trained(bad)
    r = cli("eval", bad)
    assert r.exit_code == 2 and words in r.output, r.output


@pytest.mark.parametrize("entry", ["meta", "model", "epoch", "digests"])
def test_deep_json_is_exit_2(good, tmp_path, entry):
    bad = tamper(good, tmp_path / "bad.safetensors", **{entry: "[" * 100_000 + "]" * 100_000})
    r = cli("eval", bad)
    assert r.exit_code == 2 and f"its '{entry}' entry nests deeper than" in r.output, r.output
    fine = tamper(good, tmp_path / "fine.safetensors", change=lambda m: {**m, "note": json.loads("[" * 60 + "]" * 60)})
    ckpt.load(fine)


def test_bad_params_for_the_spec_are_exit_2(good, tmp_path):
    bad = tamper(good, tmp_path / "bad.safetensors", change=lambda m: {**m, "params": {"classes": "many"}})
    r = cli("eval", bad)
    assert r.exit_code == 2 and "classes" in r.output, r.output


# -- 3. flipped bytes

def _flip(path: Path, tensor: str) -> None:
    """Flip one byte inside `tensor`'s data, leaving the header intact."""
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8:8 + n])[tensor]["data_offsets"]
    data[8 + n + (start + end) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_tensor_byte_is_named(good, tmp_path):
    name = "head.linear1.weight"
    _flip(good, name)
    with pytest.raises(RunError, match=f"tensor '{name}' does not match its digest"):
        ckpt.load(good)
    r = cli("eval", good)
    assert r.exit_code == 2 and name in r.output and "digest" in r.output, r.output


def test_checkpoints_without_digests_load_only_when_trusted(good, tmp_path):
    """Files written before digests existed load only with trust_legacy (their bytes go unchecked)."""
    old = tamper(good, tmp_path / "old.safetensors", drop=["digests", "header_digest"])
    with pytest.raises(RunError, match="it has no digests") as err:
        ckpt.load(old)
    assert "--trust-legacy" in err.value.hint
    ck = ckpt.load(old, trust_legacy=True)
    assert set(ck.model) == set(ckpt.load(good).model)
    _flip(old, "head.linear1.weight")
    ckpt.load(old, trust_legacy=True)


def test_digests_must_cover_every_tensor(good, tmp_path):
    with safe_open(str(good), framework="pt") as f:
        digests = json.loads(f.metadata()["digests"])
    digests.pop("head.linear1.weight")
    bad = tamper(good, tmp_path / "bad.safetensors", digests=json.dumps(digests))
    with pytest.raises(RunError, match="digests do not list exactly its tensors"):
        ckpt.load(bad)


@pytest.mark.slow
def test_resume_refuses_a_flipped_checkpoint(tmp_path):
    from archspec.runtime.train import TrainConfig, train
    from conftest import SPECS

    out = tmp_path / "run"
    spec = str(SPECS / "tiny_delugenet.arch")
    train(TrainConfig(spec=spec, sets={"n": 1, "w": 4}, out=out, epochs=1, batch_size=128, progress=False,
                      device="cpu"), log=lambda m: None)
    last = out / "last.safetensors"
    name = sorted(k for k in ckpt.load(last).model if k.endswith("weight"))[0]
    _flip(last, name)
    r = cli("train", spec, "--set", "n=1", "--set", "w=4", "--epochs", "2", "--out", out, "--resume",
            "--device", "cpu", "--quiet")
    assert r.exit_code == 2 and name in r.output and "digest" in r.output, r.output


# -- 4. leftovers of a killed writer

def test_stale_temporaries_are_removed_on_the_next_save(tmp_path):
    path = tmp_path / "last.safetensors"
    old = time.time() - 3600
    stale = [tmp_path / ".last.safetensors.ab12_xyz.tmp", tmp_path / ".best.safetensors.k9k9k9k9.tmp"]
    fresh = tmp_path / ".last.safetensors.zzzzzzzz.tmp"  # a save in progress elsewhere
    others = [tmp_path / ".notes.abcdefgh.tmp", tmp_path / "last.safetensors.abcdefgh.tmp",
              tmp_path / ".last.safetensors.toolongname.tmp", tmp_path / "keep.txt"]
    for p in [*stale, fresh, *others]:
        p.write_bytes(b"")
    for p in [*stale, *others]:
        os.utime(p, (old, old))
    (tmp_path / ".dir.safetensors.abcdefgh.tmp").mkdir()
    os.utime(tmp_path / ".dir.safetensors.abcdefgh.tmp", (old, old))
    ckpt.save(path, Checkpoint(model={"w": torch.ones(2)}, optimizer=None, scheduler=None, epoch=1, rng={}, meta={}))
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in others)
    assert (tmp_path / ".dir.safetensors.abcdefgh.tmp").is_dir()
    assert ckpt.load(path).epoch == 1


# -- 5. the size limit

def test_oversized_embedded_spec_is_refused_before_building(good, tmp_path):
    huge = "network huge() { input(1, 8, 8) conv(65536, 3) conv(65536, 3) gap linear(10) }\n"
    bad = tamper(good, tmp_path / "huge.safetensors",
                 change=lambda m: {**m, "params": {}, "main": "<spec>", "files": {"<spec>": huge}})
    r = cli("eval", bad)
    assert r.exit_code == 2 and "above the limit of 2,000,000,000" in r.output, r.output


def test_m6_cli_refuses_a_file_without_digests_unless_trusted(good, tmp_path):
    """`export` and `inspect` refuse an unsealed file with exit 2 and name the option; `export
    --trust-legacy` reads it."""
    old = tamper(good, tmp_path / "old.safetensors", drop=["digests", "header_digest"])
    for args in (["export", old, "--format", "pt2", "-o", tmp_path / "x.pt2"], ["inspect", old, "--json"]):
        r = cli(*args)
        assert r.exit_code == 2 and "no digests" in r.output and "--trust-legacy" in r.output, r.output
    r = cli("export", old, "--format", "pt2", "-o", tmp_path / "x.pt2", "--trust-legacy")
    assert r.exit_code == 0 and (tmp_path / "x.pt2").is_file(), r.output
