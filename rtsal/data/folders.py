"""Data sets for training and evaluation, as images in [0, 1] with black-box class indices.

``open_dataset(spec, ...)`` accepts an image directory (class sub-folders, or a flat folder whose
file names start with a synset such as ``n02088364_beagle.JPEG``), a split folder (``train/`` and
``test/``) or a named set, ``cifar10`` or ``fashion-mnist``: read from ``--data-root`` (a
torchvision root, a folder of JPEGs in ``{train,test}/<class>/``, or a ``.tar.gz`` of one) and
downloaded by torchvision when online. Image folders are read file by file
(:class:`ImageFileDataset`); the others are held in memory (:mod:`rtsal.data.arrays`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from rtsal.data.arrays import (
    DataSpec,
    TensorImageDataset,
    load_cifar10,
    load_fashion_mnist,
    load_split_folder,
    named_class_names,
    split_folder,
)
from rtsal.data.images import IMAGE_EXTENSIONS, load_image, photo_transform, pil_to_tensor
from rtsal.data.photos import assert_no_evaluation_photos, select_training_photos
from rtsal.engine._rng import AUGMENT, MOSAIC, generator, mix
from rtsal.errors import DataError, RtsalError
from rtsal.registry.classes import ClassResolver

# --------------------------------------------------------------------------- image files


class ImageFileDataset(Dataset):
    """(path, label) pairs read with :func:`rtsal.data.images.load_image`.

    A corrupt file does not stop a long run: it is reported once and replaced by the next file.
    A training set refuses evaluation photos (``ILSVRC2012_val_*``), whatever listed them.
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        class_names: Sequence[str],
        *,
        size: tuple[int, int],
        train: bool = False,
        interpolation: str = "bilinear",
        crop_pct: float = 1.0,
        mode: str = "RGB",
        name: str = "",
        crop_scale: float = 0.35,
        color_jitter: float = 0.0,
    ):
        if train:
            assert_no_evaluation_photos(samples)
        self.samples = samples
        self.class_names = list(class_names)
        self.size = size
        self.train = train
        self._transform_args = (train, interpolation, crop_pct, crop_scale, color_jitter)
        self._transforms: dict[tuple[int, int], Any] = {}
        self.transform = self._transform_for(size)
        self.mode = mode
        self.name = name
        self._bad: set[int] = set()
        self.aug_seed: int | None = None  # set: augmentation keyed by (seed, epoch, index)
        self.epoch = 0

    def set_epoch(self, epoch: int, seed: int | None) -> None:
        self.epoch, self.aug_seed = epoch, seed

    def _transform_for(self, size: tuple[int, int]):
        if size not in self._transforms:
            self._transforms[size] = photo_transform(size, *self._transform_args)
        return self._transforms[size]

    def _transform(self, im, index: int, size=None, stream: int = AUGMENT):
        transform = self._transform_for(tuple(size or self.size))
        if self.aug_seed is None:
            return transform(im)
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global generator
            torch.manual_seed(mix(self.aug_seed, self.epoch, stream, index))
            return transform(im)

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, i: int):
        """The image and label of sample ``i``, or of the next readable one."""
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            path, label = self.samples[j]
            try:
                return load_image(path, self.mode), label
            except DataError as exc:
                if j not in self._bad:
                    self._bad.add(j)
                    warnings.warn(f"skipping unreadable training image: {exc}", stacklevel=3)
        raise DataError(f"no readable images in {self.name}")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        im, label = self._read(i)
        return pil_to_tensor(self._transform(im, i)), label

    def load(self, i: int, size: tuple[int, int], key: int) -> tuple[torch.Tensor, int]:
        """Sample ``i`` transformed to ``size`` (a mosaic tile), its randomness keyed by ``key``."""
        im, label = self._read(i)
        return pil_to_tensor(self._transform(im, key, size, stream=MOSAIC)), label


_SYNSET = re.compile(r"^(n\d{8})")


def _label_for(name: str, resolver: ClassResolver) -> int | None:
    candidates = [] if name.isdigit() else [name]
    m = _SYNSET.match(name)
    if m:
        candidates.append(m.group(1))
    if "_" in name and not name.split("_", 1)[1].isdigit():  # IMG_0001 is not class 1
        candidates.append(name.split("_", 1)[1])
    for c in candidates:
        try:
            return resolver.resolve(c)
        except RtsalError:
            continue
    return None


class UnlabelledFolderError(DataError):
    """A folder whose class folders or file names do not name the black box's classes."""


