"""Every evaluation of a method in one pass over the images: the engine behind ``rtsal localize``
and ``rtsal metric``.

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

:func:`run_scoring` is the whole of ``rtsal metric``: it builds the explainer, reads the samples
(:class:`SampleSource`), scores them (:func:`score_method`) and writes the outputs.

The summary is made from per-sample records alone (:func:`summarize`): each holds the row of the
CSV and what the set-level metrics need of the sample (MaxBoxAcc's hits at every threshold, the
precision and recall curves, the seconds). ``OUT/<method>-<stem>.jsonl`` keeps them, so the
samples may be scored in shards (``--shard I/N``: every N-th sample, from the I-th) and the
shards' records make the summary and files of one run (:func:`collect_scores`,
:meth:`MergedScores.write`), to the last bit (the absent classes of the saliency metric are
drawn for the whole list, whichever shard scores a sample).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.errors import DataError, RtsalError
from rtsal.files import atomic_lines, prepare_out_dir, remove_temporaries
from rtsal.runs.journal import fingerprint, first_difference
from rtsal.runs.shards import Shard, choose_shard

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
    deletion/insertion curves; ``seed`` draws the absent classes; ``weights`` and
    ``pretrained`` build the black box (:func:`rtsal.inference.blackbox_options.chosen_black_box`).
    With ``out``, the per-image rows and the summary go to ``OUT/<method>-<stem>.csv`` and
    ``.json``, the per-sample records to ``.jsonl`` (and the pixel metrics' PR curve to
    ``OUT/<method>-pr.png`` unless ``pr_png`` names a file). ``shard`` ("I/N"; default:
    RANK/WORLD_SIZE under torchrun) scores only the I-th of every N samples and writes only its
    records, to ``OUT/<method>-<stem>.shard-I-of-N.jsonl``, for ``rtsal merge``."""

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
    weights: Path | None = None
    pretrained: bool = True
    shard: str | Shard | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(parse_metrics(self.metrics)))


@dataclass
class ScoringResult:
    """What :func:`run_scoring` found: the summary, the per-image rows and the files written
    (for a shard: the summary of its own samples, and its records)."""

    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    written: list[Path] = field(default_factory=list)
    shard: Shard = field(default_factory=Shard)
    samples: int = 0  # in the whole list, every shard's


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
    metrics = set(options.metrics)
    if "pixel" in metrics and source.pixel_masks is None:
        raise RtsalError("the pixel metrics need ground-truth masks: give --pixel-masks DIR")
    if NEEDS_BOXES & metrics and source.boxes is None:
        raise RtsalError(f"{'/'.join(sorted(NEEDS_BOXES & metrics))} needs --boxes")
    if options.pr_png is not None and "pixel" not in metrics:
        raise RtsalError("--pr-png draws the pixel metrics' PR curve: add pixel to --metrics")
    shard = choose_shard(options.shard)
    if shard.sharded and options.out is None:
        raise RtsalError(
            f"shard {shard} needs --out: its per-image records are merged from there (rtsal merge)"
        )
    if shard.sharded and options.pr_png is not None:
        raise RtsalError("a shard draws no PR curve: rtsal merge draws the whole run's")
    out_dir = prepare_out_dir(options.out) if options.out else None
    explainer = _explainer(options)
    samples = load_samples(source, explainer.resolver)
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    summary = score_method(
        explainer,
        samples,
        options.metrics,
        method=options.method,
        steps=options.steps,
        seed=options.seed,
        progress=progress,
        on_row=rows.append,
        on_record=records.append,
        shard=shard,
    )
    written: list[Path] = []
    if out_dir is not None:
        header = scores_header(source, options, samples, shard)
        written = write_scores(out_dir, header, records, summary, pr_png=options.pr_png)
    elif options.pr_png is not None:
        written = [_pr_png(options.pr_png, options.method, summary)]
    return ScoringResult(summary, rows, written, shard, len(samples))


