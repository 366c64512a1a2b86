"""The manifest of an ``rtsal explain`` output folder: which images are finished, so that a run
killed or interrupted resumes where it stopped, shards of one run share a folder, and ``rtsal
merge`` joins shards written to several folders.

``OUT/manifest.jsonl`` (``OUT/manifest.shard-I-of-N.jsonl`` for shard I/N) is a journal
(:class:`rtsal.runs.journal.Journal`). Its header says what the run is::

    {"rtsal": "explain", "version": 1, "options": {...}, "images": 12, "inputs": "<digest>",
     "shard": "0/2", "batch_size": 16}

``options`` are those that decide what is written (inputs as given, classes, --topk,
checkpoint, black box and its weights, method and its options, resize, precision, backend,
--save-npy); ``images`` and ``inputs`` the number and a digest of the images listed. Then one
line per batch of consecutive images (``batch_size`` of them; see
:func:`rtsal.runs.explain.explain_files`) whose output files are all written::

    {"images": [{"index": 0, "name": "chelsea", "records": [{...}, ...]},
                {"index": 1, "name": "broken", "error": "broken.jpg: ..."}]}

``index`` is the image's place among all the images listed (sorted), ``records`` the lines of
``explanations.jsonl`` for it. An image is finished once it has records; an image that could not
be read is tried again by the next run. What a folder holds is the union of its manifests
(:func:`read_finished`), so shards writing to one folder, a run resumed as shards, or a merged
folder all read the same way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtsal.errors import RtsalError
from rtsal.runs.journal import (
    Journal,
    fingerprint,
    first_difference,
    is_being_written,
    read_journal,
)
from rtsal.runs.shards import Shard

KIND = "explain"
VERSION = 1
MANIFEST_GLOB = "manifest*.jsonl"

# the options' names on the command line, for the one-line refusals
FLAGS = {
    "inputs": "INPUTS",
    "classes": "--class",
    "topk": "--topk",
    "checkpoint": "--checkpoint",
    "blackbox": "--blackbox",
    "weights": "--weights",
    "pretrained": "--pretrained",
    "method": "--method",
    "method_options": "--method-option",
    "resize": "--resize",
    "precision": "--precision",
    "backend": "--backend",
    "save_npy": "--save-npy",
}


def manifest_name(shard: Shard) -> str:
    return f"manifest{shard.suffix}.jsonl"


def run_options(
    inputs: Sequence[str],
    *,
    classes: Sequence[str] | None,
    topk: int | None,
    black_box: str | None,
    weights: str | Path | None,
    pretrained: bool,
    save_npy: bool,
    explainer_options: Mapping[str, Any],
) -> dict[str, Any]:
    """The options that decide what ``rtsal explain`` writes, as given (JSON values)."""
    checkpoint = explainer_options.get("checkpoint")
    return {
        "inputs": [str(i) for i in inputs],
        "classes": [str(c) for c in classes] if classes else None,
        "topk": topk,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "blackbox": black_box,
        "weights": None if weights is None else str(weights),
        "pretrained": bool(pretrained),
        "method": explainer_options.get("method", "masker"),
        "method_options": {
            k: explainer_options["method_options"][k]
            for k in sorted(explainer_options.get("method_options") or {})
        },
        "resize": explainer_options.get("resize", "auto"),
        "precision": explainer_options.get("precision", "float32"),
        "backend": explainer_options.get("backend", "auto"),
        "save_npy": bool(save_npy),
    }


def manifest_header(
    options: dict[str, Any], names: Sequence[str], shard: Shard, batch_size: int
) -> dict[str, Any]:
    return {
        "rtsal": KIND,
        "version": VERSION,
        "options": options,
        "images": len(names),
        "inputs": fingerprint(names),
        "shard": str(shard),
        "batch_size": batch_size,
    }


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def difference(then: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """How the runs two headers describe differ: (option, its value in ``then``, in ``now``),
    the option named as on the command line; None for the same run."""
    diff = first_difference(then.get("options", {}), now.get("options", {}))
    if diff is not None:
        key, a, b = diff
        return FLAGS.get(key, key), _shown(a), _shown(b)
    if (then.get("images"), then.get("inputs")) != (now.get("images"), now.get("inputs")):
        return "images listed", str(then.get("images")), str(now.get("images"))
    return None


@dataclass
class Finished:
    """What a folder's manifests (or several folders') hold: the union of their images."""

    header: dict[str, Any] | None = None  # the first manifest's
    done: dict[int, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)
    failed: dict[int, tuple[str, str]] = field(default_factory=dict)  # and not done since
    manifests: list[Path] = field(default_factory=list)
    folders: dict[int, Path] = field(default_factory=dict)  # the folder holding each image's files

    @property
    def images(self) -> int:
        return int(self.header["images"]) if self.header else 0

    @property
    def complete(self) -> bool:
        """Every image listed is finished or could not be read."""
        return self.header is not None and len(self.done) + len(self.failed) == self.images

    def unfinished(self) -> list[int]:
        return [i for i in range(self.images) if i not in self.done and i not in self.failed]

    def records(self, out: Path) -> list[dict[str, Any]]:
        """Every record, in the order of the images, with its files in ``out``."""
        return [
            {**r, "files": {k: str(out / Path(v).name) for k, v in r["files"].items()}}
            for i in sorted(self.done)
            for r in self.done[i][1]
        ]

    def errors(self) -> list[str]:
        return [self.failed[i][1] for i in sorted(self.failed)]


def manifests_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob(MANIFEST_GLOB) if p.is_file())


def holds_a_run(folder: Path) -> bool:
    """Whether ``folder`` is an ``rtsal explain`` output folder: a manifest of one is in it
    (its first line read, not the whole journal)."""
    for path in manifests_in(folder):
        try:
            with path.open("rb") as f:
                header = json.loads(f.readline())
        except (OSError, ValueError):
            continue
        if isinstance(header, dict) and header.get("rtsal") == KIND:
            return True
    return False


def read_finished(
    folders: Iterable[Path],
    expected: Mapping[str, Any] | None = None,
    *,
    refuse: Callable[[Path, Path, tuple[str, str, str]], str] | None = None,
) -> Finished:
    """The union of the manifests in ``folders``. Every manifest must describe the same run as
    ``expected`` (a header), or as the first one found; otherwise :class:`RtsalError` with the
    message ``refuse(manifest, the first manifest or None, difference)``."""
    finished = Finished(header=dict(expected) if expected is not None else None)
    reference, first = expected, None
    for folder in folders:
        for path in manifests_in(folder):
            header, entries = read_journal(path)
            if header is None or header.get("rtsal") != KIND:
                continue
            if reference is None:
                reference, first = header, path
                finished.header = dict(header)
            how = difference(header, reference)
            if how is not None:
                what, a, b = how
                message = (
                    refuse(path, first, how)
                    if refuse
                    else f"{path} is another run ({what} {a}, not {b})"
                )
                raise RtsalError(message)
            finished.manifests.append(path)
            _add_entries(finished, entries, Path(folder))
    return finished


def _add_entries(finished: Finished, entries: Sequence[Any], folder: Path) -> None:
    for entry in entries:
        for image in entry.get("images", []) if isinstance(entry, dict) else []:
            i = int(image["index"])
            if "records" in image:
                if i not in finished.done:
                    finished.done[i] = (image["name"], image["records"])
                    finished.folders[i] = folder
                finished.failed.pop(i, None)
            elif i not in finished.done:
                finished.failed[i] = (image["name"], image.get("error", "could not be read"))


def running_manifests(folders: Iterable[Path]) -> list[Path]:
    """Manifests that a running ``rtsal explain`` is writing."""
    return [p for f in folders for p in manifests_in(f) if is_being_written(p)]


class ManifestWriter:
    """This process's manifest. A batch of images goes into it once the batch's explanations
    have all come (:meth:`batch_done`) and every output file of the batch is written; the
    writes may finish in other threads and in any order (:meth:`tracked`)."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self.lock = threading.Lock()
        self.open: dict[Any, list[Any]] = {}  # batch -> [writes still running, entries or None]

    def tracked(self, batch: Any, write: Callable[..., None]) -> Callable[..., None]:
        """``write`` counted as one of ``batch``'s outputs."""
        with self.lock:
            self.open.setdefault(batch, [0, None])[0] += 1

        def run(*args: Any) -> None:
            write(*args)
            with self.lock:
                self.open[batch][0] -= 1
                self._commit_if_ready(batch)

        return run

    def batch_done(self, batch: Any, entries: list[dict[str, Any]]) -> None:
        with self.lock:
            self.open.setdefault(batch, [0, None])[1] = entries
            self._commit_if_ready(batch)

    def _commit_if_ready(self, batch: Any) -> None:
        writes, entries = self.open[batch]
        if writes == 0 and entries is not None:
            del self.open[batch]
            if entries:
                self.journal.append({"images": entries})