def scan_image_folder(root: Path, resolver: ClassResolver) -> list[tuple[Path, int]]:
    """Samples of an image folder, labelled in the black box's class indices.

    Class sub-folders are matched to class names/synsets; a flat folder is labelled from file
    names (``n02088364_beagle.JPEG``). When no folder name matches but there are as many folders
    as classes, folders are taken in sorted order (torchvision's ``ImageFolder`` convention).
    """
    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a directory: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples: list[tuple[Path, int]] = []
    if subdirs:
        labels = {d: _label_for(d.name, resolver) for d in subdirs}
        if all(v is None for v in labels.values()) and len(subdirs) == len(resolver.class_names):
            labels = {d: i for i, d in enumerate(subdirs)}
        unknown = [d.name for d, v in labels.items() if v is None]
        if unknown:
            raise UnlabelledFolderError(
                f"{root}: folder(s) {', '.join(unknown[:5])} match no class of the black box"
            )
        for d in subdirs:
            for p in sorted(d.rglob("*")):
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                    samples.append((p, labels[d]))
    else:
        for p in sorted(root.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                label = _label_for(p.stem, resolver)
                if label is None:
                    raise UnlabelledFolderError(f"{p}: cannot tell its class from the file name")
                samples.append((p, label))
    if not samples:
        raise DataError(f"no images found in {root}")
    return samples


def open_dataset(
    spec: str,
    *,
    split: str = "train",
    size: tuple[int, int] | None = None,
    train: bool = False,
    resolver: ClassResolver | None = None,
    data_root: str | Path | None = None,
    interpolation: str = "bilinear",
    crop_pct: float = 1.0,
    channels: int = 3,
    limit: int | None = None,
    seed: int = 0,
    labels: str = "folder",
    black_box=None,
    min_confidence: float = 0.3,
    exclude: Sequence[str | Path] = (),
    dedup: bool = True,
    crop_scale: float = 0.35,
    color_jitter: float = 0.0,
    progress=None,
) -> Dataset:
    """Open a data set; ``train`` turns on augmentation, ``limit`` takes a seeded subset.

    For training on an image folder, evaluation photos and duplicates are left out and
    ``labels="blackbox"`` labels any photo with ``black_box``'s top-1 class (see
    :func:`rtsal.data.photos.select_training_photos`); the selection's report is the data set's
    ``selection``."""
    ds_spec = DataSpec(spec, Path(data_root).expanduser() if data_root else None)
    named = ds_spec.named
    if named is not None:
        loader = load_cifar10 if named == "cifar10" else load_fashion_mnist
        x, y = loader(ds_spec.root, split)
        if x.shape[1] != channels:
            x = x.expand(-1, 3, -1, -1).contiguous() if channels == 3 else x[:, :1]
        if limit is not None and limit < len(y):
            g = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(y), generator=g)[:limit].sort().values
            x, y = x[keep], y[keep]
        pad = max(1, x.shape[-1] // 8)
        return TensorImageDataset(
            x, y, named_class_names(named), size=size, augment=train, pad=pad, name=named
        )
    root = Path(spec).expanduser()
    if resolver is None:
        raise RtsalError("an image folder needs a black box to map its class names")
    if split_folder(root) is not None:  # train/ and test/: decoded once, held in memory
        x, y = load_split_folder(root, split, resolver.class_names, channels)
        if limit is not None and limit < len(y):
            g = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(y), generator=g)[:limit].sort().values
            x, y = x[keep], y[keep]
        return TensorImageDataset(
            x,
            y,
            resolver.class_names,
            size=size,
            augment=train,
            pad=max(1, x.shape[-1] // 8),
            name=str(root),
        )
    selection = None
    if train:
        labelled, note = None, ""
        if labels in ("folder", "auto"):
            try:
                labelled = scan_image_folder(root, resolver)
                labels = "folder"
            except UnlabelledFolderError as exc:
                if labels == "folder":
                    raise
                labels = "blackbox"
                note = (
                    f"{root} has no class folders ({exc}): each photo takes the black box's "
                    f"top-1 class at probability >= {min_confidence} (--labels blackbox)"
                )
        selection = select_training_photos(
            root,
            labels=labels,
            labelled=labelled,
            black_box=black_box,
            min_confidence=min_confidence,
            exclude=exclude,
            dedup=dedup,
            progress=progress,
        )
        selection.note = note
        samples = selection.samples
    elif labels == "blackbox":
        raise DataError("--labels blackbox applies to training")
    else:
        samples = scan_image_folder(root, resolver)
    if limit is not None and limit < len(samples):
        g = torch.Generator().manual_seed(seed)
        keep = sorted(torch.randperm(len(samples), generator=g)[:limit].tolist())
        samples = [samples[i] for i in keep]
    dataset = ImageFileDataset(
        samples,
        resolver.class_names,
        size=size or (224, 224),
        train=train,
        interpolation=interpolation,
        crop_pct=crop_pct,
        mode="L" if channels == 1 else "RGB",
        name=str(root),
        crop_scale=crop_scale,
        color_jitter=color_jitter,
    )
    dataset.selection = selection
    return dataset


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
    drop_last: bool = False,
    sampler=None,
):
    """A DataLoader that fetches in-memory sets batch-at-a-time and seeds its shuffling."""
    from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

    g = torch.Generator().manual_seed(seed)
    if sampler is None:
        sampler = RandomSampler(dataset, generator=g) if shuffle else SequentialSampler(dataset)
    collate = getattr(dataset, "collate", None)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        collate_fn=collate,
        persistent_workers=workers > 0,
        generator=g,
    )


class EpochBatchSampler:
    """Batches of one epoch in a seeded order, sharded over processes, resumable.

    The epoch's order is a permutation keyed by ``(seed, epoch)``; global batch ``j`` is
    ``perm[j*G:(j+1)*G]`` with ``G = batch_size * world_size`` and process ``rank`` takes its
    ``batch_size`` slice, so one process with batch ``G`` sees exactly the samples that
    ``world_size`` processes see together. ``start`` skips the first batches (resuming).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start, self.rank, self.world = start, rank, world_size
        self.drop_last = drop_last

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    def num_batches(self) -> int:
        full, rest = divmod(self.n, self.global_batch)
        return full if (self.drop_last or rest < self.world) else full + 1

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start)

    def __iter__(self):
        perm = torch.randperm(self.n, generator=generator(self.seed, self.epoch)).tolist()
        G = self.global_batch
        for j in range(self.start, self.num_batches()):
            chunk = perm[j * G : (j + 1) * G]
            share = len(chunk) // self.world
            yield chunk[self.rank * share : (self.rank + 1) * share]
