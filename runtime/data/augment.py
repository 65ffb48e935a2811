"""Training augmentation on the device: random crops of padded images and horizontal flips."""

from __future__ import annotations

import torch


def augment(x: torch.Tensor, pad: int, *, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by `pad`, cropped back at its own random offset and, with `flip`,
    mirrored with probability 1/2: one gather on x's device, offsets drawn from `generator` on CPU."""
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator) - pad
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator) - pad
    if flip:
        mirror = torch.randint(0, 2, (n, 1, 1), generator=generator).bool()
    else:
        mirror = torch.zeros(n, 1, 1, dtype=torch.bool, device=x.device)
    dy, dx, mirror = dy.to(x.device), dx.to(x.device), mirror.to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    cols = torch.where(mirror, w - 1 - cols, cols) + dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)
    out = torch.gather(x.reshape(n, c, h * w), 2, index.reshape(n, 1, h * w).expand(n, c, h * w))
    return out.view(n, c, h, w).masked_fill_(~inside.unsqueeze(1), 0)
