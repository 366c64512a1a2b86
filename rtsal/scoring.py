"""Every evaluation of a method in one pass over the images: the engine behind ``rtsal localize``
and ``rtsal metric``.

Each image is explained once (for its ground-truth class) and the mask, at the image's own
resolution, is scored by the metrics asked for:

- ``localization``: the paper's localisation error (threshold 0.5, tightest box around all pixels
  above it, correct when IoU > 0.5 with any ground-truth box of the class) and MaxBoxAcc V1 / V2
  over mask thresholds 0, 0.01, ..., 0.99 (see :mod:`rtsal.localization`);
- ``saliency``: the paper's saliency metric (crop the 0.5-threshold box, resize to the black
  box's input ignoring aspect, ``log(max(a, 0.05)) - log(p)``), with the probabilities on
  image x mask and image x (1 - mask) and the mask area for the true class and for a seeded
  absent class;
- ``pointing``: the pointing game (15 px tolerance);
- ``deletion`` / ``insertion``: RISE's causal curves at the black box's resolution;
- ``pixel``: precision-recall over 256 thresholds, max F_beta (beta^2 = 0.3) and MAE against pixel
  masks (see :mod:`rtsal.pixel_metrics`).

Seconds per image count the explanation alone (the mask for one image and class).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rtsal.errors import DataError, RtsalError
from rtsal.metrics import Box, box_iou

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


# --------------------------------------------------------------------------- samples


def read_class_map(path: Path) -> dict[str, str]:
    """A class map file: JSON ``{"annotation name": "black-box class", ...}`` or CSV lines
    ``annotation name,black-box class`` (class as index, synset or name)."""
    import csv
    import json

    if not path.is_file():
        raise DataError(f"class map not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object of name -> class")
        return {str(k): str(v) for k, v in data.items()}
    out: dict[str, str] = {}
    for i, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if len(row) != 2:
            raise DataError(f"{path}:{i}: expected 'annotation name,black-box class'")
        out[row[0].strip()] = row[1].strip()
    return out


def annotated_samples(
    images: Iterable[Path],
    annotations: Mapping[str, Sequence[tuple[str, Box]]],
    resolve: Callable[[str], int],
    *,
    pixel_masks: Path | None = None,
) -> tuple[list[Sample], list[Path]]:
    """One sample per (image, annotated class): the class's boxes, the image's pixel mask.

    ``resolve`` maps an annotation's class name to a black-box index. Returns the samples and
    the images that have no annotation (left out)."""
    from rtsal.localization import annotation_entries

    samples: list[Sample] = []
    missing: list[Path] = []
    cache: dict[str, int] = {}
    for path in images:
        entries = annotation_entries(annotations, str(path))
        if not entries:
            missing.append(path)
            continue
        pm = _pixel_mask_for(path, pixel_masks) if pixel_masks is not None else None
        for name in dict.fromkeys(cls for cls, _ in entries):
            if name not in cache:
                cache[name] = resolve(name)
            boxes = [box for cls, box in entries if cls == name]
            samples.append(Sample(path, cache[name], boxes, pm))
    return samples, missing


def _pixel_mask_for(image: Path, folder: Path) -> Path:
    for cand in (folder / f"{image.stem}.png", folder / image.name):
        if cand.is_file():
            return cand
    raise DataError(f"no pixel mask for {image.name} in {folder} (looked for {image.stem}.png)")


def attach_pixel_masks(samples: list[Sample], folder: Path) -> list[Sample]:
    for s in samples:
        s.pixel_mask = _pixel_mask_for(s.path, folder)
    return samples


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively, sorted), or ``root`` itself if it is one."""
    from rtsal.images import is_image_path

    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if root.is_file():
        return [root]
    found = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    if not found:
        raise DataError(f"no images found in {root}")
    return found


# --------------------------------------------------------------------------- scoring


def _load_pixel_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
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


