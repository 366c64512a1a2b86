"""Faithfulness of saliency maps: deletion and insertion curves, and the pointing game.

- **Deletion / insertion** (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018): rank the pixels by saliency, most salient
  first; deletion replaces them, ``steps`` equal chunks at a time, by a baseline (default black;
  a blurred copy, the black box's mean colour or any image on request) and records the black
  box's probability of the class after each step; insertion starts from the blurred image and
  puts the original pixels back in the same order. The score is the area under the probability
  curve over the fraction of pixels changed, [0, 1], by the trapezoidal rule. Lower is better
  for deletion, higher for insertion.
- **Pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
  2016): a hit when the map's maximum lies in a ground-truth box of the class, within a
  tolerance of 15 px in the original; accuracy = hits / (hits + misses).

Differences from the RISE reference code, chosen for rtsal's images in [0, 1]: RISE substitutes
zeros *after* normalisation, which is the data set's mean colour (``baseline="mean"`` here) where
rtsal's ``"zeros"`` is black; its blur is an 11 × 11 kernel cut from a σ = 5 Gaussian over
zero padding, here rtsal's separable Gaussian blur with σ = ``blur_sigma`` px and reflect
padding; pixels of equal saliency are ranked in raster order (a stable sort).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rtsal.boxes import Box, mask_array
from rtsal.engine.removal import gaussian_blur

Baseline = str | torch.Tensor  # "zeros", "blur", "mean", or an image (C, H, W) / (B, C, H, W)

# --------------------------------------------------------------------------- deletion / insertion


@dataclass(frozen=True)
class CausalCurve:
    """Probability curves of a deletion or insertion run over a batch."""

    fractions: torch.Tensor  # (steps + 1,) fraction of pixels changed after each step
    probabilities: torch.Tensor  # (B, steps + 1) black-box probability of each image's class
    auc: torch.Tensor  # (B,) trapezoidal area under each curve over [0, 1]

    @property
    def mean_auc(self) -> float:
        return float(self.auc.mean())


def curve_auc(fractions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under ``values`` (..., N) over ``fractions`` (N,)."""
    return torch.trapezoid(values, fractions, dim=-1)


def chunk_ends(pixels: int, steps: int) -> list[int]:
    """How many pixels are changed after step k = 0..steps: ``floor(k · pixels / steps)``, so
    the chunks differ in size by at most one pixel."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return [k * pixels // steps for k in range(steps + 1)]


def saliency_ranks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Rank of every pixel (0 = most salient), (B, H·W); masks (B, 1, h, w) are resized to
    ``size`` (H, W) bilinearly first if they differ. Ties go in raster order."""
    if masks.shape[-2:] != size:
        masks = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)
    flat = masks.flatten(1).float()  # (B, H·W)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)  # pixel indices by saliency
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def baseline_image(
    images: torch.Tensor, baseline: Baseline, *, blur_sigma: float = 5.0, black_box: Any = None
) -> torch.Tensor:
    """The substitute for removed pixels, same shape as ``images`` (B, C, H, W):
    ``"zeros"`` black; ``"blur"`` a Gaussian blur with σ = ``blur_sigma`` px; ``"mean"`` the black
    box's normalisation mean (RISE's zero in normalised space); or a given image."""
    if isinstance(baseline, torch.Tensor):
        return baseline.to(images).expand_as(images)
    if baseline == "zeros":
        return torch.zeros_like(images)
    if baseline == "blur":
        return gaussian_blur(images, blur_sigma)
    if baseline == "mean":
        if black_box is None or not hasattr(black_box, "mean"):
            raise ValueError('baseline="mean" needs a black box with a normalisation mean')
        return black_box.mean.to(images).view(1, -1, 1, 1).expand_as(images)
    raise ValueError(f"unknown baseline {baseline!r}; use 'zeros', 'blur', 'mean' or a tensor")


def _device(black_box: Any, fallback: torch.device) -> torch.device:
    mean = getattr(black_box, "mean", None)
    return mean.device if isinstance(mean, torch.Tensor) else fallback


@torch.inference_mode()
def _causal_curve(
    black_box: Any,
    images: torch.Tensor,
    masks: torch.Tensor,
    classes: torch.Tensor | Sequence[int],
    *,
    insert: bool,
    steps: int,
    baseline: Baseline,
    blur_sigma: float,
    batch_size: int,
) -> CausalCurve:
    B, C, H, W = images.shape
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    if masks.shape[0] != B:
        raise ValueError(f"{B} images but {masks.shape[0]} masks")
    cls = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    if cls.numel() != B:
        raise ValueError(f"{B} images but {cls.numel()} classes")
    dev = _device(black_box, images.device)
    images = images.to(dev)
    ranks = saliency_ranks(masks.to(dev), (H, W)).view(B, 1, H, W)
    other = baseline_image(images, baseline, blur_sigma=blur_sigma, black_box=black_box)
    ends = torch.tensor(chunk_ends(H * W, steps), device=dev)  # (steps + 1,)
    probs = torch.empty(B, steps + 1)
    for b in range(B):
        start, finish = (other[b], images[b]) if insert else (images[b], other[b])
        for s0 in range(0, steps + 1, batch_size):
            n = ends[s0 : s0 + batch_size].view(-1, 1, 1, 1)  # (S, 1, 1, 1) pixels changed
            changed = ranks[b : b + 1] < n  # (S, 1, H, W)
            x = torch.where(changed, finish, start)  # (S, C, H, W)
            p = black_box.probabilities(x)[:, int(cls[b])]
            probs[b, s0 : s0 + n.shape[0]] = p.float().cpu()
    fractions = ends.cpu().double() / (H * W)
    return CausalCurve(fractions.float(), probs, curve_auc(fractions, probs.double()).float())