def _explainer(options: ScoringOptions) -> Any:
    from rtsal.device import process_device
    from rtsal.inference.blackbox_options import chosen_black_box
    from rtsal.inference.explainer import Explainer

    box = chosen_black_box(
        options.blackbox,
        checkpoint=options.checkpoint,
        weights=options.weights,
        pretrained=options.pretrained,
    )
    return Explainer(
        options.checkpoint,
        black_box=box,
        device=process_device(options.device),  # under torchrun, a GPU each
        resize=options.resize,
        method="max-box" if options.method == GT_BOX else options.method,  # gt-box: any mask
        method_options=dict(options.method_options),
    )


# --------------------------------------------------------------------------- records and shards

SCORES = "scores"  # the header's "rtsal" of a records file
SCORES_VERSION = 1
CSV_LEFT_OUT = ("sample", "state")  # what a record holds beyond its CSV row


def scores_header(
    source: SampleSource, options: ScoringOptions, samples: Sequence[Sample], shard: Shard
) -> dict[str, Any]:
    """What a records file is of: the options that decide the numbers, as given, and the
    samples (their number and a digest of their images and classes)."""

    def given(p: Path | None) -> str | None:
        return None if p is None else str(p)

    root = Path(source.data) if source.data is not None else None

    def key(s: Sample) -> str:
        path = s.path
        if root is not None and root.is_dir() and path.is_relative_to(root):
            path = path.relative_to(root)
        return f"{path.as_posix()}\t{s.label}"

    opts = {
        "metrics": list(options.metrics),
        "method": options.method,
        "method_options": {k: options.method_options[k] for k in sorted(options.method_options)},
        "checkpoint": given(options.checkpoint),
        "blackbox": options.blackbox,
        "weights": given(options.weights),
        "pretrained": options.pretrained,
        "resize": options.resize,
        "steps": options.steps,
        "seed": options.seed,
        "data": given(source.data),
        "files": given(source.files),
        "boxes": given(source.boxes),
        "class_map": given(source.class_map),
        "pixel_masks": given(source.pixel_masks),
        "limit": source.limit,
    }
    return {
        "rtsal": SCORES,
        "version": SCORES_VERSION,
        "command": options.stem,
        "options": opts,
        "samples": len(samples),
        "inputs": fingerprint(key(s) for s in samples),
        "shard": str(shard),
    }


def records_name(header: Mapping[str, Any]) -> str:
    shard = choose_shard(header["shard"])
    return f"{header['options']['method']}-{header['command']}{shard.suffix}.jsonl"


def write_scores(
    out_dir: Path,
    header: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    *,
    pr_png: Path | None = None,
) -> list[Path]:
    """A shard's records; or a whole run's records, CSV rows, summary JSON and PR curve."""
    import csv
    import json

    path = out_dir / records_name(header)
    remove_temporaries(out_dir, lambda name: name == path.name)  # a killed run's
    with atomic_lines(path) as f:
        f.write(json.dumps(header) + "\n")
        for r in records:
            f.write(json.dumps(r) + "\n")
    if choose_shard(header["shard"]).sharded:
        return [path]
    method, stem = header["options"]["method"], header["command"]
    csv_path = out_dir / f"{method}-{stem}.csv"
    rows = [{k: v for k, v in r.items() if k not in CSV_LEFT_OUT} for r in records]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    csv_path.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    written = [csv_path, csv_path.with_suffix(".json"), path]
    if "pixel" in header["options"]["metrics"]:
        written.append(_pr_png(pr_png or out_dir / f"{method}-pr.png", method, summary))
    return written


def _pr_png(path: Path, method: str, summary: Mapping[str, Any]) -> Path:
    from rtsal.metrics.pixel import plot_pr_curves

    curves = {method: pixel_metrics_of(summary)}
    return plot_pr_curves(curves, path, title=f"{method}: PR curve")


@dataclass
class MergedScores:
    """One method and command's records from several files, checked to make one whole run
    (:func:`collect_scores`); :meth:`write` makes its files."""

    command: str
    method: str
    header: dict[str, Any]  # the whole run's
    records: list[dict[str, Any]]  # one per sample, in order
    parts: int  # files merged
    summary: dict[str, Any] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return len(self.records)

    def write(self, out: Path) -> None:
        self.summary = summarize(self.records, self.header["options"]["metrics"], self.method)
        self.written = write_scores(out, self.header, self.records, self.summary)


