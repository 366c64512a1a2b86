"""``rtsal metric`` and ``rtsal localize`` as runs: the samples, the explainer, the records,
the files, and shards merged.

:func:`run_scoring` is the whole of ``rtsal metric``: it builds the explainer, reads the samples
(:class:`SampleSource`), scores them (:func:`score_method`, with
:class:`rtsal.metrics.scoring.MethodScorer`) and writes the outputs.

The summary is made from per-sample records alone (:func:`rtsal.metrics.scoring.summarize`).
``OUT/<method>-<stem>.jsonl`` keeps them, so the samples may be scored in shards
(``--shard I/N``: every N-th sample, from the I-th) and the shards' records make the summary and
files of one run (:mod:`rtsal.runs.records`), to the last bit (the absent classes of the
saliency metric are drawn for the whole list, whichever shard scores a sample).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.errors import DataError, RtsalError
from rtsal.files import prepare_out_dir
from rtsal.metrics.scoring import (
    GT_BOX,
    NEEDS_BOXES,
    MethodScorer,
    Sample,
    draw_absent_classes,
    parse_metrics,
    summarize,
)
from rtsal.runs.journal import fingerprint
from rtsal.runs.records import SCORES, SCORES_VERSION, draw_pr_curve, write_scores
from rtsal.runs.shards import Shard, choose_shard

if TYPE_CHECKING:  # torch and numpy are imported when something is scored, not by the CLI
    from rtsal.boxes import Box

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
    ``pretrained`` build the black box, ``trust_code`` and ``allow_other_black_box`` as for
    :class:`rtsal.Explainer`.
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
    trust_code: bool = False
    allow_other_black_box: bool = False

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
    from rtsal.data.annotations import annotation_entries

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
    from rtsal.data.annotations import read_boxes
    from rtsal.data.labels import labelled_samples

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
        written = [draw_pr_curve(options.pr_png, options.method, summary)]
    return ScoringResult(summary, rows, written, shard, len(samples))


def _explainer(options: ScoringOptions) -> Any:
    from rtsal.device import process_device
    from rtsal.inference.explainer import Explainer

    return Explainer(
        options.checkpoint,
        black_box=options.blackbox,
        weights=options.weights,
        pretrained=options.pretrained,
        trust_code=options.trust_code,
        allow_other_black_box=options.allow_other_black_box,
        device=process_device(options.device),  # under torchrun, a GPU each
        resize=options.resize,
        method="max-box" if options.method == GT_BOX else options.method,  # gt-box: any mask
        method_options=dict(options.method_options),
    )


# --------------------------------------------------------------------------- records


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
    scorer = MethodScorer(explainer, metrics, method=method, steps=steps)
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
