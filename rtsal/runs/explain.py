"""Explaining files and folders: expand inputs, stream them in batches, write masks, overlays,
the Figure-1 pair and a contact sheet (:mod:`rtsal.runs.outputs`); report unreadable files
without stopping. :func:`explain_inputs` is ``rtsal explain`` as a function (photos, folders,
globs or a video); into an output folder it resumes where an earlier run stopped and may do one
shard of the images (:mod:`rtsal.runs.manifest`)."""

from __future__ import annotations

import glob
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rtsal.data.images import IMAGE_EXTENSIONS, is_image_path, load_image
from rtsal.device import process_device
from rtsal.errors import DataError, RtsalError
from rtsal.files import prepare_out_dir, remove_temporaries
from rtsal.inference import DEFAULT_BATCH_SIZE
from rtsal.inference.explainer import Explainer, batched_by_size
from rtsal.inference.pipeline import OrderedWrites, default_workers, read_ahead
from rtsal.runs.journal import Journal
from rtsal.runs.manifest import (
    ManifestWriter,
    holds_a_run,
    manifest_header,
    manifest_name,
    read_finished,
    run_options,
)
from rtsal.runs.outputs import (
    OUTPUT_SUFFIXES,
    VIEW_FILES,
    ExplainSummary,
    output_files,
    record_for,
    save_outputs,
    shared_slugs,
    write_contact_sheet,
    write_finished,
)
from rtsal.runs.shards import Shard, choose_shard

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


@dataclass
class InputItem:
    path: Path
    name: str  # unique output stem, from the path relative to the input it came from
    position: int = -1  # its place among all the images listed (-1: its place in the call)


def expand_inputs(
    inputs: Sequence[str], out: str | Path | None = None
) -> tuple[list[InputItem], list[str]]:
    """Files, folders (recursively) and globs -> image items; missing inputs are reported.

    rtsal's own outputs are not inputs: in the output folder ``out`` and in any folder holding
    an ``rtsal explain`` manifest, the files named as :func:`output_files` names them (masks,
    overlays, pairs) are left out of folders and globs, so that ``rtsal explain photos/ --out
    photos/out`` run again finds the same images and resumes. A file named on its own is taken
    as given."""
    items: list[InputItem] = []
    missing: list[str] = []
    seen: set[Path] = set()
    is_output = _output_test(out)

    def add(p: Path, root: Path | None) -> None:
        rp = p.resolve()
        if rp in seen:
            return
        seen.add(rp)
        rel = p.relative_to(root) if root is not None else Path(p.name)
        name = "__".join(rel.with_suffix("").parts)
        items.append(InputItem(p, name))

    for spec in inputs:
        p = Path(spec).expanduser()
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not is_output(f):
                    add(f, p)
        elif p.is_file():
            add(p, None)
        elif any(ch in spec for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(spec, recursive=True))
            files = [h for h in hits if h.is_file() and is_image_path(h) and not is_output(h)]
            if not files:
                missing.append(f"{spec}: no image matches")
            for f in files:
                add(f, None)
        else:
            missing.append(f"{spec}: no such file or directory")
    names: dict[str, int] = {}
    for position, it in enumerate(items):  # make output stems unique
        n = names.get(it.name, 0)
        names[it.name] = n + 1
        if n:
            it.name = f"{it.name}_{n}"
        it.position = position
    return items, missing


def _output_test(out: str | Path | None) -> Callable[[Path], bool]:
    """Whether a file is one of rtsal's outputs: named as one, in ``out`` or in a folder that
    holds a run's manifest (each folder looked at once)."""
    out_dir = Path(out).expanduser().resolve() if out is not None else None
    folders: dict[Path, bool] = {}

    def is_output(f: Path) -> bool:
        if not f.name.endswith(OUTPUT_SUFFIXES):
            return False
        folder = f.parent.resolve()
        if folder not in folders:
            folders[folder] = folder == out_dir or holds_a_run(folder)
        return folders[folder]

    return is_output


def _read_all(
    items: Sequence[InputItem], explainer: Explainer
) -> Iterator[tuple[InputItem, Image.Image | None, torch.Tensor | None, str | None]]:
    """(item, image, image at model resolution, None), or (item, None, None, error message)."""
    for it in items:
        try:
            im = load_image(it.path)
            yield it, im, explainer.prepare(im), None
        except DataError as exc:
            yield it, None, None, str(exc)


