"""Weakly supervised localisation: boxes from saliency masks scored against ground-truth boxes.

Two protocols, both "ground-truth class known" (the mask explains the annotated class):

- **Localisation error** (Dabkowski & Gal 2017, Section 5.1; ILSVRC's localisation criterion
  with the class given): threshold the mask at 0.5; the tightest box around *all* pixels above
  it is the prediction; it is correct when its IoU with *any* ground-truth box is above 0.5
  (strictly). A mask with no pixel above the threshold predicts nothing and counts as wrong.
- **MaxBoxAcc** (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
  CVPR 2020; reference code clovaai/wsolevaluation): for every threshold of a grid, the box
  around the *largest connected component* above the threshold; the accuracy at each threshold;
  the maximum over thresholds. V1 counts IoU >= 0.5; V2 averages the maxima at IoU >= 0.3, 0.5
  and 0.7 and matches the best box among all components.

Boxes are rtsal's ``Box = (x0, y0, x1, y1)``: 0-based pixel indices, x1 and y1 exclusive; a
mask's box is :func:`rtsal.boxes.mask_box` (``largest=True`` for MaxBoxAcc's component).
Ground-truth boxes are read from annotation files by :mod:`rtsal.data.annotations`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rtsal.boxes import Box, box_iou, component_boxes, mask_array

# --------------------------------------------------------------------------- the paper's protocol


def _check_lengths(pred: Sequence[Any], gt: Sequence[Sequence[Box]]) -> None:
    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predictions but {len(gt)} ground-truth entries")
    for i, boxes in enumerate(gt):
        if len(boxes) == 0:
            raise ValueError(f"image {i} has no ground-truth box")


def best_iou(box: Box | None, gt_boxes: Sequence[Box]) -> float:
    """The highest IoU of ``box`` with any of ``gt_boxes``; 0 for no box (or no ground truth)."""
    if box is None:
        return 0.0
    return max((box_iou(box, g) for g in gt_boxes), default=0.0)


def localisation_hit(box: Box | None, gt_boxes: Sequence[Box], iou_threshold: float = 0.5) -> bool:
    """One image: the predicted box has IoU > ``iou_threshold`` with any ground-truth box; no
    box (an empty mask) is wrong. Dabkowski & Gal 2017, Section 5.1."""
    return box is not None and best_iou(box, gt_boxes) > iou_threshold


def localisation_correct(
    pred_boxes: Sequence[Box | None],
    gt_boxes_per_image: Sequence[Sequence[Box]],
    iou_threshold: float = 0.5,
) -> list[bool]:
    """:func:`localisation_hit` per image."""
    _check_lengths(pred_boxes, gt_boxes_per_image)
    return [
        localisation_hit(box, gts, iou_threshold)
        for box, gts in zip(pred_boxes, gt_boxes_per_image, strict=True)
    ]


class LocalisationError:
    """The localisation error one image at a time: ``update`` with each image's predicted box
    and ground-truth boxes, ``compute`` for the fraction wrong."""

    def __init__(self, iou_threshold: float = 0.5):
        self.iou_threshold = iou_threshold
        self.images = 0
        self.wrong = 0

    def update(self, box: Box | None, gt_boxes: Sequence[Box]) -> bool:
        """Score one image; whether its box is right."""
        if len(gt_boxes) == 0:
            raise ValueError("an image has no ground-truth box")
        hit = localisation_hit(box, gt_boxes, self.iou_threshold)
        self.images += 1
        self.wrong += not hit
        return hit

    def compute(self) -> float:
        if not self.images:
            raise ValueError("no images to evaluate")
        return self.wrong / self.images


def localisation_error(
    pred_boxes: Sequence[Box | None],
    gt_boxes_per_image: Sequence[Sequence[Box]],
    iou_threshold: float = 0.5,
) -> float:
    """Fraction of images whose predicted box is wrong (see :func:`localisation_hit`).

    The paper reports it in percent: 36.7 % for the masking model on ImageNet val (ResNet-50).
    """
    _check_lengths(pred_boxes, gt_boxes_per_image)
    error = LocalisationError(iou_threshold)
    for box, gts in zip(pred_boxes, gt_boxes_per_image, strict=True):
        error.update(box, gts)
    return error.compute()


# --------------------------------------------------------------------------- MaxBoxAcc


def threshold_grid(step: float = 0.01) -> np.ndarray:
    """``0, step, 2 step, ...`` below 1, as wsolevaluation's ``np.arange(0, 1, step)``."""
    n = math.ceil(1.0 / step - 1e-9)
    return np.round(np.arange(n) * step, 12)


