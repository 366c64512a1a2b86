"""Boxes, one home for them: ``Box = (x0, y0, x1, y1)``, 0-based pixel indices, x1 and y1
exclusive; a box's area, two boxes' IoU, a box moved to another image size, and the box of a
mask.

:func:`mask_box` is the one way from a mask to a box, with its options: the tightest box around
*all* pixels above a threshold (the paper's localisation and saliency metric, the explainer's
``box``, the demo), or around the largest 8-connected component of them (MaxBoxAcc's
protocol); :func:`salient_box` is the saliency metric's variant that never comes back empty.
Masks are read as (H, W) or (1, H, W), tensor or array, and compared with the threshold in
float32, the precision of rtsal's masks, so that a mask value written as 0.6 is not "above" the
threshold 0.6.

It is a foundation module (numpy and torch; scipy for connected components, when asked for): the
metrics, the explainer, the demo, mosaics and the canvas benchmark all use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive


def box_area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def box_iou(a: Box, b: Box) -> float:
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def resize_box(box: Box, size: tuple[int, int], new_size: tuple[int, int]) -> Box:
    """Map ``box`` from an image of ``size`` (H, W) to one of ``new_size`` (H, W).

    Edges are scaled (pixel ``[x, x + 1)`` spans the same fraction of the width before and after)
    and rounded half up; the result keeps at least one pixel per side.
    """
    sy, sx = new_size[0] / size[0], new_size[1] / size[1]
    x0, y0 = math.floor(box[0] * sx + 0.5), math.floor(box[1] * sy + 0.5)
    x1, y1 = math.floor(box[2] * sx + 0.5), math.floor(box[3] * sy + 0.5)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


_TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}


def mask_array(mask: torch.Tensor | np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """One map as a numpy array (H, W) of ``dtype`` (float64 or float32); accepts (H, W) or
    (1, H, W), tensor or array."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().to("cpu", _TORCH_DTYPES[dtype]).numpy()
    arr = np.asarray(mask, dtype=dtype)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a map of shape (H, W) or (1, H, W), got {arr.shape}")
    return arr


def _above(mask: torch.Tensor | np.ndarray, threshold: float) -> np.ndarray:
    """The pixels of ``mask`` above ``threshold``, compared in float32: (H, W) bool."""
    return mask_array(mask, np.float32) > np.float32(threshold)


def _components(on: np.ndarray) -> tuple[list[Box], np.ndarray]:
    """The boxes of the 8-connected components of ``on`` in label order (by first pixel in
    raster order), and their pixel counts."""
    from scipy import ndimage

    labels, n = ndimage.label(on, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)]
    return boxes, sizes


def mask_box(
    mask: torch.Tensor | np.ndarray, threshold: float = 0.5, *, largest: bool = False
) -> Box | None:
    """The tightest box around all pixels of ``mask`` above ``threshold`` or, with ``largest``,
    around the largest 8-connected component of them (the first in raster order among equals);
    None when no pixel is above it."""
    on = _above(mask, threshold)
    if largest:
        boxes, sizes = _components(on)
        return boxes[int(np.argmax(sizes))] if boxes else None
    rows = np.flatnonzero(on.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(on.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_boxes(
    masks: Iterable[torch.Tensor | np.ndarray], threshold: float = 0.5
) -> list[Box | None]:
    """:func:`mask_box` of each mask; a batch (B, 1, H, W) iterates as B masks."""
    return [mask_box(m, threshold) for m in masks]


def component_boxes(mask: torch.Tensor | np.ndarray, threshold: float) -> list[Box]:
    """Boxes of the 8-connected components of the pixels of ``mask`` above ``threshold``,
    largest first (pixel count; equals in raster order of their first pixel)."""
    boxes, sizes = _components(_above(mask, threshold))
    return [boxes[i] for i in np.argsort(-sizes, kind="stable")]


def salient_box(mask: torch.Tensor | np.ndarray, threshold: float = 0.5) -> Box:
    """:func:`mask_box`, or for a mask with no pixel above ``threshold`` the one-pixel box at its
    maximum (the saliency metric's crop: an empty explanation keeps nothing)."""
    box = mask_box(mask, threshold)
    if box is not None:
        return box
    m = mask_array(mask)
    y, x = divmod(int(m.argmax()), m.shape[1])
    return x, y, x + 1, y + 1
