"""scikit-learn's bundled handwritten digits: the default training set, with nothing to download."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset, in_memory

_SPLIT_SEED = 20240917  # the digits split never changes, whatever the run's seed


def digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.rint(bunch.data * (255 / 16)).astype(np.uint8).reshape(-1, 1, 8, 8))
    y = torch.from_numpy(bunch.target.astype(np.int64))
    # a seeded shuffle sorted stably by class, every fifth to test: 20% of each class, 360 in all
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    by_class = perm[torch.argsort(y[perm], stable=True)]
    test = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    test[by_class[::5]] = True
    return in_memory("digits", x[~test], y[~test], x[test], y[test], 10, augment="crop", pad=1)