def explain_files(
    explainer: Explainer,
    items: Sequence[InputItem],
    *,
    out: Path | None,
    classes: Sequence[int] | None = None,
    topk: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    save_npy: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_image: Callable[[], None] | None = None,
    workers: int | None = None,
    manifest: ManifestWriter | None = None,
) -> ExplainSummary:
    """Explain every readable image; unreadable ones are counted in ``summary.failed``.

    The images go through the model in batches of at most ``batch_size`` that never cross a
    multiple of ``batch_size`` in the images' positions (:attr:`InputItem.position`), nor a
    change of model resolution: the same image is explained with the same others whether the
    run is whole, resumed or split into shards, so the numbers are the same to the last bit.
    With a ``manifest``, each such batch is written to it once its output files are written.

    Reading runs a batch ahead in a background thread and ``workers`` threads write the output
    images, so decoding and encoding overlap the model's work; records come out in input order.
    ``workers=0`` reads, explains and writes in turn, in this thread. The default overlaps only
    when the model runs on an accelerator (:func:`rtsal.inference.pipeline.default_workers`).
    Without a manifest, the contact sheet is written to ``out`` at the end.
    """
    if workers is None:
        workers = default_workers(explainer.device.type)
    check_batch_size(batch_size)
    summary = ExplainSummary()
    report = on_error or (lambda msg: None)
    check_run_memory(explainer, len(items), classes, topk, batch_size)
    shared = shared_slugs(explainer.black_box.class_names)
    blocks = {
        id(it): (it.position if it.position >= 0 else i) // batch_size for i, it in enumerate(items)
    }
    stream = read_ahead(_read_all(items, explainer), workers, 2 * batch_size)
    with OrderedWrites(workers, bound=2 * batch_size) as writes:
        for block, group in itertools.groupby(stream, key=lambda t: blocks[id(t[0])]):
            entries: dict[int, dict[str, Any]] = {}  # the manifest's lines for these images
            readable = []
            for it, im, x, error in group:
                if error is not None:
                    summary.failed.append(error)
                    report(error)
                    entries[id(it)] = {"index": it.position, "name": it.name, "error": error}
                else:
                    entries[id(it)] = {"index": it.position, "name": it.name, "records": []}
                    readable.append(((it, x), im))  # the key carries the image at model size
            save = manifest.tracked if manifest else (lambda block, fn: fn)
            for batch in batched_by_size(readable, explainer, batch_size):
                images = [im for _, im in batch]
                prepared = [x for (_, x), _ in batch]
                done = 0  # images of the batch whose explanations have all come
                # one explanation at a time, written and let go: memory does not grow with topk
                for i, e in explainer.iter_explanations(images, classes, topk, prepared=prepared):
                    for _ in range(done, i):
                        _image_done(summary, on_image)
                    done = i
                    (it, _), im = batch[i]
                    files: dict[str, str] = {}
                    if out:
                        files = output_files(out, it.name, e, save_npy, shared)
                        writes.submit(save(block, save_outputs), files, im, e)
                    rec = record_for(it.path, im, e, files)
                    summary.records.append({k: v for k, v in rec.items()})
                    entries[id(it)]["records"].append(rec)
                    if on_record:
                        on_record(rec)
                for _ in range(done, len(batch)):
                    _image_done(summary, on_image)
            if manifest:
                manifest.batch_done(block, list(entries.values()))
    if manifest is None and out is not None and summary.records:
        write_contact_sheet(out, summary)
    return summary


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RtsalError(f"--batch-size must be a whole number of at least 1; got {batch_size}")


def _image_done(summary: ExplainSummary, on_image: Callable[[], None] | None) -> None:
    summary.explained += 1
    if on_image:
        on_image()


def check_run_memory(
    explainer: Explainer,
    images: int,
    classes: Sequence[int] | None,
    topk: int | None,
    batch_size: int,
) -> None:
    """Before any image is read: a ``topk`` above the number of classes, or a run whose records
    and working memory (one batch's encoder pass and one chunk of (image, class) pairs at the
    largest model resolution) would need more than the explainer's memory limit, is refused in
    one line. Each explanation is written and let go, so the masks themselves do not add up."""
    per_image = explainer.classes_per_image(classes, topk)
    batch = min(images, batch_size)
    estimate = explainer.memory_estimate(
        batch, per_image, explainer.largest_model_size(), records=images * per_image
    )
    explainer.check_memory(estimate, images=images, per_image=per_image, batch=batch)


