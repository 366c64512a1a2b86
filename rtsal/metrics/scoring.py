"""Every metric of a method in one pass: what ``rtsal localize`` and ``rtsal metric`` compute
for each image, and the summary of a run.

Each image is explained once (for its ground-truth class) and the mask, at the image's own
resolution, is scored by the metrics asked for, each by the tested function or accumulator of
its module (one image at a time, so a pass needs no more memory than one image):

- ``localization``: the paper's localisation error (threshold 0.5, tightest box around all pixels
  above it, correct when IoU > 0.5 with any ground-truth box of the class) and MaxBoxAcc V1 / V2
  over mask thresholds 0, 0.01, ..., 0.99 (:func:`rtsal.boxes.mask_box`,
  :class:`~rtsal.metrics.localization.LocalisationError`,
  :class:`~rtsal.metrics.localization.MaxBoxAccuracy`);
- ``saliency``: the paper's saliency metric (crop the 0.5-threshold box, resize to the black
  box's input ignoring aspect, ``log(max(a, 0.05)) - log(p)``;
  :func:`rtsal.metrics.saliency.saliency_metric`), with the probabilities on image x mask and
  image x (1 - mask) and the mask area for the true class and for a seeded absent class;
- ``pointing``: the pointing game, 15 px tolerance
  (:class:`rtsal.metrics.faithfulness.PointingGame`);
- ``deletion`` / ``insertion``: RISE's causal curves at the black box's resolution
  (:func:`rtsal.metrics.faithfulness.deletion_curve`,
  :func:`~rtsal.metrics.faithfulness.insertion_curve`);
- ``pixel``: precision-recall over 256 thresholds, max F_beta (beta^2 = 0.3) and MAE against pixel
  masks (:class:`rtsal.metrics.pixel.PixelMaskEvaluation`).

Seconds per image count the explanation alone (the mask for one image and class).

:class:`MethodScorer` scores one :class:`Sample` at a time: the row of the CSV, and what the
set-level metrics need of the sample (MaxBoxAcc's hits at every threshold, the precision and
recall curves, the seconds). :func:`summarize` makes the summary from those per-sample records
alone, so a run scored in shards and merged gives the same numbers to the last bit. Reading the
samples, building the explainer and writing the files is a run's business
(:mod:`rtsal.runs.scoring`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.errors import DataError, RtsalError

if TYPE_CHECKING:  # torch and numpy are imported when something is scored, not by the CLI
    import numpy as np

    from rtsal.boxes import Box
    from rtsal.metrics.pixel import PixelMetrics

METRICS = ("localization", "saliency", "pointing", "deletion", "insertion", "pixel")
NEEDS_BOXES = {"localization", "pointing"}
GT_BOX = "gt-box"  # the oracle: the union of the class's ground-truth boxes as the mask


@dataclass
class Sample:
    """One image and the class to explain; boxes and a pixel mask where the metrics need them."""

    path: Path
    label: int
    boxes: list[Box] = field(default_factory=list)
    pixel_mask: Path | None = None
    absent: int | None = None  # the absent class of the saliency metric's area (drawn once)


def parse_metrics(spec: str | Sequence[str]) -> list[str]:
    """``"localization,pixel"`` or ``"all"`` -> the metric names, validated."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["all"]:
        return list(METRICS)
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise RtsalError(
            f"unknown metric {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)} "
            "or all"
        )
    return names


def draw_absent_classes(samples: Sequence[Sample], num_classes: int, seed: int) -> None:
    """Each sample's absent class (its class plus a seeded non-zero offset, modulo the number of
    classes), drawn in the order of the whole list: a sample gets the same one whichever shard
    scores it. Samples that have one keep it."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    K = num_classes
    for s in samples:
        offset = int(torch.randint(1, max(K, 2), (1,), generator=generator))
        if s.absent is None:
            s.absent = (s.label + offset) % K


_PROBABILITIES = ("p_image", "p_image_times_mask", "p_image_times_inverse", "area")
_SALIENCY = ("saliency", "crop_area", "crop_probability", "area_absent")


class _Means:
    """Running means of named values (sums in the order the values come)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.counts[key] = self.counts.get(key, 0) + 1

    def mean(self, key: str) -> float | None:
        return self.sums[key] / self.counts[key] if self.counts.get(key) else None


