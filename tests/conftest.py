import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import pytest

# One intra-op thread for the whole run: the suite's tensors are small, and on a shared 2-core machine
# torch's default threads spin on them (several times slower). Set before torch is first imported; a
# test that measures threading sets its own count.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# Caches (the model list's summaries) go to a folder of the run's own, not the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="archspec-test-cache-")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` are skipped, not failed, on machines without a CUDA GPU."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch  # only when a cuda test is collected: collection alone stays free of torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def specs() -> Path:
    return SPECS


# ---- one elaboration and one build per model and settings, for the whole run -----------------------------

BUILT_BUDGET = 150_000_000  # parameters the cache of real builds holds (600 MB in float32)
_NETWORKS: dict = {}
_BUILT: OrderedDict = OrderedDict()


def _key(spec, sets: dict) -> tuple[str, str]:
    return str(spec), json.dumps(sets, sort_keys=True)


def network_of(spec, **sets):
    """`archspec.network(spec, **sets)`, elaborated once per run. Shared: read it, never change it."""
    import archspec  # collection stays free of torch: the project is imported when a test first asks

    key = _key(spec, sets)
    if key not in _NETWORKS:
        _NETWORKS[key] = archspec.network(spec, **sets)
    return _NETWORKS[key]


def built(spec, **sets):
    """`archspec.build(spec, **sets)` with torch seeded 0 (the caller's random state untouched), built once
    and kept while the builds held stay within `BUILT_BUDGET` parameters (the least recently used leave
    first); returned in eval mode. Shared: a test that changes the module (its mode, dtype, weights or
    gradients) changes a `copy.deepcopy` of it."""
    import archspec  # as in network_of: imported when first asked
    import torch

    key = _key(spec, sets)
    if key in _BUILT:
        _BUILT.move_to_end(key)
        return _BUILT[key].eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gm = archspec.build(network_of(spec, **sets))
    _BUILT[key] = gm
    held = sum(p.numel() for m in _BUILT.values() for p in m.parameters())
    while held > BUILT_BUDGET and len(_BUILT) > 1:
        held -= sum(p.numel() for p in _BUILT.popitem(last=False)[1].parameters())
    return gm.eval()


def on_meta(spec, **sets):
    """`archspec.build(spec, **sets)` on the meta device: every module and parameter shape, with no memory
    and no weights drawn, for what counting alone shows."""
    import archspec  # as in network_of: imported when first asked
    import torch

    with torch.device("meta"):
        return archspec.build(network_of(spec, **sets))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread in every test (the environment above covers torch imported later; this
    restores the count after a test that changed it)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def assert_same_function(gm, want_fn, x) -> None:
    """`gm(x)` and `want_fn(x)` agree in float64, and so do their gradients for the input and every
    parameter — all of which must take part."""
    import torch

    x = x.detach().requires_grad_(True)
    got, want = gm(x), want_fn(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    params = list(gm.parameters())
    g_got = torch.autograd.grad(got.square().sum(), [x] + params, retain_graph=True)
    g_want = torch.autograd.grad(want.square().sum(), [x] + params)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert all(g.abs().sum() > 0 for g in g_got)


def assert_same_steps(plain, new, x, steps: int = 2, **tol) -> None:
    """`steps` forward-backward passes of two modules from the same state, each followed by an SGD step:
    outputs, the input's and every parameter's gradient (all nonzero) and every buffer agree after each,
    within `tol` (`torch.testing.assert_close`'s). The modules' modes are the caller's."""
    import torch

    for _ in range(steps):
        xs = [x.detach().clone().requires_grad_(True) for _ in range(2)]
        outs = [m(xi) for m, xi in zip((plain, new), xs)]
        w = torch.randn(outs[0].shape, generator=torch.Generator().manual_seed(2), dtype=outs[0].dtype)
        for out in outs:
            (out * w).sum().backward()
        torch.testing.assert_close(outs[1], outs[0], **tol)
        torch.testing.assert_close(xs[1].grad, xs[0].grad, **tol)
        assert xs[1].grad.abs().sum() > 0
        for (name, p), (name_n, q) in zip(plain.named_parameters(), new.named_parameters(), strict=True):
            assert name == name_n
            assert q.grad is not None and q.grad.abs().sum() > 0, name
            torch.testing.assert_close(q.grad, p.grad, **tol, msg=lambda m: f"{name}: {m}")
        for (name, a), (name_n, b) in zip(plain.named_buffers(), new.named_buffers(), strict=True):
            assert name == name_n
            torch.testing.assert_close(b, a, **tol, msg=lambda m: f"{name}: {m}")
        with torch.no_grad():
            for m in (plain, new):
                for p in m.parameters():
                    p -= 0.1 * p.grad
                m.zero_grad(set_to_none=True)


class Stopped(Exception):
    """A run stopped from outside, as a killed process stops."""


def stop_after_first_save(run, out) -> None:
    """`run(out)` stopped right after the trainer's first save (the end of its first epoch), as a run that
    is killed there: what a `--resume` starts from."""
    from archspec.runtime.train.loop import Trainer

    save = Trainer._save

    def save_then_stop(self, epoch, improved):
        save(self, epoch, improved)
        raise Stopped

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "_save", save_then_stop)
        with pytest.raises(Stopped):
            run(out)


def cli_commands(groups: bool = False) -> dict[tuple[str, ...], object]:
    """Every command of the command line (typer's click objects) by its path of names (`("bench", "train")`);
    with `groups`, the command groups too (the root's path is `()`)."""
    import typer

    from archspec.cli import app

    def walk(group, prefix):
        if groups:
            yield prefix, group
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from walk(cmd, prefix + (name,))
            else:
                yield prefix + (name,), cmd

    return dict(walk(typer.main.get_command(app), ()))
