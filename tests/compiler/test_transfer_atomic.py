"""`transfer` is all or nothing and bounded (findings M9, M2 and the Low list's transfer cases): the
weights file is opened and bounded before the target is built; every tensor is checked (dense, real,
finite, floating point) before the first copy, and the module is unchanged when any is refused or cannot
be staged; a torch file's compressed members are refused; `--max-memory` bounds the whole transfer;
`-o` into a missing folder exits 2."""

from __future__ import annotations

import copy
import os
import zipfile

import pytest
import torch
from typer.testing import CliRunner

import archspec.compiler.codegen as codegen
from archspec.cli import app
from archspec.compiler.transfer import TransferError, load_state_dict, open_weights, transfer_weights
from test_transfer import TINY_RESNET, TinyResNet, _build, _randomise


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny_resnet.arch"
    path.write_text(TINY_RESNET)
    return path


@pytest.fixture
def no_build(monkeypatch):
    """Building a module fails the test: what is refused must be refused before the target exists."""
    import archspec.api  # noqa: F401  bound to the real `to_module` first: the CLI imports it lazily

    def refuse(*a, **k):
        raise AssertionError("the target module was built")

    monkeypatch.setattr(codegen, "to_module", refuse)


def _cli(*args: str):
    return CliRunner().invoke(app, ["transfer", *map(str, args)])


def test_m9_a_missing_weights_file_is_reported_before_the_target_is_built(tmp_path, spec, no_build):
    done = _cli(tmp_path / "missing.pth", spec, "-o", tmp_path / "w.safetensors")
    assert done.exit_code == 2, done.output
    assert "missing.pth: no such file" in done.output and "Traceback" not in done.output


def test_m9_max_memory_bounds_the_file_and_the_transfer_before_the_target_is_built(tmp_path, spec, no_build):
    hand = TinyResNet()
    torch.save(hand.state_dict(), tmp_path / "hand.pt")
    size = (tmp_path / "hand.pt").stat().st_size
    done = _cli(tmp_path / "hand.pt", spec, "-o", tmp_path / "w.safetensors", "--max-memory", str(size - 1))
    assert done.exit_code == 2 and "over the" in done.output and "limit" in done.output, done.output
    tensors = sum(t.numel() * t.element_size() for t in hand.state_dict().values())
    done = _cli(tmp_path / "hand.pt", spec, "-o", tmp_path / "w.safetensors", "--max-memory", str(size + tensors))
    assert done.exit_code == 2 and "parameters twice), above the limit" in done.output, done.output
    assert not (tmp_path / "w.safetensors").exists()


def test_m9_transfer_within_max_memory_writes(tmp_path, spec):
    torch.save(_randomise(TinyResNet(), 1).state_dict(), tmp_path / "hand.pt")
    done = _cli(tmp_path / "hand.pt", spec, "-o", tmp_path / "w.safetensors", "--max-memory", "64MiB")
    assert done.exit_code == 0, done.output
    assert (tmp_path / "w.safetensors").is_file()


def test_low_transfer_output_into_a_missing_folder_exits_2(tmp_path, spec, no_build):
    torch.save(TinyResNet().state_dict(), tmp_path / "hand.pt")
    done = _cli(tmp_path / "hand.pt", spec, "-o", tmp_path / "nowhere" / "w.safetensors")
    assert done.exit_code == 2, done.output
    assert "does not exist" in done.output and not (tmp_path / "nowhere").exists()


