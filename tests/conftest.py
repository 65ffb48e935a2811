from pathlib import Path

import pytest

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


@pytest.fixture
def one_thread():
    """Many small tensors: one intra-op thread is fastest, and spares a small shared CPU's cores."""
    import torch

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
