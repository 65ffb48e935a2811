"""Training augmentation on the device: random crops of padded images and horizontal flips; random erasing
(Zhong et al. 2020, torchvision's RandomErasing rule: a box of 2% to 1/3 of the image, of aspect 0.3 to
3.3, set to 0); and the batch-level mixing of mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019),
each image paired with the one before it in the batch (as torchvision.transforms.v2's MixUp and CutMix
pair them), its one-hot target mixed in the same proportion. Random numbers are drawn on the CPU from a
generator the caller seeds; the arithmetic runs where the batch is."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


def soft_targets(y: torch.Tensor, classes: int, lam: float) -> torch.Tensor:
    """One-hot targets of `y` (float32) mixed as the images are: `lam` of each image's own class, 1 - lam
    of the class of the image before it (the batch rolled by one)."""
    one = F.one_hot(y, classes).float()
    return one.roll(1, 0).mul_(1.0 - lam).add_(one.mul(lam))


def mixup(x: torch.Tensor, y: torch.Tensor, classes: int, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image blended with the one before it in the batch, `lam` of its own; its target likewise."""
    return x.roll(1, 0).mul_(1.0 - lam).add_(x.mul(lam)), soft_targets(y, classes, lam)


def cutmix_box(height: int, width: int, lam: float, cx: int, cy: int) -> tuple[int, int, int, int]:
    """The pasted box (x1, y1, x2, y2) of CutMix at `lam`, centred on column `cx` and row `cy`: sides of
    sqrt(1 - lam) of the image's, cut off at its edges (torchvision's rule)."""
    r = 0.5 * math.sqrt(1.0 - lam)
    half_w, half_h = int(r * width), int(r * height)
    return max(cx - half_w, 0), max(cy - half_h, 0), min(cx + half_w, width), min(cy + half_h, height)


def cutmix(x: torch.Tensor, y: torch.Tensor, classes: int,
           box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image with `box` pasted from the one before it in the batch; its target mixed by the share of
    the image the box leaves."""
    x1, y1, x2, y2 = box
    out = x.clone()
    out[..., y1:y2, x1:x2] = x.roll(1, 0)[..., y1:y2, x1:x2]
    lam = 1.0 - (x2 - x1) * (y2 - y1) / (x.shape[-1] * x.shape[-2])
    return out, soft_targets(y, classes, lam)


@dataclass(frozen=True)
class Mixing:
    """A recipe's mixing of training batches: with probability `prob` a batch is mixed, by CutMix with
    probability `switch_prob` where both alphas are set (else by whichever is), at a lam drawn from
    Beta(alpha, alpha) of the method chosen. Every batch gets soft targets, mixed or not."""

    classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def draw(self, generator: torch.Generator, height: int, width: int) -> tuple[str, float, tuple[int, ...]]:
        """(method, lam, box) of one batch: method "none", "mixup" or "cutmix"; the box (CutMix's) empty
        otherwise. All drawn from `generator`, whatever the outcome, so batches stay independent."""
        words = torch.randint(0, 2**62, (4,), generator=generator).tolist()
        rng = random.Random(words[0])
        use = rng.random() < self.prob
        cut = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        if not use or not self.active:
            return "none", 1.0, ()
        lam = rng.betavariate(*(2 * (self.cutmix_alpha if cut else self.mixup_alpha,)))
        if not cut:
            return "mixup", lam, ()
        return "cutmix", lam, cutmix_box(height, width, lam, words[1] % width, words[2] % height)

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch mixed as `draw` says, and its soft targets."""
        method, lam, box = self.draw(generator, x.shape[-2], x.shape[-1])
        if method == "mixup":
            return mixup(x, y, self.classes, lam)
        if method == "cutmix":
            return cutmix(x, y, self.classes, box)
        return x, soft_targets(y, self.classes, 1.0)


ERASE_SCALE = (0.02, 1 / 3)  # torchvision's RandomErasing defaults: the box's share of the image
ERASE_RATIO = (0.3, 3.3)  # and its aspect ratio (height / width)


def erasing_boxes(n: int, height: int, width: int, prob: float,
                  generator: torch.Generator) -> list[tuple[int, int, int, int] | None]:
    """For each of `n` images, with probability `prob`, the box (top, left, height, width) random erasing
    sets to 0, drawn by torchvision's rule (up to 10 tries for a box inside the image; none found: no
    box); else None. Drawn from `generator` on the CPU."""
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
    area, log_ratio = height * width, (math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]))
    boxes: list[tuple[int, int, int, int] | None] = []
    for _ in range(n):
        box = None
        if rng.random() < prob:
            for _ in range(10):
                target = area * rng.uniform(*ERASE_SCALE)
                aspect = math.exp(rng.uniform(*log_ratio))
                h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
                if h < height and w < width:
                    box = (rng.randint(0, height - h), rng.randint(0, width - w), h, w)
                    break
        boxes.append(box)
    return boxes


def erase(x: torch.Tensor, boxes: list[tuple[int, int, int, int] | None]) -> torch.Tensor:
    """`x` (N×C×H×W) with each image's box (top, left, height, width; None: none) set to 0 in every
    channel: one masked fill on x's device."""
    n, _, h, w = x.shape
    if not any(boxes):
        return x
    t = torch.tensor([b or (0, 0, 0, 0) for b in boxes], dtype=torch.long).to(x.device, non_blocking=True)
    top, left, hh, ww = (t[:, k].view(n, 1, 1) for k in range(4))
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + hh) & (cols >= left) & (cols < left + ww)
    return x.masked_fill(inside.unsqueeze(1), 0)


def random_erasing(x: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing of a batch: `erasing_boxes`, then `erase`."""
    return erase(x, erasing_boxes(len(x), x.shape[-2], x.shape[-1], prob, generator))
