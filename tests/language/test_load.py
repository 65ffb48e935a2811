"""`archspec.load`: a checkpoint of `archspec train` back as a module in one call, with the weights the
file holds (read independently here with safetensors), as a backbone too, and refused when damaged."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import archspec
from archspec.errors import RunError
from archspec.runtime.train import TrainConfig, train
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch of a few-thousand-parameter DelugeNet on 64 synthetic CIFAR images, 16 of them held out
    to choose `best` on."""
    out = tmp_path_factory.mktemp("load") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(spec=TINY, sets={"n": 1, "w": 4}, data="synthetic-cifar10:64", out=out, epochs=1,
                          batch_size=32, val_split=16, progress=False, device="cpu"), log=lambda m: None)
    finally:
        torch.set_num_threads(n)
    return out


def _raw_weights(path):
    """The model's tensors straight from the safetensors file, without archspec's reader: under their
    plain names, or under `model/` in files written before plain names."""
    return {k.removeprefix("model/"): v for k, v in load_file(str(path)).items()
            if k.startswith("model/") or "/" not in k}


def test_load_gives_the_trained_module(run):
    path = run / "best.safetensors"
    model = archspec.load(path)
    assert not model.training
    # the same network, built from the spec with the parameters the run used, given the file's weights
    with safe_open(str(path), framework="pt") as f:
        assert '"n":1' in f.metadata()["meta"].replace(" ", "")
    ref = archspec.build(TINY, n=1, w=4, channels=3, size=32).eval()
    ref.load_state_dict(_raw_weights(path))
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    assert not torch.equal(ref.stem.conv1.weight, archspec.build(TINY, n=1, w=4, channels=3, size=32).stem.conv1.weight)


def test_state_dict_has_plain_keys(run):
    weights = archspec.state_dict(run / "best.safetensors")
    raw = _raw_weights(run / "best.safetensors")
    assert weights.keys() == raw.keys() == archspec.load(run / "best.safetensors").state_dict().keys()
    assert all(torch.equal(weights[k], raw[k]) for k in raw)


def test_load_as_a_backbone(run):
    path = run / "last.safetensors"
    full = archspec.load(path)
    net = archspec.load(path, features_only=True, out_indices=(0, 1))
    assert net.feature_info.module_name() == ["block1.layer1.conv3", "head.relu1"]
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(net(x), archspec.forward_intermediates(full, x, intermediates_only=True)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_damaged_or_missing_checkpoints_are_run_errors(run, tmp_path):
    with pytest.raises(RunError, match="no checkpoint at"):
        archspec.load(tmp_path / "none.safetensors")
    data = bytearray((run / "last.safetensors").read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tensor
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(RunError, match="digest"):
        archspec.load(bad)
    with pytest.raises(RunError, match="features_only=True"):
        archspec.load(run / "last.safetensors", out_indices=(0,))
