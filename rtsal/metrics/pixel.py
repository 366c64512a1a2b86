"""Saliency maps against binary ground-truth pixel masks: PR curves, max F_β and MAE.

The salient-object-detection protocol (Achanta et al., "Frequency-tuned salient region
detection", CVPR 2009; Borji et al., "Salient Object Detection: A Benchmark", TIP 2015; MAE from
Perazzi et al., "Saliency Filters", CVPR 2012), as the widely used PySODMetrics package computes
it:

- each map is min-max normalised to [0, 1] (``normalize=False`` keeps it as it is) and
  quantised to 256 levels, ``q = round(255 · map)``;
- for every threshold ``t = 0, ..., 255`` the prediction is ``q >= t``;
  precision ``P = TP / (TP + FP)``, recall ``R = TP / |GT|``;
  ``F_β = (1 + β²) P R / (β² P + R)`` with β² = 0.3 (precision weighted more);
- the P, R and F curves are computed per image and averaged over images (so the mean F curve is
  not the F of the mean P and R); max F_β is the maximum of the mean F curve over thresholds;
- MAE is ``mean |map − gt|`` over the pixels of an image (the normalised, unquantised map),
  averaged over images.

Conventions where the formulas are undefined (those of PySODMetrics): an empty prediction has
precision 0 (so the curve ends at (R, P) = (0, 0) for thresholds above the map's maximum); an
empty ground truth has recall 0; F is 0 when P = R = 0. Quantisation rounds to the nearest level,
so a value k/255 lands on level k despite floating-point error (PySODMetrics truncates, which
moves a few values down by one level).

Ground truth: booleans, or numbers thresholded at 0.5 (uint8 images are divided by 255 first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from rtsal.boxes import mask_array

LEVELS = 256
BETA2 = 0.3  # β² of the F-measure (Achanta et al. 2009)


def prepare_map(saliency: torch.Tensor | np.ndarray, normalize: bool = True) -> np.ndarray:
    """(H, W) float map in [0, 1]; min-max normalised unless ``normalize=False`` (a constant
    map is left as it is, clipped to [0, 1])."""
    m = mask_array(saliency)
    if normalize:
        lo, hi = float(m.min()), float(m.max())
        if hi > lo:
            m = (m - lo) / (hi - lo)
    return np.clip(m, 0.0, 1.0)


def binary_mask(gt: torch.Tensor | np.ndarray) -> np.ndarray:
    """Ground truth as a boolean (H, W) array: values above 0.5 (uint8 arrays: above 127.5)."""
    if isinstance(gt, np.ndarray) and gt.dtype == np.uint8:
        return mask_array(gt) > 127.5
    if isinstance(gt, torch.Tensor) and gt.dtype == torch.uint8:
        return mask_array(gt) > 127.5
    return mask_array(gt) > 0.5


def quantise(saliency: torch.Tensor | np.ndarray, normalize: bool = True) -> np.ndarray:
    """Map levels 0..255 (int64): ``round(255 · map)`` of the prepared map."""
    return np.rint(prepare_map(saliency, normalize) * (LEVELS - 1)).astype(np.int64)


def precision_recall_curve(
    saliency: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall (256,) of one map at thresholds t = 0..255 (index t: ``q >= t``)."""
    q = quantise(saliency, normalize)
    fg = binary_mask(gt)
    if q.shape != fg.shape:
        raise ValueError(f"map {q.shape} and ground truth {fg.shape} differ in size")
    # pixels at each level, then counts at level >= t by a reversed cumulative sum
    fg_at = np.bincount(q[fg], minlength=LEVELS)
    bg_at = np.bincount(q[~fg], minlength=LEVELS)
    tp = np.cumsum(fg_at[::-1])[::-1].astype(np.float64)  # (256,) TP at q >= t
    predicted = tp + np.cumsum(bg_at[::-1])[::-1]  # (256,) TP + FP
    precision = np.divide(tp, predicted, out=np.zeros(LEVELS), where=predicted > 0)
    recall = tp / fg.sum() if fg.any() else np.zeros(LEVELS)
    return precision, recall


