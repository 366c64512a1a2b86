"""Boxes from masks: (x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""

from __future__ import annotations

import torch


def threshold_box(mask: torch.Tensor, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """Tightest box around *all* pixels of ``mask`` (H, W) above ``threshold``; None if none."""
    on = mask > threshold
    if not bool(on.any()):
        return None
    rows = torch.nonzero(on.any(dim=1)).squeeze(1)
    cols = torch.nonzero(on.any(dim=0)).squeeze(1)
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
