"""DLA-60, DLA-102, DPN-92 and HRNet-W18-Small-V2, the shipped specs by name at 64×64 (as the count tests
build them), against timm's modules: the wiring each spec writes with named tensors (DLA's aggregation
trees, DPN's two paths as channel slices, HRNet's fusion of every branch into every other) read back from
the graph; and, after `transfer_weights`, the outputs in evaluation, and in training the outputs, the
input's and every parameter's gradient, and the weights and running statistics after an SGD step, agree
in float64."""

from __future__ import annotations

import copy

import pytest
import torch

import archspec
from conftest import built, network_of
from references import TOL, assert_same_after_transfer, timm_model, with_random_norms



def _ops(net, op: str) -> list:
    return [n for n in net.nodes() if n.op == op]


# ---- the wiring, from the graph ---------------------------------------------------------------------------

def _root_widths(levels: int, level_root: bool, handed: int = 0) -> list[int]:
    """How many tensors each root of a DLA tree joins, in order: a depth-1 tree's two units and whatever
    was handed down to it; a deeper tree hands its first subtree's output (and, as a level root, its
    input) down to its second subtree."""
    kids = handed + (1 if level_root else 0)
    if levels == 1:
        return [2 + kids]
    return _root_widths(levels - 1, False) + _root_widths(levels - 1, False, kids + 1)


@pytest.mark.parametrize("name,levels,residual", [("dla60", [1, 1, 1, 2, 3, 1], False),
                                                  ("dla102", [1, 1, 1, 3, 4, 1], True)])
def test_dla_roots_join_what_their_trees_hand_down(name, levels, residual):
    """One concatenation per root, reading the named tensors themselves (units' outputs, a level's
    max-pooled input, earlier subtrees' outputs): as many as the tree rule gives, no channels carried
    along or cut apart; DLA-102's roots add their first input back."""
    net = network_of(name, size=64)
    roots = _ops(net, "concat")
    want = [w for i in range(2, 6) for w in _root_widths(levels[i], i > 2)]
    assert [len(net.inputs(r.name)) for r in roots] == want
    for r in roots:
        assert all(net.node(i).op in ("relu", "maxpool") for i in net.inputs(r.name)), r.name
    assert not _ops(net, "split") and not _ops(net, "slice")
    sums = [s for s in _ops(net, "add") if "root" in s.name]
    assert len(sums) == (len(roots) if residual else 0)
    for s, r in zip(sums, roots):
        assert net.inputs(s.name)[1] == net.inputs(r.name)[0]


def test_dpn_units_add_to_one_channel_range_and_append_after_the_other():
    """Each dual-path unit ends in one concatenation of three views: the residual range [0, bw) of its
    input (or projection) plus the same range of its body, then the rest of the input, then the body's
    last `inc` channels. The dense path grows by `inc` per unit."""
    net = network_of("dpn92", size=64)
    depths, incs, widths = [3, 4, 20, 3], [16, 32, 24, 128], [256, 512, 1024, 2048]
    units = _ops(net, "concat")
    assert len(units) == sum(depths)
    assert not _ops(net, "split")
    i = 0
    for depth, inc, bw in zip(depths, incs, widths):
        for j in range(depth):
            added, dense, grown = (net.node(n) for n in net.inputs(units[i].name))
            assert added.op == "add" and dense.op == "slice" and grown.op == "slice"
            residual, body = (net.node(n) for n in net.inputs(added.name))
            assert (residual.args.start, residual.args.stop) == (0, bw) == (body.args.start, body.args.stop)
            assert net.inputs(residual.name) == net.inputs(dense.name)
            assert net.inputs(body.name) == net.inputs(grown.name)
            assert (dense.args.start, dense.shape[0]) == (bw, (j + 2) * inc)
            assert grown.shape[0] == inc
            assert units[i].shape[0] == bw + (j + 3) * inc
            i += 1


def test_hrnet_fuses_every_branch_into_every_other():
    """Each module of b branches ends in b sums of b inflows (one per branch, brought to that branch's
    resolution and width); every lower-resolution branch is upsampled once per higher one."""
    net = network_of("hrnet_w18_small_v2", size=64)
    modules = [(2, 1), (3, 3), (4, 2)]  # branches, modules: stages 2-4
    fusions = [s for s in _ops(net, "add") if ".hr_fuse" in s.name]  # each module's fusions
    assert [len(net.inputs(s.name)) for s in fusions] == [b for b, m in modules for _ in range(m * b)]
    for s in fusions:
        assert len({net.node(i).shape for i in net.inputs(s.name)}) == 1
    ups = _ops(net, "upsample")
    assert len(ups) == sum(m * b * (b - 1) // 2 for b, m in modules)
    for u in ups:
        (src,) = net.inputs(u.name)
        assert u.shape[1] % net.node(src).shape[1] == 0 and u.shape[1] > net.node(src).shape[1]
    assert not _ops(net, "split") and not _ops(net, "slice")


# ---- the same function as timm's modules ------------------------------------------------------------------

MODELS = ["dla60", "dla102", "dpn92", "hrnet_w18_small_v2"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_timm_weights_transfer_and_compute_the_same(name):
    """At 64×64, two images: the same outputs in evaluation, and the same training step; the transfer pairs
    every tensor and finds no difference of hyper-parameters (timm's DPN keeps each ReLU inside its batch
    norm module, which the comparison counts as not visible rather than as a difference)."""
    torch.manual_seed(0)
    ref = with_random_norms(timm_model(name)).eval()
    gm = copy.deepcopy(built(name, size=64)).double().eval()
    report = archspec.transfer_weights(ref, gm)
    assert not report.warnings
    assert report.tensors == len(gm.state_dict()) - len(report.kept)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), ref(x), **TOL)
    assert_same_after_transfer(ref, gm, report.pairs, x)