def _plain(value: Any) -> Any:
    """``value`` as JSON's types: a run's records and those read back from a file are equal."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _bits(hits: Any) -> list[str]:
    """Hits (rows of booleans) as strings of 0 and 1, one per row."""
    return ["".join("1" if h else "0" for h in row) for row in hits]


def _unbits(rows: Sequence[str]) -> np.ndarray:
    import numpy as np

    return np.array([[c == "1" for c in row] for row in rows], dtype=bool)


class MethodScorer:
    """One method's pass over the images: :meth:`score` explains one sample and scores its mask
    with every metric asked for: the row, and the state the summary needs
    (:func:`summarize`)."""

    def __init__(self, explainer: Any, metrics: Sequence[str], *, method: str, steps: int):
        from rtsal.metrics.localization import MaxBoxAccuracy

        self.explainer = explainer
        self.metrics = list(metrics)
        self.method = method
        self.steps = steps
        self.max_box = MaxBoxAccuracy()
        self.max_box_v2 = MaxBoxAccuracy.v2()

    def score(self, s: Sample) -> tuple[dict[str, Any], dict[str, Any]]:
        from rtsal.data.images import load_image
        from rtsal.metrics.faithfulness import pointing_hit

        im = load_image(s.path)
        t0 = time.perf_counter()
        (e,) = self.explainer.explain_batch([im], [s.label])[0]
        state: dict[str, Any] = {"seconds": time.perf_counter() - t0}
        if self.method == GT_BOX:
            e = _box_explanation(self.explainer, im, e, s.boxes)
        mask = e.mask  # (H, W) at the image's resolution
        row: dict[str, Any] = {
            "input": str(s.path),
            "class_index": s.label,
            "class_name": e.class_name,
            "p_image": e.p_image,
            "p_image_times_mask": e.p_preserved,
            "p_image_times_inverse": e.p_destroyed,
            "area": e.area,
        }
        if "localization" in self.metrics:
            row.update(self._localization(mask, s.boxes, state))
        if "saliency" in self.metrics:
            row.update(self._saliency(im, e, s))
        if "pointing" in self.metrics:
            row["pointing_hit"] = pointing_hit(mask, s.boxes)
        if "deletion" in self.metrics or "insertion" in self.metrics:
            row.update(self._causal(im, mask, s.label))
        if "pixel" in self.metrics:
            assert s.pixel_mask is not None
            row.update(self._pixel(mask, s.pixel_mask, state))
        return {k: _plain(v) for k, v in row.items()}, state

    def _localization(
        self, mask: Any, boxes: Sequence[Box], state: dict[str, Any]
    ) -> dict[str, Any]:
        from rtsal.boxes import mask_box
        from rtsal.metrics.localization import best_iou, localisation_hit

        pred = mask_box(mask, 0.5)
        state["max_box_hits"] = _bits(self.max_box.update(mask, boxes))
        state["max_box_v2_hits"] = _bits(self.max_box_v2.update(mask, boxes))
        return {
            "box": list(pred) if pred else None,
            "best_iou": best_iou(pred, boxes),
            "localized": localisation_hit(pred, boxes),
        }

    def _saliency(self, im: Any, e: Any, s: Sample) -> dict[str, Any]:
        from rtsal.boxes import salient_box
        from rtsal.data.images import pil_to_tensor
        from rtsal.metrics.saliency import saliency_metric

        box = self.explainer.black_box
        sm = saliency_metric(box, pil_to_tensor(im), salient_box(e.mask), s.label)
        (ea,) = self.explainer.explain_batch([im], [s.absent], with_probabilities=False)[0]
        return {
            "saliency": sm["score"],
            "crop_area": sm["area"],
            "crop_probability": sm["probability"],
            "area_absent": ea.area,
        }

    def _causal(self, im: Any, mask: Any, label: int) -> dict[str, float]:
        from rtsal.metrics.faithfulness import deletion_curve, insertion_curve

        x = self.explainer.prepare(im)[None]  # (1, C, h, w) at the black box's resolution
        row = {}
        for name, curve in (("deletion", deletion_curve), ("insertion", insertion_curve)):
            if name in self.metrics:
                # the curve resizes the mask (1, 1, H, W) to x's size, bilinearly
                c = curve(self.explainer.black_box, x, mask[None, None], [label], steps=self.steps)
                row[name] = float(c.auc[0])
        return row

    def _pixel(self, mask: Any, gt_path: Path, state: dict[str, Any]) -> dict[str, Any]:
        from rtsal.metrics.pixel import f_measure, mean_absolute_error, precision_recall_curve

        gt = _load_pixel_mask(gt_path, tuple(mask.shape))
        p, r = precision_recall_curve(mask, gt)
        state["precision"], state["recall"] = p.tolist(), r.tolist()
        return {"max_f_image": float(f_measure(p, r).max()), "mae": mean_absolute_error(mask, gt)}


def summarize(
    records: Sequence[Mapping[str, Any]], metrics: Sequence[str], method: str
) -> dict[str, Any]:
    """The summary of a method's records, in their order (the samples' order for a whole
    run): means over images, and the set-level metrics of each metric's accumulator, fed with
    what each record holds of its sample. A run and its shards, merged, give the same numbers."""
    import numpy as np

    from rtsal.metrics.faithfulness import PointingGame
    from rtsal.metrics.localization import LocalisationError, MaxBoxAccuracy
    from rtsal.metrics.pixel import PixelMaskEvaluation, f_measure
    from rtsal.metrics.uncertainty import bootstrap_interval, wilson_interval

    metrics = list(metrics)
    saliency: list[float] = []
    means = _Means()
    localisation, pointing = LocalisationError(), PointingGame()
    max_box, max_box_v2 = MaxBoxAccuracy(), MaxBoxAccuracy.v2()
    pixel = PixelMaskEvaluation()
    seconds = 0.0
    wrong_way = halved = 0  # photos whose mask is the wrong way round / whose removal halves p
    for r in records:
        state = r["state"]
        seconds += state["seconds"]
        for k in _PROBABILITIES:
            means.add(k, r[k])
        wrong_way += r["p_image_times_inverse"] >= r["p_image_times_mask"]
        halved += r["p_image_times_inverse"] <= 0.5 * r["p_image"]
        if "localization" in metrics:
            localisation.images += 1
            localisation.wrong += not r["localized"]
            for acc, hits in ((max_box, "max_box_hits"), (max_box_v2, "max_box_v2_hits")):
                acc.correct += _unbits(state[hits])
                acc.images += 1
        if "saliency" in metrics:
            for k in _SALIENCY:
                means.add(k, r[k])
            saliency.append(r["saliency"])
            means.add("keep_ratio", r["p_image_times_mask"] / max(r["p_image"], 1e-12))
        if "pointing" in metrics:
            pointing.hits += bool(r["pointing_hit"])
            pointing.misses += not r["pointing_hit"]
        for k in ("deletion", "insertion"):
            if k in metrics:
                means.add(k, r[k])
        if "pixel" in metrics:
            p, rc = np.asarray(state["precision"]), np.asarray(state["recall"])
            pixel.curve_sums += np.stack([p, rc, f_measure(p, rc, pixel.beta2)])
            pixel.mae_sum += r["mae"]
            pixel.images += 1
    out: dict[str, Any] = {"method": method, "images": len(records), "metrics": [*metrics]}
    if not records:  # a shard without samples
        return out
    for k in _PROBABILITIES:
        out[k] = means.mean(k)
    # per image: f_c(X * (1 - M)) >= f_c(X * M) (the mask is "the wrong way round"), and
    # f_c(X * (1 - M)) <= f_c(X) / 2 (removing the mask at least halves the class)
    out["wrong_way"] = wrong_way / len(records)
    out["wrong_way_ci95"] = list(wilson_interval(wrong_way, len(records)))
    out["removal_halves"] = halved / len(records)
    if "localization" in metrics:
        v1, v2 = max_box.compute(), max_box_v2.compute()
        out["localization_error"] = localisation.compute()
        out["localization_error_ci95"] = list(
            wilson_interval(localisation.wrong, localisation.images)
        )
        out["max_box_acc"] = v1.value
        out["max_box_acc_threshold"] = float(v1.best_thresholds[0])
        out["max_box_acc_v2"] = v2.value
    if "saliency" in metrics:
        for k in (*_SALIENCY, "keep_ratio"):
            out[k] = means.mean(k)
        out["saliency_ci95"] = list(bootstrap_interval(saliency))
        out["saliency_median"] = float(np.median(saliency))
    if "pointing" in metrics:
        out["pointing"] = pointing.compute().accuracy
        out["pointing_ci95"] = list(wilson_interval(pointing.hits, pointing.hits + pointing.misses))
    for k in ("deletion", "insertion"):
        if k in metrics:
            out[k] = means.mean(k)
    if "pixel" in metrics:
        pm = pixel.compute()
        out["max_f"] = pm.max_f
        out["max_f_threshold"] = pm.best_threshold
        out["mae"] = pm.mae
        out["pr_curve"] = {
            "precision": pm.precision.tolist(),
            "recall": pm.recall.tolist(),
            "f": pm.f_measure.tolist(),
        }
    out["seconds_per_image"] = seconds / max(len(records), 1)
    return out


def _load_pixel_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            gt = np.asarray(im.convert("L"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: unreadable pixel mask ({exc})") from None
    if gt.shape != size:
        raise DataError(
            f"{path}: pixel mask is {gt.shape[1]}x{gt.shape[0]}, its image {size[1]}x{size[0]}"
        )
    return gt


def _box_explanation(explainer: Any, im: Any, e: Any, boxes: Sequence[Box]) -> Any:
    """``e`` with the union of ``boxes`` as its mask, and the probabilities recomputed."""
    from dataclasses import replace

    import torch
    import torch.nn.functional as F

    from rtsal.boxes import mask_box

    box = explainer.black_box
    dev = box.mean.device
    with torch.inference_mode():
        mask = torch.zeros(im.height, im.width)  # (H, W)
        for x0, y0, x1, y1 in boxes:
            mask[y0:y1, x0:x1] = 1.0
        x = explainer.prepare(im)[None]  # (1, C, h, w)
        m = F.interpolate(mask[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
        x, m = x.to(dev), m.to(dev)
        p = box.probabilities(torch.cat([x * m, x * (1 - m)]))[:, e.class_index].tolist()
        return replace(
            e,
            mask=mask,
            p_preserved=p[0],
            p_destroyed=p[1],
            area=float(mask.mean()),
            box=mask_box(mask),
        )


def pixel_metrics_of(summary: Mapping[str, Any]) -> PixelMetrics:
    """The PR curve of a summary as :class:`rtsal.metrics.pixel.PixelMetrics` (for plotting)."""
    import numpy as np

    from rtsal.metrics.pixel import PixelMetrics

    c = summary["pr_curve"]
    return PixelMetrics(
        np.asarray(c["precision"]),
        np.asarray(c["recall"]),
        np.asarray(c["f"]),
        summary["mae"],
        summary["images"],
    )