def normalize_map(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] (float32); a constant map becomes all zeros
    (wsolevaluation's ``normalize_scoremap``)."""
    m = mask_array(mask)
    lo, hi = float(m.min()), float(m.max())
    if not np.isfinite(m).all() or hi == lo:
        return np.zeros(m.shape, dtype=np.float32)
    return ((m - lo) / (hi - lo)).astype(np.float32)


@dataclass(frozen=True)
class MaxBoxAccResult:
    """Accuracy at every (IoU threshold, mask threshold) and its maxima (fractions, not %)."""

    thresholds: np.ndarray  # (T,) mask thresholds
    iou_thresholds: tuple[float, ...]
    accuracy: np.ndarray  # (len(iou_thresholds), T)
    images: int

    @property
    def best(self) -> np.ndarray:
        """Max over mask thresholds, one per IoU threshold."""
        return self.accuracy.max(axis=1)

    @property
    def best_thresholds(self) -> np.ndarray:
        """The first mask threshold reaching each maximum."""
        return self.thresholds[self.accuracy.argmax(axis=1)]

    @property
    def value(self) -> float:
        """MaxBoxAcc: the mean of ``best`` over the IoU thresholds (V1 has just one, 0.5)."""
        return float(self.best.mean())

    def to_dict(self) -> dict[str, Any]:
        per_iou = {}
        for iou, acc, tau in zip(self.iou_thresholds, self.best, self.best_thresholds, strict=True):
            per_iou[f"{iou:g}"] = {"accuracy": float(acc), "mask_threshold": float(tau)}
        return {"max_box_acc": self.value, "images": self.images, "per_iou": per_iou}


V2_IOU_THRESHOLDS = (0.3, 0.5, 0.7)  # MaxBoxAccV2 averages over these


def max_box_hits(
    mask: torch.Tensor | np.ndarray,
    gt_boxes: Sequence[Box],
    thresholds: np.ndarray,
    iou_thresholds: Sequence[float],
    *,
    all_components: bool = False,
) -> np.ndarray:
    """One image of MaxBoxAcc: at each IoU threshold δ and mask threshold τ, whether a box of
    ``mask > τ`` has IoU >= δ with a ground-truth box; (len(iou_thresholds), len(thresholds))
    bool. The box is the largest 8-connected component's, or with ``all_components`` the best
    of all components'. No pixel above τ is wrong. The mask is thresholded as given (in float32):
    normalise it first (:func:`normalize_map`) for the protocol."""
    m = mask_array(mask, np.float32)
    hits = np.zeros((len(iou_thresholds), len(thresholds)), dtype=bool)
    for j, tau in enumerate(thresholds):
        boxes = component_boxes(m, tau)  # largest first
        if not boxes:
            continue
        chosen = boxes if all_components else boxes[:1]
        iou = max(box_iou(b, g) for b in chosen for g in gt_boxes)
        hits[:, j] = [iou >= delta for delta in iou_thresholds]
    return hits


class MaxBoxAccuracy:
    """MaxBoxAcc (Choe et al., CVPR 2020) one image at a time: ``update`` with each mask and its
    ground-truth boxes, ``compute`` for the :class:`MaxBoxAccResult`. Arguments as
    :func:`max_box_accuracy`; :meth:`v2` gives MaxBoxAccV2."""

    def __init__(
        self,
        *,
        thresholds: Sequence[float] | np.ndarray | None = None,
        iou_thresholds: Sequence[float] = (0.5,),
        all_components: bool = False,
        normalize: bool = True,
    ):
        grid = threshold_grid() if thresholds is None else thresholds
        self.thresholds = np.asarray(grid, dtype=np.float64)
        self.iou_thresholds = tuple(float(d) for d in iou_thresholds)
        self.all_components = all_components
        self.normalize = normalize
        self.correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)), dtype=np.int64)
        self.images = 0

    @classmethod
    def v2(
        cls, *, thresholds: Sequence[float] | np.ndarray | None = None, normalize: bool = True
    ) -> MaxBoxAccuracy:
        """MaxBoxAccV2: IoU thresholds 0.3, 0.5, 0.7, the best box among all components."""
        return cls(
            thresholds=thresholds,
            iou_thresholds=V2_IOU_THRESHOLDS,
            all_components=True,
            normalize=normalize,
        )

    def update(self, mask: torch.Tensor | np.ndarray, gt_boxes: Sequence[Box]) -> np.ndarray:
        """Score one mask; its hits (:func:`max_box_hits`)."""
        if len(gt_boxes) == 0:
            raise ValueError("an image has no ground-truth box")
        m = normalize_map(mask) if self.normalize else mask
        hits = max_box_hits(
            m, gt_boxes, self.thresholds, self.iou_thresholds, all_components=self.all_components
        )
        self.correct += hits
        self.images += 1
        return hits

    def compute(self) -> MaxBoxAccResult:
        if not self.images:
            raise ValueError("no images to evaluate")
        accuracy = self.correct / self.images
        return MaxBoxAccResult(self.thresholds, self.iou_thresholds, accuracy, self.images)