@dataclass
class _Totals:
    n: int = 0
    seconds: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    maxbox: dict[str, np.ndarray] = field(default_factory=dict)
    pr: np.ndarray | None = None  # running sums of the P, R and F curves, (3, 256)

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.counts[key] = self.counts.get(key, 0) + 1

    def mean(self, key: str) -> float | None:
        return self.sums[key] / self.counts[key] if self.counts.get(key) else None


def score_method(
    explainer: Any,
    samples: Sequence[Sample],
    metrics: Sequence[str],
    *,
    method: str = "masker",
    steps: int = 50,
    seed: int = 0,
    progress: Any = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Score one method on ``samples`` with ``metrics``; per-image rows go to ``on_row`` and the
    summary (means over images; maxima of mean curves) is returned."""
    from rtsal.explain import threshold_box
    from rtsal.faithfulness import deletion_curve, insertion_curve, pointing_hit
    from rtsal.images import load_image, pil_to_tensor
    from rtsal.localization import max_box_accuracy
    from rtsal.metrics import saliency_metric, salient_box
    from rtsal.pixel_metrics import BETA2, f_measure, mean_absolute_error, precision_recall_curve

    metrics = list(metrics)
    if method == GT_BOX and any(not s.boxes for s in samples):
        raise RtsalError(f"{GT_BOX} explains with the ground-truth boxes: give --boxes")
    if NEEDS_BOXES & set(metrics) and any(not s.boxes for s in samples):
        raise RtsalError(f"{'/'.join(sorted(NEEDS_BOXES & set(metrics)))} needs boxes (--boxes)")
    if "pixel" in metrics and any(s.pixel_mask is None for s in samples):
        raise RtsalError("pixel needs ground-truth masks (--pixel-masks)")
    if not samples:
        raise RtsalError("no images to score")
    box = explainer.black_box
    K = box.num_classes
    gen = torch.Generator().manual_seed(seed)
    t = _Totals()
    task = progress.add_task(f"{method}", total=len(samples)) if progress else None
    for s in samples:
        im = load_image(s.path)
        t0 = time.perf_counter()
        (e,) = explainer.explain_batch([im], [s.label])[0]
        t.seconds += time.perf_counter() - t0
        if method == GT_BOX:
            e = _box_explanation(explainer, im, e, s.boxes)
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
        for k in ("p_image", "p_image_times_mask", "p_image_times_inverse", "area"):
            t.add(k, row[k])
        if "localization" in metrics:
            pred = threshold_box(mask, 0.5)
            ok = pred is not None and any(box_iou(pred, g) > 0.5 for g in s.boxes)
            row["box"] = list(pred) if pred else None
            row["best_iou"] = max((box_iou(pred, g) for g in s.boxes), default=0.0) if pred else 0.0
            row["localized"] = bool(ok)
            t.add("localization_error", 0.0 if ok else 1.0)
            for name, kw in (
                ("v1", {"iou_thresholds": (0.5,)}),
                ("v2", {"iou_thresholds": (0.3, 0.5, 0.7), "all_components": True}),
            ):
                acc = max_box_accuracy([mask], [s.boxes], **kw).accuracy
                t.maxbox[name] = t.maxbox.get(name, 0) + acc
        if "saliency" in metrics:
            sb = salient_box(mask)
            sm = saliency_metric(box, pil_to_tensor(im), sb, s.label)
            absent = (s.label + int(torch.randint(1, max(K, 2), (1,), generator=gen))) % K
            (ea,) = explainer.explain_batch([im], [absent], with_probabilities=False)[0]
            row.update(
                saliency=sm["score"],
                crop_area=sm["area"],
                crop_probability=sm["probability"],
                area_absent=ea.area,
            )
            for k in ("saliency", "crop_area", "crop_probability", "area_absent"):
                t.add(k, row[k])
            t.add("keep_ratio", e.p_preserved / max(e.p_image, 1e-12))
        if "pointing" in metrics:
            row["pointing_hit"] = bool(pointing_hit(mask, s.boxes))
            t.add("pointing", float(row["pointing_hit"]))
        if "deletion" in metrics or "insertion" in metrics:
            x = explainer.prepare(im)[None]
            m = F.interpolate(
                mask[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False
            )
            for name, fn in (("deletion", deletion_curve), ("insertion", insertion_curve)):
                if name in metrics:
                    curve = fn(box, x, m, [s.label], steps=steps)
                    row[name] = float(curve.auc[0])
                    t.add(name, row[name])
        if "pixel" in metrics:
            assert s.pixel_mask is not None
            gt = _load_pixel_mask(s.pixel_mask, tuple(mask.shape))
            p, r = precision_recall_curve(mask, gt)
            f = f_measure(p, r, BETA2)
            curves = np.stack([p, r, f])
            t.pr = curves if t.pr is None else t.pr + curves
            row["max_f_image"] = float(f.max())
            row["mae"] = mean_absolute_error(mask, gt)
            t.add("mae", row["mae"])
        t.n += 1
        if on_row:
            on_row(row)
        if progress:
            progress.update(task, advance=1)
    return _summary(method, metrics, t)


@torch.inference_mode()
def _box_explanation(explainer: Any, im: Any, e: Any, boxes: Sequence[Box]) -> Any:
    """``e`` with the union of ``boxes`` as its mask, and the probabilities recomputed."""
    from dataclasses import replace

    from rtsal.explain import threshold_box

    mask = torch.zeros(im.height, im.width)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 1.0
    box = explainer.black_box
    x = explainer.prepare(im)[None]
    m = F.interpolate(mask[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    dev = box.mean.device
    x, m = x.to(dev), m.to(dev)
    p = box.probabilities(torch.cat([x * m, x * (1 - m)]))[:, e.class_index].tolist()
    return replace(
        e,
        mask=mask,
        p_preserved=p[0],
        p_destroyed=p[1],
        area=float(mask.mean()),
        box=threshold_box(mask),
    )


def _summary(method: str, metrics: Sequence[str], t: _Totals) -> dict[str, Any]:
    out: dict[str, Any] = {"method": method, "images": t.n, "metrics": list(metrics)}
    for k in ("p_image", "p_image_times_mask", "p_image_times_inverse", "area"):
        out[k] = t.mean(k)
    if "localization" in metrics:
        out["localization_error"] = t.mean("localization_error")
        v1 = t.maxbox["v1"] / t.n
        v2 = t.maxbox["v2"] / t.n
        out["max_box_acc"] = float(v1.max())
        out["max_box_acc_threshold"] = float(np.argmax(v1[0]) / 100)
        out["max_box_acc_v2"] = float(v2.max(axis=1).mean())
    if "saliency" in metrics:
        for k in ("saliency", "crop_area", "crop_probability", "area_absent", "keep_ratio"):
            out[k] = t.mean(k)
    if "pointing" in metrics:
        out["pointing"] = t.mean("pointing")
    for k in ("deletion", "insertion"):
        if k in metrics:
            out[k] = t.mean(k)
    if "pixel" in metrics:
        p, r, f = t.pr / t.n
        out["max_f"] = float(f.max())
        out["max_f_threshold"] = int(f.argmax())
        out["mae"] = t.mean("mae")
        out["pr_curve"] = {"precision": p.tolist(), "recall": r.tolist(), "f": f.tolist()}
    out["seconds_per_image"] = t.seconds / max(t.n, 1)
    return out


def pixel_metrics_of(summary: Mapping[str, Any]):
    """The PR curve of a summary as :class:`rtsal.pixel_metrics.PixelMetrics` (for plotting)."""
    from rtsal.pixel_metrics import PixelMetrics

    c = summary["pr_curve"]
    return PixelMetrics(
        np.asarray(c["precision"]),
        np.asarray(c["recall"]),
        np.asarray(c["f"]),
        summary["mae"],
        summary["images"],
    )
