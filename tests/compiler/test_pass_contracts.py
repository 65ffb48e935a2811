"""Passes declare what they need (`contract.Pass`): each runs only where its preconditions hold, with a
clear error otherwise, records itself on the module, and the memory policy composes them in the open. No
pass calls another."""

import pytest

import archspec
from archspec.compiler.codegen import to_module
from archspec.compiler.passes import fold_bn, lean, memory, merge_buffer, merge_dispatch, normalise_once
from archspec.compiler.passes.contract import PassOrderError, applied
from conftest import SPECS


@pytest.fixture(scope="module")
def net():
    return archspec.network(SPECS / "tiny_delugenet.arch", n=2)


def test_the_policy_composes_its_passes_in_order(net):
    assert applied(to_module(net)) == ()
    assert applied(memory.training(to_module(net), "lean")) == ("lean", "normalise_once", "merge_dispatch")
    assert applied(memory.training(to_module(net), "fast")) == ("merge_buffer", "merge_dispatch")
    assert applied(memory.training(to_module(net), "fast", "whole")) == ("merge_dispatch",)
    assert applied(memory.apply(to_module(net), "fast")) == ("merge_dispatch",)


def test_no_pass_runs_another(net):
    gm = lean.apply(to_module(net))
    assert applied(gm) == ("lean",)
    assert not [m for m in gm.modules() if isinstance(m, normalise_once.BatchMoments)]


def test_a_pass_refuses_a_module_it_cannot_read(net):
    buffered = merge_buffer.apply(to_module(net))
    with pytest.raises(PassOrderError, match="pass 'normalise_once' cannot run after merge_buffer"):
        normalise_once.apply(buffered)
    with pytest.raises(PassOrderError, match=r"pass 'fold_bn' cannot run after merge_buffer \(applied: merge_buffer"):
        fold_bn.fold(memory.training(to_module(net), "fast"))
    with pytest.raises(PassOrderError, match="pass 'merge_buffer' cannot run after normalise_once"):
        merge_buffer.apply(normalise_once.apply(to_module(net)))
    folded = fold_bn.fold(to_module(net))
    with pytest.raises(PassOrderError, match="pass 'merge_dispatch' cannot run after fold_bn"):
        merge_dispatch.apply(folded, policy="fast")


def test_folding_undoes_the_shared_moments_and_the_dispatch(net):
    gm = memory.training(to_module(net), "lean").eval()
    folded = fold_bn.fold(gm)
    assert applied(folded) == ("lean", "fold_bn")
    assert applied(gm) == ("lean", "normalise_once", "merge_dispatch")  # fold works on a copy
    assert not [m for m in folded.modules() if isinstance(m, normalise_once.BatchMoments)]