def max_box_accuracy(
    masks: Iterable[torch.Tensor | np.ndarray],
    gt_boxes_per_image: Sequence[Sequence[Box]],
    *,
    thresholds: Sequence[float] | np.ndarray | None = None,
    iou_thresholds: Sequence[float] = (0.5,),
    all_components: bool = False,
    normalize: bool = True,
) -> MaxBoxAccResult:
    """MaxBoxAcc (Choe et al., CVPR 2020), as clovaai/wsolevaluation computes it.

    For each mask (min-max normalised unless ``normalize=False``) and each mask threshold τ
    (default ``threshold_grid(0.01)``: 0, 0.01, ..., 0.99), the pixels ``> τ`` are split into
    8-connected components. With ``all_components=False`` (MaxBoxAccV1) the box around the
    largest component is the prediction; with ``True`` (V2's multi-contour evaluation) the best
    of all components' boxes counts. A prediction is correct at IoU threshold δ when its IoU with
    any ground-truth box is ``>= δ``. No pixel above τ is wrong. Accuracy per (δ, τ) over images;
    MaxBoxAcc is the maximum over τ, averaged over δ.

    Differences from the reference code, all at the level of single pixels: the map is
    thresholded in float32 rather than after 8-bit quantisation; "largest" counts pixels
    instead of the polygon area of an OpenCV contour; boxes are exact (the reference clips x1 to
    W - 1 and scores boxes as inclusive); an empty threshold gives no box rather than the box
    (0, 0, 0, 0).
    """
    masks = list(masks)
    _check_lengths(masks, gt_boxes_per_image)
    acc = MaxBoxAccuracy(
        thresholds=thresholds,
        iou_thresholds=iou_thresholds,
        all_components=all_components,
        normalize=normalize,
    )
    for m, gts in zip(masks, gt_boxes_per_image, strict=True):
        acc.update(m, gts)
    return acc.compute()


def max_box_accuracy_v2(
    masks: Iterable[torch.Tensor | np.ndarray],
    gt_boxes_per_image: Sequence[Sequence[Box]],
    *,
    thresholds: Sequence[float] | np.ndarray | None = None,
    normalize: bool = True,
) -> MaxBoxAccResult:
    """MaxBoxAccV2 (Choe et al., CVPR 2020): IoU thresholds 0.3, 0.5, 0.7 averaged, best box
    among all connected components."""
    return max_box_accuracy(
        masks,
        gt_boxes_per_image,
        thresholds=thresholds,
        iou_thresholds=V2_IOU_THRESHOLDS,
        all_components=True,
        normalize=normalize,
    )