def check_inputs_exist(items: Sequence[InputItem], missing: Sequence[str]) -> None:
    if not items and missing:
        raise RtsalError(missing[0] if len(missing) == 1 else f"no inputs found ({missing[0]})")
    if not items:
        raise RtsalError("no image files among the inputs")


# --------------------------------------------------------------------------- rtsal explain


@dataclass
class ExplainRun:
    """What :func:`explain_inputs` did: one video written, or the images explained."""

    video: dict[str, Any] | None = None  # input, output, frames, seconds, fps, model_fps, ...
    summary: ExplainSummary = field(default_factory=ExplainSummary)  # what this run explained
    missing: list[str] = field(default_factory=list)  # inputs that named no file
    out: Path | None = None  # the images' output folder
    shard: Shard = field(default_factory=Shard)
    images: int = 0  # the images of this shard (of all inputs when not sharded)
    skipped: int = 0  # of those, finished in ``out`` before this run
    index: Path | None = None  # index.html, once every image (every shard's) is done
    index_written: bool = False  # by this run (not when it was already as it should be)
    unfinished: int = 0  # images (of other shards) that ``out`` still waits for

    @property
    def not_read(self) -> int:
        """Inputs that could not be explained: missing ones and unreadable files."""
        return len(self.missing) + len(self.summary.failed)


def video_input(inputs: Sequence[str]) -> str | None:
    """The video among ``inputs`` (which must then be the only input), or None."""
    videos = [p for p in inputs if Path(p).suffix.lower() in VIDEO_EXTENSIONS]
    if videos and len(inputs) != 1:
        raise RtsalError("explain one video at a time")
    return videos[0] if videos else None


def explain_inputs(
    inputs: Sequence[str],
    *,
    out: Path | None = None,
    classes: Sequence[str] | None = None,
    topk: int | None = None,
    black_box: str | None = None,
    weights: str | Path | None = None,
    pretrained: bool = True,
    shard: str | Shard | None = None,
    save_npy: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    video_size: int | None = None,
    workers: int | None = None,
    progress: Any = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    **explainer_options: Any,
) -> ExplainRun:
    """Explain a video, or the images among ``inputs`` (files, folders, globs), as
    ``rtsal explain`` does.

    ``explainer_options`` are :class:`Explainer`'s keywords; ``black_box`` is a black box's name
    (default: the checkpoint's), built with ``weights`` (a file) or, with ``pretrained=False``,
    random weights; ``classes`` are class names, indices or synsets (default: each image's
    top-1, or its ``topk`` most probable classes). A video is written to ``out`` (default:
    beside it, as ``.rtsal.mp4``) at ``video_size`` (short side); images to the folder ``out``,
    if given. Inputs that name no file and unreadable images go to ``on_error`` and are counted
    in :attr:`ExplainRun.not_read`; ``progress`` is a Rich progress bar.

    Into a folder ``out``, the run resumes: images an earlier run with the same options
    finished there (its manifest, :mod:`rtsal.runs.manifest`) are skipped, and a folder
    started with other options is refused. ``shard`` ("I/N", default: RANK/WORLD_SIZE under
    torchrun) explains only the I-th of every N batches of ``batch_size`` images; the contact
    sheet and ``explanations.jsonl`` are written once every image of every shard is done.
    """
    video = video_input(inputs)
    the_shard = choose_shard(shard)
    check_batch_size(batch_size)
    if video is not None:
        if the_shard.sharded:
            raise RtsalError(f"a video is explained by one process; not as shard {the_shard}")
        explainer = _explainer(black_box, weights, pretrained, explainer_options)
        wanted = explainer.resolver.resolve_many(classes) if classes else None
        return _explain_one_video(explainer, video, out, wanted, video_size, workers, progress)
    items, missing = expand_inputs(inputs, out)
    mine = [it for it in items if the_shard.owns(it.position, batch_size)]
    header = None
    done: set[int] = set()
    if out is not None and items:  # resume: what the folder already holds, from these options
        options = run_options(
            inputs,
            classes=classes,
            topk=topk,
            black_box=black_box,
            weights=weights,
            pretrained=pretrained,
            save_npy=save_npy,
            explainer_options=explainer_options,
        )
        header = manifest_header(options, [it.name for it in items], the_shard, batch_size)
        done = set(read_finished([Path(out).expanduser()], header, refuse=_refusal(out)).done)
    todo = [it for it in mine if it.position not in done]
    run = ExplainRun(missing=missing, shard=the_shard, images=len(mine))
    run.skipped = len(mine) - len(todo)
    if items and not todo:  # nothing left for this process: no model needed
        _report_missing(missing, on_error)
        if progress:
            progress.add_task(_task(the_shard), total=len(mine), completed=len(mine))
        if out is not None:
            run.out = prepare_out_dir(out)
            _finish(run, header)
        return run
    explainer = _explainer(black_box, weights, pretrained, explainer_options)
    wanted = explainer.resolver.resolve_many(classes) if classes else None
    check_inputs_exist(items, missing)  # nothing to explain: an error
    _report_missing(missing, on_error)
    check_run_memory(explainer, len(todo), wanted, topk, batch_size)  # before any output
    run.out = prepare_out_dir(out) if out else None
    task = (
        progress.add_task(_task(the_shard), total=len(mine), completed=run.skipped)
        if progress
        else None
    )
    with _manifest_writer(run.out, header, the_shard, todo) as manifest:
        run.summary = explain_files(
            explainer,
            todo,
            out=run.out,
            classes=wanted,
            topk=topk,
            batch_size=batch_size,
            save_npy=save_npy,
            workers=workers,
            on_record=on_record,
            on_error=on_error,
            on_image=(lambda: progress.update(task, advance=1)) if progress else None,
            manifest=manifest,
        )
    if run.out is not None:
        _finish(run, header)
    return run


