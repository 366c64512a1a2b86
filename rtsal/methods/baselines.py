"""Class-blind baselines: the masks any method should beat."""

from __future__ import annotations

from typing import Any

import torch


class CentreBoxMethod:
    """Baseline: a centred box of half the image area, whatever the class."""

    def __init__(self, black_box: Any = None, fraction: float = 0.5, **_: Any):
        self.fraction = fraction

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        B, _, H, W = images.shape
        s = self.fraction**0.5
        h, w = round(H * s), round(W * s)
        top, left = (H - h) // 2, (W - w) // 2
        masks = images.new_zeros(B, 1, H, W)
        masks[:, :, top : top + h, left : left + w] = 1
        return masks


class MaxBoxMethod:
    """Baseline: the whole image."""

    def __init__(self, black_box: Any = None, **_: Any):
        pass

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return images.new_ones(images.shape[0], 1, *images.shape[-2:])