def deletion_curve(
    black_box: Any,
    images: torch.Tensor,
    masks: torch.Tensor,
    classes: torch.Tensor | Sequence[int],
    *,
    steps: int = 224,
    baseline: Baseline = "zeros",
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> CausalCurve:
    """Deletion (RISE, Petsiuk et al. 2018): remove the most salient pixels first.

    ``images`` (B, C, H, W) in [0, 1], ``masks`` (B, 1, h, w), ``classes`` (B,); the black box
    needs ``probabilities(x)`` -> (N, K). ``steps`` equal chunks (RISE: 224 px per step at
    224 × 224, i.e. 224 steps), so ``steps + 1`` probabilities from the intact image to the full
    baseline; the images of up to ``batch_size`` steps go through the black box at once.
    RISE scores the black box's top-1 class; pass those as ``classes`` to do the same.
    """
    return _causal_curve(
        black_box,
        images,
        masks,
        classes,
        insert=False,
        steps=steps,
        baseline=baseline,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
    )


def insertion_curve(
    black_box: Any,
    images: torch.Tensor,
    masks: torch.Tensor,
    classes: torch.Tensor | Sequence[int],
    *,
    steps: int = 224,
    baseline: Baseline = "blur",
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> CausalCurve:
    """Insertion (RISE, Petsiuk et al. 2018): from the baseline (default the blurred image),
    put the most salient pixels back first; arguments as ``deletion_curve``."""
    return _causal_curve(
        black_box,
        images,
        masks,
        classes,
        insert=True,
        steps=steps,
        baseline=baseline,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
    )


# --------------------------------------------------------------------------- pointing game

POINTING_TOLERANCE = 15  # pixels (Zhang et al. 2016)


def max_point(mask: torch.Tensor | np.ndarray) -> tuple[int, int]:
    """(x, y) of the map's maximum; the first in raster order on ties."""
    m = mask_array(mask)
    y, x = divmod(int(np.argmax(m)), m.shape[1])
    return x, y


def box_distance(x: int, y: int, box: Box) -> float:
    """Euclidean distance from pixel (x, y) to the nearest pixel of ``box`` (0 inside)."""
    dx = max(box[0] - x, 0, x - (box[2] - 1))
    dy = max(box[1] - y, 0, y - (box[3] - 1))
    return math.hypot(dx, dy)


def pointing_hit(
    mask: torch.Tensor | np.ndarray, gt_boxes: Sequence[Box], tolerance: float = POINTING_TOLERANCE
) -> bool:
    """The map's maximum lies within ``tolerance`` px (Euclidean, pixel centres) of a pixel of
    any ground-truth box; ``tolerance=0`` asks for a point inside a box."""
    x, y = max_point(mask)
    return any(box_distance(x, y, b) <= tolerance for b in gt_boxes)


@dataclass(frozen=True)
class PointingResult:
    hits: int
    misses: int

    @property
    def accuracy(self) -> float:
        """hits / (hits + misses)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "hits": self.hits, "misses": self.misses}


class PointingGame:
    """The pointing game one image at a time: ``update`` with each mask and its ground-truth
    boxes, ``compute`` for the :class:`PointingResult`."""

    def __init__(self, tolerance: float = POINTING_TOLERANCE):
        self.tolerance = tolerance
        self.hits = 0
        self.misses = 0

    def update(self, mask: torch.Tensor | np.ndarray, gt_boxes: Sequence[Box]) -> bool:
        """Score one mask (:func:`pointing_hit`); whether it hits."""
        if len(gt_boxes) == 0:
            raise ValueError("an image has no ground-truth box")
        hit = pointing_hit(mask, gt_boxes, self.tolerance)
        self.hits += hit
        self.misses += not hit
        return hit

    def compute(self) -> PointingResult:
        return PointingResult(self.hits, self.misses)


def pointing_game(
    masks: Iterable[torch.Tensor | np.ndarray],
    gt_boxes_per_image: Sequence[Sequence[Box]],
    tolerance: float = POINTING_TOLERANCE,
) -> PointingResult:
    """The pointing game (Zhang et al., ECCV 2016) over images: each mask (H, W) or (1, H, W),
    in the coordinates of its ground-truth boxes (the 15 px tolerance is meant at the image's
    own resolution). Every image needs at least one box: leave out images without the class, as
    the original protocol does."""
    masks = list(masks)
    if len(masks) != len(gt_boxes_per_image):
        raise ValueError(f"{len(masks)} masks but {len(gt_boxes_per_image)} ground-truth entries")
    for i, boxes in enumerate(gt_boxes_per_image):
        if len(boxes) == 0:
            raise ValueError(f"image {i} has no ground-truth box")
    game = PointingGame(tolerance)
    for m, boxes in zip(masks, gt_boxes_per_image, strict=True):
        game.update(m, boxes)
    return game.compute()
