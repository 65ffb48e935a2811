"""The static memory estimate: a step too large for the machine is refused from the graph alone, before
any tensor exists; real specs pass; the estimate of saved activations bounds what autograd really saves,
from above and within 3×."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import archspec
from archspec import SpecError
from archspec.compiler.activation_memory import check_memory, default_limit, estimate, human, parse_size
from conftest import ROOT

HUGE = "network huge() {\n  input(3, 100000, 100000)\n  conv(8, 3)\n}\n"
BILLION = "network wide() {\n  input(1000, 1, 1)\n  linear(1900000)\n}\n"

_REFUSE = """
import json, sys
from pathlib import Path
from archspec.compiler.activation_memory import check_memory, default_limit, estimate
from archspec.graph.elaborate import elaborate
from archspec.errors import SpecError
from archspec.language.loader import load
net = elaborate(load(sys.stdin.read()), {})
try:
    check_memory(estimate(net, batch=64), default_limit("cpu"), net.sources)
    out = {"refused": False}
except SpecError as e:
    out = {"refused": True, "line": e.loc.line, "render": e.render()}
out["torch"] = "torch" in sys.modules
# VmHWM counts from this process's exec; ru_maxrss would carry the parent's size at fork
out["maxrss"] = next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines()
                     if l.startswith("VmHWM:"))
print(json.dumps(out))
"""


def test_a_huge_input_is_refused_before_any_tensor_exists():
    r = subprocess.run([sys.executable, "-c", _REFUSE], input=HUGE, text=True, capture_output=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["refused"] and not out["torch"], out  # torch never loaded: no tensor can have been made
    assert out["maxrss"] < 300 << 20, out  # the input alone would be 7.5 TiB at batch 64
    assert out["line"] == 3 and "conv(8, 3)" in out["render"]  # the largest tensor: the conv's output
    assert "TiB" in out["render"] and "above the limit" in out["render"] and "--max-memory" in out["render"]


def test_real_specs_fit_under_the_default_limit():
    limit = default_limit("cpu")
    for name in ("delugenet146", "densenet_bc100_k12"):
        est = estimate(archspec.network(name), batch=64)
        check_memory(est, limit)
        assert est.total < 4 << 30, human(est.total)  # about 2 GiB: the bench's measured 2.08 GiB held, and weights


def test_a_billion_weights_are_counted_three_times_for_training_and_refused():
    net = archspec.network(BILLION)
    train, infer = estimate(net, batch=1), estimate(net, batch=1, training=False)
    weights = 1_901_900_000 * 4
    assert train.params == infer.params == weights
    assert train.total >= 3 * weights and infer.total < 1.01 * weights  # gradients and momentum
    with pytest.raises(SpecError) as e:
        check_memory(train, 16 << 30)
    assert e.value.loc.line == 3 and "weights of 'linear1'" in e.value.hint
    check_memory(infer, 16 << 30)


def test_inference_peak_is_the_most_tensors_alive_at_once():
    net = archspec.network("network n() {\n  input(3, 8, 8)\n  conv(16, 1)\n  relu\n  conv(4, 1)\n  gap\n}\n")
    est = estimate(net, batch=2, training=False)
    per_px = 2 * 64 * 4  # batch × pixels × bytes
    assert est.input == 3 * per_px
    assert est.activations == (16 + 16) * per_px  # conv1's output and relu's, alive together
    train = estimate(net, batch=2)
    assert train.activations == 16 * per_px  # relu's output, saved by relu and conv2 alike; conv1 saves the input


def _saved_bytes(gm, x) -> int:
    """What autograd saves in one training forward, tensors counted once by their storage, weights,
    buffers and the input left out."""
    import torch

    skip = {t.untyped_storage().data_ptr() for t in [*gm.parameters(), *gm.buffers(), x]}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        gm(x)
    return sum(seen.values())


POOLS = ("network pools() {\n  input(3, 16, 16)\n  conv(8, 3, padding=1)\n  maxpool(2)\n  dropout(0.2)\n  bn silu\n"
         "  avgpool(2)\n  dropout2d(0.1)\n  gap\n  linear(10)\n}\n")


ACTIVATIONS = ("network acts() {\n  input(3, 16, 16)\n  conv(8, 3, padding=1) relu6 conv(8, 1) gelu\n"
               "  conv(8, 1) sigmoid conv(8, 1) hardswish conv(8, 1) hardsigmoid conv(8, 1) leaky_relu tap\n"
               "  gap linear(10)\n}\n")


@pytest.mark.parametrize("spec, batch", [("tiny_delugenet", 8), ("densenet40_k12", 2), ("seqconv_s2", 2),
                                         ("gunn15", 1), (POOLS, 4), (ACTIVATIONS, 4)])
def test_the_estimate_bounds_the_saved_tensors_within_three_times(spec, batch, one_thread):
    import torch

    net = archspec.network(spec)
    gm = archspec.build(net).train()
    torch.manual_seed(0)
    measured = _saved_bytes(gm, torch.randn(batch, *net.shape(net.input), device="cpu"))
    est = estimate(net, batch=batch)
    assert measured <= est.activations <= 3 * measured, (human(measured), human(est.activations))
    assert est.total > est.activations + est.params


def test_the_refusal_reads_in_human_units():
    assert [human(n) for n in (512, 1536, 3 << 30, 7 << 40)] == ["512 bytes", "1.5 KiB", "3.0 GiB", "7.0 TiB"]
    est = estimate(archspec.network(HUGE), batch=1, training=False)
    with pytest.raises(SpecError, match=r"a forward pass of network 'huge' at batch 1 needs about [\d.]+ GiB, "
                                        r"above the limit of 1.0 GiB"):
        check_memory(est, 1 << 30)
    with pytest.raises(ValueError):
        estimate(archspec.network(HUGE), batch=0)


def test_sizes_read_as_people_write_them():
    assert parse_size("8GiB") == 8 << 30 and parse_size("8g") == 8 << 30 and parse_size("500MB") == 500_000_000
    assert parse_size("1.5 KiB") == 1536 and parse_size("123456") == 123456
    with pytest.raises(SpecError, match="--max-memory needs a size"):
        parse_size("lots")


def test_a_size_beyond_any_machine_is_refused():
    """400 nines, or an infinite float, is a refused argument (exit 2), not an overflow inside int()."""
    with pytest.raises(SpecError, match="beyond any machine's memory"):
        parse_size("9" * 400)
    with pytest.raises(SpecError, match="beyond any machine's memory"):
        parse_size("2000000 PiB")
