"""Pictures: the paper's Figure-6 style grid and heat-map overlays, drawn with PIL."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from rtsal.data.images import tensor_to_pil


def heatmap(mask: torch.Tensor) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 with a perceptual blue-yellow-red ramp."""
    m = mask.detach().float().clamp(0, 1).cpu().numpy()
    stops = np.array(
        [[0.0, 0.0, 0.3], [0.0, 0.4, 1.0], [0.2, 0.9, 0.6], [1.0, 0.9, 0.0], [0.9, 0.1, 0.0]]
    )
    pos = m * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    t = (pos - lo)[..., None]
    rgb = stops[lo] * (1 - t) + stops[lo + 1] * t
    return (rgb * 255 + 0.5).astype(np.uint8)


def overlay(image: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """Heat map of ``mask`` (1, H, W) blended over ``image`` (C, H, W) in [0, 1]."""
    img = image.detach().float().cpu()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    base = img.permute(1, 2, 0).numpy()
    heat = heatmap(mask[0]).astype(np.float32) / 255
    a = alpha * mask[0].detach().float().cpu().numpy()[..., None] ** 0.5
    out = base * (1 - a) + heat * a
    return Image.fromarray((out.clip(0, 1) * 255 + 0.5).astype(np.uint8))


def _upscale(im: Image.Image, size: int) -> Image.Image:
    if im.width >= size:
        return im
    return im.resize((size, size * im.height // im.width), Image.NEAREST)


def figure6_grid(
    images: torch.Tensor,  # (N, C, H, W) in [0, 1]
    masks: torch.Tensor,  # (N, 1, H, W) in [0, 1]
    labels: Sequence[str] = (),
    cell: int = 96,
    per_row: int = 10,
) -> Image.Image:
    """Rows of (image, mask, image x mask, image x (1 - mask)), like the paper's Figure 6."""
    n = images.shape[0]
    cols = min(per_row, n)
    groups = (n + cols - 1) // cols
    label_h = 14 if labels else 0
    rows_per_group = 4
    width = cols * (cell + 2) + 70
    height = groups * (rows_per_group * (cell + 2) + label_h + 8)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    row_names = ("image", "mask", "image x M", "image x (1-M)")
    for g in range(groups):
        y0 = g * (rows_per_group * (cell + 2) + label_h + 8)
        for r, name in enumerate(row_names):
            draw.text((4, y0 + label_h + r * (cell + 2) + cell // 2 - 6), name, fill=(0, 0, 0))
        for c in range(cols):
            i = g * cols + c
            if i >= n:
                break
            x = 70 + c * (cell + 2)
            img, m = images[i], masks[i]
            tiles = (img, m, img * m, img * (1 - m))
            if labels:
                draw.text((x + 2, y0), str(labels[i])[:14], fill=(0, 0, 0))
            for r, t in enumerate(tiles):
                tile = _upscale(tensor_to_pil(t).convert("RGB"), cell).resize((cell, cell))
                canvas.paste(tile, (x, y0 + label_h + r * (cell + 2)))
    return canvas