def _deflated(src, dst) -> None:
    """`src`, a torch.save zip, rewritten with every member deflate-compressed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))


def test_m2_a_compressed_torch_file_is_refused_before_it_is_inflated(tmp_path):
    torch.save({"w": torch.zeros(1 << 16)}, tmp_path / "plain.pt")
    assert torch.equal(load_state_dict(tmp_path / "plain.pt")["w"], torch.zeros(1 << 16))
    _deflated(tmp_path / "plain.pt", tmp_path / "bomb.pt")
    assert (tmp_path / "bomb.pt").stat().st_size < (tmp_path / "plain.pt").stat().st_size // 10
    with pytest.raises(TransferError, match="bomb.pt: member '.*' is compressed"):
        load_state_dict(tmp_path / "bomb.pt")


def test_m2_a_torch_files_members_are_bounded_by_their_sizes(tmp_path):
    torch.save({"w": torch.zeros(1 << 16)}, tmp_path / "plain.pt")
    size = (tmp_path / "plain.pt").stat().st_size
    with pytest.raises(TransferError, match="over the"):
        load_state_dict(tmp_path / "plain.pt", size - 1)
    assert len(open_weights(tmp_path / "plain.pt", size).state) == 1


def test_m9_a_fifo_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "w.pt")
    with pytest.raises(TransferError, match="FIFO"):
        load_state_dict(tmp_path / "w.pt")


BAD = {
    "sparse": (lambda t: t.to_sparse(), "is not dense"),
    "quantized": (lambda t: torch.quantize_per_tensor(t.float(), 0.1, 0, torch.qint8), "is quantized"),
    "complex": (lambda t: t.to(torch.complex128), "is complex"),
    "nan": (lambda t: t.index_fill(0, torch.tensor([1]), float("nan")), "holds values that are not finite"),
    "inf": (lambda t: t.index_fill(0, torch.tensor([0]), float("-inf")), "holds values that are not finite"),
    "integer": (lambda t: t.long(), "not floating point"),
}


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
@pytest.mark.parametrize("kind", list(BAD))
def test_low_transfer_refuses_a_bad_late_tensor_and_changes_nothing(kind):
    """The last tensors are spoiled: every earlier one pairs, and was copied before this was checked."""
    make, words = BAD[kind]
    state = dict(_randomise(TinyResNet().double(), 3).state_dict())
    state["fc.weight"] = make(state["fc.weight"])
    gm = _build(TINY_RESNET, 0)
    before = copy.deepcopy(gm.state_dict())
    with pytest.raises(TransferError, match=rf"'fc\.weight' .*{words}"):
        transfer_weights(state, gm)
    for k, v in gm.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_low_a_float_batch_counter_is_refused():
    state = dict(TinyResNet().double().state_dict())
    name = next(k for k in state if k.endswith("num_batches_tracked"))
    state[name] = state[name].double()
    with pytest.raises(TransferError, match="batch counter of type float64"):
        transfer_weights(state, _build(TINY_RESNET, 0))


def test_low_cli_transfer_of_a_sparse_tensor_exits_2(tmp_path, spec):
    state = dict(TinyResNet().state_dict())
    state["fc.weight"] = state["fc.weight"].to_sparse()
    torch.save(state, tmp_path / "sparse.pt")
    done = _cli(tmp_path / "sparse.pt", spec, "-o", tmp_path / "w.safetensors")
    assert done.exit_code == 2, done.output
    assert "is not dense" in done.output and not (tmp_path / "w.safetensors").exists()


def test_m9_a_value_that_cannot_be_staged_leaves_the_module_unchanged(monkeypatch):
    """Values are converted for their targets first, copied only once all are: a failure on the last
    (an allocation that fails) leaves the module as it was."""
    hand = _randomise(TinyResNet().double(), 4)
    gm = _build(TINY_RESNET, 0).float()  # float64 source into float32 targets: every value is converted
    before = copy.deepcopy(gm.state_dict())
    calls, limit = [0], len(gm.state_dict()) - 1
    to = torch.Tensor.to

    def failing(self, *a, **k):
        calls[0] += 1
        if calls[0] == limit:
            raise RuntimeError("out of memory")
        return to(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to", failing)
    with pytest.raises(TransferError, match="cannot stage .*out of memory; nothing was written"):
        transfer_weights(hand, gm)
    monkeypatch.undo()
    for k, v in gm.state_dict().items():
        assert torch.equal(v, before[k]), k