def _explainer(
    black_box: str | None,
    weights: str | Path | None,
    pretrained: bool,
    explainer_options: dict[str, Any],
) -> Explainer:
    device = process_device(explainer_options.get("device", "auto"))  # a GPU each, torchrun
    return Explainer(
        black_box=black_box,
        weights=weights,
        pretrained=pretrained,
        **{**explainer_options, "device": device},
    )


def _task(shard: Shard) -> str:
    return f"explain (shard {shard})" if shard.sharded else "explain"


def _report_missing(missing: Sequence[str], on_error: Callable[[str], None] | None) -> None:
    if on_error:
        for m in missing:
            on_error(m)


def _refusal(out: Path) -> Callable[[Path, Path | None, tuple[str, str, str]], str]:
    def message(manifest: Path, first: Path | None, how: tuple[str, str, str]) -> str:
        what, then, now = how
        if what == "images listed":
            return (
                f"{out} holds a run of other inputs ({then} images then, {now} now); "
                "give another --out"
            )
        return (
            f"{out} holds a run started with other options ({what} {then}, now {now}); "
            "give the options it was started with, or another --out"
        )

    return message


@contextmanager
def _manifest_writer(
    out: Path | None, header: dict[str, Any] | None, shard: Shard, todo: Sequence[InputItem]
) -> Iterator[ManifestWriter | None]:
    """This process's manifest in ``out`` (None without an output folder). Temporaries a
    killed writer left for this process's images are removed first; other shards' are not."""
    if out is None or header is None:
        yield None
        return
    stems = {it.name for it in todo}
    remove_temporaries(out, lambda name: name.rsplit(".", 3)[0] in stems)
    with Journal.open(out / manifest_name(shard), header) as journal:
        yield ManifestWriter(journal)


def _finish(run: ExplainRun, header: dict[str, Any] | None) -> None:
    """The contact sheet and ``explanations.jsonl`` of everything ``run.out`` holds, once no
    image is left (any shard's); until then, how many are."""
    assert run.out is not None and header is not None
    finished = read_finished([run.out], header, refuse=_refusal(run.out))
    run.unfinished = len(finished.unfinished())
    if finished.complete:
        if not run.shard.sharded:  # no other process may be writing them
            remove_temporaries(run.out, lambda name: name in VIEW_FILES)
        run.index_written = write_finished(run.out, finished)
        run.index = run.out / "index.html"


def _explain_one_video(
    explainer: Explainer,
    video: str,
    out: Path | None,
    classes: Sequence[int] | None,
    short_side: int | None,
    workers: int | None,
    progress: Any,
) -> ExplainRun:
    from rtsal.inference.video import explain_video

    target = out or Path(video).with_suffix(".rtsal.mp4")
    stats = explain_video(
        explainer,
        Path(video),
        target,
        classes=classes,
        short_side=short_side,
        progress=progress,
        workers=workers,
    )
    return ExplainRun(video={"input": video, "output": str(target), **stats})