def collect_scores(folders: Sequence[Path]) -> list[MergedScores]:
    """The records files (``<method>-<stem>[.shard-I-of-N].jsonl``) in ``folders``, one
    :class:`MergedScores` for each method and command. Files of the same method and command must
    be of the same run, and every sample must be in one of them (:class:`RtsalError` otherwise,
    before anything is written)."""
    import json

    from rtsal.runs.journal import read_journal

    groups: dict[tuple[str, str], list[tuple[Path, dict[str, Any], list[Any]]]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.jsonl")):
            header, records = read_journal(path)
            if header is None or header.get("rtsal") != SCORES:
                continue
            opts = header.get("options")
            if not isinstance(opts, dict) or any(
                k not in header for k in ("command", "samples", "inputs", "shard")
            ):
                raise RtsalError(f"{path}: a scores file whose header lacks its run's fields")
            key = (header["command"], opts.get("method"))
            groups.setdefault(key, []).append((path, header, records))
    merged = []
    for (command, method), parts in groups.items():
        first_path, first, _ = parts[0]
        by_sample: dict[int, dict[str, Any]] = {}
        for path, header, records in parts:
            diff = first_difference(
                {**first["options"], "samples": first["samples"], "inputs": first["inputs"]},
                {**header["options"], "samples": header["samples"], "inputs": header["inputs"]},
            )
            if diff is not None:
                what, a, b = diff
                raise RtsalError(
                    f"{path} is not of the run of {first_path} ({what}: {json.dumps(b)} "
                    f"against {json.dumps(a)})"
                )
            for r in records:
                by_sample.setdefault(int(r["sample"]), r)
        n = int(first["samples"])
        missing = [k for k in range(n) if k not in by_sample]
        if missing:
            counts = sorted({choose_shard(h["shard"]).count for _, h, _ in parts} - {1})
            owner = f" (shard {missing[0] % counts[0]}/{counts[0]})" if counts else ""
            raise RtsalError(
                f"{method} {command}: {len(missing)} of {n} samples are in none of the files, "
                f"e.g. sample {missing[0]}{owner}; run the missing shards first"
            )
        header = {**first, "shard": str(Shard())}
        records = [by_sample[k] for k in range(n)]
        merged.append(MergedScores(command, method, header, records, len(parts)))
    return merged


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
    on_record: Callable[[dict[str, Any]], None] | None = None,
    shard: Shard | None = None,
) -> dict[str, Any]:
    """Score one method on ``samples`` with ``metrics``; per-image rows go to ``on_row``,
    per-sample records (the row, the sample's place in the list and what the summary needs of
    it) to ``on_record``, and the summary (means over images; maxima of mean curves; see
    :func:`summarize`) is returned. With ``shard``, only its samples are scored."""
    metrics = list(metrics)
    if method == GT_BOX and any(not s.boxes for s in samples):
        raise RtsalError(f"{GT_BOX} explains with the ground-truth boxes: give --boxes")
    if NEEDS_BOXES & set(metrics) and any(not s.boxes for s in samples):
        raise RtsalError(f"{'/'.join(sorted(NEEDS_BOXES & set(metrics)))} needs boxes (--boxes)")
    if "pixel" in metrics and any(s.pixel_mask is None for s in samples):
        raise RtsalError("pixel needs ground-truth masks (--pixel-masks)")
    if not samples:
        raise RtsalError("no images to score")
    shard = shard or Shard()
    if "saliency" in metrics:
        draw_absent_classes(samples, explainer.black_box.num_classes, seed)
    mine = [(k, s) for k, s in enumerate(samples) if shard.owns(k)]
    scorer = _MethodScorer(explainer, metrics, method=method, steps=steps)
    task = progress.add_task(_task(method, shard), total=len(mine)) if progress else None
    records = []
    for k, s in mine:
        row, state = scorer.score(s)
        records.append({"sample": k, **row, "state": state})
        if on_row:
            on_row(row)
        if on_record:
            on_record(records[-1])
        if progress:
            progress.update(task, advance=1)
    return summarize(records, metrics, method)


def _task(method: str, shard: Shard) -> str:
    return f"{method} (shard {shard})" if shard.sharded else method


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


class _MethodScorer:
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
    for r in records:
        state = r["state"]
        seconds += state["seconds"]
        for k in _PROBABILITIES:
            means.add(k, r[k])
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
