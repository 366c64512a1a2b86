"""Every evaluation of a method in one pass over the images: the engine behind ``rtsal localize``
and ``rtsal metric``.

Each image is explained once (for its ground-truth class) and the mask, at the image's own
resolution, is scored by the metrics asked for, each by the tested function or accumulator of
its module (one image at a time, so a pass needs no more memory than one image):

- ``localization``: the paper's localisation error (threshold 0.5, tightest box around all pixels
  above it, correct when IoU > 0.5 with any ground-truth box of the class) and MaxBoxAcc V1 / V2
  over mask thresholds 0, 0.01, ..., 0.99 (:func:`rtsal.metrics.localization.mask_box`,
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

:func:`run_scoring` is the whole of ``rtsal metric``: it builds the explainer, reads the samples
(:class:`SampleSource`), scores them (:func:`score_method`) and writes the outputs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.errors import DataError, RtsalError

if TYPE_CHECKING:  # torch and numpy are imported when something is scored, not by the CLI
    import numpy as np

    from rtsal.metrics.pixel import PixelMetrics
    from rtsal.metrics.saliency import Box

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


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SampleSource:
    """The images to score: a folder (``data``) or a file listing paths (``files``), one of
    them; ground-truth ``boxes`` (their classes are the ones explained, named as ``class_map``
    says) and ``pixel_masks`` where the metrics need them; ``limit`` samples spread evenly over
    the list."""

    data: Path | None = None
    files: Path | None = None
    boxes: Path | None = None
    class_map: Path | None = None
    pixel_masks: Path | None = None
    limit: int | None = None


@dataclass(frozen=True)
class ScoringOptions:
    """How :func:`run_scoring` explains and scores; the defaults are ``rtsal metric``'s.

    ``metrics`` may be given as ``"saliency,pointing"`` or ``"all"`` (see :func:`parse_metrics`);
    ``method_options`` are the method's keyword arguments; ``steps`` those of the
    deletion/insertion curves; ``seed`` draws the absent classes. With ``out``, the per-image
    rows and the summary go to ``OUT/<method>-<stem>.csv`` and ``.json`` (and the pixel metrics'
    PR curve to ``OUT/<method>-pr.png`` unless ``pr_png`` names a file)."""

    metrics: tuple[str, ...] = ("saliency",)
    method: str = "masker"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    blackbox: str | None = None
    resize: str = "auto"
    device: str = "auto"
    steps: int = 50
    seed: int = 0
    out: Path | None = None
    pr_png: Path | None = None
    stem: str = "metric"

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(parse_metrics(self.metrics)))


@dataclass
class ScoringResult:
    """What :func:`run_scoring` found: the summary, the per-image rows and the files written."""

    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    written: list[Path] = field(default_factory=list)


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
    from rtsal.metrics.localization import annotation_entries

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
    from rtsal.data.images import is_image_path

    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if root.is_file():
        return [root]
    found = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    if not found:
        raise DataError(f"no images found in {root}")
    return found


def _listed_images(files: Path) -> list[Path]:
    if not files.is_file():
        raise DataError(f"file list not found: {files}")
    return [Path(line.strip()) for line in files.read_text().splitlines() if line.strip()]


def spread(items: list, limit: int | None) -> list:
    """``limit`` items spread evenly over the list (all classes of a sorted folder, not the
    first one's), in order; all of them without a limit."""
    if not limit or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def load_samples(source: SampleSource, resolver: Any) -> list[Sample]:
    """The samples of ``source``, classes resolved by ``resolver`` (a ``ClassResolver``).

    With boxes, one sample per (image, annotated class), and images without boxes are left out
    (with a warning); without, one per image, its class told by its folder or file name."""
    from rtsal.data.labels import labelled_samples
    from rtsal.metrics.localization import read_boxes

    data, files = source.data, source.files
    if (data is None) == (files is None):
        raise RtsalError("give exactly one of --data DIR or --files LIST")
    if source.boxes is None:
        pairs = labelled_samples(resolver, data=data, files=files)
        samples = [Sample(p, label) for p, label in pairs]
        if source.pixel_masks is not None:
            attach_pixel_masks(samples, source.pixel_masks)
        return spread(samples, source.limit)
    mapping = read_class_map(source.class_map) if source.class_map else {}
    images = list_images(Path(data)) if data is not None else _listed_images(Path(files))
    samples, missing = annotated_samples(
        images,
        read_boxes(source.boxes),
        lambda name: resolver.resolve(mapping.get(name, name)),
        pixel_masks=source.pixel_masks,
    )
    if missing:
        warnings.warn(f"{len(missing)} image(s) without boxes left out", stacklevel=2)
    if not samples:
        raise RtsalError(f"no image of {data or files} has boxes in {source.boxes}")
    return spread(samples, source.limit)


# --------------------------------------------------------------------------- a whole run


def run_scoring(
    source: SampleSource, options: ScoringOptions, *, progress: Any = None
) -> ScoringResult:
    """Explain the images of ``source`` with ``options.method`` and score them (``rtsal
    metric``); ``progress`` is a Rich ``Progress`` to advance, if any."""
    from rtsal.engine.checkpoint import prepare_out_dir

    metrics = set(options.metrics)
    if "pixel" in metrics and source.pixel_masks is None:
        raise RtsalError("the pixel metrics need ground-truth masks: give --pixel-masks DIR")
    if NEEDS_BOXES & metrics and source.boxes is None:
        raise RtsalError(f"{'/'.join(sorted(NEEDS_BOXES & metrics))} needs --boxes")
    if options.pr_png is not None and "pixel" not in metrics:
        raise RtsalError("--pr-png draws the pixel metrics' PR curve: add pixel to --metrics")
    out_dir = prepare_out_dir(options.out) if options.out else None
    explainer = _explainer(options)
    samples = load_samples(source, explainer.resolver)
    rows: list[dict[str, Any]] = []
    summary = score_method(
        explainer,
        samples,
        options.metrics,
        method=options.method,
        steps=options.steps,
        seed=options.seed,
        progress=progress,
        on_row=rows.append,
    )
    written = _write_outputs(out_dir, options, summary, rows)
    return ScoringResult(summary, rows, written)


def _explainer(options: ScoringOptions) -> Any:
    from rtsal.inference.explainer import Explainer
    from rtsal.registry.blackbox import create_black_box

    box = create_black_box(options.blackbox) if options.blackbox else None
    return Explainer(
        options.checkpoint,
        black_box=box,
        device=options.device,
        resize=options.resize,
        method="max-box" if options.method == GT_BOX else options.method,  # gt-box: any mask
        method_options=dict(options.method_options),
    )


def _write_outputs(
    out_dir: Path | None,
    options: ScoringOptions,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
) -> list[Path]:
    import csv
    import json

    method, written, pr_png = options.method, [], options.pr_png
    if out_dir is not None:
        path = out_dir / f"{method}-{options.stem}.csv"
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        path.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        written += [path, path.with_suffix(".json")]
        if "pixel" in options.metrics and pr_png is None:
            pr_png = out_dir / f"{method}-pr.png"
    if pr_png is not None:
        from rtsal.metrics.pixel import plot_pr_curves

        curves = {method: pixel_metrics_of(summary)}
        written.append(plot_pr_curves(curves, pr_png, title=f"{method}: PR curve"))
    return written


# --------------------------------------------------------------------------- scoring


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
    metrics = list(metrics)
    if method == GT_BOX and any(not s.boxes for s in samples):
        raise RtsalError(f"{GT_BOX} explains with the ground-truth boxes: give --boxes")
    if NEEDS_BOXES & set(metrics) and any(not s.boxes for s in samples):
        raise RtsalError(f"{'/'.join(sorted(NEEDS_BOXES & set(metrics)))} needs boxes (--boxes)")
    if "pixel" in metrics and any(s.pixel_mask is None for s in samples):
        raise RtsalError("pixel needs ground-truth masks (--pixel-masks)")
    if not samples:
        raise RtsalError("no images to score")
    scorer = _MethodScorer(explainer, metrics, method=method, steps=steps, seed=seed)
    task = progress.add_task(f"{method}", total=len(samples)) if progress else None
    for s in samples:
        row = scorer.score(s)
        if on_row:
            on_row(row)
        if progress:
            progress.update(task, advance=1)
    return scorer.summary()


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


class _MethodScorer:
    """One method's pass over the images: :meth:`score` explains one sample and scores its mask
    with every metric asked for (the row); :meth:`summary` gives the means and the set-level
    metrics of the accumulators."""

    def __init__(
        self, explainer: Any, metrics: Sequence[str], *, method: str, steps: int, seed: int
    ):
        import torch

        from rtsal.metrics.faithfulness import PointingGame
        from rtsal.metrics.localization import LocalisationError, MaxBoxAccuracy
        from rtsal.metrics.pixel import PixelMaskEvaluation

        self.explainer = explainer
        self.metrics = list(metrics)
        self.method = method
        self.steps = steps
        self.generator = torch.Generator().manual_seed(seed)  # the absent classes
        self.means = _Means()
        self.localisation = LocalisationError()
        self.max_box = MaxBoxAccuracy()
        self.max_box_v2 = MaxBoxAccuracy.v2()
        self.pointing = PointingGame()
        self.pixel = PixelMaskEvaluation()
        self.images = 0
        self.seconds = 0.0

    def score(self, s: Sample) -> dict[str, Any]:
        from rtsal.data.images import load_image

        im = load_image(s.path)
        t0 = time.perf_counter()
        (e,) = self.explainer.explain_batch([im], [s.label])[0]
        self.seconds += time.perf_counter() - t0
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
        for k in _PROBABILITIES:
            self.means.add(k, row[k])
        if "localization" in self.metrics:
            row.update(self._localization(mask, s.boxes))
        if "saliency" in self.metrics:
            row.update(self._saliency(im, e, s.label))
        if "pointing" in self.metrics:
            row["pointing_hit"] = self.pointing.update(mask, s.boxes)
        if "deletion" in self.metrics or "insertion" in self.metrics:
            row.update(self._causal(im, mask, s.label))
        if "pixel" in self.metrics:
            assert s.pixel_mask is not None
            scores = self.pixel.update(mask, _load_pixel_mask(s.pixel_mask, tuple(mask.shape)))
            row.update(max_f_image=scores.max_f, mae=scores.mae)
        self.images += 1
        return row

    def _localization(self, mask: Any, boxes: Sequence[Box]) -> dict[str, Any]:
        from rtsal.metrics.localization import best_iou, mask_box

        pred = mask_box(mask, 0.5)
        self.max_box.update(mask, boxes)
        self.max_box_v2.update(mask, boxes)
        return {
            "box": list(pred) if pred else None,
            "best_iou": best_iou(pred, boxes),
            "localized": self.localisation.update(pred, boxes),
        }

    def _saliency(self, im: Any, e: Any, label: int) -> dict[str, Any]:
        import torch

        from rtsal.data.images import pil_to_tensor
        from rtsal.metrics.saliency import saliency_metric, salient_box

        box = self.explainer.black_box
        sm = saliency_metric(box, pil_to_tensor(im), salient_box(e.mask), label)
        K = box.num_classes
        absent = (label + int(torch.randint(1, max(K, 2), (1,), generator=self.generator))) % K
        (ea,) = self.explainer.explain_batch([im], [absent], with_probabilities=False)[0]
        row = {
            "saliency": sm["score"],
            "crop_area": sm["area"],
            "crop_probability": sm["probability"],
            "area_absent": ea.area,
        }
        for k in _SALIENCY:
            self.means.add(k, row[k])
        self.means.add("keep_ratio", e.p_preserved / max(e.p_image, 1e-12))
        return row

    def _causal(self, im: Any, mask: Any, label: int) -> dict[str, float]:
        from rtsal.metrics.faithfulness import deletion_curve, insertion_curve

        x = self.explainer.prepare(im)[None]  # (1, C, h, w) at the black box's resolution
        row = {}
        for name, curve in (("deletion", deletion_curve), ("insertion", insertion_curve)):
            if name in self.metrics:
                # the curve resizes the mask (1, 1, H, W) to x's size, bilinearly
                c = curve(self.explainer.black_box, x, mask[None, None], [label], steps=self.steps)
                row[name] = float(c.auc[0])
                self.means.add(name, row[name])
        return row

    def summary(self) -> dict[str, Any]:
        metrics = self.metrics
        out: dict[str, Any] = {"method": self.method, "images": self.images, "metrics": [*metrics]}
        for k in _PROBABILITIES:
            out[k] = self.means.mean(k)
        if "localization" in metrics:
            v1, v2 = self.max_box.compute(), self.max_box_v2.compute()
            out["localization_error"] = self.localisation.compute()
            out["max_box_acc"] = v1.value
            out["max_box_acc_threshold"] = float(v1.best_thresholds[0])
            out["max_box_acc_v2"] = v2.value
        if "saliency" in metrics:
            for k in (*_SALIENCY, "keep_ratio"):
                out[k] = self.means.mean(k)
        if "pointing" in metrics:
            out["pointing"] = self.pointing.compute().accuracy
        for k in ("deletion", "insertion"):
            if k in metrics:
                out[k] = self.means.mean(k)
        if "pixel" in metrics:
            pm = self.pixel.compute()
            out["max_f"] = pm.max_f
            out["max_f_threshold"] = pm.best_threshold
            out["mae"] = pm.mae
            out["pr_curve"] = {
                "precision": pm.precision.tolist(),
                "recall": pm.recall.tolist(),
                "f": pm.f_measure.tolist(),
            }
        out["seconds_per_image"] = self.seconds / max(self.images, 1)
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

    from rtsal.metrics.boxes import threshold_box

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
            box=threshold_box(mask),
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
