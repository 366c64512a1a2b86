"""Metrics for saliency maps, each a pure function checked against hand-worked values.

Saliency metric (Dabkowski & Gal, Section 5.2): crop the tightest box around the salient
region, resize the crop to the black box's input size ignoring aspect, and score
``s = log(max(a, 0.05)) - log(p)`` with ``a`` the crop's area fraction and ``p`` the black box's
probability of the class on the crop; lower is better.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rtsal.metrics.boxes import threshold_box

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive


def box_area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def box_iou(a: Box, b: Box) -> float:
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def saliency_score(area_fraction: float, probability: float, floor: float = 0.05) -> float:
    """``log(max(a, floor)) - log(p)``."""
    return math.log(max(area_fraction, floor)) - math.log(max(probability, 1e-12))


def salient_box(mask: torch.Tensor, threshold: float = 0.5) -> Box:
    """Tightest box around the pixels of ``mask`` (H, W) above ``threshold``; a mask with none
    gives the one-pixel box at its maximum (an empty explanation keeps nothing)."""
    box = threshold_box(mask, threshold)
    if box is not None:
        return box
    i = int(mask.flatten().argmax())
    y, x = divmod(i, mask.shape[1])
    return x, y, x + 1, y + 1


def crop_resize(image: torch.Tensor, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """Crop (C, H, W) to ``box`` and resize to ``size`` (h, w), ignoring the aspect ratio."""
    x0, y0, x1, y1 = box
    crop = image[:, y0:y1, x0:x1].unsqueeze(0)
    return F.interpolate(
        crop, size=size, mode="bilinear", align_corners=False, antialias=crop.shape[-1] > size[1]
    ).clamp(0, 1)[0]


@torch.inference_mode()
def saliency_metric(black_box, image: torch.Tensor, box: Box, class_index: int) -> dict[str, float]:
    """The saliency metric of one image (C, H, W) in [0, 1] for one box and class."""
    H, W = image.shape[-2:]
    a = box_area(box) / (H * W)
    crop = crop_resize(image, box, black_box.input_size)
    dev = black_box.mean.device
    p = float(black_box.probabilities(crop[None].to(dev))[0, class_index])
    return {"score": saliency_score(a, p), "area": a, "probability": p}


def mask_array(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """One map as a float64 numpy array (H, W); accepts (H, W) or (1, H, W), tensor or array."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(mask, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a map of shape (H, W) or (1, H, W), got {arr.shape}")
    return arr


def resize_box(box: Box, size: tuple[int, int], new_size: tuple[int, int]) -> Box:
    """Map ``box`` from an image of ``size`` (H, W) to one of ``new_size`` (H, W).

    Edges are scaled (pixel ``[x, x + 1)`` spans the same fraction of the width before and after)
    and rounded half up; the result keeps at least one pixel per side.
    """
    sy, sx = new_size[0] / size[0], new_size[1] / size[1]
    x0, y0 = math.floor(box[0] * sx + 0.5), math.floor(box[1] * sy + 0.5)
    x1, y1 = math.floor(box[2] * sx + 0.5), math.floor(box[3] * sy + 0.5)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)
