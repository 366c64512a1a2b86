"""Any folder of photos as training data: evaluation photos kept out, duplicates removed, and
labels from the black box itself (its top-1 class, above a confidence floor).

Evaluation photos never reach training. Two checks guard that:

- by name: any file named ``ILSVRC2012_val_*`` (ImageNet's validation set, which some public
  copies of ImageNet subsets mix into their training folders) is left out;
- by content: photos that look the same as a photo in an ``exclude`` folder (a 64-bit
  difference hash within :data:`NEAR_DUPLICATE_BITS` bits, so resized or re-encoded copies are
  caught too) are left out.

Indexing a photo decodes it once: its hash and, when asked, the black box's top-1 class and
probability are cached per file (path, size, modification time) under ``rtsal``'s cache folder,
so a second run over 20 k photos costs seconds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rtsal.data.cache import cache_dir
from rtsal.data.images import IMAGE_EXTENSIONS, load_image, photo_transform, pil_to_tensor
from rtsal.errors import DataError

EVALUATION_NAME = re.compile(r"^ILSVRC2012_val_", re.IGNORECASE)
NEAR_DUPLICATE_BITS = 4  # Hamming distance between difference hashes that counts as the same photo
LABEL_SOURCES = ("folder", "blackbox")


def is_evaluation_photo(path: str | Path) -> bool:
    """True for files of ImageNet's validation set (``ILSVRC2012_val_*``), by name."""
    return bool(EVALUATION_NAME.match(Path(path).name))


def list_photos(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursively, following symlinked folders), sorted."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if root.is_file():
        return [root]
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(folder) / f)
    return sorted(found)


