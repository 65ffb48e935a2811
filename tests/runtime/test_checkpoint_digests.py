"""Checkpoints are whole or refused: every file `save` writes carries digests over its
whole header (dtype, shape, metadata) and its tensor bytes; a file without them loads only when trusted;
NaN or infinite weights load only when allowed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from archspec.errors import RunError
from archspec.runtime.train import checkpoint as ckpt
from archspec.runtime.train.checkpoint import Checkpoint


def write(path: Path, model: dict[str, torch.Tensor]) -> Path:
    ckpt.save(path, Checkpoint(model=model, optimizer=None, scheduler=None, epoch=2,
                               rng={"torch": torch.zeros(4, dtype=torch.uint8)}, meta={"network": "n", "seed": 3}))
    return path


@pytest.fixture
def good(tmp_path) -> Path:
    return write(tmp_path / "good.safetensors", {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)})


def header_of(path: Path) -> tuple[int, dict]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8:8 + n])


def rewrite_header(path: Path, out: Path, edit) -> Path:
    """A copy of `path` whose safetensors header (dtype, shape, metadata) is edited in place, the tensor
    bytes left as they were; the header is padded back to its old length so every offset still holds."""
    data = path.read_bytes()
    n, header = header_of(path)
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    out.write_bytes(n.to_bytes(8, "little") + text + b" " * (n - len(text)) + data[8 + n:])
    return out


def refused(path: Path, words: str, **options) -> RunError:
    with pytest.raises(RunError, match=words) as err:
        ckpt.load(path, **options)
    assert str(path) in err.value.message
    return err.value


def test_every_saved_file_carries_both_digests(good):
    with safe_open(str(good), framework="pt") as f:
        metadata = f.metadata()
        digests = json.loads(metadata["digests"])
        assert set(digests) == set(f.keys())
        assert digests["w"] == ckpt.tensor_digest(f.get_tensor("w"))
    assert metadata["header_digest"] == ckpt.header_digest(metadata)
    ck = ckpt.load(good)
    assert torch.equal(ck.model["w"], torch.arange(6.0).reshape(2, 3)) and ck.epoch == 2


def test_tensor_digest_covers_dtype_and_shape():
    t = torch.arange(6.0)
    assert ckpt.tensor_digest(t) != ckpt.tensor_digest(t.view(torch.int32))
    assert ckpt.tensor_digest(t) != ckpt.tensor_digest(t.reshape(2, 3))
    assert ckpt.tensor_digest(t) == ckpt.tensor_digest(t.clone())


def test_m6_stripped_digests_are_refused_unless_trusted(good, tmp_path):
    for dropped in (["digests", "header_digest"], ["header_digest"]):
        bad = rewrite_header(good, tmp_path / "bad.safetensors",
                             lambda h: [h["__metadata__"].pop(k) for k in dropped])
        err = refused(bad, "digests")
        assert "--trust-legacy" in err.hint
        assert ckpt.load(bad, trust_legacy=True).epoch == 2


def test_m6_stripped_tensor_digests_under_a_kept_header_digest_are_refused(good, tmp_path):
    def strip(h):
        md = h["__metadata__"]
        del md["digests"]
        md["header_digest"] = ckpt.header_digest(md)
    refused(rewrite_header(good, tmp_path / "bad.safetensors", strip), "no tensor digests", trust_legacy=True)


def test_m6_relabelled_dtype_is_refused(good, tmp_path):
    """F32 relabelled as I32 over the same bytes used to pass and be cast silently."""
    def relabel(h):
        h["w"]["dtype"] = "I32"
    bad = rewrite_header(good, tmp_path / "bad.safetensors", relabel)
    with safe_open(str(bad), framework="pt") as f:  # the relabelled file is valid safetensors
        assert f.get_tensor("w").dtype == torch.int32
    refused(bad, "tensor 'w' does not match its digest: its dtype, shape or bytes changed")


def test_m6_changed_shape_is_refused(good, tmp_path):
    def reshape(h):
        h["w"]["shape"] = [3, 2]
    refused(rewrite_header(good, tmp_path / "bad.safetensors", reshape),
            "tensor 'w' does not match its digest")


def test_m6_changed_metadata_is_refused(good, tmp_path):
    def edit(h):
        h["__metadata__"]["meta"] = h["__metadata__"]["meta"].replace('"seed": 3', '"seed": 4')
    bad = rewrite_header(good, tmp_path / "bad.safetensors", edit)
    assert '"seed": 4' in header_of(bad)[1]["__metadata__"]["meta"]
    refused(bad, "its header does not match its digest")
    refused(bad, "its header does not match its digest", trust_legacy=True)  # a sealed file is always checked


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_m6_nan_weight_is_refused_unless_allowed(tmp_path, value):
    w = torch.ones(4)
    w[2] = value
    path = write(tmp_path / "nan.safetensors", {"w": w, "steps": torch.tensor([3])})
    err = refused(path, "weight 'w' holds NaN or infinite values")
    assert "--allow-nonfinite" in err.hint
    back = ckpt.load(path, allow_nonfinite=True).model["w"]
    assert torch.equal(back.isfinite(), w.isfinite())


def test_legacy_byte_digests_are_still_checked_when_trusted(tmp_path):
    x = {"w": torch.arange(4.0)}
    header = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "epoch": "1", "model": '{"w":{"$tensor":"w"}}',
              "optimizer": "null", "scheduler": "null", "rng": "{}", "meta": "{}",
              "digests": json.dumps({"w": ckpt._digest(torch.arange(4.0) + 1)})}
    save_file(x, tmp_path / "old.safetensors", metadata=header)
    err = refused(tmp_path / "old.safetensors", "cover only tensor bytes")
    assert "--trust-legacy" in err.hint
    refused(tmp_path / "old.safetensors", "tensor 'w' does not match its digest: its bytes changed",
            trust_legacy=True)