def f_measure(precision: np.ndarray, recall: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    """``F_β = (1 + β²) P R / (β² P + R)``, 0 where P = R = 0 (Achanta et al. 2009)."""
    p, r = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    den = beta2 * p + r
    return np.divide((1 + beta2) * p * r, den, out=np.zeros_like(den), where=den > 0)


def mean_absolute_error(
    saliency: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, *, normalize: bool = True
) -> float:
    """MAE of one map: ``mean |map − gt|`` over its pixels (Perazzi et al. 2012)."""
    m = prepare_map(saliency, normalize)
    fg = binary_mask(gt)
    if m.shape != fg.shape:
        raise ValueError(f"map {m.shape} and ground truth {fg.shape} differ in size")
    return float(np.abs(m - fg).mean())


@dataclass(frozen=True)
class PixelMetrics:
    """Curves (256,) averaged over images, index t = threshold t; and the scalars."""

    precision: np.ndarray
    recall: np.ndarray
    f_measure: np.ndarray
    mae: float
    images: int
    beta2: float = BETA2

    @property
    def max_f(self) -> float:
        """Maximal F_β: the maximum of the mean F curve over thresholds."""
        return float(self.f_measure.max())

    @property
    def best_threshold(self) -> int:
        """The first threshold (0..255) reaching ``max_f``."""
        return int(self.f_measure.argmax())

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_f": self.max_f,
            "best_threshold": self.best_threshold,
            "mae": self.mae,
            "images": self.images,
            "beta2": self.beta2,
        }


class PixelScores(NamedTuple):
    """One image's max F_β (the maximum of its own F curve) and MAE."""

    max_f: float
    mae: float


class PixelMaskEvaluation:
    """PR and F curves and MAE one image at a time: ``update`` with each map and its
    ground-truth mask, ``compute`` for the :class:`PixelMetrics` (curves and MAE averaged over
    the images)."""

    def __init__(self, *, beta2: float = BETA2, normalize: bool = True):
        self.beta2 = beta2
        self.normalize = normalize
        self.images = 0
        self.curve_sums = np.zeros((3, LEVELS))  # running sums of the P, R and F curves
        self.mae_sum = 0.0

    def update(
        self, saliency: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray
    ) -> PixelScores:
        """Score one map (the size of its mask)."""
        p, r = precision_recall_curve(saliency, gt, normalize=self.normalize)
        f = f_measure(p, r, self.beta2)
        mae = mean_absolute_error(saliency, gt, normalize=self.normalize)
        self.curve_sums += np.stack([p, r, f])
        self.mae_sum += mae
        self.images += 1
        return PixelScores(float(f.max()), mae)

    def compute(self) -> PixelMetrics:
        if not self.images:
            raise ValueError("no images to evaluate")
        p, r, f = self.curve_sums / self.images
        return PixelMetrics(p, r, f, self.mae_sum / self.images, self.images, self.beta2)


def evaluate_pixel_masks(
    saliency_maps: Iterable[torch.Tensor | np.ndarray],
    gt_masks: Iterable[torch.Tensor | np.ndarray],
    *,
    beta2: float = BETA2,
    normalize: bool = True,
) -> PixelMetrics:
    """PR and F curves, max F_β and MAE of maps against ground-truth masks (see the module
    docstring for the protocol). Each map must have its mask's size; a batch (B, 1, H, W)
    iterates as B maps."""
    evaluation = PixelMaskEvaluation(beta2=beta2, normalize=normalize)
    for i, (m, g) in enumerate(zip(saliency_maps, gt_masks, strict=True)):
        try:
            evaluation.update(m, g)
        except ValueError as exc:
            raise ValueError(f"image {i}: {exc}") from None
    return evaluation.compute()


def plot_pr_curves(
    curves: Mapping[str, PixelMetrics], path: str | Path, *, title: str = "Precision–recall"
) -> Path:
    """Draw each method's mean PR curve (legend: name and max F_β) to a PNG at ``path``.

    Uses matplotlib's Agg canvas directly, so it never touches pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, c in curves.items():
        keep = c.precision > 0  # drop the (0, 0) end of empty predictions
        ax.plot(c.recall[keep], c.precision[keep], label=f"{name} (max F = {c.max_f:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if curves:
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