def difference_hash(im: Image.Image) -> int:
    """64-bit difference hash: grey 9×8 thumbnail, one bit per left-right brightness step."""
    a = np.asarray(im.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def colour_code(im: Image.Image) -> int:
    """The photo's mean colour in 16 levels per channel (12 bits): two photos with the same
    difference hash are duplicates only when their colours agree too (flat images of different
    colours share the hash 0)."""
    r, g, b = (int(v) // 16 for v in np.asarray(im.convert("RGB").resize((8, 8))).mean((0, 1)))
    return (r << 8) | (g << 4) | b


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between every hash of ``a`` (N,) and ``b`` (M,) -> (N, M)."""
    x = np.bitwise_xor(a[:, None].astype(np.uint64), b[None, :].astype(np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


@dataclass
class PhotoInfo:
    """What one decode of a photo tells: its hash and (optionally) the black box's verdict."""

    path: Path
    hash: int
    label: int | None = None
    confidence: float | None = None
    colour: int | None = None


@dataclass
class PhotoSelection:
    """The photos chosen for training, and what was left out and why (counts)."""

    samples: list[tuple[Path, int]]
    found: int = 0
    evaluation_named: int = 0
    evaluation_lookalike: int = 0
    duplicates: int = 0
    unreadable: int = 0
    below_confidence: int = 0
    note: str = ""  # how the labels were chosen, when rtsal chose them (--labels auto)

    def summary(self) -> str:
        parts = [f"{len(self.samples)} training photos of {self.found} found"]
        left = [
            (self.evaluation_named, "named ILSVRC2012_val_*"),
            (self.evaluation_lookalike, "the same as an evaluation or validation photo"),
            (self.duplicates, "duplicates"),
            (self.unreadable, "unreadable"),
            (self.below_confidence, "below the confidence floor"),
        ]
        out = ", ".join(f"{n} {why}" for n, why in left if n)
        return parts[0] + (f"; left out: {out}" if out else "")


class PhotoIndex:
    """A per-file cache of :class:`PhotoInfo`, as JSON lines keyed by path, size and mtime."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.entries[row["key"]] = row
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill

    @staticmethod
    def key(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def get(self, path: Path) -> dict | None:
        try:
            return self.entries.get(self.key(path))
        except OSError:
            return None

    def add(self, rows: Iterable[dict]) -> None:
        rows = list(rows)
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            for row in rows:
                self.entries[row["key"]] = row
                f.write(json.dumps(row) + "\n")


def _index_path(black_box_name: str | None) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", black_box_name or "hash-only")
    return cache_dir() / "photo-index" / f"{name}.jsonl"


def index_photos(
    paths: Sequence[Path],
    *,
    black_box=None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    index_file: Path | None = None,
) -> tuple[list[PhotoInfo], list[Path]]:
    """Hash every photo (and label it with ``black_box``'s top-1 when given); cached.

    Returns the indexed photos and the unreadable ones.
    """
    import torch

    index = PhotoIndex(index_file or _index_path(getattr(black_box, "name", None)))
    infos: dict[Path, PhotoInfo] = {}
    todo: list[Path] = []
    for p in paths:
        row = index.get(p)
        if row is not None and (black_box is None or row.get("label") is not None):
            infos[p] = PhotoInfo(
                p, int(row["hash"]), row.get("label"), row.get("confidence"), row.get("colour")
            )
        else:
            todo.append(p)
    bad: list[Path] = []
    transform = None
    if black_box is not None:
        transform = photo_transform(
            tuple(black_box.input_size), False, black_box.interpolation, black_box.crop_pct
        )
    done = len(paths) - len(todo)
    if progress:
        progress(done, len(paths))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        decoded = []
        for p in chunk:
            try:
                decoded.append((p, load_image(p)))
            except DataError:
                bad.append(p)
        rows = []
        if decoded:
            labels: list[int | None] = [None] * len(decoded)
            conf: list[float | None] = [None] * len(decoded)
            if black_box is not None and transform is not None:
                x = torch.stack([pil_to_tensor(transform(im)) for _, im in decoded])
                with torch.inference_mode():
                    prob = black_box.probabilities(x)
                top = prob.max(dim=1)
                labels = [int(i) for i in top.indices]
                conf = [round(float(v), 5) for v in top.values]
            for (p, im), lab, c in zip(decoded, labels, conf, strict=True):
                info = PhotoInfo(p, difference_hash(im), lab, c, colour_code(im))
                infos[p] = info
                row = {"key": PhotoIndex.key(p), "hash": str(info.hash), "colour": info.colour}
                if lab is not None:
                    row.update(label=lab, confidence=c)
                rows.append(row)
        index.add(rows)
        done += len(chunk)
        if progress:
            progress(done, len(paths))
    return [infos[p] for p in paths if p in infos], bad


def exclusion_hashes(folders: Sequence[str | Path], **kw) -> np.ndarray:
    """Difference hashes of every photo in the evaluation ``folders`` (cached)."""
    paths = [p for f in folders for p in list_photos(f)]
    infos, _ = index_photos(paths, **kw)
    return np.array([i.hash for i in infos], dtype=np.uint64)


def enclosing_folder(folder: str | Path, folders: Sequence[str | Path]) -> Path | None:
    """The first of ``folders`` (as given) that is ``folder`` or holds it, or None."""
    here = Path(folder).expanduser().resolve()
    for f in folders:
        there = Path(f).expanduser().resolve()
        if here == there or there in here.parents:
            return Path(f)
    return None


def select_training_photos(
    root: str | Path,
    *,
    labels: str = "folder",
    labelled: Sequence[tuple[Path, int]] | None = None,
    black_box=None,
    min_confidence: float = 0.3,
    exclude: Sequence[str | Path] = (),
    dedup: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> PhotoSelection:
    """The training photos of ``root``: evaluation photos and duplicates out, labelled.

    ``labels="folder"`` takes the classes of ``labelled`` (the folder's samples as
    :func:`rtsal.data.folders.scan_image_folder` reads them from folder or file names);
    ``labels="blackbox"`` takes the black box's top-1 class where its probability is at least
    ``min_confidence``, so any folder of photos is training data.
    """
    if labels not in LABEL_SOURCES:
        raise DataError(f"--labels must be one of {', '.join(LABEL_SOURCES)}, not {labels!r}")
    root = Path(root).expanduser()
    ex = enclosing_folder(root, exclude)
    if ex is not None:
        raise DataError(f"{root} is inside the evaluation folder {ex}: it cannot be trained on")
    if labels == "folder":
        if labelled is None:
            raise DataError("folder labels need the folder's labelled samples")
        labelled = list(labelled)
    else:
        if black_box is None:
            raise DataError("--labels blackbox needs a black box")
        labelled = [(p, -1) for p in list_photos(root)]
        if not labelled:
            raise DataError(f"no images found in {root}")
    sel = PhotoSelection(samples=[], found=len(labelled))
    kept = []
    for p, lab in labelled:
        if is_evaluation_photo(p):
            sel.evaluation_named += 1
        else:
            kept.append((p, lab))
    if not (dedup or exclude or labels == "blackbox"):
        sel.samples = kept
        return sel
    infos, bad = index_photos(
        [p for p, _ in kept],
        black_box=black_box if labels == "blackbox" else None,
        progress=progress,
    )
    sel.unreadable = len(bad)
    by_path = {i.path: i for i in infos}
    kept = [(p, lab) for p, lab in kept if p in by_path]
    hashes = np.array([by_path[p].hash for p, _ in kept], dtype=np.uint64)
    keep = np.ones(len(kept), dtype=bool)
    if exclude and len(kept):
        ev = exclusion_hashes(exclude)
        if len(ev):
            near = np.zeros(len(kept), dtype=bool)
            for s in range(0, len(kept), 4096):  # bounded memory: (4096, M) distances at a time
                near[s : s + 4096] = (hamming(hashes[s : s + 4096], ev) <= NEAR_DUPLICATE_BITS).any(
                    1
                )
            sel.evaluation_lookalike = int(near.sum())
            keep &= ~near
    if dedup:
        seen: set[tuple[int, int | None]] = set()
        for i, (p, _) in enumerate(kept):
            key = (by_path[p].hash, by_path[p].colour)
            if keep[i] and key in seen:
                keep[i] = False
                sel.duplicates += 1
            seen.add(key)
    for i, (p, lab) in enumerate(kept):
        if not keep[i]:
            continue
        if labels == "blackbox":
            info = by_path[p]
            if info.confidence is None or info.confidence < min_confidence:
                sel.below_confidence += 1
                continue
            lab = int(info.label)
        sel.samples.append((p, lab))
    if not sel.samples:
        raise DataError(f"{root}: no training photos left ({sel.summary()})")
    return sel


def assert_no_evaluation_photos(samples: Sequence[tuple[Path, int]]) -> None:
    """The data loader's last check: refuse to train on any ``ILSVRC2012_val_*`` file."""
    bad = [p for p, _ in samples if is_evaluation_photo(p)]
    if bad:
        raise DataError(
            f"{len(bad)} evaluation photo(s) in the training data (e.g. {bad[0]}); "
            "ILSVRC2012_val_* files are for measuring only"
        )
