"""Metrics for saliency maps, each a pure function checked against hand-worked values.

Saliency metric (Dabkowski & Gal, Section 5.2): crop the tightest box around the salient
region (:func:`rtsal.boxes.salient_box`), resize the crop to the black box's input size ignoring
aspect, and score ``s = log(max(a, 0.05)) - log(p)`` with ``a`` the crop's area fraction and
``p`` the black box's probability of the class on the crop; lower is better.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rtsal.boxes import Box, box_area


def saliency_score(area_fraction: float, probability: float, floor: float = 0.05) -> float:
    """``log(max(a, floor)) - log(p)``."""
    return math.log(max(area_fraction, floor)) - math.log(max(probability, 1e-12))


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
